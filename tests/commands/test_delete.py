"""``tapad delete`` on every store, beside a server that keeps writing."""

from __future__ import annotations

import contextlib
import os
import pty
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tapad.buckets import MS_PER_HOUR, current_hour, format_hour
from tapad.store.redis.keys import KeyLayout
from tests.support import InProcessTapad, RedisServer, http, parse_counts, wait_until

HOUR = 2_100_010  # 2209-07-27T10: far from now and from the other tests' hours
GONE = range(HOUR, HOUR + 3)  # the hours removed
KEPT = (HOUR - 1, HOUR + 3)  # their neighbours
KEYS = KeyLayout("tapad:", 1, None, 1)


def delete(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapad", "delete", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=stdin,
    )


def post(url: str, ts: int, user: str, kind: str) -> int:
    return http("POST", f"{url}/analytics?timestamp={ts}&user={user}&{kind}")[0]


def counts(url: str, hour: int) -> dict[str, int]:
    status, _, body = http("GET", f"{url}/analytics?timestamp={hour * MS_PER_HOUR}")
    assert status == 200, body
    return parse_counts(body)


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tapad.db"
    return str(request.getfixturevalue(f"{request.param}_url"))


def stored(url: str, request: pytest.FixtureRequest) -> Callable[[], dict[int, int]]:
    """What the store holds per hour, read under tapad: rows (SQLite) or keys (Redis)."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")

        def rows() -> dict[int, int]:
            found: dict[int, int] = {}
            with contextlib.closing(sqlite3.connect(path)) as conn:
                for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                    for hour, n in conn.execute(
                        f"SELECT hour, count(*) FROM {table} GROUP BY hour"
                    ):
                        found[hour] = found.get(hour, 0) + n
            return found

        return rows
    if url.startswith("redis+cluster:"):
        cluster = request.getfixturevalue("redis_cluster")
        nodes: list[RedisServer] = cluster.masters()
    else:
        nodes = [request.getfixturevalue("redis_server")]

    def keys() -> dict[int, int]:
        found: dict[int, int] = {}
        for node in nodes:
            for key in node.cli("--raw", "KEYS", "*").splitlines():
                hour = KEYS.hour_of_key(key.encode())
                if hour is not None:
                    found[hour] = found.get(hour, 0) + 1
        return found

    return keys


def add_ids(url: str, request: pytest.FixtureRequest, hours: list[int]) -> None:
    """Remembered ids as another layout may keep them: delete must find them by the hour."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute("CREATE TABLE IF NOT EXISTS hour_ids (hour INTEGER, user TEXT, id TEXT)")
            conn.executemany("INSERT INTO hour_ids VALUES (?, 'ann', 'x')", [(h,) for h in hours])
        return
    node: RedisServer = (
        request.getfixturevalue("redis_cluster").masters()[0]
        if url.startswith("redis+cluster:")
        else request.getfixturevalue("redis_server")
    )
    for hour in hours:  # both key schemes: {hour.shard}:... and {tag}:hour:...
        node.cli("-c", "SADD", f"tapad:{{{hour}.0}}:d:ann", "x")
        node.cli("-c", "SADD", f"tapad:{{zz}}:{hour}:d", "x")


