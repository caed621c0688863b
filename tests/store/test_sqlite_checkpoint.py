"""SQLite's checkpoints beside the writer: committed pages reach the database file without
waiting for the WAL to fill, and the thread that copies them ends with the store."""

from __future__ import annotations

import asyncio
import shutil
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


def users_in_file_alone(db: Path, copy: Path) -> int:
    """How many users a copy of the database file holds without its WAL: what checkpoints
    have copied into it so far."""
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        (count,) = conn.execute("SELECT count(*) FROM hour_users").fetchone()
        return int(count)
    except sqlite3.DatabaseError:  # no table yet, or copied mid-write: not there yet
        return -1
    finally:
        conn.close()


def test_committed_pages_reach_the_database_file_beside_the_writer(tmp_path: Path) -> None:
    db, copy = tmp_path / "t.db", tmp_path / "copy.db"

    async def go() -> None:
        store = SQLiteStore(str(db))
        await store.connect()
        try:
            for start in range(0, USERS, 1_000):
                await store.write(
                    [Event(HOUR, f"user-{i}", False) for i in range(start, start + 1_000)]
                )
            wal_frames = Path(f"{db}-wal").stat().st_size // (4096 + 24)
            assert wal_frames < WAL_PAGES, "the writer's own checkpoint may have run"
            # So only a checkpoint beside the writer can bring every user into the file.
            await wait_until_async(
                lambda: users_in_file_alone(db, copy) == USERS,
                timeout=30,
                interval=0.1,
                what="every committed user in the database file itself",
            )
            assert checkpoint_threads() == ["tapad-sqlite-checkpoint"]
        finally:
            await store.close()
        assert checkpoint_threads() == [], "the checkpoint thread outlived the store"

    asyncio.run(go())
