"""``tapad loadgen post --ids``: every event carries an id, every failure is retried with the
same ids until acknowledged, and the ledger counts each event once, so ``tally`` agrees with
the store exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tapad.loadgen.ledger import load_ledger
from tests.loadgen.cli import tapad
from tests.loadgen.scripted import ScriptedServer
from tests.support import InProcessTapad


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = tapad("loadgen", *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def ids_of(target: str) -> list[str]:
    return parse_qs(urlsplit(target).query, keep_blank_values=True).get("id", [])


def test_every_failure_is_retried_with_the_same_id_until_acknowledged(tmp_path: Path) -> None:
    """504, a dropped connection, a timeout, 502 and 503 are all retried; none is unknown."""
    script: dict[int, int | str] = {0: 504, 1: "drop", 2: "stall", 3: 502, 4: 503}
    ledger_path = tmp_path / "ledger.json"
    with ScriptedServer(lambda n: script.get(n, 200), stall_seconds=3) as server:
        code, report = run_json("post", "--url", server.url, "-n", "3", "-c", "1", "--ids",
                                "--timeout", "1", "--ledger", str(ledger_path))  # fmt: skip
        targets = list(server.targets)
    assert code == 0, report
    assert (report["acknowledged"], report["unknown"], report["retried"]) == (3, 0, 5)
    assert report["failures"] == {}
    ids = [ids_of(t) for t in targets]
    assert all(len(found) == 1 for found in ids), targets
    # the first event was sent six times, always with its id; the next two once each
    assert len({found[0] for found in ids[:6]}) == 1
    assert len({found[0] for found in ids}) == 3
    ledger = load_ledger(ledger_path)
    assert (ledger.events, ledger.unknown_events) == (3, 0)


def test_batches_keep_their_ids_across_retries() -> None:
    with ScriptedServer(lambda n: 504 if n == 0 else 200) as server:
        code, report = run_json("post", "--url", server.url, "-n", "2", "-c", "1",
                                "--batch", "50", "--ids")  # fmt: skip
        bodies = list(server.bodies)
    assert code == 0, report
    assert report["acknowledged"] == 2 and report["retried"] == 1
    first, retry, second = ([json.loads(line)["id"] for line in b.splitlines()] for b in bodies)
    assert first == retry and len(set(first)) == 50
    assert not set(first) & set(second)


def test_an_event_never_acknowledged_in_time_is_unknown(tmp_path: Path) -> None:
    """Past --retry-for, an event whose attempts included a 504 may have been recorded."""
    ledger_path = tmp_path / "ledger.json"
    with ScriptedServer(lambda n: 504 if n == 0 else 503) as server:
        code, report = run_json("post", "--url", server.url, "-n", "1", "-c", "1", "--ids",
                                "--retry-for", "0.5", "--ledger", str(ledger_path))  # fmt: skip
    assert code == 1
    assert report["unknown"] == 1 and report["acknowledged"] == 0
    assert report["answers"] == {"503": 1}  # the last answer; the 504 before it still counts
    assert load_ledger(ledger_path).unknown_events == 1


def test_without_ids_there_is_no_id_and_a_504_is_not_retried() -> None:
    with ScriptedServer(lambda n: 504 if n == 0 else 200) as server:
        code, report = run_json("post", "--url", server.url, "-n", "2", "-c", "1")
        assert code == 1, report
        targets = list(server.targets)
    assert report["unknown"] == 1 and report["retried"] == 0
    assert all(not ids_of(t) for t in targets)


@pytest.mark.parametrize("batch", ["0", "200"])
def test_tally_agrees_exactly_with_a_run_with_ids(
    tapad_server: InProcessTapad, store_url: str, tmp_path: Path, batch: str
) -> None:
    ledger_path = tmp_path / "ledger.json"
    code, report = run_json("post", "--url", tapad_server.url, "-n", "300", "-c", "8",
                            "--batch", batch, "--ids", "--processes", "2",
                            "--ledger", str(ledger_path))  # fmt: skip
    assert code == 0, report
    assert report["duplicates"] == 0 and report["unknown"] == 0
    events = 300 * (int(batch) or 1)
    assert load_ledger(ledger_path).events == events
    check = tapad("tally", "--store", store_url, "--ledger", str(ledger_path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "agrees with the store exactly" in check.stdout
