"""A real HTTP name source on 127.0.0.1 whose behaviour each test sets up."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class NameSource:
    """Serves names in randomuser.me JSON or plain text; can fail, stall or repeat itself.

    ``plan(n)`` decides the answer to the n-th request (0-based): ``"ok"``, an HTTP
    status to fail with, or ``"slow"`` to stall ``slow_seconds`` before answering.
    """

    def __init__(
        self,
        *,
        shape: str = "json",
        per_page: int = 10,
        plan: Callable[[int], str | int] = lambda n: "ok",
        names: Callable[[int], list[str]] | None = None,
        slow_seconds: float = 2.0,
        hold_until: int = 0,
    ) -> None:
        self.shape = shape
        self.per_page = per_page
        self.plan = plan
        self.names = names or (lambda n: [f"user{n}_{i}" for i in range(per_page)])
        self.slow_seconds = slow_seconds
        self.hold_until = hold_until  # hold the first answers until this many are in flight
        self.lock = threading.Condition()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def __enter__(self) -> NameSource:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self) -> tuple[int, str, bytes]:
        with self.lock:
            n = self.count
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.lock.notify_all()
            if self.hold_until and self.max_in_flight < self.hold_until:
                self.lock.wait_for(lambda: self.max_in_flight >= self.hold_until, timeout=2.0)
        try:
            action = self.plan(n)
            if action == "slow":
                time.sleep(self.slow_seconds)  # a slow source on purpose, for timeouts
            elif isinstance(action, int):
                return action, "text/plain", b"injected failure\n"
            names = self.names(n)
            if self.shape == "json":
                body = {"results": [{"login": {"username": name}} for name in names]}
                return 200, "application/json", json.dumps(body).encode()
            if self.shape == "html":
                return 200, "text/html", b"<html><body>hello</body></html>"
            return 200, "text/plain; charset=utf-8", "".join(f"{x}\n" for x in names).encode()
        finally:
            with self.lock:
                self.in_flight -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, content_type, body = source._answer()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up on a slow answer

            def log_message(self, *args: object) -> None:
                pass

        return Handler
