"""A real keep-alive HTTP server on 127.0.0.1 whose answers a test scripts, request by request."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    """``script(n)`` gives the n-th request's (0-based) answer: a status, "stall" or "drop"."""

    def __init__(self, script: Callable[[int], int | str], stall_seconds: float = 3.0) -> None:
        self.script = script
        self.stall_seconds = stall_seconds
        self.count = 0
        self.targets: list[str] = []  # each request's path and query, in order
        self.bodies: list[bytes] = []  # each request's body, in order
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.answer(b"")

            def do_GET(self) -> None:
                self.answer(b"unique_users,0\nclicks,0\nimpressions,0\n")

            def answer(self, body: bytes) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                sent = self.rfile.read(length) if length else b""
                with outer.lock:
                    n = outer.count
                    outer.count += 1
                    outer.targets.append(self.path)
                    outer.bodies.append(sent)
                action = outer.script(n)
                if action == "drop":  # close the connection without an answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "stall":
                    time.sleep(outer.stall_seconds)  # the stall asked for, kept up on purpose
                    action = 200
                try:
                    self.send_response(int(action))
                    if action == 503:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        return Handler
