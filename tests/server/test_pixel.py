"""``GET /analytics/pixel.gif``: the single POST for ``<img>`` tags, over real HTTP."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tapad.buckets import MS_PER_HOUR
from tapad.server.query import BadRequest, parse_pixel, parse_post
from tests.support import InProcessTapad, RedisServer, parse_counts, store_url_of

GIF = bytes.fromhex(
    "47494638396101000100f00000ffffff00000021f90401000000002c00000000010001000002024401003b"
)
NO_STORE = "no-store, no-cache, must-revalidate"
_hours = itertools.count(31_000)  # hour 3,100,000 and on: no other test's hours


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessTapad]:
    url = store_url_of(request.param, request, tmp_path_factory)
    srv = InProcessTapad(url).start()
    yield srv
    srv.stop()


@pytest.fixture
def ts() -> int:
    return next(_hours) * 100 * MS_PER_HOUR + 42


def pixel(server: InProcessTapad, query: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"{server.url}/analytics/pixel.gif?{query}", timeout=30)


def counts(server: InProcessTapad, ts: int) -> dict[str, int]:
    answer = httpx.get(f"{server.url}/analytics", params={"timestamp": ts})
    assert answer.status_code == 200, answer.text
    return parse_counts(answer.text)


def assert_gif(answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.content == GIF and len(GIF) == 43
    assert answer.headers["Content-Type"] == "image/gif"
    assert answer.headers["Cache-Control"] == NO_STORE


def test_the_pixel_records_an_event_and_answers_the_43_byte_gif(
    server: InProcessTapad, ts: int
) -> None:
    for query in (f"user=ann&impression&timestamp={ts}", f"timestamp={ts}&user=ann&click"):
        answer = pixel(server, query)
        assert_gif(answer)
        assert "Tapad-Duplicate" not in answer.headers
    assert_gif(pixel(server, f"timestamp={ts}&user=bo%C3%AB&event=impression"))
    assert counts(server, ts) == {"unique_users": 2, "clicks": 1, "impressions": 2}


def test_without_a_timestamp_the_server_clock_decides_the_hour(server: InProcessTapad) -> None:
    while True:
        before = time.time_ns() // 1_000_000
        clicks = counts(server, before)["clicks"]
        assert_gif(pixel(server, "user=clock&click"))
        after = time.time_ns() // 1_000_000
        if before // MS_PER_HOUR == after // MS_PER_HOUR:
            break  # else an hour ended in between: once more
    assert counts(server, before)["clicks"] == clicks + 1


def test_a_known_id_answers_the_gif_with_tapad_duplicate(server: InProcessTapad, ts: int) -> None:
    first = pixel(server, f"timestamp={ts}&user=ann&impression&id=creative-7")
    assert_gif(first)
    assert "Tapad-Duplicate" not in first.headers
    again = pixel(server, f"timestamp={ts}&user=ann&impression&id=creative-7")
    assert_gif(again)
    assert again.headers["Tapad-Duplicate"] == "1"
    assert counts(server, ts)["impressions"] == 1


def test_key_and_other_parameters_are_ignored(server: InProcessTapad, ts: int) -> None:
    """``key`` is the write token (checked before parsing); ad servers add cache busters."""
    assert_gif(pixel(server, f"timestamp={ts}&user=ann&click&key=wk_1&cb=8812"))
    assert counts(server, ts)["clicks"] == 1


@pytest.mark.parametrize(
    ("query", "line"),
    [
        ("click", "user: required (the user name)"),
        ("user=&click", "user: must not be empty"),
        ("user=ann", "click/impression: one of click, impression or event= is required"),
        ("user=ann&click&impression",
         "click/impression: the kind of event must be named exactly once"),
        ("user=ann&click&timestamp=-1", "timestamp: must be a decimal integer of milliseconds "
                                        "since the Unix epoch, got '-1'"),
        ("user=ann&click&timestamp=1&timestamp=2", "timestamp: given 2 times, must be given once"),
        ("user=ann&click&id=", "id: must be 1 to 128 characters, got 0"),
        ("user=a%ZZ&click",
         "user: invalid percent-encoding (a '%' must be followed by two hex digits)"),
    ],
)  # fmt: skip
def test_bad_pixels_are_a_one_line_400_in_text_and_record_nothing(
    server: InProcessTapad, ts: int, query: str, line: str
) -> None:
    if "timestamp" not in query:
        query += f"&timestamp={ts}"
    answer = pixel(server, query)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.text == line + "\n"
    assert counts(server, ts) == {"unique_users": 0, "clicks": 0, "impressions": 0}


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT", "DELETE"])
def test_other_methods_are_405_with_allow_get(server: InProcessTapad, ts: int, method: str) -> None:
    answer = pixel(server, f"timestamp={ts}&user=ann&click", method)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET"
    assert counts(server, ts)["clicks"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "timestamp=1795802400000&user=alice&click",
        "user=al%20ice&impression&timestamp=0&id=x",
        "event=click&user=b&timestamp=253402300799999",
    ],
)
def test_the_pixel_parses_as_the_post_does(query: str) -> None:
    assert parse_pixel(query, now_ms=5) == parse_post(query)


@pytest.mark.parametrize(
    "query", ["user=a&click&timestamp=x", "user=a&timestamp=1", "click&timestamp=1"]
)
def test_the_pixel_refuses_as_the_post_does(query: str) -> None:
    with pytest.raises(BadRequest) as post_error:
        parse_post(query)
    with pytest.raises(BadRequest) as pixel_error:
        parse_pixel(query, now_ms=5)
    assert str(pixel_error.value) == str(post_error.value)


# -- the store's side: 503 and 504, in text --------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_a_store_outage_is_503_in_text(own_redis: RedisServer, ts: int) -> None:
    srv = InProcessTapad(own_redis.url, store_timeout=0.5, commit_deadline=1.0).start()
    try:
        assert_gif(pixel(srv, f"timestamp={ts}&user=before&click"))
        own_redis.stop()
        answer = pixel(srv, f"timestamp={ts}&user=during&click")
        assert answer.status_code == 503
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert answer.text == "store unavailable: event not acknowledged, retry later\n"
        assert answer.headers["Retry-After"]
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_store_hung_past_the_commit_deadline_is_504(own_redis: RedisServer, ts: int) -> None:
    srv = InProcessTapad(own_redis.url, store_timeout=0.3, commit_deadline=1.0).start()
    try:
        assert_gif(pixel(srv, f"timestamp={ts}&user=warm-up&click"))
        own_redis.pause()
        answer = pixel(srv, f"timestamp={ts}&user=hung&click")
        assert answer.status_code == 504
        assert answer.text.startswith("outcome unknown:") and answer.text.count("\n") == 1
    finally:
        own_redis.resume()
        srv.stop()


def test_the_pixel_keeps_to_the_timestamp_window(sqlite_url: str) -> None:
    """--accept-past/--accept-future hold for the pixel as for the POST; a pixel without a
    timestamp is the server's own now, always inside."""
    srv = InProcessTapad(sqlite_url, accept_past=48, accept_future=5).start()
    try:
        now = time.time_ns() // 1_000_000
        seconds = pixel(srv, f"timestamp={now // 1000}&user=ann&click")
        assert seconds.status_code == 400
        assert seconds.text == f"timestamp: {now // 1000} looks like seconds; send milliseconds\n"
        ahead = now + 2 * MS_PER_HOUR
        future = pixel(srv, f"timestamp={ahead}&user=ann&click")
        assert future.status_code == 400
        assert future.text.endswith("in the future (--accept-future)\n")
        assert counts(srv, now // 1000)["clicks"] == counts(srv, ahead)["clicks"] == 0
        assert_gif(pixel(srv, f"timestamp={now}&user=ann&click"))
        assert_gif(pixel(srv, "user=ann&click"))
    finally:
        srv.stop()