class Writer(threading.Thread):
    """POSTs to one hour (the current one), one after another, until stopped; counts the 200s."""

    def __init__(self, url: str, hour: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ts = hour * MS_PER_HOUR + 1
        self.acknowledged = 0
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if post(self.url, self.ts, f"w{self.acknowledged}", "click") == 200:
                self.acknowledged += 1
            else:
                self.failed += 1


@pytest.fixture
def server(any_store: str) -> Iterator[InProcessTapad]:
    srv = InProcessTapad(any_store).start()
    yield srv
    srv.stop()


def fill(url: str) -> None:
    for hour in (*KEPT, *GONE):
        ts = hour * MS_PER_HOUR + 1234
        for user, kind in (("ann", "click"), ("bob", "impression"), ("cy", "impression")):
            assert post(url, ts, user, kind) == 200


def test_only_those_hours_go_while_a_server_keeps_writing(
    server: InProcessTapad, any_store: str, request: pytest.FixtureRequest
) -> None:
    fill(server.url)
    add_ids(any_store, request, [*KEPT, *GONE])
    held = stored(any_store, request)
    before = held()
    assert all(before.get(h) for h in (*KEPT, *GONE)), before
    kept_counts = {h: counts(server.url, h) for h in KEPT}
    now = current_hour()
    start = counts(server.url, now)["clicks"]
    writer = Writer(server.url, now)
    writer.start()
    try:
        wait_until(lambda: writer.acknowledged >= 5, timeout=30)
        done = delete(
            "--store", any_store, "--from", format_hour(GONE[0]), "--to", format_hour(GONE[-1]),
            "--yes",
        )  # fmt: skip
        during = writer.acknowledged
    finally:
        writer.stop.set()
        writer.join(30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (f"removed 3 hours ({format_hour(GONE[0])} to {format_hour(GONE[-1])})"), (
        done.stdout
    )
    assert done.stderr == ""
    assert writer.failed == 0 and writer.acknowledged > during > 5
    after = held()
    assert [h for h in GONE if h in after] == [], after
    for hour in KEPT:
        assert after[hour] == before[hour], hour  # every row or key of the neighbours
        assert counts(server.url, hour) == kept_counts[hour]
    for hour in GONE:
        assert counts(server.url, hour) == {"unique_users": 0, "clicks": 0, "impressions": 0}
    assert counts(server.url, now)["clicks"] == start + writer.acknowledged
    # the removed hours take events again
    assert post(server.url, GONE[0] * MS_PER_HOUR, "dan", "click") == 200
    assert counts(server.url, GONE[0]) == {"unique_users": 1, "clicks": 1, "impressions": 0}


@pytest.fixture
def sqlite_server(sqlite_url: str) -> Iterator[InProcessTapad]:
    srv = InProcessTapad(sqlite_url).start()
    fill(srv.url)
    yield srv
    srv.stop()


def test_without_a_terminal_or_yes_nothing_goes(
    sqlite_server: InProcessTapad, sqlite_url: str
) -> None:
    done = delete("--store", sqlite_url, "--from", format_hour(HOUR), "--to", format_hour(HOUR))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"error: nothing removed: no terminal to confirm on; add --yes to remove 1 hour "
        f"({format_hour(HOUR)} to {format_hour(HOUR)}) from {sqlite_url}\n"
    )
    assert counts(sqlite_server.url, HOUR)["clicks"] == 1


def ask_on_a_terminal(args: list[str], answer: bytes) -> tuple[int, bytes]:
    """Run delete with a pty as its terminal; answer its question; return exit code, output."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapad", "delete", *args],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env={**os.environ, "TERM": "dumb"},
        )
        os.close(follower)
        seen = b""
        while b"[y/N]" not in seen:
            chunk = os.read(leader, 4096)
            assert chunk, seen
            seen += chunk
        os.write(leader, answer)
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        return proc.wait(60), seen
    finally:
        os.close(leader)


def test_the_question_on_a_terminal(sqlite_server: InProcessTapad, sqlite_url: str) -> None:
    args = ["--store", sqlite_url, "--from", format_hour(HOUR), "--to", format_hour(HOUR + 2)]
    code, seen = ask_on_a_terminal(args, b"n\n")
    question = (
        f"Remove every count, user and id of 3 hours {format_hour(HOUR)}..{format_hour(HOUR + 2)}"
        f" from {sqlite_url}? [y/N]"
    )
    assert question.encode() in seen, seen
    assert code == 1 and b"nothing removed" in seen
    assert counts(sqlite_server.url, HOUR)["clicks"] == 1
    code, seen = ask_on_a_terminal(args, b"y\n")
    assert code == 0, seen
    assert b"removed 3 hours" in seen
    assert counts(sqlite_server.url, HOUR)["clicks"] == 0
    assert counts(sqlite_server.url, HOUR + 3)["clicks"] == 1


def test_sqlite_gives_the_space_back_with_incremental_vacuum(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kept.db"
    srv = InProcessTapad(url, retention_hours=100_000_000).start()  # incremental auto-vacuum
    try:
        for i in range(300):
            assert post(srv.url, HOUR * MS_PER_HOUR, f"user-{i:04d}-{'x' * 200}", "click") == 200
    finally:
        srv.stop()
    size = (tmp_path / "kept.db").stat().st_size
    done = delete("--store", url, "--from", format_hour(HOUR), "--to", format_hour(HOUR), "--yes")
    assert done.returncode == 0, done.stderr
    assert "free pages back to the file system" in done.stdout
    assert (tmp_path / "kept.db").stat().st_size < size


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-11-29T20", "--to", "2026-11-29T10"], "--from 2026-11-29T20 is after"),
        (["--from", "yesterday", "--to", "now"], "--from 'yesterday' is not an hour"),
        (["--from", "now"], "Missing option '--to'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    sqlite_server: InProcessTapad, sqlite_url: str, args: list[str], message: str
) -> None:
    done = delete("--store", sqlite_url, *args, "--yes")
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_a_long_range_shows_a_progress_bar_on_a_terminal(
    sqlite_server: InProcessTapad, sqlite_url: str
) -> None:
    args = ["--store", sqlite_url, "--from", format_hour(HOUR - 100), "--to", format_hour(HOUR)]
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapad", "delete", *args, "--yes"],
            stdin=subprocess.DEVNULL,
            stderr=follower,
            stdout=subprocess.PIPE,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(leader)
    assert proc.returncode == 0
    assert b"removing hours" in seen and b"101/101" in seen, seen[-500:]
    assert out.decode().startswith("removed 101 hours")
    assert counts(sqlite_server.url, HOUR)["clicks"] == 0
    assert counts(sqlite_server.url, HOUR + 1)["clicks"] == 1
    piped = delete(*args, "--yes")
    assert piped.returncode == 0 and "removing hours" not in piped.stderr
