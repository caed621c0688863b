"""Load and inspection helpers for the reliability tests: bounded traffic, RSS, raw sockets.

Every loop here is bounded in count and in time, so a broken server makes a test
fail, never hang, and two shared cores are not swamped.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from tests.support import LOOPBACK, PATIENCE, wait_until

TS = 1_700_000_000_000  # one fixed hour for every reliability test


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (connection refused, reset or client timeout)
    seconds: float
    retry_after: str | None = None
    body: str = ""
    user: str = ""  # each POST has its own user, so its answer can be checked in the store


@dataclass
class Traffic:
    """POSTs from ``concurrency`` clients, each with a new user, until stopped or ``limit``."""

    url: str
    concurrency: int = 16
    limit: int = 20_000
    prefix: str = "t"
    timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    sent: int = 0
    in_flight: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> Traffic:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "traffic did not stop"
        return self

    def wait_for(self, predicate: Callable[[Traffic], object], timeout: float = PATIENCE) -> None:
        wait_until(lambda: predicate(self), timeout, what="traffic in the expected state")

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for answer in list(self.answers):
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._client(session) for _ in range(self.concurrency)))

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set() and self.sent < self.limit:
            user = f"{self.prefix}{self.sent}"
            self.sent += 1
            url = f"{self.url}/analytics?timestamp={TS}&user={user}&click"
            start = time.monotonic()
            self.in_flight += 1
            try:
                async with session.post(url) as resp:
                    body = await resp.text()
                    answer = Answer(
                        resp.status, time.monotonic() - start, resp.headers.get("Retry-After"), body
                    )
            except (TimeoutError, aiohttp.ClientError, OSError):
                answer = Answer(0, time.monotonic() - start)
                await asyncio.sleep(0.05)  # server gone: the load does not spin (a back-off)
            finally:
                self.in_flight -= 1
            answer.user = user
            if answer.status == 200:
                self.acknowledged.add(user)
            self.answers.append(answer)
            if answer.status == 503:
                await asyncio.sleep(0.005)  # a client's back-off after a 503, not a wait


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, read: bool = True) -> bytes:
    """Send raw bytes on a new connection; return what comes back until close or timeout."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        if not read:
            return b""
        chunks = []
        deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return True


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response, 0 if there is none (connection closed)."""
    if not response.startswith(b"HTTP/"):
        return 0
    return int(response.split(b" ", 2)[1])
