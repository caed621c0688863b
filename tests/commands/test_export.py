"""``tapad export`` gives the same rows as ``GET /analytics/hours``, on SQLite and Redis."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapad.buckets import MS_PER_HOUR, current_hour, format_hour
from tests.support import InProcessTapad, http

HOUR = 2_100_000  # 2209-07-27T00: far from now and from the other tests' hours


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapad", "export", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def api(server: InProcessTapad, first: int, last: int, fmt: str) -> str:
    status, _, body = http(
        "GET",
        f"{server.url}/analytics/hours?from={first * MS_PER_HOUR}"
        f"&to={last * MS_PER_HOUR}&format={fmt}",
    )
    assert status == 200, body
    return body


def post(server: InProcessTapad, hour: int, user: str, kind: str) -> None:
    ts = hour * MS_PER_HOUR + 1234
    status, _, body = http("POST", f"{server.url}/analytics?timestamp={ts}&user={user}&{kind}")
    assert status == 200, body


@pytest.fixture
def server(store_url: str) -> Iterator[InProcessTapad]:
    """The API to compare with, in this process: export itself runs as the CLI."""
    srv = InProcessTapad(store_url).start()
    yield srv
    srv.stop()


def test_export_agrees_with_the_api_in_both_formats(
    server: InProcessTapad, store_url: str, tmp_path: Path
) -> None:
    for hour, user, kind in [
        (HOUR, "ann", "click"),
        (HOUR, "ben", "impression"),
        (HOUR + 3, "ann", "impression"),
        (HOUR + 3, "ann", "click"),
        (HOUR + 5, "cat", "click"),
    ]:
        post(server, hour, user, kind)
    first, last = HOUR - 1, HOUR + 6
    for fmt in ("csv", "json"):
        out = tmp_path / f"hours.{fmt}"
        done = export(
            "--store", store_url, "--from", format_hour(first), "--to", format_hour(last),
            "--format", fmt, "--out", str(out),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        assert "exported 8 hours" in done.stderr
        assert out.read_text() == api(server, first, last, fmt)
    rows = json.loads((tmp_path / "hours.json").read_text())["hours"]
    assert [r["clicks"] for r in rows] == [0, 1, 0, 0, 1, 0, 1, 0], "not the posted events"


def test_export_to_stdout_with_epoch_ms_and_now(server: InProcessTapad, store_url: str) -> None:
    now = current_hour()
    post(server, now, "dan", "click")
    done = export("--store", store_url, "--from", str((now - 2) * MS_PER_HOUR + 5), "--to", "now")
    assert done.returncode == 0, done.stderr
    assert done.stdout == api(server, now - 2, now, "csv")
    assert done.stdout.splitlines()[-1].endswith(",1,1,0")


def test_export_defaults_from_oldest_hour_with_data_to_now(
    server: InProcessTapad, store_url: str
) -> None:
    now = current_hour()
    post(server, now - 30, "eve", "impression")
    post(server, now, "eve", "click")
    done = export("--store", store_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == api(server, now - 30, now, "json")
    assert "the oldest hour with data" not in done.stderr  # 31 hours: nothing to say


def test_a_long_export_without_from_says_so_and_goes_on(
    server: InProcessTapad, store_url: str
) -> None:
    now = current_hour()
    post(server, now - 800, "eve", "impression")  # a stray old hour
    done = export("--store", store_url)
    assert done.returncode == 0, done.stderr
    first_line = done.stderr.splitlines()[0]
    assert first_line == (
        f"writing 801 hours ({format_hour(now - 800)} to {format_hour(now)}): the oldest hour "
        f"with data is {format_hour(now - 800)}; give --from to start later "
        "(tapad delete removes stray hours)"
    ), done.stderr
    assert len(done.stdout.splitlines()) == 802  # the header and every hour
    assert "exported 801 hours" in done.stderr


def test_a_range_longer_than_one_request_is_read_in_chunks(
    server: InProcessTapad, store_url: str
) -> None:
    first, last = HOUR, HOUR + 1000  # 1,001 hours: two chunks of at most 744
    post(server, first, "fay", "click")
    post(server, first + 743, "fay", "click")
    post(server, first + 744, "gil", "impression")
    post(server, last, "hal", "click")
    done = export("--store", store_url, "--from", format_hour(first), "--to", format_hour(last))
    assert done.returncode == 0, done.stderr
    head, *rows = done.stdout.splitlines()
    by_api = api(server, first, first + 743, "csv").splitlines()
    by_api += api(server, first + 744, last, "csv").splitlines()[1:]
    assert [head, *rows] == by_api
    assert len(rows) == 1001
    assert rows[744].endswith(",1,0,1") and rows[-1].endswith(",1,1,0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-11-29T20", "--to", "2026-11-29T10"], "--from 2026-11-29T20 is after"),
        (["--from", "yesterday"], "--from 'yesterday' is not an hour"),
        (["--to", "2026-02-30T00"], "--to '2026-02-30T00' is not a valid hour"),
        (["--format", "xml"], "'xml' is not one of"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    sqlite_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    done = export("--store", sqlite_url, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_missing_database_and_unreachable_redis_are_one_line(tmp_path: Path) -> None:
    done = export("--store", f"sqlite:///{tmp_path}/none.db")
    assert done.returncode == 2
    assert done.stderr.startswith("error: no database at") and done.stderr.count("\n") == 1
    assert not (tmp_path / "none.db").exists(), "export must not create a database"
    from tests.support import free_port

    done = export("--store", f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot read store") and done.stderr.count("\n") == 1


def test_unwritable_out_leaves_no_file(sqlite_url: str, tmp_path: Path) -> None:
    InProcessTapad(sqlite_url).start().stop()  # creates the database
    done = export("--store", sqlite_url, "--out", str(tmp_path / "missing" / "x.csv"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot write") and done.stderr.count("\n") == 1


def test_a_long_range_shows_a_progress_bar_on_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    """Standard error on a pseudo-terminal: the bar counts the hours read; piped: no bar."""
    InProcessTapad(sqlite_url).start().stop()  # creates the database
    args = ["--store", sqlite_url, "--from", format_hour(HOUR), "--to", format_hour(HOUR + 2000)]
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapad", "export", *args, "--out", str(tmp_path / "x.csv")],
            stderr=follower,
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
        assert proc.wait(60) == 0
    finally:
        os.close(leader)
    assert b"reading hours" in seen and b"2001/2001" in seen, seen[-500:]
    piped = export(*args)
    assert piped.returncode == 0
    assert "reading hours" not in piped.stderr


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_format_follows_the_out_file_s_extension(
    server: InProcessTapad, store_url: str, tmp_path: Path
) -> None:
    post(server, HOUR, "ann", "click")
    hour = ["--from", format_hour(HOUR), "--to", format_hour(HOUR)]
    as_json = tmp_path / "x.json"
    done = export("--store", store_url, *hour, "--out", str(as_json))
    assert done.returncode == 0, done.stderr
    assert json.loads(as_json.read_text())["hours"][0]["clicks"] == 1
    assert (
        done.stderr
        == f"exported 1 hour ({format_hour(HOUR)} to {format_hour(HOUR)}) to {as_json}\n"
    )
    as_csv = tmp_path / "x.CSV"
    done = export("--store", store_url, *hour, "--out", str(as_csv))
    assert done.returncode == 0, done.stderr
    assert as_csv.read_text().startswith("hour,timestamp,")
    other = tmp_path / "x.txt"  # an extension that names no format: csv, the default
    done = export("--store", store_url, *hour, "--out", str(other))
    assert done.returncode == 0 and other.read_text().startswith("hour,timestamp,")
    done = export("--store", store_url, "--from", format_hour(HOUR), "--to",
                  format_hour(HOUR + 1), "--out", str(other))  # fmt: skip
    assert "exported 2 hours" in done.stderr


def test_a_format_contradicting_the_out_extension_is_refused(
    sqlite_url: str, tmp_path: Path
) -> None:
    InProcessTapad(sqlite_url).start().stop()  # creates the database
    out = tmp_path / "x.json"
    done = export("--store", sqlite_url, "--format", "csv", "--out", str(out))
    assert done.returncode == 2
    assert done.stderr == f"error: --format csv contradicts --out {out} (a .json file)\n"
    assert not out.exists()
    done = export("--store", sqlite_url, "--format", "json", "--out", str(out))
    assert done.returncode == 0, done.stderr


def test_export_by_day_counts_each_days_distinct_users(
    server: InProcessTapad, store_url: str
) -> None:
    """HOUR is a day's first hour (2209-07-27T00). ann is in three hours of the first day:
    one user that day, though the hours sum to four."""
    for hour, user, kind in [
        (HOUR, "ann", "click"),
        (HOUR, "ben", "impression"),
        (HOUR + 5, "ann", "impression"),
        (HOUR + 23, "ann", "impression"),
        (HOUR + 24, "ann", "click"),
        (HOUR + 47, "cid", "click"),
    ]:
        post(server, hour, user, kind)
    day = HOUR * MS_PER_HOUR
    csv_out = export("--store", store_url, "--from", format_hour(HOUR + 5),
                     "--to", format_hour(HOUR + 30), "--by", "day")  # fmt: skip
    assert csv_out.returncode == 0, csv_out.stderr
    assert csv_out.stdout == (
        "day,timestamp,unique_users,clicks,impressions\n"
        f"2209-07-27,{day},2,1,3\n"
        f"2209-07-28,{day + 24 * MS_PER_HOUR},2,2,0\n"
    )  # the range widened to whole days
    assert "exported 2 days (2209-07-27T00 to 2209-07-28T23)" in csv_out.stderr
    as_json = export("--store", store_url, "--from", format_hour(HOUR),
                     "--to", format_hour(HOUR), "--by", "day", "--format", "json")  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "days": [
            {"day": "2209-07-27", "timestamp": day, "unique_users": 2, "clicks": 1,
             "impressions": 3},
        ]
    }  # fmt: skip
    # --by hour (the default) still gives the API's bytes
    hourly = export("--store", store_url, "--from", format_hour(HOUR),
                    "--to", format_hour(HOUR + 47), "--by", "hour")  # fmt: skip
    assert hourly.stdout == api(server, HOUR, HOUR + 47, "csv")
    bad = export("--store", store_url, "--by", "week")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
