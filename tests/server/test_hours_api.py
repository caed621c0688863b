"""``GET /analytics/hours``: the contract, against a real server on each store, in this process."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Iterator

import pytest

from tapad.buckets import MS_PER_HOUR, format_hour
from tests.support import InProcessTapad, RedisServer, http

BASE_BLOCK = 20_000  # hour 2,000,000 and on: 2198, far from "now" and from test_http's hours
_blocks = itertools.count(BASE_BLOCK)
ZERO = {"unique_users": 0, "clicks": 0, "impressions": 0}


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessTapad]:
    """One in-process server per store for the module; each test works in hours of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/tapad.db"
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        redis.flush()
        url = redis.url
    srv = InProcessTapad(url).start()
    yield srv
    srv.stop()


@pytest.fixture
def hour() -> int:
    """The first hour of a block of 1,000 hours no other test touches."""
    return next(_blocks) * 1_000


def post(server: InProcessTapad, ts: int, user: str, kind: str) -> None:
    status, _, body = http("POST", f"{server.url}/analytics?timestamp={ts}&user={user}&{kind}")
    assert status == 200, body


def hours_json(server: InProcessTapad, query: str) -> list[dict[str, object]]:
    status, headers, body = http("GET", f"{server.url}/analytics/hours?{query}")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    hours: list[dict[str, object]] = json.loads(body)["hours"]
    return hours


def row(
    hour: int, unique_users: int = 0, clicks: int = 0, impressions: int = 0
) -> dict[str, object]:
    return {
        "hour": format_hour(hour),
        "timestamp": hour * MS_PER_HOUR,
        "unique_users": unique_users,
        "clicks": clicks,
        "impressions": impressions,
    }


def test_every_hour_in_range_oldest_first_with_empty_hours_zero(
    server: InProcessTapad, hour: int
) -> None:
    t = hour * MS_PER_HOUR
    post(server, t + 5, "alice", "click")
    post(server, t + 6, "bob", "impression")
    post(server, t + 7, "alice", "impression")
    post(server, t + 2 * MS_PER_HOUR + 1, "carol", "click")
    # from and to fall inside their hours: the hours that contain them are included
    rows = hours_json(server, f"from={t - MS_PER_HOUR + 999}&to={t + 3 * MS_PER_HOUR + 42}")
    assert rows == [
        row(hour - 1),
        row(hour, unique_users=2, clicks=1, impressions=2),
        row(hour + 1),
        row(hour + 2, unique_users=1, clicks=1),
        row(hour + 3),
    ]


def test_json_body_is_the_contract_text(server: InProcessTapad, hour: int) -> None:
    t = hour * MS_PER_HOUR
    post(server, t, "dora", "click")
    _, _, body = http("GET", f"{server.url}/analytics/hours?from={t}&to={t + MS_PER_HOUR}")
    assert body == (json.dumps({"hours": [row(hour, 1, 1, 0), row(hour + 1)]}) + "\n"), (
        "not the contract's JSON text (key order, spacing)"
    )


def test_one_hour_when_from_equals_to_and_2026_label(server: InProcessTapad) -> None:
    # The contract's example row pairs 2026-11-27T18 with 1795888800000, which is
    # 2026-11-28T18; the hour's first millisecond is 1795802400000.
    ts = 1_795_802_400_000
    rows = hours_json(server, f"from={ts}&to={ts + MS_PER_HOUR - 1}")
    assert [(r["hour"], r["timestamp"]) for r in rows] == [("2026-11-27T18", ts)]


def test_csv_header_and_rows(server: InProcessTapad, hour: int) -> None:
    t = hour * MS_PER_HOUR
    post(server, t + MS_PER_HOUR, "erin", "click")
    post(server, t + MS_PER_HOUR, "erin", "click")
    post(server, t + MS_PER_HOUR, "frank", "impression")
    status, headers, body = http(
        "GET", f"{server.url}/analytics/hours?from={t}&to={t + 2 * MS_PER_HOUR}&format=csv"
    )
    assert status == 200, body
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    lines = body.split("\n")
    assert lines[0] == "hour,timestamp,unique_users,clicks,impressions"
    assert lines[-1] == "", "every line ends in a newline"
    assert lines[1:-1] == [
        f"{format_hour(hour)},{t},0,0,0",
        f"{format_hour(hour + 1)},{t + MS_PER_HOUR},2,2,1",
        f"{format_hour(hour + 2)},{t + 2 * MS_PER_HOUR},0,0,0",
    ]
    assert list(csv.DictReader(io.StringIO(body)))[1]["clicks"] == "2"
    # format=json is the default, said out loud
    assert hours_json(server, f"from={t}&to={t}&format=json") == [row(hour)]


