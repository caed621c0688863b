"""``tapad tally``: the store read directly, held to the ledger loadgen wrote."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tapad.buckets import MS_PER_HOUR, current_hour, format_hour, parse_hour
from tapad.commands.tally import HourRow, compare, unknown_outcomes
from tapad.loadgen.ledger import Ledger, load_ledger, save_ledger
from tapad.store import Event, HourCounts, open_store
from tests.loadgen.cli import assert_one_line_error, assert_plain, tapad
from tests.support import InProcessTapad, RedisServer, TapadServer, free_port, http, wait_until


def test_tally_agrees_with_the_ledger_until_one_event_more(
    tapad_server: InProcessTapad, store_url: str, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.json"
    post = tapad("loadgen", "post", "--url", tapad_server.url, "-n", "1200", "-c", "16",
                 "--ledger", str(ledger_path), "--json")  # fmt: skip
    assert post.returncode == 0, post.stdout + post.stderr
    ledger = load_ledger(ledger_path)

    agree = tapad("tally", "--store", store_url, "--ledger", str(ledger_path))
    assert agree.returncode == 0, agree.stdout + agree.stderr
    assert "agrees" in agree.stdout
    assert_plain(agree.stdout)
    for hour in ledger.hours:
        assert format_hour(hour) in agree.stdout

    as_json = json.loads(tapad("tally", "--store", store_url, "--json").stdout)
    assert as_json["totals"]["events"] == 1200 == ledger.events
    assert [parse_hour(h["hour"]) for h in as_json["hours"]] == sorted(ledger.hours, reverse=True)
    for row in as_json["hours"]:
        entry = ledger.hours[parse_hour(row["hour"])]
        assert (row["unique_users"], row["clicks"], row["impressions"]) == (
            entry.unique_users, entry.clicks, entry.impressions,
        )  # fmt: skip

    hour = max(ledger.hours)
    status, _, _ = http(
        "POST", f"{tapad_server.url}/analytics?timestamp={hour * MS_PER_HOUR}&user=extra&click"
    )
    assert status == 200
    differ = tapad("tally", "--store", store_url, "--ledger", str(ledger_path), "--exact")
    assert differ.returncode == 1
    at_least = tapad("tally", "--store", store_url, "--ledger", str(ledger_path))
    assert at_least.returncode == 0, at_least.stdout  # without --exact: other writers
    assert "the store holds 1 event more than ledger" in " ".join(at_least.stdout.split())
    entry = ledger.hours[hour]
    assert f"{format_hour(hour)} clicks: store {entry.clicks + 1}, ledger {entry.clicks}" in (
        differ.stdout
    )
    assert f"unique users: store {entry.unique_users + 1}" in differ.stdout
    assert "impressions" not in differ.stdout.split("differs", 1)[1].split("\n")[0]

    one_hour = tapad("tally", "--store", store_url, "--hour", format_hour(hour), "--json")
    rows = json.loads(one_hour.stdout)["hours"]
    assert [r["hour"] for r in rows] == [format_hour(hour)]
    assert rows[0]["clicks"] == entry.clicks + 1


def test_an_hour_the_store_lacks_is_a_difference() -> None:
    ledger = Ledger()
    ledger.record(100, "ann", True)
    rows = [HourRow(100, HourCounts(0, 0, 0))]
    assert compare(rows, ledger, "exact") == [
        f"{format_hour(100)} unique users: store 0, ledger 1",
        f"{format_hour(100)} clicks: store 0, ledger 1",
    ]


def test_hll_unique_users_may_be_three_percent_off_but_counts_may_not() -> None:
    ledger = Ledger()
    for i in range(1000):
        ledger.record(7, f"u{i}", False)
    near = [HourRow(7, HourCounts(1025, 0, 1000))]
    far = [HourRow(7, HourCounts(1040, 0, 1000))]
    assert compare(near, ledger, "hll") == []
    assert compare(near, ledger, "exact") != []
    assert len(compare(far, ledger, "hll")) == 1
    assert len(compare([HourRow(7, HourCounts(1000, 0, 999))], ledger, "hll")) == 1


def test_empty_store_and_now(sqlite_url: str, tmp_path: Path) -> None:
    server = InProcessTapad(sqlite_url).start()  # creates the database
    server.stop()
    result = tapad("tally", "--store", sqlite_url)
    assert result.returncode == 0 and "no events" in result.stdout
    now = json.loads(tapad("tally", "--store", sqlite_url, "--hour", "now", "--json").stdout)
    assert now["hours"] == [
        {"hour": format_hour(current_hour()), "unique_users": 0, "clicks": 0, "impressions": 0,
         "events": 0}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--store", "sqlite:////nonexistent/tapad.db"], ["no database", "/nonexistent/tapad.db"]),
        (["--store", "mysql://x"], ["must start with"]),
        (["--store", "redis://127.0.0.1:{free_port}/0"], ["cannot read store"]),
        (["--store", "sqlite:////tmp/x.db", "--hour", "2026-13-01T00"], ["--hour"]),
        (["--store", "sqlite:////tmp/x.db", "--hour", "yesterday"], ["--hour"]),
        (["--store", "sqlite:////tmp/x.db", "--ledger", "/nonexistent.json"], ["no such file"]),
    ],
)
def test_user_errors_are_one_line(args: list[str], words: list[str]) -> None:
    # the free port is chosen now, when the test runs, not when the tests are collected
    args = [a.replace("{free_port}", str(free_port())) for a in args]
    assert_one_line_error(tapad("tally", *args), *words)


def test_store_comes_from_the_environment() -> None:
    env = {**os.environ, "TAPAD_STORE": "sqlite:////nonexistent/env.db"}
    result = subprocess.run([sys.executable, "-m", "tapad", "tally"], capture_output=True,
                            text=True, env=env, timeout=30)  # fmt: skip
    assert_one_line_error(result, "/nonexistent/env.db")


def test_hll_store_agrees_within_its_error(redis_url: str, tmp_path: Path) -> None:
    server = InProcessTapad(redis_url, unique="hll").start()
    try:
        ledger_path = tmp_path / "ledger.json"
        post = tapad("loadgen", "post", "--url", server.url, "-n", "2000", "--old-ratio", "0",
                     "--ledger", str(ledger_path), "--json")  # fmt: skip
        assert post.returncode == 0, post.stderr
    finally:
        server.stop()
    result = tapad("tally", "--store", redis_url, "--ledger", str(ledger_path))
    assert result.returncode == 0, result.stdout
    assert "hll" in result.stdout and "agrees" in result.stdout


def test_cluster_store_agrees(cluster_url: str, tmp_path: Path) -> None:
    server = InProcessTapad(cluster_url).start()
    try:
        ledger_path = tmp_path / "ledger.json"
        post = tapad("loadgen", "post", "--url", server.url, "-n", "1000", "--ledger",
                     str(ledger_path), "--json")  # fmt: skip
        assert post.returncode == 0, post.stderr
    finally:
        server.stop()
    result = tapad("tally", "--store", cluster_url, "--ledger", str(ledger_path), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ledger"]["differences"] == [] and data["totals"]["events"] == 1000


def _write(store_url: str, events: list[Event]) -> None:
    """Events straight into a real store, as a server's committed batch would be."""

    async def write() -> None:
        store = open_store(store_url)
        try:
            await store.connect()
            await store.write(events)
        finally:
            await store.close()

    asyncio.run(write())


