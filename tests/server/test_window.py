"""``--accept-past`` / ``--accept-future``: the shared check, and the single POST through it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from tapad.buckets import MS_PER_HOUR
from tapad.server.query import BadRequest, parse_post
from tapad.server.window import SECONDS_BELOW, WARN_EVERY_MS, Window
from tests.support import InProcessTapad, http, parse_counts

NOW = 1_795_802_400_000  # 2026-11-27T18:00Z
SECONDS = 1_765_065_600  # 2025-12-07T00:00Z in seconds: 1970-01-21 read as milliseconds


def refusal(window: Window, ms: int, now: int = NOW) -> str:
    with pytest.raises(BadRequest) as caught:
        window.check(ms, now)
    return str(caught.value)


def test_the_window_takes_what_is_inside_it() -> None:
    window = Window(past_hours=48, future_minutes=5)
    for ms in (NOW, NOW - 48 * MS_PER_HOUR, NOW + 5 * 60_000, NOW - 1):
        window.check(ms, NOW)


def test_the_window_refuses_past_future_and_seconds_naming_the_option() -> None:
    window = Window(past_hours=48, future_minutes=5)
    past = NOW - 48 * MS_PER_HOUR - 1
    assert refusal(window, past) == (
        f"timestamp: {past} is more than 48 hours in the past (--accept-past)"
    )
    future = NOW + 5 * 60_000 + 1
    assert refusal(window, future) == (
        f"timestamp: {future} is more than 5 minutes in the future (--accept-future)"
    )
    assert refusal(window, SECONDS) == (
        f"timestamp: {SECONDS} looks like seconds; send milliseconds"
    )
    assert refusal(Window(future_minutes=0), 0) == (
        "timestamp: 0 looks like seconds; send milliseconds"
    )
    assert refusal(Window(past_hours=1), NOW - 2 * MS_PER_HOUR).endswith(
        "more than 1 hour in the past (--accept-past)"
    )


def test_one_side_set_leaves_the_other_open() -> None:
    Window(past_hours=1).check(NOW + 1000 * MS_PER_HOUR, NOW)
    Window(future_minutes=1).check(SECONDS_BELOW, NOW)


def test_without_a_window_seconds_pass_and_are_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    window = Window()
    caplog.set_level(logging.WARNING, logger="tapad.server")
    window.check(SECONDS, NOW)
    window.check(SECONDS + 1, NOW + 1000)
    window.check(SECONDS + 2, NOW + WARN_EVERY_MS - 1)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert f"timestamp={SECONDS}" in warnings[0] and "seconds" in warnings[0]
    window.check(SECONDS + 3, NOW + WARN_EVERY_MS)
    assert len(caplog.records) == 2
    assert "recorded 3 event(s)" in caplog.records[1].getMessage()
    window.check(NOW, NOW)  # a real timestamp: nothing logged
    assert len(caplog.records) == 2


def test_the_fast_and_full_parsers_both_check_the_window() -> None:
    window = Window(past_hours=48, future_minutes=5)
    now = window.now()
    for query in (
        f"timestamp={SECONDS}&user=ann&click",  # the shortcut's usual order
        f"user=ann&timestamp={SECONDS}&click",  # the shortcut's loop
        f"timestamp={SECONDS}&user=a%20nn&click",  # the full parser
    ):
        with pytest.raises(BadRequest, match="looks like seconds"):
            parse_post(query, window)
    with pytest.raises(BadRequest, match=r"^user: must not be empty"):  # other errors first
        parse_post(f"timestamp={SECONDS}&user=&click", window)
    assert parse_post(f"timestamp={now}&user=a%20nn&click", window).user == "a nn"


@pytest.fixture
def server(sqlite_url: str) -> Iterator[InProcessTapad]:
    srv = InProcessTapad(sqlite_url, accept_past=48, accept_future=5).start()
    yield srv
    srv.stop()


def post(url: str, ts: int) -> tuple[int, str]:
    status, _, body = http("POST", f"{url}/analytics?timestamp={ts}&user=ann&click")
    return status, body


def test_the_single_post_refuses_outside_the_window_and_records_nothing(
    server: InProcessTapad,
) -> None:
    now = int(time.time() * 1000)
    old = now - 49 * MS_PER_HOUR
    ahead = now + 2 * MS_PER_HOUR  # not in the hour of the accepted POSTs
    assert post(server.url, old) == (
        400,
        f"timestamp: {old} is more than 48 hours in the past (--accept-past)\n",
    )
    assert post(server.url, ahead) == (
        400,
        f"timestamp: {ahead} is more than 5 minutes in the future (--accept-future)\n",
    )
    assert post(server.url, SECONDS) == (
        400,
        f"timestamp: {SECONDS} looks like seconds; send milliseconds\n",
    )
    assert post(server.url, now) == (200, "")
    assert post(server.url, now - 47 * MS_PER_HOUR) == (200, "")
    for ts in (old, ahead, SECONDS):
        _, _, body = http("GET", f"{server.url}/analytics?timestamp={ts}")
        assert parse_counts(body)["clicks"] == 0, ts


def test_without_a_window_the_post_takes_seconds_and_the_log_says_so(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tapad.server")
    server = InProcessTapad(sqlite_url).start()
    try:
        assert post(server.url, SECONDS) == (200, "")
        assert post(server.url, SECONDS + 1) == (200, "")
        _, _, body = http("GET", f"{server.url}/analytics?timestamp={SECONDS}")
        assert parse_counts(body)["clicks"] == 2
    finally:
        server.stop()
    warnings = [r.getMessage() for r in caplog.records if "looks like seconds" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_a_batch_with_one_event_outside_the_window_is_400_and_records_nothing(
    server: InProcessTapad,
) -> None:
    now = Window.now()
    events = [
        {"timestamp": now, "user": "alice", "event": "click"},
        {"user": "bob", "event": "impression"},  # no timestamp: the server's clock
        {"timestamp": now - 72 * MS_PER_HOUR, "user": "carol", "event": "click"},
    ]
    body = "\n".join(json.dumps(e) for e in events)
    answer = httpx.post(
        f"{server.url}/analytics/batch", content=body, headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 400
    assert answer.text == (
        f"event 3: timestamp: {now - 72 * MS_PER_HOUR} is more than 48 hours in the past "
        "(--accept-past)\n"
    )
    _, _, text = http("GET", f"{server.url}/analytics?timestamp={now}")
    assert parse_counts(text) == {"unique_users": 0, "clicks": 0, "impressions": 0}
    seconds = httpx.post(
        f"{server.url}/analytics/batch",
        content=json.dumps([{"timestamp": now // 1000, "user": "dave", "event": "click"}]),
        headers={"Content-Type": "application/json"},
    )
    assert (
        seconds.text == f"event 1: timestamp: {now // 1000} looks like seconds; send milliseconds\n"
    )