def test_744_hours_in_one_read_and_745_refused(server: InProcessTapad, hour: int) -> None:
    t = hour * MS_PER_HOUR
    post(server, t + 743 * MS_PER_HOUR, "gus", "impression")
    reads_before = store_reads(server)
    rows = hours_json(server, f"from={t}&to={t + 743 * MS_PER_HOUR}")
    assert store_reads(server) - reads_before == 1, "a range is one store read, not one per hour"
    assert len(rows) == 744
    assert [r["timestamp"] for r in rows] == [t + i * MS_PER_HOUR for i in range(744)]
    assert rows[-1] == row(hour + 743, 1, 0, 1)
    assert all(r == row(hour + i) for i, r in enumerate(rows[:-1]))
    status, _, body = http(
        "GET", f"{server.url}/analytics/hours?from={t}&to={t + 744 * MS_PER_HOUR}"
    )
    assert status == 400
    assert body.startswith("to: ") and "744" in body


def store_reads(server: InProcessTapad) -> float:
    _, _, body = http("GET", f"{server.url}/metrics")
    match = re.search(r'^tapad_store_duration_seconds_count\{op="read"\} (\S+)$', body, re.M)
    assert match, "no store read count in /metrics"
    return float(match.group(1))


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("to=3600000", "from"),
        ("from=3600000", "to"),
        ("", "from"),
        ("from=abc&to=3600000", "from"),
        ("from=-1&to=3600000", "from"),
        ("from=1.5&to=3600000", "from"),
        ("from=1e3&to=3600000", "from"),
        ("from=%201&to=3600000", "from"),
        ("from=0&to=253402300800000", "to"),
        ("from=0&to=", "to"),
        ("from=0&from=1&to=3600000", "from"),
        ("from=0&to=1&to=2", "to"),
        ("from=7200000&to=3600000", "from"),  # from after to
        ("from=0&to=2678400000", "to"),  # 745 hours
        ("from=0&to=3600000&format=xml", "format"),
        ("from=0&to=3600000&format=", "format"),
        ("from=0&to=3600000&format=csv&format=json", "format"),
        ("from=0&to=3600000&format=CSV", "format"),
        ("from=0&to=3600000&format=%zz", "format"),
    ],
)
def test_bad_query_is_one_line_400_naming_the_parameter(
    server: InProcessTapad, query: str, parameter: str
) -> None:
    status, headers, body = http("GET", f"{server.url}/analytics/hours?{query}")
    assert status == 400, body
    assert headers["Content-Type"].startswith("text/plain")
    assert body.endswith("\n") and body.count("\n") == 1, body
    assert body.startswith(f"{parameter}: "), body


def test_from_to_at_the_edges_are_accepted(server: InProcessTapad) -> None:
    rows = hours_json(server, "from=0&to=0")
    assert rows == [row(0)]
    last = 253_402_300_799_999
    rows = hours_json(server, f"from={last - 743 * MS_PER_HOUR}&to={last}")
    assert len(rows) == 744 and rows[-1]["hour"] == "9999-12-31T23"


def test_read_your_writes_after_post(server: InProcessTapad, hour: int) -> None:
    t = hour * MS_PER_HOUR
    for i in range(1, 31):
        post(server, t + 3 * MS_PER_HOUR, f"user{i}", "click")
        rows = hours_json(server, f"from={t}&to={t + 5 * MS_PER_HOUR}")
        assert rows[3] == row(hour + 3, unique_users=i, clicks=i), f"POST {i} not seen"


def test_other_methods_405_and_path_variants_404(server: InProcessTapad) -> None:
    status, headers, _ = http("POST", f"{server.url}/analytics/hours?from=0&to=0")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert http("GET", f"{server.url}/analytics/hours/?from=0&to=0")[0] == 404
