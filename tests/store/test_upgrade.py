"""A store written by the release before event ids keeps working: its SQLite file has no
``hour_ids`` table (made in place when the store opens it), and what it counted stays."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tapad.buckets import current_hour
from tapad.store import Event, HourCounts, open_store

HOUR = current_hour()

# The schema of the release before ids, as it made its files.
BEFORE_IDS = """
CREATE TABLE hours (
    hour INTEGER PRIMARY KEY,
    unique_users INTEGER NOT NULL DEFAULT 0,
    clicks INTEGER NOT NULL DEFAULT 0,
    impressions INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE hour_users (
    hour INTEGER NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (hour, user)
) WITHOUT ROWID;
"""


def make_old_file(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.executescript(BEFORE_IDS)
        conn.execute("INSERT INTO hours VALUES (?, 2, 3, 1)", (HOUR,))
        conn.executemany("INSERT INTO hour_users VALUES (?, ?)", [(HOUR, "alice"), (HOUR, "bob")])
        conn.commit()
    finally:
        conn.close()


def tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


async def test_a_file_made_before_ids_takes_events_with_ids(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_old_file(db)
    assert "hour_ids" not in tables(db)
    store = open_store(f"sqlite:///{db}")
    await store.connect()
    try:
        first = await store.write(
            [Event(HOUR, "alice", True, "r1"), Event(HOUR, "carol", False, "r2")]
        )
        retry = await store.write(
            [Event(HOUR, "alice", True, "r1"), Event(HOUR, "carol", False, "r2")]
        )
        plain = await store.write([Event(HOUR, "dave", True)])  # as the old release wrote
        counts = await store.read(HOUR)
    finally:
        await store.close()
    assert (first, retry, plain) == (frozenset(), frozenset({0, 1}), frozenset())
    # the old counts (2 users, 3 clicks, 1 impression) kept, each new event counted once
    assert counts == HourCounts(unique_users=4, clicks=5, impressions=2)
    assert "hour_ids" in tables(db)
