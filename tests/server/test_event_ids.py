"""Event ids over HTTP: a retry with the same id is acknowledged and not counted again."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest

from tapad.buckets import MS_PER_HOUR
from tests.support import InProcessTapad, parse_counts, store_url_of

_hours = itertools.count(30_000)  # hour 3,000,000 and on: no other test's hours


@pytest.fixture(scope="module", params=["sqlite", "redis", "cluster"])
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


def counts(server: InProcessTapad, ts: int) -> dict[str, int]:
    answer = httpx.get(f"{server.url}/analytics", params={"timestamp": ts})
    assert answer.status_code == 200, answer.text
    return parse_counts(answer.text)


def post(server: InProcessTapad, query: str) -> httpx.Response:
    return httpx.post(f"{server.url}/analytics?{query}")


def test_a_single_post_retried_with_its_id_counts_once(server: InProcessTapad, ts: int) -> None:
    first = post(server, f"timestamp={ts}&user=alice&click&id=order-17")
    assert first.status_code == 200 and "Tapad-Duplicate" not in first.headers
    for _ in range(2):
        again = post(server, f"timestamp={ts}&user=alice&click&id=order-17")
        assert again.status_code == 200
        assert again.headers["Tapad-Duplicate"] == "1"
    other_user = post(server, f"timestamp={ts}&user=bob&click&id=order-17")
    assert "Tapad-Duplicate" not in other_user.headers
    assert counts(server, ts) == {"unique_users": 2, "clicks": 2, "impressions": 0}


def test_a_batch_reports_its_duplicates_within_and_across_requests(
    server: InProcessTapad, ts: int
) -> None:
    events = [
        {"timestamp": ts, "user": f"u{n % 3}", "event": "impression", "id": f"e{n % 5}-{n % 3}"}
        for n in range(15)
    ]  # 15 events, of which 15 distinct (id, user) pairs... see below
    body = "\n".join(json.dumps(e) for e in [*events, events[0], events[1]])
    first = httpx.post(
        f"{server.url}/analytics/batch",
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert first.json() == {"accepted": 15, "duplicates": 2}
    again = httpx.post(
        f"{server.url}/analytics/batch",
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert again.json() == {"accepted": 0, "duplicates": 17}
    assert counts(server, ts) == {"unique_users": 3, "clicks": 0, "impressions": 15}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("id=", "id: must be 1 to 128 characters, got 0"),
        ("id=" + "x" * 129, "id: must be 1 to 128 characters, got 129"),
        ("id=a%0Ab", "id: must not contain control characters"),
        ("id=a&id=b", "id: given 2 times, must be given once"),
    ],
)
def test_a_bad_id_is_400_and_records_nothing(
    server: InProcessTapad, ts: int, query: str, message: str
) -> None:
    answer = post(server, f"timestamp={ts}&user=alice&click&{query}")
    assert answer.status_code == 400
    assert answer.text == message + "\n"
    assert counts(server, ts)["clicks"] == 0
