"""SQLite with a stalled write, under live traffic: a 503 is never in doubt.

Clients do not retry and every POST has a user of its own, so the store is checked event
by event: every 200 is stored, no 503 is, and only a 504 (outcome unknown) may be stored
without a 200. Two stalls, each short (past ``--store-timeout``, within the commit deadline)
and long (past the deadline): another process holding SQLite's write lock, and the file
system under the database frozen (``fsfreeze``) while batches are being committed, the
way a disk that stops answering looks to SQLite.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapad import settings
from tests.reliability.tools import TS, Answer, Traffic
from tests.support import TapadServer, wait_until

STORE_TIMEOUT = settings.default("store_timeout")
DEADLINE = settings.default("commit_deadline")

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))  # the lock is held this long on purpose
conn.execute("ROLLBACK")
"""


def stored_users(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        users = {user for (user,) in conn.execute("SELECT user FROM hour_users")}
        (clicks,) = conn.execute("SELECT coalesce(sum(clicks), 0) FROM hours").fetchone()
    finally:
        conn.close()
    assert clicks == len(users), f"half-written batch: {clicks} clicks, {len(users)} users"
    return users


def check_every_answer(traffic: Traffic, db: Path) -> dict[int, int]:
    """acked <= stored <= acked + unknown, event by event; no 503 recorded."""
    by_status: dict[int, set[str]] = {}
    for answer in traffic.answers:
        by_status.setdefault(answer.status, set()).add(answer.user)
    assert set(by_status) <= {200, 503, 504}, f"unexpected answers: {traffic.statuses()}"
    stored = stored_users(db)
    acked, refused = by_status.get(200, set()), by_status.get(503, set())
    unknown = by_status.get(504, set())
    assert not acked - stored, f"{len(acked - stored)} acknowledged events lost"
    assert not refused & stored, f"{len(refused & stored)} events answered 503 were recorded"
    assert stored <= acked | unknown, f"{len(stored - acked - unknown)} stored, never answered"
    return traffic.statuses()


def hold_lock(db: Path, seconds: float) -> None:
    """Another process takes SQLite's write lock for ``seconds``, then lets go."""
    with subprocess.Popen(  # the "with" closes its pipe
        [sys.executable, "-c", HOLD_LOCK, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert proc.wait(timeout=seconds + 30) == 0


@pytest.mark.timeout(120)  # five lock holds, the last past the commit deadline
def test_write_lock_held_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "tapad.db"
    srv = TapadServer(f"sqlite:///{db}").start()
    traffic = Traffic(srv.url, concurrency=16, limit=200_000, timeout=30).start()
    try:
        traffic.wait_for(lambda t: len(t.acknowledged) >= 200)
        # shorter than, about as long as, and longer than the store timeout; then past
        # the commit deadline
        for seconds in (0.2, STORE_TIMEOUT * 0.9, STORE_TIMEOUT * 1.1, 0.2, DEADLINE + 1):
            hold_lock(db, seconds)
            time.sleep(0.3)  # on purpose: traffic commits between two holds of the lock
        n = len(traffic.acknowledged)
        traffic.wait_for(lambda t: len(t.acknowledged) >= n + 100, timeout=15)
    finally:
        traffic.stop()
        srv.stop()
    statuses = check_every_answer(traffic, db)
    assert statuses.get(503), "the lock never made a POST fail"
    # nothing was in doubt: a batch that waits for the lock has not started
    assert not statuses.get(504), statuses


@pytest.fixture
def frozen_fs(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 file system of its own, on a loop device, that the test can freeze."""
    tools = ("mkfs.ext4", "mount", "umount", "fsfreeze")
    if missing := [tool for tool in tools if shutil.which(tool) is None]:
        pytest.skip(f"needs {', '.join(missing)}")
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["fsfreeze", "-u", str(mnt)], capture_output=True)
        subprocess.run(["umount", str(mnt)], check=True)


@contextlib.contextmanager
def frozen(mnt: Path) -> Iterator[None]:
    subprocess.run(["fsfreeze", "-f", str(mnt)], check=True)
    try:
        yield
    finally:
        subprocess.run(["fsfreeze", "-u", str(mnt)], check=True)


def test_disk_stalled_while_committing(frozen_fs: Path) -> None:
    db = frozen_fs / "tapad.db"
    srv = TapadServer(f"sqlite:///{db}").start()
    traffic = Traffic(srv.url, concurrency=16, limit=200_000, timeout=30).start()
    try:
        traffic.wait_for(lambda t: len(t.acknowledged) >= 200)
        # Past the store timeout, within the deadline: the write in flight is waited for.
        mark = len(traffic.answers)
        with frozen(frozen_fs):
            time.sleep(STORE_TIMEOUT + 1.5)  # the disk stays frozen this long on purpose
        n = len(traffic.acknowledged)
        traffic.wait_for(lambda t: len(t.acknowledged) >= n + 100, timeout=15)
        during = [a.status for a in list(traffic.answers)[mark:]]
        assert 504 not in during, "a stall shorter than the deadline answered 504"
        # Past the deadline: the batch in flight is answered 504 while the disk is still
        # frozen (it may commit when the disk comes back), the ones after it 503.
        mark = len(traffic.answers)
        with frozen(frozen_fs):
            with contextlib.suppress(TimeoutError):  # the assertion below says what is missing
                wait_until(
                    lambda: 504 in {a.status for a in list(traffic.answers)[mark:]},
                    DEADLINE + 10,
                    interval=0.05,
                )
            in_freeze = {a.status for a in list(traffic.answers)[mark:]}
        assert 504 in in_freeze, f"no POST was answered while the disk was frozen: {in_freeze}"
        n = len(traffic.acknowledged)
        traffic.wait_for(lambda t: len(t.acknowledged) >= n + 100, timeout=15)
    finally:
        traffic.stop()
        srv.stop()
    check_every_answer(traffic, db)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB ext4 file system of its own, on a loop device, with no blocks kept for
    root: the test fills it to the last block."""
    tools = ("mkfs.ext4", "mount", "umount")
    if missing := [tool for tool in tools if shutil.which(tool) is None]:
        pytest.skip(f"needs {', '.join(missing)}")
    image, mnt = tmp_path / "small.img", tmp_path / "small"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(32 << 20)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True
    )
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill_disk(mnt: Path) -> Path:
    """Take every free block of ``mnt`` with one file (dd stops at ENOSPC)."""
    filler = mnt / "filler"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False
    )
    return filler


def test_disk_full_answers_503_until_space_comes_back(small_fs: Path) -> None:
    """SQLITE_FULL rolls the batch back: 503 (never 504); /healthz holds 503 while the disk
    stays full, even with no POST arriving; space freed, writes succeed without a restart."""
    from tests.support import http, wait_until

    db = small_fs / "tapad.db"
    srv = TapadServer(f"sqlite:///{db}").start()
    traffic = Traffic(srv.url, concurrency=8, limit=200_000, timeout=30).start()
    try:
        traffic.wait_for(lambda t: len(t.acknowledged) >= 200)
        mark = len(traffic.answers)
        filler = fill_disk(small_fs)
        traffic.wait_for(lambda t: 503 in {a.status for a in list(t.answers)[mark:]}, timeout=60)
        traffic.stop()
        # Idle and still full: /healthz stays 503 (the write probe fails), past any window.
        answers = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            answers.append(http("GET", f"{srv.url}/healthz")[::2])
            time.sleep(0.2)  # sampling /healthz over a window, not waiting for a change
        assert set(answers) == {(503, "store refusing writes\n")}, set(answers)
        filler.unlink()
        wait_until(lambda: http("GET", f"{srv.url}/healthz")[0] == 200, what="/healthz 200")
        status = http("POST", f"{srv.url}/analytics?timestamp={TS}&user=after&click")[0]
        assert status == 200
        traffic.answers.append(Answer(status, 0.0, user="after"))  # checked with the rest
        traffic.acknowledged.add("after")
    finally:
        traffic.stop()
        srv.stop()
    statuses = check_every_answer(traffic, db)
    assert statuses.get(503), statuses
    assert not statuses.get(504), f"a full disk answered 504 (outcome unknown): {statuses}"
    assert "after" in stored_users(db)
    log = srv.log.decode()
    assert "database or disk is full" in log and "answered 503" in log, log
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
