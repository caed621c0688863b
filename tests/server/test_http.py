"""The HTTP contract, against a real server on each store.

In this process (``InProcessTapad``) where nothing needs more; a ``tapad serve`` process for
the load tests (two cores beat one shared interpreter) and for the default store (the CLI's).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tapad.buckets import MS_PER_HOUR
from tapad.server.app import NOT_PERSISTENT
from tests.support import LOOPBACK, InProcessTapad, RedisServer, TapadServer, http, parse_counts

BASE_BLOCK = 10_000  # hour 1,000,000: 2084, far from "now"
_hours = itertools.count(BASE_BLOCK)


def module_store_url(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> str:
    """A store for the module's server (``request.param`` names it), shared by its tests."""
    if request.param == "sqlite":
        return f"sqlite:///{factory.mktemp('sqlite')}/tapad.db"
    redis: RedisServer = request.getfixturevalue("redis_server")
    return redis.url


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessTapad]:
    """One in-process server per store for the module; each test works in hours of its own."""
    if request.param == "redis":
        request.getfixturevalue("redis_server").flush()
    srv = InProcessTapad(module_store_url(request, tmp_path_factory)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TapadServer]:
    """A server process per store, for the load tests only: in one process the client and
    the server share the interpreter lock, and the load would take longer, not shorter
    (docs/development.md). Not flushed: each test works in hours of its own."""
    srv = TapadServer(module_store_url(request, tmp_path_factory)).start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def ts() -> int:
    """A timestamp in a block of 100 hours no other test touches."""
    return next(_hours) * 100 * MS_PER_HOUR + 123_456


def post(server: InProcessTapad | TapadServer, query: str) -> tuple[int, dict[str, str], str]:
    return http("POST", f"{server.url}/analytics?{query}")


def counts(server: InProcessTapad | TapadServer, ts: int) -> dict[str, int]:
    status, headers, body = http("GET", f"{server.url}/analytics?timestamp={ts}")
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    return parse_counts(body)


def test_post_answers_200_empty_and_get_counts(server: InProcessTapad, ts: int) -> None:
    status, headers, body = post(server, f"timestamp={ts}&user=alice&click")
    assert (status, body) == (200, "")
    assert headers["Content-Length"] == "0"
    post(server, f"timestamp={ts}&user=alice&impression")
    post(server, f"timestamp={ts}&user=bob&event=impression")
    post(server, f"timestamp={ts}&user=Alice&click=1")
    assert counts(server, ts) == {"unique_users": 3, "clicks": 2, "impressions": 2}


def test_get_body_is_exactly_three_lines(server: InProcessTapad, ts: int) -> None:
    post(server, f"timestamp={ts}&user=u&click")
    _, _, body = http("GET", f"{server.url}/analytics?timestamp={ts}")
    assert body == "unique_users,1\nclicks,1\nimpressions,0\n"


def test_empty_hour_answers_zeros(server: InProcessTapad, ts: int) -> None:
    assert counts(server, ts) == {"unique_users": 0, "clicks": 0, "impressions": 0}


def test_events_land_in_their_utc_hour(server: InProcessTapad, ts: int) -> None:
    start = ts - ts % MS_PER_HOUR + 10 * MS_PER_HOUR  # an hour well clear of the others
    post(server, f"timestamp={start}&user=first&click")
    post(server, f"timestamp={start + MS_PER_HOUR - 1}&user=last&click")
    post(server, f"timestamp={start + MS_PER_HOUR}&user=next&impression")
    post(server, f"timestamp={start - 1}&user=before&impression")
    assert counts(server, start + 1800_000) == {"unique_users": 2, "clicks": 2, "impressions": 0}
    assert counts(server, start + MS_PER_HOUR) == {"unique_users": 1, "clicks": 0, "impressions": 1}
    assert counts(server, start - 1) == {"unique_users": 1, "clicks": 0, "impressions": 1}


def test_user_names_are_percent_decoded_and_exact(server: InProcessTapad, ts: int) -> None:
    for user in ("J%C3%BCrgen", "J%c3%bcrgen", "a%26b", "a", "A", "a%20"):
        assert post(server, f"timestamp={ts}&user={user}&click")[0] == 200
    assert counts(server, ts)["unique_users"] == 5  # Jürgen (twice), "a&b", "a", "A", "a "


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("user=a&click", "timestamp"),
        ("timestamp=abc&user=a&click", "timestamp"),
        ("timestamp=-5&user=a&click", "timestamp"),
        ("timestamp=253402300800000&user=a&click", "timestamp"),
        ("timestamp=1&timestamp=1&user=a&click", "timestamp"),
        ("timestamp={ts}&click", "user"),
        ("timestamp={ts}&user=&click", "user"),
        ("timestamp={ts}&user=" + "x" * 257 + "&click", "user"),
        ("timestamp={ts}&user=a&user=a&click", "user"),
        ("timestamp={ts}&user=%C3&click", "user"),
        ("timestamp={ts}&user=a", "click/impression"),
        ("timestamp={ts}&user=a&click&impression", "click/impression"),
        ("timestamp={ts}&user=a&event=click&click", "click/impression"),
        ("timestamp={ts}&user=a&event=like", "event"),
    ],
)
def test_bad_post_is_a_one_line_400_and_records_nothing(
    server: InProcessTapad, ts: int, query: str, parameter: str
) -> None:
    status, headers, body = post(server, query.format(ts=ts))
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")
    assert body.startswith(f"{parameter}: ")
    assert body.count("\n") == 1 and body.endswith("\n")
    assert counts(server, ts) == {"unique_users": 0, "clicks": 0, "impressions": 0}