def _ledger_with_unknowns(path: Path, hour: int) -> Ledger:
    """10 acknowledged clicks; 4 events of unknown outcome (2 clicks, 2 impressions)."""
    ledger = Ledger()
    for i in range(10):
        ledger.record(hour, f"acked{i}", True)
    for i in range(4):
        ledger.record_unknown(hour, f"unknown{i}", i % 2 == 0)
    save_ledger(path, ledger)
    return ledger


def test_unknown_outcomes_bound_the_store_and_are_reported(sqlite_url: str, tmp_path: Path) -> None:
    """acked <= stored <= acked + unknown; tally says how many unknown events were recorded."""
    hour = current_hour()
    ledger_path = tmp_path / "ledger.json"
    _ledger_with_unknowns(ledger_path, hour)
    acked = [Event(hour, f"acked{i}", True) for i in range(10)]
    # of the unknown ones, one click and one impression made it into the store
    _write(sqlite_url, [*acked, Event(hour, "unknown0", True), Event(hour, "unknown1", False)])

    plain = tapad("tally", "--store", sqlite_url, "--ledger", str(ledger_path))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "agrees" in plain.stdout
    assert "4 events of unknown outcome (504, timeout): 2 recorded, 2 not" in plain.stdout
    as_json = tapad("tally", "--store", sqlite_url, "--ledger", str(ledger_path), "--json")
    data = json.loads(as_json.stdout)
    assert data["ledger"]["differences"] == []
    assert data["ledger"]["unknown"] == {"events": 4, "recorded": 2, "not_recorded": 2}

    # two clicks more than acknowledged + unknown allow: 13 > 10 + 2
    _write(sqlite_url, [Event(hour, "unknown2", True), Event(hour, "other", True)])
    over = tapad("tally", "--store", sqlite_url, "--ledger", str(ledger_path), "--exact")
    assert over.returncode == 1, over.stdout
    assert f"{format_hour(hour)} clicks: store 13, ledger 10 acknowledged + 2 unknown" in (
        over.stdout
    )


