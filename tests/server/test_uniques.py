"""``GET /analytics/uniques``: the contract, against real servers on each store."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from tapad.buckets import MS_PER_HOUR, format_hour
from tapad.store import Event, open_store
from tests.support import InProcessTapad, RedisServer, TapadServer, http, wait_until

HOUR = 2_100_000  # 2209: far from "now" and from the other tests' hours
H0 = HOUR * MS_PER_HOUR


def uniques(server: InProcessTapad | TapadServer, query: str) -> tuple[int, dict[str, str], str]:
    return http("GET", f"{server.url}/analytics/uniques?{query}")


def post(server: InProcessTapad | TapadServer, ms: int, user: str, kind: str = "click") -> int:
    return http("POST", f"{server.url}/analytics?timestamp={ms}&user={user}&{kind}")[0]


def test_a_user_in_three_hours_counts_once(tapad_server: InProcessTapad) -> None:
    for hour, users in enumerate((["alice", "bob"], ["alice"], ["alice", "carol"])):
        for user in users:
            assert post(tapad_server, H0 + hour * MS_PER_HOUR + 1234, user) == 200
    # from and to anywhere inside their hours; every acknowledged POST is counted at once
    status, headers, body = uniques(tapad_server, f"from={H0 + 59}&to={H0 + 2 * MS_PER_HOUR + 7}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "from": format_hour(HOUR),
        "to": format_hour(HOUR + 2),
        "unique_users": 3,
        "exact": True,
    }
    one = json.loads(uniques(tapad_server, f"from={H0 + MS_PER_HOUR}&to={H0 + MS_PER_HOUR}")[2])
    assert one["unique_users"] == 1 and one["from"] == one["to"] == format_hour(HOUR + 1)
    # 744 hours is the most one request covers, and it answers
    status, _, body = uniques(tapad_server, f"from={H0}&to={H0 + 743 * MS_PER_HOUR}")
    assert status == 200 and json.loads(body)["unique_users"] == 3


BAD = {
    "": "from: required",
    f"to={H0}": "from: required",
    f"from={H0}": "to: required",
    f"from=x&to={H0}": "from: must be a decimal integer",
    f"from={H0}&to=-1": "to: must be a decimal integer",
    f"from={H0}&from={H0}&to={H0}": "from: given 2 times",
    f"from={H0}&to=253402300800000": "to: must be between 0 and",
    f"from={H0 + MS_PER_HOUR}&to={H0}": "from: must not be after to",
    f"from={H0}&to={H0 + 744 * MS_PER_HOUR}": "to: one request covers at most 744 hours",
    f"from=%zz&to={H0}": "from: invalid percent-encoding",
}


def test_every_bad_query_is_a_one_line_400(tapad_server: InProcessTapad) -> None:
    for query, start in BAD.items():
        status, headers, body = uniques(tapad_server, query)
        assert status == 400, query
        assert headers["Content-Type"].startswith("text/plain")
        assert body.startswith(start) and body.count("\n") == 1, (query, body)
        # the very same line as the hours API gives
        assert http("GET", f"{tapad_server.url}/analytics/hours?{query}")[2] == body
    status, headers, _ = http("POST", f"{tapad_server.url}/analytics/uniques?from=0&to=0")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_store_unavailable_is_503(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    server = InProcessTapad(redis.url, store_timeout=0.3).start()
    try:
        assert uniques(server, f"from={H0}&to={H0}")[0] == 200
        redis.stop()
        status, headers, body = uniques(server, f"from={H0}&to={H0 + 5 * MS_PER_HOUR}")
        assert status == 503 and headers["Retry-After"] == "1" and body.count("\n") == 1
    finally:
        server.stop()
        redis.stop()


def test_past_the_limit_the_answer_says_estimate(redis_url: str) -> None:
    """``tapad serve --exact-uniques-limit 3``: a range of more entries is estimated."""
    server = TapadServer(redis_url, "--exact-uniques-limit", "3").start()
    try:
        for hour in range(3):
            for i in range(hour, hour + 3):
                assert post(server, H0 + hour * MS_PER_HOUR, f"user{i}", "impression") == 200
        # 9 entries over the hours, 5 distinct users
        got = json.loads(uniques(server, f"from={H0}&to={H0 + 2 * MS_PER_HOUR}")[2])
        assert got["exact"] is False and got["unique_users"] == 5
        got = json.loads(uniques(server, f"from={H0}&to={H0}")[2])
        assert got == {**got, "exact": True, "unique_users": 3}
    finally:
        server.stop()


async def fill(url: str, hours: int, users: int) -> None:
    store = open_store(url)
    await store.connect()
    try:
        for hour in range(HOUR, HOUR + hours):
            batch = [Event(hour, f"member-{hour % 7}-{i}", False) for i in range(users)]
            await store.write(batch)
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["sqlite", "redis"])
def test_a_post_during_a_long_count_is_answered_first(
    where: str, request: pytest.FixtureRequest
) -> None:
    """Behaviour, not a timing: a count over a big range is under way, and a POST sent
    meanwhile gets its 200 while the count is still going."""
    url = request.getfixturevalue(f"{where}_url")
    asyncio.run(fill(url, hours=60, users=10_000))  # 600,000 entries, 70,000 distinct
    server = InProcessTapad(url, exact_uniques_limit=10_000_000).start()
    try:
        counted: list[tuple[int, dict[str, str], str]] = []
        query = f"from={H0}&to={H0 + 59 * MS_PER_HOUR}"
        counting = threading.Thread(
            target=lambda: counted.append(uniques(server, query)), daemon=True
        )
        counts_before = server_counts(url)
        counting.start()
        wait_until(lambda: server_counts(url) > counts_before, what="the count to start")
        for i in range(5):
            assert post(server, H0 + 100 * MS_PER_HOUR, f"writer{i}") == 200
            assert http("GET", f"{server.url}/analytics?timestamp={H0}")[0] == 200
        assert counting.is_alive(), "the count ended before the POSTs were answered"
        counting.join(60)
        status, _, body = counted[0]
        assert status == 200 and json.loads(body)["unique_users"] == 70_000
    finally:
        server.stop()


def server_counts(url: str) -> int:
    """How far the server's count has got: on Redis, SSCAN calls served; on SQLite, whether
    the count's thread is at work (the statement itself gives no sign)."""
    if url.startswith("sqlite"):
        return sum(t.name.startswith("tapad-sqlite-uniques") for t in threading.enumerate())
    port = url.rsplit(":", 1)[1].split("/")[0]
    import subprocess

    out = subprocess.run(
        ["redis-cli", "-p", port, "INFO", "commandstats"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("cmdstat_sscan:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0