@pytest.mark.parametrize("query", ["", "timestamp=x", "timestamp=1.0", "timestamp=1&timestamp=2"])
def test_bad_get_is_a_400_naming_timestamp(server: InProcessTapad, query: str) -> None:
    status, _, body = http("GET", f"{server.url}/analytics?{query}")
    assert status == 400
    assert body.startswith("timestamp: ") and body.count("\n") == 1


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_allow(server: InProcessTapad, method: str) -> None:
    status, headers, _ = http(method, f"{server.url}/analytics?timestamp=1")
    assert status == 405
    assert {m.strip() for m in headers["Allow"].split(",")} == {"GET", "POST"}


@pytest.mark.parametrize(
    "path", ["/index.html", "/analytics/", "/analytic", "/static/", "/nope?timestamp=1"]
)
def test_unknown_paths_are_404(server: InProcessTapad, path: str) -> None:
    assert http("GET", f"{server.url}{path}")[0] == 404


def test_healthz(server: InProcessTapad) -> None:
    status, _, body = http("GET", f"{server.url}/healthz")
    # The test Redis keeps nothing on disk (no AOF, no save points): /healthz says so.
    ok = "ok\n" if server.store_url.startswith("sqlite") else f"{NOT_PERSISTENT}\n"
    assert (status, body) == (200, ok)


@pytest.mark.parametrize("path", ["/healthz", "/nope", "/analytics?timestamp=x"])
def test_server_header_names_no_versions(server: InProcessTapad, path: str) -> None:
    """aiohttp's default names the Python and aiohttp versions: what an attacker looks up."""
    assert http("GET", f"{server.url}{path}")[1].get("Server") == "tapad"


def test_4000_concurrent_posts_are_counted_exactly(server_process: TapadServer, ts: int) -> None:
    async def run() -> list[int]:
        conn = aiohttp.TCPConnector(limit=1000)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def one(i: int) -> int:
                kind = "click" if i % 3 else "impression"
                url = f"{server_process.url}/analytics?timestamp={ts + i}&user=u{i % 1500}&{kind}"
                async with session.post(url) as resp:
                    return resp.status

            return await asyncio.gather(*(one(i) for i in range(4000)))

    statuses = asyncio.run(run())
    assert statuses.count(200) == 4000
    clicks = sum(1 for i in range(4000) if i % 3)
    assert counts(server_process, ts) == {
        "unique_users": 1500,
        "clicks": clicks,
        "impressions": 4000 - clicks,
    }


def test_read_your_writes_under_concurrency(server_process: TapadServer, ts: int) -> None:
    """A GET sent after N POSTs were acknowledged must see at least N."""

    async def run() -> tuple[int, int]:
        acked = 0
        checks = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:

            async def writer(w: int) -> None:
                nonlocal acked
                for i in range(40):
                    url = f"{server_process.url}/analytics?timestamp={ts}&user=w{w}-{i}&click"
                    async with session.post(url) as resp:
                        assert resp.status == 200
                    acked += 1

            async def reader() -> None:
                nonlocal checks
                for _ in range(60):
                    before = acked
                    async with session.get(
                        f"{server_process.url}/analytics?timestamp={ts}"
                    ) as resp:
                        seen = parse_counts(await resp.text())
                    assert seen["clicks"] >= before, (seen, before)
                    assert seen["unique_users"] >= before
                    checks += 1

            await asyncio.gather(*(writer(w) for w in range(50)), *(reader() for _ in range(20)))
        return acked, checks

    acked, checks = asyncio.run(run())
    assert acked == 2000 and checks == 1200
    assert counts(server_process, ts)["clicks"] == 2000


def test_malformed_http_is_refused_and_server_lives_on(server: InProcessTapad, ts: int) -> None:
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as sock:
        sock.sendall(b"GARBAGE \x00\x01 nonsense\r\n\r\n")
        reply = sock.recv(100)
    assert reply == b"" or reply.split(b" ")[1].startswith(b"4")
    assert counts(server, ts)["clicks"] == 0


def test_sqlite_default_store_lives_in_tapad_data(tmp_path: Path) -> None:
    srv = TapadServer(None, cwd=tmp_path, env={"TAPAD_STORE": ""}).start()
    try:
        assert post(srv, "timestamp=1000&user=a&click")[0] == 200
        assert (tmp_path / "tapad-data" / "tapad.db").is_file()
    finally:
        srv.stop()
