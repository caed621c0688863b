"""``POST /analytics/batch``, rule by rule, against a real server on each store.

In this process (``InProcessTapad``) on SQLite, Redis and a three-master Redis Cluster; every
refusal is read back (the hour still answers zeros); the store outages use a redis-server of
the test's own, stopped or paused (SIGSTOP) past the commit deadline.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tapad.buckets import MS_PER_HOUR
from tapad.server.app import batch_outcome
from tapad.server.batch import MAX_BODY, MAX_EVENTS
from tapad.server.writer import GroupCommitter, Overloaded
from tapad.store.base import Duplicates, Event, PartialWrite
from tapad.store.sqlite import SQLiteStore
from tests.support import InProcessTapad, Nginx, RedisServer, parse_counts, store_url_of, wait_until

NDJSON = "application/x-ndjson"
BASE_BLOCK = 20_000  # hour 2,000,000: far from "now" and from tests/server/test_http.py
_hours = itertools.count(BASE_BLOCK)
NGINX_CONF = (Path(__file__).parents[2] / "deploy" / "nginx.conf").read_text()


@pytest.fixture(scope="module", params=["sqlite", "redis", "cluster"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessTapad]:
    """One in-process server per store for the module; each test works in hours of its own."""
    url = store_url_of(request.param, request, tmp_path_factory)
    srv = InProcessTapad(url).start()
    yield srv
    srv.stop()


@pytest.fixture
def ts() -> int:
    """A timestamp in a block of 100 hours no other test touches."""
    return next(_hours) * 100 * MS_PER_HOUR + 123_456


def event(
    ts: int | float | None, user: str, kind: str = "click", **extra: object
) -> dict[str, object]:
    found: dict[str, object] = {"user": user, "event": kind, **extra}
    if ts is not None:
        found["timestamp"] = ts
    return found


def ndjson(events: Sequence[object]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def send(
    server: InProcessTapad | Nginx,
    body: bytes,
    content_type: str | None = NDJSON,
    **headers: str,
) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return httpx.post(f"{server.url}/analytics/batch", content=body, headers=headers, timeout=30)


def counts(server: InProcessTapad | Nginx, ts: int) -> dict[str, int]:
    answer = httpx.get(f"{server.url}/analytics", params={"timestamp": ts}, timeout=10)
    assert answer.status_code == 200, answer.text
    return parse_counts(answer.text)


def zeros() -> dict[str, int]:
    return {"unique_users": 0, "clicks": 0, "impressions": 0}


def assert_one_line(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    text = answer.text
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert "Traceback" not in text
    return text.rstrip("\n")


def assert_accepted(answer: httpx.Response, count: int) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {"accepted": count, "duplicates": 0}


# -- bodies ------------------------------------------------------------------------------


BODIES = {
    "ndjson": (NDJSON, False, ndjson),
    "ndjson; charset": ("application/x-ndjson; charset=UTF-8", False, ndjson),
    "json array": ("application/json", False, lambda es: json.dumps(es).encode()),
    "text/plain (sendBeacon)": ("text/plain;charset=UTF-8", False, ndjson),
    "gzip ndjson": (NDJSON, True, ndjson),
    "gzip json": ("Application/JSON", True, lambda es: json.dumps(es).encode()),
}


@pytest.mark.parametrize("kind", BODIES)
def test_each_body_type_records_every_event_and_a_get_sees_them_at_once(
    server: InProcessTapad, ts: int, kind: str
) -> None:
    content_type, zipped, encode = BODIES[kind]
    events = [event(ts + i, f"user{i % 7}", "click" if i % 3 == 0 else "impression")
              for i in range(50)]  # fmt: skip
    body = encode(events)
    headers = {"Content-Encoding": "gzip"} if zipped else {}
    answer = send(server, gzip.compress(body) if zipped else body, content_type, **headers)
    assert_accepted(answer, 50)
    assert counts(server, ts) == {"unique_users": 7, "clicks": 17, "impressions": 33}


def test_events_land_in_their_own_hours_and_blank_lines_are_ignored(
    server: InProcessTapad, ts: int
) -> None:
    body = (
        b"\n"
        + json.dumps(event(ts, "alice")).encode()
        + b"\r\n  \n\n"
        + json.dumps(event(float(ts + MS_PER_HOUR), "bob", "impression")).encode()  # 2511.0
        + b"\n"
        + json.dumps(event(ts + 2 * MS_PER_HOUR, "carol", id="order-17", extra=[1])).encode()
    )
    assert_accepted(send(server, body), 3)
    assert counts(server, ts) == {"unique_users": 1, "clicks": 1, "impressions": 0}
    assert counts(server, ts + MS_PER_HOUR) == {"unique_users": 1, "clicks": 0, "impressions": 1}
    assert counts(server, ts + 2 * MS_PER_HOUR)["clicks"] == 1


def test_an_event_without_timestamp_is_in_the_hour_of_receipt(server: InProcessTapad) -> None:
    def now() -> int:
        return time.time_ns() // 1_000_000

    def current() -> list[dict[str, int]]:  # this hour and the next: it may turn meanwhile
        hour = now() // MS_PER_HOUR * MS_PER_HOUR
        return [counts(server, hour), counts(server, hour + MS_PER_HOUR)]

    user = f"now-{time.time_ns()}"
    before = current()
    assert_accepted(send(server, ndjson([event(None, user), event(None, user, "impression")])), 2)
    after = current()
    assert sum(a["clicks"] - b["clicks"] for a, b in zip(after, before, strict=True)) == 1
    assert sum(a["impressions"] - b["impressions"] for a, b in zip(after, before, strict=True)) == 1


# -- limits ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_largest_batches_pass_and_one_more_event_is_413(
    server: InProcessTapad, ts: int
) -> None:
    events = [event(ts, f"u{i}", "impression") for i in range(MAX_EVENTS)]
    assert_accepted(send(server, ndjson(events)), MAX_EVENTS)
    assert counts(server, ts)["impressions"] == MAX_EVENTS

    more = [event(ts + MS_PER_HOUR, f"u{i}") for i in range(MAX_EVENTS + 1)]
    as_json = json.dumps(more).encode()
    for body, content_type in ((ndjson(more), NDJSON), (as_json, "application/json")):
        line = assert_one_line(send(server, body, content_type), 413)
        assert line == f"body: at most {MAX_EVENTS} events, got {MAX_EVENTS + 1}"
    # checked before the events are validated: a bad event in there changes nothing
    more[3]["user"] = ""
    assert assert_one_line(send(server, ndjson(more)), 413).startswith("body: at most 10000")
    assert counts(server, ts + MS_PER_HOUR) == zeros()


def padded(ts: int, size: int, count: int = 1000) -> bytes:
    """``count`` events padded with an ignored field to about ``size`` bytes of NDJSON."""
    pad = "x" * (size // count - 80)
    return ndjson([event(ts, f"u{i}", pad=pad) for i in range(count)])


def test_a_3_mib_body_passes(server: InProcessTapad, ts: int) -> None:
    body = padded(ts, 3 * 1024 * 1024)
    assert 2.9 * 1024 * 1024 < len(body) <= 3 * 1024 * 1024
    assert_accepted(send(server, body), 1000)
    assert counts(server, ts)["clicks"] == 1000


@pytest.mark.parametrize("zipped", [False, True], ids=["plain", "gzip"])
def test_a_body_over_4_mib_is_413_and_records_nothing(
    server: InProcessTapad, ts: int, zipped: bool
) -> None:
    body = padded(ts, int(4.7 * 1024 * 1024))
    assert len(body) > MAX_BODY
    if zipped:
        body = gzip.compress(body)
        assert len(body) < 1024 * 1024  # small on the wire: only its inflated size counts
    answer = send(server, body, **({"Content-Encoding": "gzip"} if zipped else {}))
    assert assert_one_line(answer, 413) == "body: at most 4 MiB after decompression"
    assert counts(server, ts) == zeros()


def test_a_gzip_bomb_is_413_without_inflating_it(server: InProcessTapad) -> None:
    """1 GiB of newlines in 1 MiB on the wire (gzip members of 8 MiB each, one after the
    other): refused once 4 MiB + 1 byte came out of it."""
    bomb = gzip.compress(b"\n" * (8 * 1024 * 1024), compresslevel=9) * 128
    answer = send(server, bomb, Content_Encoding="gzip")
    assert assert_one_line(answer, 413) == "body: at most 4 MiB after decompression"


def test_a_declared_length_over_the_limit_is_413_before_reading(server: InProcessTapad) -> None:
    answer = send(server, b"\n" * (MAX_BODY + 1))
    assert assert_one_line(answer, 413) == "body: at most 4 MiB after decompression"
    assert answer.headers.get("Connection") == "close"


# -- refusals ----------------------------------------------------------------------------


def test_empty_batches_are_400(server: InProcessTapad) -> None:
    for body, content_type in ((b"", NDJSON), (b"\n \n\r\n", NDJSON), (b"[]", "application/json"),
                               (b"", "application/json")):  # fmt: skip
        line = assert_one_line(send(server, body, content_type), 400)
        assert line == "body: no events (an empty batch)", (body, content_type)


BAD_EVENTS = [
    ({"user": "", "event": "click"}, "user: must be 1 to 256 characters, got 0"),
    ({"user": "u" * 257, "event": "click"}, "user: must be 1 to 256 characters, got 257"),
    ({"user": "a\u0007b", "event": "click"}, "user: must not contain control characters"),
    ({"user": 17, "event": "click"}, "user: must be a string, got a number"),
    ({"event": "click"}, "user: required (the user name)"),
    ({"user": "a"}, "event: required (click or impression)"),
    ({"user": "a", "event": "clicks"}, "event: must be click or impression, got 'clicks'"),
    ({"user": "a", "event": True}, "event: must be click or impression, got a boolean"),
    ({"user": "a", "event": "click", "timestamp": 2511.5},
     "timestamp: must be a whole number of milliseconds, got 2511.5"),
    ({"user": "a", "event": "click", "timestamp": -1},
     "timestamp: must be between 0 and 253402300799999, got -1"),
    ({"user": "a", "event": "click", "timestamp": 253402300800000},
     "timestamp: must be between 0 and 253402300799999, got 253402300800000"),
    ({"user": "a", "event": "click", "timestamp": "2511"},
     "timestamp: must be a JSON number of milliseconds, got a string"),
    ({"user": "a", "event": "click", "timestamp": True},
     "timestamp: must be a JSON number of milliseconds, got a boolean"),
    ({"user": "a", "event": "click", "id": ""}, "id: must be 1 to 128 characters, got 0"),
    ({"user": "a", "event": "click", "id": "i" * 129}, "id: must be 1 to 128 characters, got 129"),
    ({"user": "a", "event": "click", "id": "a\u0085"}, "id: must not contain control characters"),
    ({"user": "a", "event": "click", "id": 7}, "id: must be a string, got a number"),
    (["a", "click"], "must be a JSON object, got an array"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "why"), BAD_EVENTS, ids=[w for _, w in BAD_EVENTS])
@pytest.mark.parametrize("content_type", [NDJSON, "application/json"])
def test_an_invalid_event_is_400_with_its_position_and_nothing_is_recorded(
    server: InProcessTapad, ts: int, bad: object, why: str, content_type: str
) -> None:
    good = [event(ts, f"u{i}") for i in range(20)]
    if isinstance(bad, dict) and "timestamp" not in bad:
        bad = {**bad, "timestamp": ts}
    events = [*good[:16], bad, *good[16:]]
    if content_type == NDJSON:  # blank lines are not events: the position stays 17
        body = b"\n\n" + ndjson(events[:5]) + b"   \n" + ndjson(events[5:])
    else:
        body = json.dumps(events).encode()
    line = assert_one_line(send(server, body, content_type), 400)
    assert line == f"event 17: {why}"
    assert counts(server, ts) == zeros()


@pytest.mark.parametrize("line", [b"{not json", b'{"user": "a", "event": "click"} {}',
                                  b'{"user": "\xff", "event": "click"}'])  # fmt: skip
def test_a_line_that_is_not_json_is_400_with_its_position(
    server: InProcessTapad, ts: int, line: bytes
) -> None:
    body = ndjson([event(ts, "a"), event(ts, "b"), event(ts, "c")]) + b"\n" + line + b"\n"
    assert assert_one_line(send(server, body), 400) == "event 4: not valid JSON"
    assert counts(server, ts) == zeros()


def test_a_body_that_is_no_json_array_is_400(server: InProcessTapad) -> None:
    for body, why in ((b"[{", "body: not valid JSON"),
                      (b'{"user": "a"}', "body: must be a JSON array of events")):  # fmt: skip
        assert assert_one_line(send(server, body, "application/json"), 400) == why


def test_a_body_that_is_not_gzip_is_400(server: InProcessTapad, ts: int) -> None:
    body = ndjson([event(ts, "a")])
    answer = send(server, body, Content_Encoding="gzip")
    assert assert_one_line(answer, 400) == "body: not valid gzip"
    answer = send(server, gzip.compress(body)[:-12], Content_Encoding="gzip")
    assert assert_one_line(answer, 400) == "body: not valid gzip (it ends too soon)"
    assert counts(server, ts) == zeros()


@pytest.mark.parametrize(
    ("content_type", "encoding", "why"),
    [
        ("application/xml", None, "Content-Type: must be application/x-ndjson, "
                                  "application/json or text/plain, got 'application/xml'"),
        (None, None, "Content-Type: must be application/x-ndjson, application/json or "
                     "text/plain, got none"),
        ("multipart/form-data; boundary=x", None, "Content-Type: must be application/x-ndjson, "
                                  "application/json or text/plain, got 'multipart/form-data'"),
        (NDJSON, "br", "Content-Encoding: must be gzip or none, got 'br'"),
    ],
)  # fmt: skip
def test_other_types_and_encodings_are_415(
    server: InProcessTapad, ts: int, content_type: str | None, encoding: str | None, why: str
) -> None:
    headers = {"Content-Encoding": encoding} if encoding else {}
    answer = send(server, ndjson([event(ts, "a")]), content_type, **headers)
    assert assert_one_line(answer, 415) == why
    assert counts(server, ts) == zeros()


def test_other_methods_are_405_with_allow(server: InProcessTapad) -> None:
    answer = httpx.get(f"{server.url}/analytics/batch")
    assert assert_one_line(answer, 405) == "method GET not allowed; use POST"
    assert answer.headers["Allow"] == "POST"


# -- the store's side --------------------------------------------------------------------


def test_a_cluster_batch_applied_in_part_is_504_and_known_not_applied_is_503() -> None:
    """PartialWrite, as the cluster store raises it: a batch is 200 only if every part of it
    was committed, 503 only if none was and none is in doubt."""
    events = [Event(7, "a", True), Event(7, "b", True), Event(8, "a", False)]

    def partial(
        parts: set[tuple[int, int]], unknown: set[tuple[int, int]] | None = None
    ) -> PartialWrite:
        return PartialWrite("part", parts, lambda user: 0 if user == "a" else 1, unknown)

    assert batch_outcome(partial({(7, 0), (7, 1), (8, 0)}), events).status == 200
    assert batch_outcome(partial({(7, 0)}), events).status == 504  # applied in part
    assert batch_outcome(partial({(9, 0)}, {(7, 1)}), events).status == 504  # in doubt
    answer = batch_outcome(partial({(9, 0)}), events)  # another request's part only
    assert answer.status == 503 and answer.headers["Retry-After"]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_a_store_outage_is_503_and_records_nothing(own_redis: RedisServer, ts: int) -> None:
    srv = InProcessTapad(own_redis.url, store_timeout=0.5, commit_deadline=1.0).start()
    try:
        assert_accepted(send(srv, ndjson([event(ts, "before")])), 1)
        own_redis.stop()
        answer = send(srv, ndjson([event(ts, f"u{i}") for i in range(100)]))
        line = assert_one_line(answer, 503)
        assert line == "store unavailable: no event of the batch recorded, retry later"
        assert answer.headers["Retry-After"]
        own_redis.start()
        # and the server takes batches again once the store is back
        wait_until(lambda: httpx.get(f"{srv.url}/healthz").status_code == 200)
        assert_accepted(send(srv, ndjson([event(ts + MS_PER_HOUR, "after")])), 1)
        assert counts(srv, ts + MS_PER_HOUR)["clicks"] == 1
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_store_hung_past_the_commit_deadline_is_504(own_redis: RedisServer, ts: int) -> None:
    srv = InProcessTapad(own_redis.url, store_timeout=0.3, commit_deadline=1.0).start()
    try:
        assert_accepted(send(srv, ndjson([event(ts, "warm-up")])), 1)
        own_redis.pause()
        answer = send(srv, ndjson([event(ts, f"u{i}") for i in range(100)]))
        line = assert_one_line(answer, 504)
        assert line.startswith("outcome unknown: some or all events of the batch")
    finally:
        own_redis.resume()
        srv.stop()


def test_a_batch_through_nginx(tmp_path: Path, sqlite_url: str) -> None:
    """deploy/nginx.conf passes a 3 MiB batch (nginx's default limit is 1 MiB)."""
    srv = InProcessTapad(sqlite_url).start()
    proxy = Nginx(tmp_path / "nginx", NGINX_CONF, [f"127.0.0.1:{srv.port}"]).start()
    try:
        ts = next(_hours) * 100 * MS_PER_HOUR
        body = padded(ts, 3 * 1024 * 1024)
        assert len(body) > 2.9 * 1024 * 1024
        assert_accepted(send(proxy, body), 1000)
        assert counts(proxy, ts)["clicks"] == 1000
        body = padded(ts + MS_PER_HOUR, int(4.7 * 1024 * 1024))  # tapad's 413, not nginx's
        assert assert_one_line(send(proxy, body), 413).startswith("body: at most 4 MiB")
        assert_accepted(send(proxy, ndjson([event(ts, "still-there")])), 1)
    finally:
        proxy.stop()
        srv.stop()


# -- the group commit: one request, one transaction --------------------------------------


class RecordingStore(SQLiteStore):
    """A real SQLite store that keeps the size of every transaction it commits."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), synchronous="normal")
        self.writes: list[list[Event]] = []

    async def write(self, events: Sequence[Event]) -> Duplicates:
        self.writes.append(list(events))
        return await super().write(events)


async def test_a_request_is_never_split_over_two_transactions(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "tapad.db")
    await store.connect()
    committer = GroupCommitter(store, max_batch=100)
    committer.start()
    try:
        first = [Event(1, f"a{i}", True) for i in range(60)]
        second = [Event(1, f"b{i}", True) for i in range(60)]  # does not fit beside first
        large = [Event(1, f"c{i}", False) for i in range(250)]  # more than max_batch
        waiters = [
            committer.submit(Event(1, "single", True)),
            committer.submit_all(first),
            committer.submit_all(second),
            committer.submit(Event(1, "joins the second", True)),
            committer.submit_all(large),
            committer.submit(Event(1, "after the large one", True)),
        ]
        assert await asyncio.gather(*waiters) == [None] * 6  # one waiter per request
        sizes = [len(w) for w in store.writes]
        assert sizes == [61, 61, 250, 1], sizes
        assert store.writes[2] == large  # a batch of its own
        assert (await store.read(1)).unique_users == 373
    finally:
        await committer.drain()
        await store.close()


async def test_a_request_refused_as_overloaded_takes_nothing_with_it(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "tapad.db")
    await store.connect()
    committer = GroupCommitter(store, max_batch=100, max_pending=50)
    committer.start()
    try:
        queued = committer.submit_all([Event(1, f"a{i}", True) for i in range(30)])
        with pytest.raises(Overloaded):
            committer.submit_all([Event(1, f"b{i}", True) for i in range(21)])
        assert committer.pending == 30
        await queued
        alone = committer.submit_all([Event(1, f"c{i}", True) for i in range(80)])  # idle: ok
        await alone
        assert [len(w) for w in store.writes] == [30, 80]
        assert (await store.read(1)).clicks == 110
    finally:
        await committer.drain()
        await store.close()
