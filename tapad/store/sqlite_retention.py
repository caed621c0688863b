"""``--retention-hours`` on SQLite: remove hours past their retention, give the space back.

Redis lets keys expire by themselves; SQLite needs a sweep. The store runs one at start
and then every ``SWEEP_EVERY`` seconds. Each step below is one short transaction on the
writer's own thread and connection, so batches of POSTs queue between steps rather than
behind a whole sweep: an hour with a million users is removed ``DELETE_ROWS`` rows at a
time, and the pages freed go back to the file system ``VACUUM_PAGES`` at a time
(``auto_vacuum = INCREMENTAL``), so the file shrinks instead of only stopping to grow.

Reads do not wait for the sweep: the store answers zeros for an hour past its retention
from that moment on (``expired``), as a Redis key past its EXPIREAT would.
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger("tapad.store")

SWEEP_EVERY = 30.0  # seconds between sweeps: an hour's rows go within this of its deadline
DELETE_ROWS = 5_000  # (hour, user) rows per transaction: a few milliseconds of the writer
VACUUM_PAGES = 2_000  # pages handed back per transaction (8 MB at 4 KiB pages)
INCREMENTAL = 2  # PRAGMA auto_vacuum value


def prepare(conn: sqlite3.Connection) -> None:
    """Switch the file to incremental auto-vacuum, once.

    A new file switches at once; a file made before needs one VACUUM (a rewrite of the
    whole file, so it is logged), after which every sweep can shrink it.
    """
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    if mode == INCREMENTAL:
        return
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    log.info("retention: rewriting the sqlite file once for incremental vacuum (%d pages)", pages)
    conn.execute("VACUUM")


def delete_chunk(conn: sqlite3.Connection, oldest_kept: int) -> int:
    """Remove up to ``DELETE_ROWS`` rows of hours before ``oldest_kept``; 0 when none are left.

    The per-hour counters go last, once their hours' users are all gone.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        removed = conn.execute(
            "DELETE FROM hour_users WHERE (hour, user) IN "
            "(SELECT hour, user FROM hour_users WHERE hour < ? LIMIT ?)",
            (oldest_kept, DELETE_ROWS),
        ).rowcount
        if removed < DELETE_ROWS:
            removed += conn.execute("DELETE FROM hours WHERE hour < ?", (oldest_kept,)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return removed


def hour_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table with an ``hour`` column: each holds part of an hour (counts, users, ids)."""
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return [
        t
        for t in tables
        if any(col[1] == "hour" for col in conn.execute(f'PRAGMA table_info("{t}")'))
    ]


def hours_with_rows(conn: sqlite3.Connection, hours: set[int]) -> list[int]:
    """Those of ``hours`` that have a row in any table, oldest first."""
    if not hours:
        return []
    low, high = min(hours), max(hours)
    found: set[int] = set()
    for table in hour_tables(conn):
        found.update(
            hour
            for (hour,) in conn.execute(
                f'SELECT DISTINCT hour FROM "{table}" WHERE hour BETWEEN ? AND ?', (low, high)
            )
        )
    return sorted(found & hours)


def delete_hour(conn: sqlite3.Connection, hour: int) -> int:
    """Remove one hour's rows from every table, in one transaction; return the rows.

    ``tapad delete``: unlike a retention sweep, an hour goes whole or not at all, so a
    server writing it meanwhile sees its batch land before (and removed) or after (kept)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        removed = 0
        for table in hour_tables(conn):
            removed += conn.execute(f'DELETE FROM "{table}" WHERE hour = ?', (hour,)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return removed


def incremental(conn: sqlite3.Connection) -> bool:
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    return bool(mode == INCREMENTAL)


def forget_ids(conn: sqlite3.Connection, oldest_kept: int) -> int:
    """Remove up to ``DELETE_ROWS`` remembered ids of hours before ``oldest_kept``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        removed = conn.execute(
            "DELETE FROM hour_ids WHERE (hour, user, id) IN "
            "(SELECT hour, user, id FROM hour_ids WHERE hour < ? LIMIT ?)",
            (oldest_kept, DELETE_ROWS),
        ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(removed)


def vacuum_chunk(conn: sqlite3.Connection) -> int:
    """Hand up to ``VACUUM_PAGES`` free pages back to the file system; return how many."""
    (before,) = conn.execute("PRAGMA freelist_count").fetchone()
    if not before:
        return 0
    conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
    (after,) = conn.execute("PRAGMA freelist_count").fetchone()
    return int(before - after)
