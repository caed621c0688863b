"""``--retention-hours R`` on SQLite: old hours go, the current one stays, the file shrinks."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from tapad.buckets import MS_PER_HOUR, current_hour
from tapad.store.base import Event, HourCounts
from tapad.store.options import StoreOptions
from tapad.store.sqlite import SQLiteStore
from tapad.store.sqlite_retention import DELETE_ROWS
from tests.support import TapadServer, http, parse_counts, wait_until, wait_until_async


def rows_per_hour(path: Path) -> dict[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:  # sqlite3's own "with" never closes
        return dict(conn.execute("SELECT hour, count(*) FROM hour_users GROUP BY hour"))


def counter_hours(path: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:  # sqlite3's own "with" never closes
        return [h for (h,) in conn.execute("SELECT hour FROM hours ORDER BY hour")]


def pragma(path: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:  # sqlite3's own "with" never closes
        value: int = conn.execute(f"PRAGMA {name}").fetchone()[0]
        return value


def events(hour: int, users: int, prefix: str = "u") -> list[Event]:
    return [Event(hour, f"{prefix}{i:07d}-a-longish-user-name", i % 3 == 0) for i in range(users)]


class Clock:
    """Unix time the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def fill(store: SQLiteStore, batches: list[list[Event]]) -> None:
    for batch in batches:
        await store.write(batch)


def test_sweep_removes_hours_past_retention_keeps_the_rest_and_shrinks_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    h = 480_000  # any hour; the clock says it is the current one
    clock = Clock(h * 3600 + 1800)

    async def go() -> None:
        store = SQLiteStore(
            str(path),
            StoreOptions(retention_hours=2),
            synchronous="normal",
            clock=clock,
            sweep_every=None,
        )
        await store.connect()
        try:
            old = h - 3  # ended 2.5 hours ago: past a 2-hour retention
            await fill(store, [events(old, 3 * DELETE_ROWS + 17), events(h - 2, 10), events(h, 5)])
            assert pragma(path, "auto_vacuum") == 2, "a retention store vacuums incrementally"
            pages_full = pragma(path, "page_count")
            # reads answer zeros from the deadline on, before any sweep
            before = await store.read_hours([old, h - 2, h])
            assert before == [HourCounts(), HourCounts(10, 4, 6), HourCounts(5, 2, 3)]
            assert rows_per_hour(path)[old] == 3 * DELETE_ROWS + 17, "not swept yet"

            removed = await store.sweep()
            assert removed == 3 * DELETE_ROWS + 17 + 1  # the users and the hour's counters
            assert rows_per_hour(path) == {h - 2: 10, h: 5}
            assert counter_hours(path) == [h - 2, h]
            assert pragma(path, "freelist_count") == 0
            assert pragma(path, "page_count") < pages_full / 2, "freed pages not given back"

            # an hour later h - 2 is past its retention too; h stays
            clock.now += 3600
            assert (await store.read_hours([h - 2]))[0] == HourCounts()
            assert await store.sweep() == 11
            assert rows_per_hour(path) == {h: 5}
            assert await store.read_hours([h]) == [HourCounts(5, 2, 3)]
            assert await store.sweep() == 0
        finally:
            await store.close()

    asyncio.run(go())


def test_an_existing_file_is_converted_to_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    h = 480_000

    async def go() -> None:
        plain = SQLiteStore(str(path), synchronous="normal")
        await plain.connect()
        await fill(plain, [events(h - 10, 3000), events(h, 3)])
        await plain.close()
        assert pragma(path, "auto_vacuum") == 0

        store = SQLiteStore(
            str(path),
            StoreOptions(retention_hours=1),
            synchronous="normal",
            clock=Clock(h * 3600 + 60),
            sweep_every=None,
        )
        await store.connect()
        try:
            assert await store.sweep() == 3001
        finally:
            await store.close()

    asyncio.run(go())
    assert pragma(path, "auto_vacuum") == 2
    assert rows_per_hour(path) == {h: 3}
    assert pragma(path, "freelist_count") == 0


def test_posts_go_on_while_a_large_hour_is_swept(tmp_path: Path) -> None:
    """The sweep is many short steps on the writer thread, not one long transaction:
    a batch written meanwhile is committed before the sweep ends."""
    path = tmp_path / "t.db"
    h = 480_000

    async def go() -> None:
        store = SQLiteStore(
            str(path),
            StoreOptions(retention_hours=1),
            synchronous="normal",
            clock=Clock(h * 3600 + 60),
            sweep_every=None,
        )
        await store.connect()
        try:
            await fill(store, [events(h - 5, 2000, f"b{b}-") for b in range(20)])  # 40,000 rows
            sweep = asyncio.ensure_future(store.sweep())
            await wait_until_async(  # until the first step is in
                lambda: rows_per_hour(path).get(h - 5) != 40_000, 60, interval=0.001
            )
            await store.write([Event(h, "during-the-sweep", True)])
            assert rows_per_hour(path).get(h - 5, 0) > 0, "the write waited for the whole sweep"
            assert await sweep == 40_001
            assert await store.read_hours([h]) == [HourCounts(1, 1, 0)]
        finally:
            await store.close()

    asyncio.run(go())


def test_serve_with_retention_on_sqlite(tmp_path: Path) -> None:
    """A real server: old hours in the file go at start, a late POST for one reads zero,
    the current hour is kept."""
    url = f"sqlite:///{tmp_path}/t.db"
    now = current_hour()
    plain = TapadServer(url).start()
    try:
        for hour, user in [(now - 30, "old"), (now - 4, "older"), (now - 1, "recent"), (now, "a")]:
            ts = hour * MS_PER_HOUR + 7
            assert http("POST", f"{plain.url}/analytics?timestamp={ts}&user={user}&click")[0] == 200
    finally:
        assert plain.stop() == 0

    server = TapadServer(url, "--retention-hours", "2").start()
    try:
        wait_until(
            lambda: set(rows_per_hour(tmp_path / "t.db")) == {now - 1, now},
            30,
            interval=0.05,
            what="the old hours removed",
        )

        def get(hour: int) -> dict[str, int]:
            status, _, body = http("GET", f"{server.url}/analytics?timestamp={hour * MS_PER_HOUR}")
            assert status == 200
            return parse_counts(body)

        assert get(now) == {"unique_users": 1, "clicks": 1, "impressions": 0}
        assert get(now - 1)["clicks"] == 1
        assert get(now - 4) == {"unique_users": 0, "clicks": 0, "impressions": 0}
        late = (now - 5) * MS_PER_HOUR
        assert http("POST", f"{server.url}/analytics?timestamp={late}&user=late&click")[0] == 200
        assert get(now - 5)["clicks"] == 0, "an hour past its retention reads zero at once"
        _, _, body = http(
            "GET",
            f"{server.url}/analytics/hours?from={(now - 3) * MS_PER_HOUR}&to={now * MS_PER_HOUR}",
        )
        assert '"clicks": 1' in body and body.count('"clicks": 0') == 2
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("value", ["0", "-1"])
def test_retention_below_one_hour_is_refused(tmp_path: Path, value: str) -> None:
    server = TapadServer(f"sqlite:///{tmp_path}/t.db", "--retention-hours", value)
    server.start(wait=False)
    assert server.wait(30) == 2
    assert "--retention-hours" in server.log.decode()
