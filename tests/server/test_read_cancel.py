"""A GET given up on while its read is out takes nothing from the other GETs of that read.

GETs for one hour share one store read (``CoalescingReader``). aiohttp cancels a handler
whose client went away (or that still runs when the shutdown timeout ends), and cancelling
a task cancels the future it waits on: if the GETs shared that future, the others would be
cancelled too and their clients would get no answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tapad.server.reader import CoalescingReader
from tapad.store.base import Event, HourCounts
from tests.server.test_reader import SlowReadStore
from tests.support import wait_until_async

HOUR = 7
GETS = 48
GONE = (0, 20, 47)


def test_a_cancelled_get_leaves_its_read_answered(tmp_path: Path) -> None:
    async def main() -> tuple[list[object], int]:
        store = SlowReadStore(tmp_path / "tapad.db", delay=0.3)
        await store.connect()
        try:
            await store.write([Event(HOUR, "a", True), Event(HOUR, "b", False)])
            reader = CoalescingReader(store)
            gets = [asyncio.ensure_future(reader.read(HOUR)) for _ in range(GETS)]
            # the read is out, every GET waits for it
            await wait_until_async(lambda: store.reads, what="the read in flight")
            for i in GONE:
                gets[i].cancel()
            async with asyncio.timeout(30):
                outcomes = await asyncio.gather(*gets, return_exceptions=True)
                later = await reader.read(HOUR)  # the reader still reads
            return [*outcomes, later], store.reads
        finally:
            await store.close()

    outcomes, reads = asyncio.run(main())
    counts = HourCounts(2, 1, 1)
    answered = [o for i, o in enumerate(outcomes[:GETS]) if i not in GONE]
    assert answered == [counts] * (GETS - len(GONE)), answered[:5]
    assert all(isinstance(outcomes[i], asyncio.CancelledError) for i in GONE)
    assert outcomes[GETS] == counts
    assert reads == 2  # all 48 GETs shared one read
