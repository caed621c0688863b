"""``--access-log`` lines with secrets redacted, and the summary of each period in the log."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import urllib.request
from pathlib import Path

import pytest

from tapad.server.access_log import redact_target
from tapad.server.config import ServeSettings
from tapad.server.run import run_server
from tests.support import LOOPBACK, TapadServer, free_port, http, wait_until_async


def test_a_key_value_is_never_logged() -> None:
    assert redact_target("/analytics?timestamp=5&key=secret123&user=a") == (
        "/analytics?timestamp=5&key=***&user=a"
    )
    assert redact_target("/analytics/batch?KEY=s&k%65y=s2&keys=ok") == (
        "/analytics/batch?KEY=***&k%65y=***&keys=ok"
    )
    assert redact_target("/healthz") == "/healthz"


def post_with_secrets(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/analytics?timestamp=5&user=ann&click&key=secret123",
        method="POST",
        headers={"Authorization": "Bearer tokensecret456"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_access_log_shows_each_request_and_no_secret(tmp_path: Path) -> None:
    srv = TapadServer(f"sqlite:///{tmp_path}/t.db", "--access-log").start()
    try:
        post_with_secrets(srv.url)
        assert http("GET", f"{srv.url}/analytics?timestamp=5")[0] == 200
        assert http("GET", f"{srv.url}/nowhere")[0] == 404
    finally:
        srv.stop()
    log = srv.log.decode()
    lines = [line for line in log.splitlines() if "tapad.access" in line]
    assert len(lines) == 3, log
    shape = r'127\.0\.0\.1 "{} HTTP/1\.1" {} \d+ \d+\.\dms$'  # bytes sent, then the time
    post = re.escape("POST /analytics?timestamp=5&user=ann&click&key=***")
    assert re.search(shape.format(post, 200), lines[0]), lines[0]
    assert re.search(shape.format(re.escape("GET /analytics?timestamp=5"), 200), lines[1])
    assert re.search(shape.format("GET /nowhere", 404), lines[2]), lines[2]
    assert "secret123" not in log and "tokensecret456" not in log and "Bearer" not in log


def test_no_access_log_by_default(tmp_path: Path) -> None:
    srv = TapadServer(f"sqlite:///{tmp_path}/t.db").start()
    try:
        post_with_secrets(srv.url)
    finally:
        srv.stop()
    assert "tapad.access" not in srv.log.decode()


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


# run_server still gives TCPSite the shutdown timeout, which aiohttp 3.14 deprecates
@pytest.mark.filterwarnings("ignore:shutdown_timeout should be set:DeprecationWarning")
def test_a_summary_line_comes_each_period_while_serving(tmp_path: Path) -> None:
    """The server itself (run_server), with the period shortened from 60 s."""
    kept = Kept()
    logger = logging.getLogger("tapad.server")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(kept)
    settings = ServeSettings(
        host=LOOPBACK, port=free_port(), store_url=f"sqlite:///{tmp_path}/t.db", summary_every=0.2
    )
    url = f"http://{LOOPBACK}:{settings.port}"

    def summary_of_the_posts() -> str:
        return next((line for line in kept.lines if "3 requests" in line), "")

    async def main() -> str:
        server = asyncio.create_task(run_server(settings, announce=False))
        try:
            await wait_until_async(lambda: any("last 0.2s" in line for line in kept.lines))
            assert not server.done()
            for _ in range(3):  # off the loop: it serves them
                await asyncio.to_thread(post_with_secrets, url)
            return await wait_until_async(summary_of_the_posts, what="a summary of the POSTs")
        finally:
            if not server.done():  # listening, its SIGTERM handler installed
                signal.raise_signal(signal.SIGTERM)  # run_server's own way to stop
            await server

    try:
        line = asyncio.run(main())
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)
    assert line.startswith("last 0.2s: 3 requests (0 answered 4xx, 0 answered 5xx), 3 events in ")
    assert line.endswith(", 0 store errors")
