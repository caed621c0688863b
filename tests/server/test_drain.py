"""A server stopping (SIGTERM) never closes a keep-alive connection under a client's request.

nginx keeps connections to each replica open and sends the next request on one whenever it
likes; a POST that meets a connection the server is closing fails, and nginx cannot resend it
(it may have been counted). So on SIGTERM the server refuses new connections at once, answers
every request still arriving on its open connections with "Connection: close", and leaves
idle ones for the client to close (up to 5 s).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.support import LOOPBACK, TapadServer

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
        deadline = time.monotonic() + 10
        while True:  # new connections are refused (a balancer moves on to another server)
            try:
                socket.create_connection((LOOPBACK, server.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
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
