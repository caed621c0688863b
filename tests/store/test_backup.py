"""Backing up the SQLite file while tapad serves, the way docs/production.md shows: ``VACUUM
INTO`` from a connection of another process, with POSTs being acknowledged all along.

The backup must hold every event acknowledged before it started, nothing that was never
acknowledged, and one consistent moment (an hour's counters agree with its users); it must
pass ``PRAGMA integrity_check`` and serve as a store once copied into place."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest

from tests.support import LOOPBACK, InProcessTapad, TapadServer, http, parse_counts, wait_until

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "docs" / "production.md"

# The two commands of docs/production.md, "Backing up SQLite", with the paths as arguments.
BACKUP_PY = (
    'import sqlite3, sys; sqlite3.connect("file:" + sys.argv[1] + "?mode=rw", uri=True)'
    '.execute("VACUUM INTO ?", (sys.argv[2],))'
)
BACKUP_CLI = "sqlite3 -cmd '.timeout 5000' /var/lib/tapad/tapad.db \"VACUUM INTO '"

POSTERS = 4  # threads posting at once, each on a keep-alive connection of its own
BEFORE = 1_000  # events acknowledged before the backup starts: a file worth copying


class Posters:
    """Threads that POST one click per new user until told to stop, keeping what was acked."""

    def __init__(self, port: int, timestamp: int) -> None:
        self.port, self.timestamp = port, timestamp
        self.acked: list[str] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._post, args=(n,)) for n in range(POSTERS)]

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def users(self) -> set[str]:
        with self.lock:
            return set(self.acked)

    def _post(self, n: int) -> None:
        conn = HTTPConnection(LOOPBACK, self.port, timeout=30)
        i = 0
        try:
            while not self.stop.is_set():
                user = f"p{n}-{i}"
                i += 1
                conn.request("POST", f"/analytics?timestamp={self.timestamp}&user={user}&click")
                response = conn.getresponse()
                response.read()
                with self.lock:
                    if response.status == 200:
                        self.acked.append(user)
                    else:
                        self.failures.append(f"{user}: {response.status}")
        except Exception as exc:  # any: the test must see it, not a silent thread
            with self.lock:
                self.failures.append(f"poster {n}: {exc!r}")
        finally:
            conn.close()

    def __enter__(self) -> Posters:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def back_up(how: str, db: Path, backup: Path) -> None:
    if how == "python":
        command = [sys.executable, "-c", BACKUP_PY, str(db), str(backup)]
    else:
        command = ["sqlite3", "-cmd", ".timeout 5000", str(db), f"VACUUM INTO '{backup}'"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"backup failed: {done.stderr}"


def test_the_documented_commands_are_the_ones_tested() -> None:
    text = PRODUCTION.read_text()
    assert BACKUP_PY in text
    assert BACKUP_CLI in text


@pytest.mark.parametrize("how", ["python", "sqlite3-cli"])
def test_a_backup_taken_while_serving_holds_every_event_acknowledged_before_it(
    how: str, tmp_path: Path
) -> None:
    if how == "sqlite3-cli" and shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command is not installed (apt-get install -y sqlite3)")
    db, backup = tmp_path / "tapad.db", tmp_path / "backup" / "tapad-backup.db"
    backup.parent.mkdir()
    timestamp = int(time.time() * 1000)
    server = TapadServer(f"sqlite:///{db}").start()
    try:
        with Posters(server.port, timestamp) as posters:
            wait_until(lambda: posters.count() >= BEFORE or posters.failures, what="POSTs acked")
            acked_before = posters.users()
            back_up(how, db, backup)
            acked_during = posters.count() - len(acked_before)
            # the server kept taking writes after the backup, too
            wait_until(
                lambda: posters.count() >= len(acked_before) + acked_during + 50 or posters.failures
            )
        assert posters.failures == []
        acked_in_all = posters.users()
    finally:
        server.stop()
    assert acked_during > 0, "no POST was acknowledged while the backup ran"

    conn = sqlite3.connect(backup)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        users = {user for (user,) in conn.execute("SELECT user FROM hour_users")}
        rows = conn.execute("SELECT unique_users, clicks, impressions FROM hours").fetchall()
    finally:
        conn.close()
    assert acked_before <= users, f"{len(acked_before - users)} acknowledged events missing"
    assert users <= acked_in_all, "the backup holds events never acknowledged"
    # one moment: the hour's counters agree with its users (one click per user)
    assert rows == [(len(users), len(users), 0)]

    # Restoring is copying the file into place: a server on the copy answers from it.
    restored = tmp_path / "restored" / "tapad.db"
    restored.parent.mkdir()
    shutil.copyfile(backup, restored)
    again = InProcessTapad(f"sqlite:///{restored}").start()
    try:
        status, _, body = http("GET", f"{again.url}/analytics?timestamp={timestamp}")
    finally:
        again.stop()
    assert status == 200
    assert parse_counts(body) == {
        "unique_users": len(users),
        "clicks": len(users),
        "impressions": 0,
    }
