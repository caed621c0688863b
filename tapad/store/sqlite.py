"""The embedded default store: one SQLite file in WAL mode.

Like datasette, one thread owns the write connection; every batch becomes one
transaction on it, so group commit turns many POSTs into one fsync. WAL lets reads
run beside the writer and see every committed batch. An hour's read is one row by
primary key, about 2 us, while handing it to a thread and back costs the event loop
ten times that (a work queue, a wake-up of the loop, two futures): so it runs on
the event loop itself, on a connection that never waits for a lock. In the rare
moment SQLite answers "busy" (another process recovering the WAL, say) that read
goes to the read thread instead, whose connection waits up to ``busy_timeout``
like the writer's; so do listing the hours and pings. Several processes may open
the same file; SQLite's file lock serialises their writers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tapad.store.base import Event, HourCounts, StoreConfigError, StoreError, aggregate

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS hours (
    hour INTEGER PRIMARY KEY,
    unique_users INTEGER NOT NULL DEFAULT 0,
    clicks INTEGER NOT NULL DEFAULT 0,
    impressions INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS hour_users (
    hour INTEGER NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (hour, user)
) WITHOUT ROWID;
"""

ADD_TO_HOUR = """
INSERT INTO hours (hour, unique_users, clicks, impressions) VALUES (?, ?, ?, ?)
ON CONFLICT (hour) DO UPDATE SET
    unique_users = unique_users + excluded.unique_users,
    clicks = clicks + excluded.clicks,
    impressions = impressions + excluded.impressions
"""

SYNCHRONOUS = ("full", "normal", "extra")


class SQLiteStore:
    unique_mode = "exact"

    def __init__(self, path: str, *, timeout: float = 1.0, synchronous: str = "full") -> None:
        if synchronous not in SYNCHRONOUS:
            raise StoreConfigError(
                f"sqlite synchronous={synchronous!r}: use one of {', '.join(SYNCHRONOUS)}"
            )
        self.path = Path(path)
        self._timeout = timeout
        self._synchronous = synchronous
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="tapad-sqlite-write")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="tapad-sqlite-read")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # on the read thread
        self._loop_reader: sqlite3.Connection | None = None  # on the event loop, never waits

    # -- lifecycle -------------------------------------------------------

    async def connect(self) -> None:
        """Create the folder and schema now, so a bad path fails at start with one line."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreConfigError(f"cannot create {self.path.parent}: {exc.strerror}") from None
        await self._on(self._write_thread, self._writer_conn)

    async def close(self) -> None:
        if self._loop_reader is not None:
            self._loop_reader.close()
            self._loop_reader = None
        for pool, attr in ((self._write_thread, "_writer"), (self._read_thread, "_reader")):
            conn = getattr(self, attr)
            if conn is not None:
                await asyncio.wrap_future(pool.submit(conn.close))
                setattr(self, attr, None)
            pool.shutdown(wait=True)

    # -- the interface ---------------------------------------------------

    async def write(self, events: Sequence[Event]) -> None:
        await self._on(self._write_thread, self._write_batch, events)

    async def read(self, hour: int) -> HourCounts:
        return (await self.read_hours((hour,)))[0]

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        if self._writer is not None:  # connected: the file, WAL mode and schema are there
            try:
                conn = self._loop_reader_conn()
                return [self._read_hour(conn, hour) for hour in hours]
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise StoreError(f"sqlite: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
        return await self._on(self._read_thread, self._read_hours_on_thread, hours)

    async def hours(self) -> list[int]:
        return await self._on(self._read_thread, self._list_hours)

    async def ping(self) -> None:
        await self._on(self._read_thread, lambda: self._reader_conn().execute("SELECT 1"))

    # -- on the threads --------------------------------------------------

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.wrap_future(pool.submit(fn, *args))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        except RuntimeError as exc:  # pool shut down
            raise StoreError(f"sqlite: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.OperationalError as exc:
            raise StoreConfigError(f"cannot open {self.path}: {exc}") from None
        conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            conn = self._open()
            conn.executescript(SCHEMA)
            self._writer = conn
        return self._writer

    def _reader_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._open()
        return self._reader

    def _loop_reader_conn(self) -> sqlite3.Connection:
        if self._loop_reader is None:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 0")  # busy: go to the read thread instead
            self._loop_reader = conn
        return self._loop_reader

    def _write_batch(self, events: Sequence[Event]) -> None:
        conn = self._writer_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for (hour, _), (users, clicks, impressions) in aggregate(events).items():
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO hour_users (hour, user) VALUES (?, ?)",
                    [(hour, user) for user in users],
                )
                new_users = conn.total_changes - before
                conn.execute(ADD_TO_HOUR, (hour, new_users, clicks, impressions))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _read_hours_on_thread(self, hours: Sequence[int]) -> list[HourCounts]:
        conn = self._reader_conn()
        return [self._read_hour(conn, hour) for hour in hours]

    @staticmethod
    def _read_hour(conn: sqlite3.Connection, hour: int) -> HourCounts:
        try:
            row = conn.execute(
                "SELECT unique_users, clicks, impressions FROM hours WHERE hour = ?", (hour,)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return HourCounts()
            raise
        return HourCounts(*row) if row else HourCounts()

    def _list_hours(self) -> list[int]:
        try:
            rows = self._reader_conn().execute("SELECT hour FROM hours ORDER BY hour DESC")
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [hour for (hour,) in rows]


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock for now."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
