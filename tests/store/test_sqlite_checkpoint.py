"""SQLite's checkpoints beside the writer: committed pages reach the database file without
waiting for the WAL to fill, and the thread that copies them ends with the store."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from tapad.store.base import Event
from tapad.store.sqlite import WAL_PAGES, SQLiteStore
from tests.support import wait_until_async

HOUR = 490_000
USERS = 20_000  # a few hundred pages of the hour_users index: far below WAL_PAGES


def checkpoint_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "tapad-sqlite-checkpoint"]


def test_committed_pages_reach_the_database_file_beside_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "t.db"

    async def go() -> None:
        store = SQLiteStore(str(db))
        await store.connect()
        try:
            size_before = db.stat().st_size
            for start in range(0, USERS, 1_000):
                await store.write(
                    [Event(HOUR, f"user-{i}", False) for i in range(start, start + 1_000)]
                )
            # The WAL holds far fewer frames than the writer's own checkpoint waits for, so
            # only a checkpoint beside it can have grown the database file.
            await wait_until_async(
                lambda: db.stat().st_size > size_before + 100 * 4096,
                timeout=30,
                what="the database file to grow by the pages committed to the WAL",
            )
            assert checkpoint_threads() == ["tapad-sqlite-checkpoint"]
            wal_frames = Path(f"{db}-wal").stat().st_size // (4096 + 24)
            assert wal_frames < WAL_PAGES, "the writer's own checkpoint may have run"
        finally:
            await store.close()
        assert checkpoint_threads() == [], "the checkpoint thread outlived the store"

    asyncio.run(go())
    # Everything committed is in the database file itself now, whatever the WAL holds.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute(
            "SELECT unique_users FROM hours WHERE hour = ?", (HOUR,)
        ).fetchone() == (USERS,)
        assert conn.execute("SELECT count(*) FROM hour_users").fetchone() == (USERS,)
    finally:
        conn.close()
