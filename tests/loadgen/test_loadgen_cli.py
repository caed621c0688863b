"""``tapad loadgen`` as a user runs it: against a real tapad server, and scripted servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tapad.buckets import MS_PER_HOUR, current_hour
from tapad.loadgen.ledger import Tally, load_ledger, save_ledger
from tests.loadgen.cli import assert_one_line_error, assert_plain, tapad
from tests.loadgen.scripted import ScriptedServer
from tests.support import InProcessTapad, free_port, http, parse_counts


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = tapad("loadgen", *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_post_records_what_was_acknowledged_and_get_verifies_it(
    tapad_server: InProcessTapad, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.json"
    before = current_hour()
    code, report = run_json("post", "--url", tapad_server.url, "-n", "1500", "-c", "16",
                            "--ledger", str(ledger_path))  # fmt: skip
    assert code == 0, report
    assert report["acknowledged"] == 1500 and report["failures"] == {}
    ledger = load_ledger(ledger_path)
    assert ledger.events == 1500
    assert len(ledger.hours) > 1  # the 5% past-hour share reached other hours
    hour = max(ledger.hours)  # the run's current hour (95% of events)
    assert hour in (before, before + 1)
    entry = ledger.hours[hour]
    _, _, body = http("GET", f"{tapad_server.url}/analytics?timestamp={hour * MS_PER_HOUR}")
    assert parse_counts(body) == {
        "unique_users": entry.unique_users,
        "clicks": entry.clicks,
        "impressions": entry.impressions,
    }

    code, report = run_json("get", "--url", tapad_server.url, "-n", "400", "--verify",
                            str(ledger_path))  # fmt: skip
    assert code == 0, report
    assert report["acknowledged"] == 400 and report["verify"]["checked"] == 400

    entry.clicks += 1  # a ledger claiming one more click than the server has
    save_ledger(ledger_path, ledger)
    result = tapad("loadgen", "get", "--url", tapad_server.url, "-n", "200", "--old-ratio", "0",
                   "--verify", str(ledger_path))  # fmt: skip
    assert result.returncode == 1
    assert "below ledger" in result.stdout and "FAILED" in result.stdout
    assert_plain(result.stdout)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_ledger_accumulates_over_runs(tapad_server: InProcessTapad, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.json"
    for _ in range(2):
        code, _ = run_json("post", "--url", tapad_server.url, "-n", "200", "--ledger",
                           str(ledger_path))  # fmt: skip
        assert code == 0
    assert load_ledger(ledger_path).events == 400


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_report_in_a_pipe_is_a_plain_table(tapad_server: InProcessTapad) -> None:
    result = tapad("loadgen", "post", "--url", tapad_server.url, "-n", "300", "-c", "8")
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout + result.stderr)
    for word in ("requests", "acknowledged", "throughput", "p50", "p90", "p99", "max",
                 "latency histogram"):  # fmt: skip
        assert word in result.stdout


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_rejected_events_fail_the_run_and_stay_out_of_the_ledger(
    tapad_server: InProcessTapad, tmp_path: Path
) -> None:
    users = tmp_path / "users.txt"
    users.write_text("fine\n" + "x" * 300 + "\n")  # the server refuses names over 256
    ledger_path = tmp_path / "ledger.json"
    code, report = run_json("post", "--url", tapad_server.url, "-n", "300", "--users", str(users),
                            "--ledger", str(ledger_path), "--seed", "1")  # fmt: skip
    assert code == 1
    rejected = report["failures"]["HTTP 400"]
    assert 0 < rejected < 300 and report["acknowledged"] == 300 - rejected
    ledger = load_ledger(ledger_path)
    assert ledger.events == report["acknowledged"]
    assert all(entry.users == {"fine"} for entry in ledger.hours.values())


def test_503_is_retried_until_acknowledged() -> None:
    with ScriptedServer(lambda n: 503 if n < 3 else 200) as server:
        code, report = run_json("post", "--url", server.url, "-n", "20", "-c", "2")
    assert code == 0, report
    assert report["acknowledged"] == 20 and report["retried"] == 3


def test_503_that_never_ends_fails_after_the_retries() -> None:
    with ScriptedServer(lambda n: 503) as server:
        code, report = run_json("post", "--url", server.url, "-n", "4", "-c", "2",
                                "--retries", "2")  # fmt: skip
        assert server.count == 4 * 3
    assert code == 1
    assert report["failures"] == {"HTTP 503": 4} and report["acknowledged"] == 0


def test_a_stalled_answer_is_a_timeout_not_a_hang() -> None:
    with ScriptedServer(lambda n: "stall" if n == 0 else 200, stall_seconds=4) as server:
        code, report = run_json("post", "--url", server.url, "-n", "6", "-c", "1",
                                "--timeout", "1")  # fmt: skip
    assert code == 1
    assert report["failures"] == {"timeout": 1} and report["acknowledged"] == 5


def test_a_get_whose_connection_drops_is_retried() -> None:
    with ScriptedServer(lambda n: "drop" if n in (0, 1) else 200) as server:
        code, report = run_json("get", "--url", server.url, "-n", "10", "-c", "1")
    assert code == 0, report
    assert report["acknowledged"] == 10 and report["retried"] == 2


def test_a_post_whose_connection_drops_is_unknown_and_not_retried(tmp_path: Path) -> None:
    """The server read the request before the connection dropped: it may have recorded it."""
    ledger_path = tmp_path / "ledger.json"
    with ScriptedServer(lambda n: "drop" if n in (0, 1) else 200) as server:
        code, report = run_json("post", "--url", server.url, "-n", "10", "-c", "1",
                                "--ledger", str(ledger_path))  # fmt: skip
        assert server.count == 10
    assert code == 1, report
    assert (report["acknowledged"], report["unknown"], report["retried"]) == (8, 2, 0)
    ledger = load_ledger(ledger_path)
    assert (ledger.events, ledger.unknown_events) == (8, 2)


def _per_hour(targets: list[str]) -> dict[int, Tally]:
    """The events of the POST targets a scripted server saw, per hour."""
    tallies: dict[int, Tally] = {}
    for target in targets:
        query = parse_qs(urlsplit(target).query, keep_blank_values=True)
        hour = int(query["timestamp"][0]) // MS_PER_HOUR
        tallies.setdefault(hour, Tally()).add(query["user"][0], "click" in query)
    return tallies


def test_200_503_504_are_counted_apart_and_504_is_never_retried(tmp_path: Path) -> None:
    """A 504 may have been recorded: not retried, and kept apart in the ledger as unknown."""
    answers = {0: 200, 1: 503, 2: 504}
    ledger_path = tmp_path / "ledger.json"
    with ScriptedServer(lambda n: answers[n % 3]) as server:
        code, report = run_json("post", "--url", server.url, "-n", "30", "-c", "1",
                                "--retries", "0", "--ledger", str(ledger_path))  # fmt: skip
        targets = list(server.targets)
    assert code == 1, report
    assert report["answers"] == {"200": 10, "503": 10, "504": 10}
    assert (report["acknowledged"], report["unknown"], report["retried"]) == (10, 10, 0)
    assert len(targets) == 30
    ledger = load_ledger(ledger_path)
    assert (ledger.events, ledger.unknown_events) == (10, 10)
    acked = _per_hour([t for n, t in enumerate(targets) if answers[n % 3] == 200])
    unknown = _per_hour([t for n, t in enumerate(targets) if answers[n % 3] == 504])
    assert {h: Tally(e.clicks, e.impressions, e.users) for h, e in ledger.hours.items()
            if e.events} == acked  # fmt: skip
    assert {h: e.unknown for h, e in ledger.hours.items() if e.unknown.events} == unknown


def test_with_retries_a_503_is_retried_and_a_504_is_not() -> None:
    with ScriptedServer(lambda n: 504 if n % 2 == 0 else 503) as server:
        code, report = run_json("post", "--url", server.url, "-n", "6", "-c", "1")
        count = server.count
    # each POST: 504 (unknown, final); the next one's 503 is retried and meets the next 504
    assert code == 1, report
    assert report["unknown"] == 6 and report["acknowledged"] == 0
    assert count == 6 + report["retried"]
    assert report["answers"] == {"504": 6}


def test_a_server_that_never_answers_ends_the_run_early() -> None:
    with ScriptedServer(lambda n: "drop") as server:
        code, report = run_json("post", "--url", server.url, "-n", "100000", "-c", "2",
                                "--retries", "1")  # fmt: skip
    assert code == 1
    assert report["requests"] < 1000 and report["acknowledged"] == 0
    assert report["failures"] == {"connection error": report["requests"]}
    assert "no answer" in report["gave_up"]


def test_rate_paces_the_requests() -> None:
    with ScriptedServer(lambda n: 200) as server:
        code, report = run_json("get", "--url", server.url, "-n", "21", "-c", "4",
                                "--rate", "100")  # fmt: skip
    assert code == 0
    assert report["seconds"] >= 0.19  # the 21st request may not start before 0.2 s


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["post", "--url", "http://127.0.0.1:{free_port}"], ["cannot reach", "refused"]),
        (["get", "--url", "localhost:8080"], ["--url"]),
        (["post", "--url", "http://127.0.0.1:99999"], ["--url"]),
        (["post", "--users", "/nonexistent/users.txt"], ["no such file"]),
        (["get", "--verify", "/nonexistent/ledger.json"], ["no such file"]),
        (["post", "--old-hours", "0"], ["--old-hours"]),
    ],
)
def test_user_errors_are_one_line(args: list[str], words: list[str]) -> None:
    # the free port is chosen now, when the test runs, not when the tests are collected
    args = [a.replace("{free_port}", str(free_port())) for a in args]
    assert_one_line_error(tapad("loadgen", *args), *words)


def test_a_malformed_ledger_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "ledger.json"
    bad.write_text("{")
    result = tapad("loadgen", "post", "--ledger", str(bad), "--url", "http://127.0.0.1:1")
    assert_one_line_error(result, "not JSON")