def test_unknown_outcomes_never_excuse_a_missing_acknowledged_event(tmp_path: Path) -> None:
    hour = 1000
    ledger = _ledger_with_unknowns(tmp_path / "ledger.json", hour)
    # 9 clicks stored: one acknowledged click missing, though 2 unknown clicks could "cover" it
    rows = [HourRow(hour, HourCounts(9, 9, 0))]
    assert compare(rows, ledger, "exact") == [
        f"{format_hour(hour)} unique users: store 9, ledger 10 acknowledged + 4 unknown",
        f"{format_hour(hour)} clicks: store 9, ledger 10 acknowledged + 2 unknown",
    ]
    within = [HourRow(hour, HourCounts(14, 12, 2))]  # every unknown event recorded
    assert compare(within, ledger, "exact") == []
    assert unknown_outcomes(within, ledger).recorded == 4
    assert unknown_outcomes([HourRow(hour, HourCounts(10, 10, 0))], ledger).not_recorded == 4


def test_a_real_504_is_not_retried_is_kept_as_unknown_and_tally_accounts_for_it(
    tmp_path: Path,
) -> None:
    """End to end: loadgen against a real server whose Redis is paused past the deadline."""
    redis = RedisServer(tmp_path / "redis").start()  # its own: this test pauses it
    srv = TapadServer(redis.url, "--store-timeout", "0.2", "--commit-deadline", "1").start()
    ledger_path = tmp_path / "ledger.json"
    load = subprocess.Popen(
        [sys.executable, "-m", "tapad", "loadgen", "post", "--url", srv.url, "-n", "1000000",
         "-c", "16", "--retries", "0", "--timeout", "60", "--ledger", str(ledger_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def metrics() -> str:
            return http("GET", f"{srv.url}/metrics")[2]

        wait_until(lambda: 'method="POST",status="200"' in metrics(), what="POSTs acknowledged")
        redis.pause()  # the batch in flight is in doubt until the 1 s deadline: 504
        wait_until(lambda: 'method="POST",status="504"' in metrics(), what="a POST answered 504")
        redis.resume()
        load.send_signal(signal.SIGINT)  # loadgen stops cleanly and saves its ledger
        out, err = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.communicate()
        redis.resume()
        srv.stop()
    assert load.returncode == 130, err  # interrupted
    report = json.loads(out)
    answers = report["answers"]
    assert answers.get("504", 0) >= 1, report
    assert report["retried"] == 0
    assert report["unknown"] >= answers["504"]  # 504s, and any POST cut off by the stop
    ledger = load_ledger(ledger_path)
    assert (ledger.events, ledger.unknown_events) == (report["acknowledged"], report["unknown"])

    result = tapad("tally", "--store", redis.url, "--ledger", str(ledger_path), "--json")
    redis.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ledger"]["differences"] == []  # acked <= stored <= acked + unknown, per hour
    unknown = data["ledger"]["unknown"]
    print(f"answers {answers}, unknown {report['unknown']}: {unknown}")
    assert unknown["events"] == report["unknown"]
    assert unknown["recorded"] + unknown["not_recorded"] == unknown["events"]
    assert data["totals"]["events"] == report["acknowledged"] + unknown["recorded"]


def test_at_least_the_ledger_is_what_a_store_with_other_writers_must_hold() -> None:
    ledger = Ledger()
    ledger.record(100, "ann", True)
    ledger.record(100, "ben", False)
    more = [HourRow(100, HourCounts(5, 3, 4)), HourRow(101, HourCounts(1, 1, 0))]
    assert compare(more, ledger, "exact") != []
    assert compare(more, ledger, "exact", at_least=True) == []
    fewer = [HourRow(100, HourCounts(1, 3, 0))]  # the impression and a user are missing
    assert compare(fewer, ledger, "exact", at_least=True) == [
        f"{format_hour(100)} unique users: store 1, ledger at least 2",
        f"{format_hour(100)} impressions: store 0, ledger at least 1",
    ]


def test_the_readme_sequence_passes_on_a_store_with_other_events(tmp_path: Path) -> None:
    """README: serve, POST two events by hand, then the load tools, then tally --ledger."""
    srv = TapadServer(None, cwd=tmp_path).start()  # the default store, ./tapad-data/tapad.db
    try:
        now = current_hour() * MS_PER_HOUR
        for query in (f"timestamp={now}&user=alice&click", f"timestamp={now}&user=bob&impression"):
            assert http("POST", f"{srv.url}/analytics?{query}")[0] == 200
        steps = [
            ("usernames", "generate", "--count", "1000", "--out", "users.txt"),
            ("loadgen", "post", "--url", srv.url, "-n", "2000", "-c", "32", "--users",
             "users.txt", "--ledger", "ledger.json"),
            ("loadgen", "get", "--url", srv.url, "-n", "500", "-c", "32", "--verify",
             "ledger.json"),
        ]  # fmt: skip
        for step in steps:
            done = tapad(*step, cwd=tmp_path)
            assert done.returncode == 0, (step, done.stdout, done.stderr)
    finally:
        srv.stop()
    result = tapad("tally", "--ledger", "ledger.json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "the store holds 2 events more than ledger ledger.json accounts for" in out
    assert "ledger ledger.json: the store holds every acknowledged event" in out
    assert "differs" not in out
    exact = tapad("tally", "--ledger", "ledger.json", "--exact", cwd=tmp_path)
    assert exact.returncode == 1 and "differs" in exact.stdout


def test_tally_shows_distinct_users_over_the_hours_and_labels_the_sum(
    tapad_server: InProcessTapad, store_url: str
) -> None:
    """ann in three hours, ben in two, cid in one: 3 distinct users, 6 summed over hours."""
    hour = 2_100_500
    for offset, users in enumerate((["ann", "ben"], ["ann", "ben"], ["ann", "cid"])):
        for user in users:
            ts = (hour + offset) * MS_PER_HOUR
            status, _, _ = http(
                "POST", f"{tapad_server.url}/analytics?timestamp={ts}&user={user}&click"
            )
            assert status == 200
    table = tapad("tally", "--store", store_url)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "distinct users over these 3 hours: 3" in table.stdout
    assert "sum of hours" in table.stdout  # the total row, a sum
    totals = json.loads(tapad("tally", "--store", store_url, "--json").stdout)["totals"]
    assert totals["unique_users"] == 3 and totals["unique_users_exact"] is True
    assert totals["unique_users_summed"] == 6
