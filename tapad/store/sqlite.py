"""The embedded default store: one SQLite file in WAL mode.

Like datasette, one thread owns the write connection; every batch becomes one
transaction on it, so group commit turns many POSTs into one fsync. WAL lets reads
run beside the writer and see every committed batch. An hour's read is one row by
primary key, much cheaper than handing it to a thread and back costs the event loop
(a work queue, a wake-up of the loop, two futures; figures in docs/benchmarks.md): so it runs on
the event loop itself, on a connection that never waits for a lock. In the rare
moment SQLite answers "busy" (another process recovering the WAL, say) that read
goes to the read thread instead, whose connection waits up to ``busy_timeout``
like the writer's; so do listing the hours and pings. A third thread copies the WAL into
the file (``BackgroundCheckpoint``), so that work is not done inside a batch's COMMIT.
Several processes may open the same file; SQLite's file lock serialises their writers.

A write's outcome is never guessed (see ``Store.write``). Waiting for the lock is bounded
by ``busy_timeout`` (the store timeout): a batch that could not start was not applied
(503). A write still running after the store timeout (a disk that stalls) is told to
stop: the thread rolls back instead of committing, and ``Connection.interrupt`` ends the
statement running. Its answer waits for the thread to say how the write ended, applied
or rolled back, up to the commit deadline; only a write still running then is unknown
(``CommitUnknown``, 504), and it may yet commit when the disk comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tapad.buckets import oldest_kept_hour
from tapad.store import sqlite_retention as retention
from tapad.store.base import (
    CommitUnknown,
    Event,
    HourCounts,
    InDoubt,
    StoreConfigError,
    StoreError,
    aggregate,
)
from tapad.store.options import StoreOptions

T = TypeVar("T")
log = logging.getLogger("tapad.store")

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
READ_RUN = "SELECT hour, unique_users, clicks, impressions FROM hours WHERE hour BETWEEN ? AND ?"
RUN_READ_FROM = 8  # consecutive hours read with one range query instead of a lookup each
# The WAL's length that starts a checkpoint, in pages (SQLite's default is 1000). The
# checkpoint runs inside the COMMIT that crosses it, so that batch and the one queued
# behind it wait for it: every 45 batches with 1000 pages, a p99 made of checkpoints.
# Ten times rarer, and each writes little more (a page changed many times is copied
# once): docs/benchmarks.md, "SQLite's write path".
WAL_PAGES = 10_000
# Most of the copying is done beside the writer, by a thread of its own that checkpoints
# what each CHECKPOINT_EVERY brought (PASSIVE: it never blocks a writer or a reader). The
# writer's own checkpoint at WAL_PAGES is left only the frames committed since, and is
# still the one that lets the WAL start over (docs/benchmarks.md, "As the hour fills").
CHECKPOINT_EVERY = 0.05  # s
HAND_OVER = 0.001  # s: the longest the event loop waits for the write thread's statements
NO_EVENTS = HourCounts()


class SQLiteStore:
    unique_mode = "exact"

    def __init__(
        self,
        path: str,
        options: StoreOptions = StoreOptions(),
        *,
        synchronous: str = "full",
        clock: Callable[[], float] = time.time,
        sweep_every: float | None = retention.SWEEP_EVERY,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise StoreConfigError(
                f"sqlite synchronous={synchronous!r}: use one of {', '.join(SYNCHRONOUS)}"
            )
        self.path = Path(path)
        self._timeout = timeout = options.timeout
        self._commit_deadline = max(options.commit_deadline, timeout)
        self._synchronous = synchronous
        self._wait_for_lock = f"PRAGMA busy_timeout = {int(timeout * 1000)}"
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="tapad-sqlite-write")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="tapad-sqlite-read")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # on the read thread
        self._loop_reader: sqlite3.Connection | None = None  # on the event loop, never waits
        if options.retention_hours is not None and options.retention_hours < 1:
            raise StoreConfigError("retention must be at least 1 hour")
        self.retention_hours = options.retention_hours  # None: keep every hour
        self._clock = clock  # Unix time; tests and bench/retention.py move it
        self._sweep_every = sweep_every  # None: no sweeps of its own, the caller calls sweep()
        self.in_doubt = InDoubt()  # stays zero: a commit's outcome is known once it returns
        self.fault: str | None = None  # never set: SQLite has no partly applied batch
        self._sweeper: asyncio.Task[None] | None = None
        self._checkpointer: BackgroundCheckpoint | None = None

    # -- lifecycle -------------------------------------------------------

    async def connect(self) -> None:
        """Create the folder and schema now, so a bad path fails at start with one line."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreConfigError(f"cannot create {self.path.parent}: {exc.strerror}") from None
        if self.retention_hours is not None and self._sweep_every and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        await self._on(self._write_thread, self._writer_conn)
        if self._checkpointer is None:
            self._checkpointer = BackgroundCheckpoint(self._open)
        if self.retention_hours is not None:
            await self._on(self._write_thread, lambda: retention.prepare(self._writer_conn()))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop, self._timeout)
            self._checkpointer = None
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
        loop = asyncio.get_running_loop()
        stop = threading.Event()  # set: roll back instead of committing
        committing = threading.Lock()
        committing.acquire()  # released by the thread once its SQL is done
        ended: Ended = loop.create_future()  # the thread's outcome, or a timer's
        try:
            job = self._write_thread.submit(self._write_job, events, stop, committing, loop, ended)
        except RuntimeError as exc:  # pool shut down
            raise StoreError(f"sqlite: {exc}") from exc
        # The event loop waits here, the GIL let go, until the thread is through its
        # statements (or HAND_OVER): with the server on one core the thread would otherwise
        # wait for the GIL until the loop ran out of work, and its fsync would start that
        # much later (docs/benchmarks.md, "SQLite's write path").
        committing.acquire(timeout=HAND_OVER)
        timers: list[asyncio.TimerHandle] = []
        timers.append(loop.call_later(self._timeout, self._past_timeout, job, stop, ended, timers))
        try:
            error = await ended
        finally:
            for timer in timers:
                timer.cancel()
        if error is None:
            return
        if isinstance(error, _InDoubt):
            raise CommitUnknown(f"sqlite: COMMIT failed: {error}") from error
        if isinstance(error, sqlite3.Error):  # busy, interrupted: rolled back
            raise StoreError(f"sqlite: {error}") from error
        raise error

    def _past_timeout(
        self,
        job: Future[None],
        stop: threading.Event,
        ended: Ended,
        timers: list[asyncio.TimerHandle],
    ) -> None:
        """The store timeout passed with the write unfinished: a write still queued is
        cancelled (503); one running is told to roll back, and its outcome awaited up to
        the commit deadline, after which it is unknown (504)."""
        if ended.done():
            return
        if job.cancel():  # queued behind a write that is still stalled: never started
            settle(ended, StoreError("sqlite: a stalled write holds the connection"))
            return
        stop.set()
        if self._writer is not None:
            self._writer.interrupt()
        unknown = CommitUnknown(f"sqlite: a write still running after {self._commit_deadline:g}s")
        loop = ended.get_loop()
        timers.append(
            loop.call_later(self._commit_deadline - self._timeout, settle, ended, unknown)
        )

    async def read(self, hour: int) -> HourCounts:
        return (await self.read_hours((hour,)))[0]

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        if self._writer is not None:  # connected: the file, WAL mode and schema are there
            try:
                conn = self._loop_reader_conn()
                return self._kept(hours, self._read_many(conn, hours))
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise StoreError(f"sqlite: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
        return self._kept(
            hours, await self._on(self._read_thread, self._read_hours_on_thread, hours)
        )

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
        conn.execute(self._wait_for_lock)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            conn = self._open()
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES}")
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

    def _write_job(
        self,
        events: Sequence[Event],
        stop: threading.Event,
        committing: threading.Lock,
        loop: asyncio.AbstractEventLoop,
        ended: Ended,
    ) -> None:
        """On the write thread: write the batch, then hand its outcome to the event loop with
        one ``call_soon_threadsafe``. (``asyncio.wrap_future`` and ``asyncio.wait`` took
        three passes of the loop to bring it to the committer, each queued behind the
        requests that had arrived meanwhile.)"""
        try:
            self._write_batch(events, stop, committing)
            error: Exception | None = None
        except Exception as exc:  # raised by write() on the event loop
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, ended, error)

    def _write_batch(
        self, events: Sequence[Event], stop: threading.Event, committing: threading.Lock
    ) -> None:
        """One transaction; ``stop`` set (the write took too long) rolls it back.
        ``committing`` is released when the statements are done, just before the COMMIT,
        when they fail, or when another process holds the write lock: the event loop
        waits for that (see ``write``), but not for another process's commit."""
        released = False

        def go_on() -> None:  # the event loop stops waiting (once)
            nonlocal released
            if not released:
                released = True
                committing.release()

        try:
            conn = self._writer_conn()
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                go_on()
                conn.execute(self._wait_for_lock)
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(self._wait_for_lock)
        except BaseException:
            go_on()
            raise
        try:
            try:
                for (hour, _), (users, clicks, impressions) in aggregate(events).items():
                    before = conn.total_changes
                    conn.executemany(
                        "INSERT OR IGNORE INTO hour_users (hour, user) VALUES (?, ?)",
                        [(hour, user) for user in users],
                    )
                    new_users = conn.total_changes - before
                    conn.execute(ADD_TO_HOUR, (hour, new_users, clicks, impressions))
            finally:
                go_on()
            if stop.is_set():
                raise sqlite3.OperationalError("interrupted: past the store timeout")
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # Busy or interrupted, the COMMIT did not happen. Any other failure (an I/O
                # error while the WAL was written or synced) may have left a commit that a
                # later recovery finds.
                if not (is_busy(exc) or is_interrupted(exc)):
                    raise _InDoubt(str(exc)) from exc
                raise
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # closing rolls back; the next write opens anew
                    self._writer = None
                    conn.close()
            raise

    def _read_hours_on_thread(self, hours: Sequence[int]) -> list[HourCounts]:
        return self._read_many(self._reader_conn(), hours)

    @staticmethod
    def _read_many(conn: sqlite3.Connection, hours: Sequence[int]) -> list[HourCounts]:
        """Each hour by primary key, but a run of consecutive hours (the range of a
        ``GET /analytics/hours``, up to 744) in one range query: a lookup each would keep
        the event loop from the hot path ten times longer."""
        if len(hours) < RUN_READ_FROM:
            return [SQLiteStore._read_hour(conn, hour) for hour in hours]
        found: dict[int, HourCounts] = {}
        for first, last in consecutive_runs(hours):
            if last - first + 1 < RUN_READ_FROM:
                found.update((h, SQLiteStore._read_hour(conn, h)) for h in range(first, last + 1))
                continue
            try:
                rows = conn.execute(READ_RUN, (first, last)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                rows = []
            found.update((hour, HourCounts(*counts)) for hour, *counts in rows)
        return [found.get(hour, NO_EVENTS) for hour in hours]

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

    # -- retention (tapad/store/sqlite_retention.py) -----------------------

    def _kept(self, hours: Sequence[int], counts: list[HourCounts]) -> list[HourCounts]:
        """Zeros for hours past their retention, whether or not the sweep has come yet."""
        if self.retention_hours is None:
            return counts
        oldest = oldest_kept_hour(self.retention_hours, self._clock())
        return [c if h >= oldest else HourCounts() for h, c in zip(hours, counts, strict=True)]

    async def sweep(self) -> int:
        """Remove every hour past its retention, step by step on the writer thread, then
        give the freed pages back. Returns the rows removed."""
        assert self.retention_hours is not None
        await self._on(self._write_thread, lambda: retention.prepare(self._writer_conn()))
        oldest = oldest_kept_hour(self.retention_hours, self._clock())
        removed = 0
        while step := await self._on(
            self._write_thread, lambda: retention.delete_chunk(self._writer_conn(), oldest)
        ):
            removed += step
        while await self._on(  # until no page is left to free (or none could be)
            self._write_thread, lambda: retention.vacuum_chunk(self._writer_conn())
        ):
            pass
        return removed

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.sweep()
                if removed:
                    log.info(
                        "retention: removed %d rows of hours past %d h",
                        removed,
                        self.retention_hours,
                    )
            except StoreError as exc:  # the store is down for now: the next sweep tries again
                log.warning("retention sweep failed: %s", exc)
            await asyncio.sleep(self._sweep_every or retention.SWEEP_EVERY)


class BackgroundCheckpoint:
    """Copies committed WAL frames into the database on a thread and connection of its own.

    SQLite checkpoints inside the COMMIT that takes the WAL past its mark, and every batch
    waits for it: with millions of users in the hour that copies thousands of pages to random
    places in the file and syncs it, tens of milliseconds with no commit. PASSIVE checkpoints
    here, each of what the last ``CHECKPOINT_EVERY`` brought, take that work off the write
    path; a reader or the writer being busy only makes one end early."""

    def __init__(self, open_connection: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_connection
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="tapad-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop, waiting at most ``timeout`` for a checkpoint under way (a stalled disk must
        not hold up the shutdown: the thread is a daemon, and SQLite finishes or redoes an
        interrupted checkpoint)."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("sqlite: a checkpoint still running after %gs; not waiting", timeout)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping.wait(CHECKPOINT_EVERY):
                try:
                    if conn is None:
                        conn = self._open()
                        conn.execute("PRAGMA busy_timeout = 0")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (sqlite3.Error, StoreConfigError) as exc:  # the writer's own still runs
                    log.debug("background checkpoint: %s", exc)
        finally:
            if conn is not None:
                conn.close()


class _InDoubt(Exception):
    """COMMIT failed in a way that does not say whether it was applied."""


Ended = asyncio.Future[Exception | None]  # how a write ended: None (committed) or its error


def settle(ended: Ended, error: Exception | None) -> None:
    """The first outcome of a write wins (the thread's, or a timer's)."""
    if not ended.done():
        ended.set_result(error)


def is_interrupted(exc: sqlite3.OperationalError) -> bool:
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_INTERRUPT
    return "interrupted" in str(exc)


def consecutive_runs(hours: Sequence[int]) -> list[tuple[int, int]]:
    """The distinct hours as (first, last) runs of consecutive hours, in order."""
    runs: list[tuple[int, int]] = []
    for hour in sorted(set(hours)):
        if runs and hour == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], hour)
        else:
            runs.append((hour, hour))
    return runs


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock for now."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
