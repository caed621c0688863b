"""The embedded default store: one SQLite file in WAL mode.

Like datasette, one thread owns the write connection; every batch becomes one
transaction on it, so group commit turns many POSTs into one fsync. WAL lets reads
run beside the writer and see every committed batch. An hour's read is one row by
primary key, much cheaper than handing it to a thread and back costs the event loop
(a work queue, a wake-up of the loop, two futures; figures in docs/performance.md): so it runs on
the event loop itself, on a connection that never waits for a lock. In the rare
moment SQLite answers "busy" (another process recovering the WAL, say) that read
goes to the read thread instead, whose connection waits up to ``busy_timeout``
like the writer's; so do listing the hours and pings. Distinct users over a range of
hours (``uniques``: one ``COUNT(DISTINCT user)``, which can read millions of rows) run on a
thread and connection of their own, so they hold up neither the writer nor those reads
(SQLite lets go of the GIL while it steps through rows). A third thread copies the WAL into
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
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tapad.buckets import oldest_kept_hour
from tapad.store import sqlite_retention as retention
from tapad.store.base import (
    NO_DUPLICATES,
    CommitUnknown,
    Duplicates,
    Event,
    HourCounts,
    InDoubt,
    StoreCondition,
    StoreConfigError,
    StoreError,
    UniqueCount,
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
CREATE TABLE IF NOT EXISTS hour_ids (
    hour INTEGER NOT NULL,
    user TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (hour, id, user)
) WITHOUT ROWID;
-- (hour, id, user), not (hour, user, id): a client's ids share a prefix and count up
-- (tapad.client, loadgen), so a batch's inserts land on a few pages of the index instead
-- of one page each (docs/performance.md, "Event ids").
"""
REMEMBER_ID = "INSERT OR IGNORE INTO hour_ids (hour, user, id) VALUES (?, ?, ?)"

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
# once): docs/performance.md, "Figures behind the code".
WAL_PAGES = 10_000
# Most of the copying is done beside the writer, by a thread of its own that checkpoints
# what each CHECKPOINT_EVERY brought (PASSIVE: it never blocks a writer or a reader). The
# writer's own checkpoint at WAL_PAGES is left only the frames committed since, and is
# still the one that lets the WAL start over (docs/performance.md, "Figures behind the code").
CHECKPOINT_EVERY = 0.05  # s
HAND_OVER = 0.001  # s: the longest the event loop waits for the write thread's statements
NO_EVENTS = HourCounts()
# Failures that SQLite answers by rolling the transaction back, never by leaving a commit
# for a later recovery to find: the disk is full (the WAL could not grow), the file or its
# file system is read-only, the journal cannot be opened. A batch that met one of them is
# known not applied (503); any other COMMIT failure (an I/O error while the WAL is synced)
# may have left a commit behind (504).
ROLLED_BACK = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
# Free space below which the write probe says the disk is still full: a failed batch leaves
# WAL frames behind past the last commit, space a tiny probe write fits in while the next
# batch (and the checkpoint, which must grow the file) would fail again.
PROBE_MIN_FREE = 1 << 20  # bytes
PROBE = (
    "CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
    "INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?)",
)
COUNT_NICENESS = 19  # the uniques thread's: it runs only on a core nothing else wants


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
        self._count_thread = ThreadPoolExecutor(1, thread_name_prefix="tapad-sqlite-uniques")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # on the read thread
        self._counter: sqlite3.Connection | None = None  # on the uniques thread
        self._loop_reader: sqlite3.Connection | None = None  # on the event loop, never waits
        if options.retention_hours is not None and options.retention_hours < 1:
            raise StoreConfigError("retention must be at least 1 hour")
        self.retention_hours = options.retention_hours  # None: keep every hour
        self.dedup_hours = options.dedup_hours  # ids are forgotten this long after their hour ends
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
        if self._sweep_every and self._sweeper is None:  # ids expire; hours with a retention
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        try:
            await self._on(self._write_thread, self._writer_conn)
        except StoreError as exc:
            # Not an outage that may pass (a 503 until it does) but a wrong --store: a file
            # SQLite cannot read as a database (a CSV, say) stays one until someone acts.
            cause = exc.__cause__
            if isinstance(cause, sqlite3.DatabaseError) and (
                getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB
            ):
                raise StoreConfigError(f"{self.path} is not a SQLite database") from None
            raise
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
        for pool, attr in (
            (self._write_thread, "_writer"),
            (self._read_thread, "_reader"),
            (self._count_thread, "_counter"),
        ):
            conn = getattr(self, attr)
            if conn is not None:
                await asyncio.wrap_future(pool.submit(conn.close))
                setattr(self, attr, None)
            pool.shutdown(wait=True)

    # -- the interface ---------------------------------------------------

    async def write(self, events: Sequence[Event]) -> Duplicates:
        loop = asyncio.get_running_loop()
        duplicates: list[Duplicates] = []  # the thread's finding, once applied
        stop = threading.Event()  # set: roll back instead of committing
        committing = threading.Lock()
        committing.acquire()  # released by the thread once its SQL is done
        ended: Ended = loop.create_future()  # the thread's outcome, or a timer's
        try:
            job = self._write_thread.submit(
                self._write_job, events, stop, committing, loop, ended, duplicates
            )
        except RuntimeError as exc:  # pool shut down
            raise StoreError(f"sqlite: {exc}") from exc
        # The event loop waits here, the GIL let go, until the thread is through its
        # statements (or HAND_OVER): with the server on one core the thread would otherwise
        # wait for the GIL until the loop ran out of work, and its fsync would start that
        # much later (docs/performance.md, "Figures behind the code").
        committing.acquire(timeout=HAND_OVER)
        timers: list[asyncio.TimerHandle] = []
        timers.append(loop.call_later(self._timeout, self._past_timeout, job, stop, ended, timers))
        try:
            error = await ended
        finally:
            for timer in timers:
                timer.cancel()
        if error is None:
            return duplicates[0] if duplicates else NO_DUPLICATES
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

    async def probe_write(self) -> None:
        """One tiny committed write to a table of its own (a transaction rolled back would
        never reach the disk, and a full disk shows only when the WAL must grow), on the
        write thread, within the store timeout; first, at least ``PROBE_MIN_FREE`` free."""
        free = self.condition().disk_free_bytes
        if free is not None and free < PROBE_MIN_FREE:
            raise StoreError(f"sqlite: the disk is full ({free} bytes free)")
        try:
            async with asyncio.timeout(self._timeout):
                await self._on(self._write_thread, self._probe_on_thread)
        except TimeoutError:
            raise StoreError("sqlite: the write probe timed out") from None

    def _probe_on_thread(self) -> None:
        conn = self._writer_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(PROBE[0])
            conn.execute(PROBE[1], (time.time(),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def condition(self) -> StoreCondition:
        """The free space of the database's file system, for /metrics (one statvfs)."""
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return StoreCondition()
        return StoreCondition(disk_free_bytes=fs.f_bavail * fs.f_frsize)

    async def uniques(self, hours: Sequence[int]) -> UniqueCount:
        """Always exact: the hours' user rows are there to count (docs/uniques.md)."""
        if self.retention_hours is not None:
            oldest = oldest_kept_hour(self.retention_hours, self._clock())
            hours = [hour for hour in hours if hour >= oldest]
        if not hours:
            return UniqueCount(0, True)
        count = await self._on(self._count_thread, self._count_distinct, hours)
        return UniqueCount(count, True)

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
        with closed_on_error(conn):  # not a database, say: one line, and no connection left
            conn.execute(self._wait_for_lock)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            conn = self._open()
            with closed_on_error(conn):
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
            with closed_on_error(conn):
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
        duplicates: list[Duplicates],
    ) -> None:
        """On the write thread: write the batch, then hand its outcome to the event loop with
        one ``call_soon_threadsafe``. (``asyncio.wrap_future`` and ``asyncio.wait`` took
        three passes of the loop to bring it to the committer, each queued behind the
        requests that had arrived meanwhile.)"""
        try:
            duplicates.append(self._write_batch(events, stop, committing))
            error: Exception | None = None
        except Exception as exc:  # raised by write() on the event loop
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, ended, error)

    def _write_batch(
        self, events: Sequence[Event], stop: threading.Event, committing: threading.Lock
    ) -> Duplicates:
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
                duplicates = remember_ids(conn, events)
                if duplicates:
                    events = [e for i, e in enumerate(events) if i not in duplicates]
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
                # Busy, interrupted, or one of ROLLED_BACK: the COMMIT did not happen. Any
                # other failure (an I/O error while the WAL was written or synced) may have
                # left a commit that a later recovery finds.
                if not (is_busy(exc) or is_interrupted(exc) or rolled_back(exc)):
                    raise _InDoubt(str(exc)) from exc
                raise
            return duplicates
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # closing rolls back; the next write opens anew
                    self._writer = None
                    conn.close()
            raise

    def _count_distinct(self, hours: Sequence[int]) -> int:
        """On the uniques thread: one ``COUNT(DISTINCT user)`` over the hours' user rows,
        each run of consecutive hours a range of the primary key."""
        if self._counter is None:
            self._counter = self._open()
            lower_priority()
        runs = consecutive_runs(hours)
        where = " OR ".join(["hour BETWEEN ? AND ?"] * len(runs))
        try:
            (count,) = self._counter.execute(
                f"SELECT COUNT(DISTINCT user) FROM hour_users WHERE {where}",
                [bound for run in runs for bound in run],
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        return int(count)

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
        """Forget ids past ``dedup_hours``, remove every hour past its retention, step by
        step on the writer thread, then give the freed pages back. Returns the rows removed."""
        oldest_id = oldest_kept_hour(self.dedup_hours, self._clock())
        if self.retention_hours is not None:
            oldest_id = max(oldest_id, oldest_kept_hour(self.retention_hours, self._clock()))
        removed = 0
        while step := await self._on(
            self._write_thread, lambda: retention.forget_ids(self._writer_conn(), oldest_id)
        ):
            removed += step
        if self.retention_hours is None:
            return removed
        await self._on(self._write_thread, lambda: retention.prepare(self._writer_conn()))
        oldest = oldest_kept_hour(self.retention_hours, self._clock())
        while step := await self._on(
            self._write_thread, lambda: retention.delete_chunk(self._writer_conn(), oldest)
        ):
            removed += step
        while await self._on(  # until no page is left to free (or none could be)
            self._write_thread, lambda: retention.vacuum_chunk(self._writer_conn())
        ):
            pass
        return removed

    # -- removing hours (tapad delete) --------------------------------------------------

    async def delete_hours(
        self, hours: Sequence[int], progress: Callable[[int], None] | None = None
    ) -> int:
        """Remove every row of ``hours`` (counts, users, ids: every table with an ``hour``
        column), one transaction per hour on the writer's thread; return the hours that
        had any. ``progress(n)``: n more of ``hours`` done. ``reclaim`` then gives the
        space back."""
        done = progress or (lambda _: None)
        wanted = set(hours)
        todo = await self._on(
            self._write_thread, lambda: retention.hours_with_rows(self._writer_conn(), wanted)
        )
        done(len(wanted) - len(todo))
        for hour in todo:
            await self._on(
                self._write_thread, lambda h=hour: retention.delete_hour(self._writer_conn(), h)
            )
            done(1)
        return len(todo)

    async def reclaim(self) -> int | None:
        """Give the pages freed back to the file system, as the retention sweep does: the
        pages handed back, or None when the file is not in incremental auto-vacuum mode
        (then new events reuse the space, and the file does not shrink)."""
        conn = self._writer_conn
        if not await self._on(self._write_thread, lambda: retention.incremental(conn())):
            return None
        freed = 0
        while step := await self._on(self._write_thread, lambda: retention.vacuum_chunk(conn())):
            freed += step
        return freed

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.sweep()
                if removed:
                    log.info("sweep: removed %d rows of ids or hours past their time", removed)
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


def lower_priority() -> None:
    """Make the calling thread the last to get a core when the cores are busy: a count of
    millions of rows must not take CPU time from the event loop and the writer in the same
    process (docs/performance.md). Linux gives each thread a nice value of its own;
    elsewhere this does nothing."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COUNT_NICENESS)


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


@contextlib.contextmanager
def closed_on_error(conn: sqlite3.Connection) -> Iterator[None]:
    """Close a connection being set up if a statement fails, rather than leave it to the
    garbage collector (Python 3.13 warns of every connection it has to close)."""
    try:
        yield
    except BaseException:
        conn.close()
        raise


def remember_ids(conn: sqlite3.Connection, events: Sequence[Event]) -> Duplicates:
    """Record the ids of a batch in its transaction; the positions of those already there.

    An event without an id costs one attribute test; one with an id, one insert into
    ``hour_ids``, whose primary key says whether the (hour, user, id) was seen before.
    """
    duplicates: set[int] = set()
    for position, event in enumerate(events):
        if (
            event.id is not None
            and not conn.execute(REMEMBER_ID, (event.hour, event.user, event.id)).rowcount
        ):
            duplicates.add(position)
    return frozenset(duplicates) if duplicates else NO_DUPLICATES


def rolled_back(exc: sqlite3.Error) -> bool:
    """A failure SQLite answers by rolling the transaction back (see ``ROLLED_BACK``)."""
    return exc.sqlite_errorcode & 0xFF in ROLLED_BACK


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
