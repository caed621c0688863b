"""A POST given up on while its batch commits takes nothing from the other POSTs of that batch.

aiohttp cancels a handler whose client went away (or that still runs when the shutdown
timeout ends); cancelling a task cancels the future it waits on. The POSTs of one batch
must therefore not share that future: the others would be cancelled too, and their clients
would get no answer although their events are committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tapad.server.writer import GroupCommitter
from tapad.store.base import Event, HourCounts
from tapad.store.options import StoreOptions
from tapad.store.sqlite import SQLiteStore
from tests.support import wait_until_async

POSTS = 64
GONE = (0, 17, 63)  # first, middle and last of the batch


def test_a_cancelled_post_leaves_its_batch_answered_and_committed(tmp_path: Path) -> None:
    path = tmp_path / "tapad.db"

    async def main() -> tuple[list[object], HourCounts, int]:
        store = SQLiteStore(str(path), StoreOptions(timeout=30), synchronous="normal")
        await store.connect()
        committer = GroupCommitter(store)
        committer.start()
        # Another connection holds the write lock: the batch stays in flight, waiting for it.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            posts = [
                asyncio.ensure_future(committer.submit(Event(1, f"u{i}", True)))
                for i in range(POSTS)
            ]
            await wait_until_async(
                lambda: not committer._batches, what="the committer taking the whole batch"
            )
            assert committer.pending == POSTS and not committer._batches
            for i in GONE:
                posts[i].cancel()
            assert all(posts[i].cancelled() for i in GONE)  # the batch still waits
            await asyncio.sleep(0)  # one turn of the loop: the cancellations' callbacks run
            blocker.execute("ROLLBACK")
            async with asyncio.timeout(30):
                outcomes = await asyncio.gather(*posts, return_exceptions=True)
                later = await committer.submit(Event(1, "later", False))  # still committing
            await committer.drain()
            return [*outcomes, later], await store.read(1), committer.pending
        finally:
            blocker.close()
            await store.close()

    outcomes, counts, pending = asyncio.run(main())
    answered = [o for i, o in enumerate(outcomes[:POSTS]) if i not in GONE]
    assert answered == [None] * (POSTS - len(GONE)), answered  # committed, not cancelled
    assert all(isinstance(outcomes[i], asyncio.CancelledError) for i in GONE)
    assert outcomes[POSTS] is None
    assert counts == HourCounts(POSTS + 1, POSTS, 1)  # the given-up events were committed too
    assert pending == 0
