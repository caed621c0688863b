"""SQLite reads of many hours: a run of consecutive hours is one range query, same answers."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from tapad.store.base import Event, HourCounts
from tapad.store.sqlite import SQLiteStore, consecutive_runs

HOUR = 480_000


def test_consecutive_runs() -> None:
    assert consecutive_runs([5, 3, 4, 9, 10, 1, 4]) == [(1, 1), (3, 5), (9, 10)]
    assert consecutive_runs([]) == []


def test_many_hours_read_the_same_as_one_at_a_time(tmp_path: Path) -> None:
    rng = random.Random(13)

    async def go() -> None:
        store = SQLiteStore(str(tmp_path / "t.db"), synchronous="normal")
        await store.connect()
        try:
            events = [
                Event(rng.randint(HOUR - 50, HOUR + 800), f"u{i % 700}", rng.random() < 0.3)
                for i in range(4000)
            ]
            await store.write(events)
            singles = {h: (await store.read_hours([h]))[0] for h in range(HOUR - 60, HOUR + 820)}
            assert sum(c.clicks + c.impressions for c in singles.values()) == 4000
            for _ in range(200):
                hours = [rng.randint(HOUR - 60, HOUR + 810) for _ in range(rng.randint(1, 30))]
                start = rng.randint(HOUR - 60, HOUR + 700)
                hours += list(range(start, start + rng.randint(1, 110)))
                rng.shuffle(hours)
                assert await store.read_hours(hours) == [singles[h] for h in hours]
            full = await store.read_hours(list(range(HOUR, HOUR + 744)))
            assert full == [singles[h] for h in range(HOUR, HOUR + 744)]
            assert await store.read_hours(list(range(1, 745))) == [HourCounts()] * 744
        finally:
            await store.close()

    asyncio.run(go())
