"""The group committer survives a POST given up on while its batch commits.

POSTs of one batch share one future, so a handler cancelled while waiting (aiohttp cancels
what still runs when the shutdown timeout ends) cancels it for the whole batch. The committer
must carry on: the batch is still committed and every later POST is answered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tapad.server.writer import GroupCommitter
from tapad.store.base import Event, HourCounts
from tapad.store.sqlite import SQLiteStore


def test_a_cancelled_post_does_not_stop_the_committer(tmp_path: Path) -> None:
    async def main() -> HourCounts:
        store = SQLiteStore(str(tmp_path / "tapad.db"), synchronous="normal")
        await store.connect()
        committer = GroupCommitter(store)
        committer.start()

        async def post(user: str) -> None:
            await committer.submit(Event(1, user, True))

        try:
            gone = asyncio.ensure_future(post("a"))
            await asyncio.sleep(0)  # its batch is being committed
            gone.cancel()
            async with asyncio.timeout(5):
                await post("b")  # a later POST is still answered
            await committer.drain()
            return await store.read(1)
        finally:
            await store.close()

    assert run(main()) == HourCounts(2, 2, 0)  # and the cancelled POST's event was committed


run = asyncio.run
