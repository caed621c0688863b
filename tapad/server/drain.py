"""Stopping without dropping a request: refuse new connections, serve the ones the kernel
already took, and leave idle keep-alive connections for the client to close.

Apart from the server's wiring (run.py) because it works on the listening sockets
themselves, below aiohttp's public interface (through tapad/adapters/aiohttp.py).
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from tapad.adapters.aiohttp import listening_sockets
from tapad.server.app import TapadHandler
from tapad.server.guard import BoundedServer

# How long a stopping server leaves its keep-alive connections for the client to close:
# longer than deploy/nginx.conf's upstream keepalive_timeout, and, with the 2 s nginx takes
# to see a replica's address leave Docker's DNS after it exits, shorter than the upstream's
# fail_timeout (nginx must not try the address again once it is gone; tests/test_deploy.py).
KEEPALIVE_GRACE = 5.0


async def close_gently(
    site: web.BaseSite, server: BoundedServer, handler: TapadHandler, limit: float
) -> None:
    """Stop accepting, then let the clients close their keep-alive connections.

    Closing an idle keep-alive connection from this side races with a request the client
    (nginx) may be sending on it at that moment: that request fails, and a balancer cannot
    resend a POST (it may have been counted). So new connections are refused (nginx tries
    another server), every answer from now on carries "Connection: close", and idle
    connections are left to the client, which closes them after its keep-alive timeout.
    """
    handler.closing = True
    await stop_listening(site, server)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(KEEPALIVE_GRACE, limit)
    while server.open_connections() and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def stop_listening(site: web.BaseSite, server: BoundedServer) -> None:
    """Refuse new connections from now on, and serve the ones the kernel already took.

    The kernel completes a client's handshake before the server accepts the connection, and
    the client (nginx) sends its request at once. Closing a listening socket resets every
    connection still waiting to be accepted: a POST already sent there fails, and nginx
    cannot resend it. So the waiting ones are accepted first, and again after the event
    loop's server is closed, with nothing in between the last look and the close.
    """
    waiting: list[socket.socket] = []
    listening = listening_sockets(site)
    try:
        waiting += _accept_all(listening)
        await site.stop()
        await asyncio.sleep(0)  # should the loop close its own descriptor a turn later
    finally:
        waiting += _accept_all(listening)
        for sock in listening:
            sock.close()  # the last reference: the port refuses connections from here on
    loop = asyncio.get_running_loop()
    for sock in waiting:
        try:
            await loop.connect_accepted_socket(server, sock)
        except OSError:
            sock.close()  # the client gave up meanwhile


def _accept_all(listening: list[socket.socket]) -> list[socket.socket]:
    accepted = []
    for sock in listening:
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # closed under us, or out of descriptors: nothing more to take
            conn.setblocking(False)
            accepted.append(conn)
    return accepted
