"""A server stopping (SIGTERM) never closes a keep-alive connection under a client's request.

nginx keeps connections to each replica open and sends the next request on one whenever it
likes; a POST that meets a connection the server is closing fails, and nginx cannot resend it
(it may have been counted). So on SIGTERM the server refuses new connections at once (but
first serves those the kernel already accepted for it), answers every request still arriving
on its open connections with "Connection: close", and leaves idle ones for the client to
close (up to 5 s).
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from tapad.server.config import ServeSettings
from tapad.server.drain import close_gently
from tapad.server.run import assemble, store_for
from tests.support import LOOPBACK, TapadServer, free_port, wait_until

POST = b"POST /analytics?timestamp=1764374400000&user=ada&click HTTP/1.1\r\nHost: t\r\n\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One response's status line and headers (the POST answers have an empty body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_request_on_an_idle_keepalive_connection_after_sigterm_is_answered(
    tmp_path: Path,
) -> None:
    server = TapadServer(f"sqlite:///{tmp_path}/d.db").start()
    assert server.proc is not None
    try:
        idle = socket.create_connection((LOOPBACK, server.port), timeout=10)
        idle.sendall(POST)
        first = read_response(idle)
        assert first.startswith(b"HTTP/1.1 200") and b"Connection: close" not in first
        # The connection is idle, kept alive, when the server is told to stop.
        server.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:  # new connections are refused (a balancer moves on)
            try:
                socket.create_connection((LOOPBACK, server.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_until(refused, 10, interval=0.05, what="new connections refused after SIGTERM")
        # A request the client sends on its idle connection now is answered, not dropped,
        # and the answer tells the client to close the connection.
        idle.sendall(POST)
        second = read_response(idle)
        assert second.startswith(b"HTTP/1.1 200"), second
        assert b"Connection: close" in second
        assert idle.recv(1) == b""  # then the server closes it
        idle.close()
        assert server.proc.wait(15) == 0
    finally:
        server.stop()


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_a_connection_not_yet_accepted_at_sigterm_is_answered_not_reset(
    tmp_path: Path, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """The kernel completes a client's handshake before the server accepts the connection,
    and nginx sends its POST at once. If the server then stops listening, that connection
    must still be served: closing a listening socket resets the ones waiting in it (nginx
    logged "recv() failed (104: Connection reset by peer) while reading response header"
    for a POST during a scale-down, and the client got a 502)."""
    port = free_port()

    async def scenario() -> bytes:
        settings = ServeSettings(store_url=f"sqlite:///{tmp_path}/d.db", host=LOOPBACK, port=port)
        store = store_for(settings)
        await store.connect()
        server, handler = assemble(store, settings)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, port)
        await site.start()
        try:
            # This loop does not run between the connect and the stop: the connection waits
            # in the listening socket, accepted by the kernel only, when the server stops.
            client = socket.create_connection((LOOPBACK, port), timeout=10)
            client.sendall(POST)
            await close_gently(site, server, handler, 10.0)  # returns once it is closed
            with pytest.raises(ConnectionRefusedError):  # and new ones are refused
                socket.create_connection((LOOPBACK, port), timeout=10)
            try:
                return read_response(client)
            except ConnectionResetError:
                return b"reset"
            finally:
                client.close()
        finally:
            await runner.cleanup()
            await handler.committer.drain()
            await store.close()

    loop = new_loop()
    try:
        answer = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"Connection: close" in answer
