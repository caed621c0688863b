"""``tapad loadgen post --batch N``: batches with the same mix, and a ledger ``tally`` agrees
with exactly, against a real server on each store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapad.loadgen.ledger import load_ledger
from tests.loadgen.cli import assert_one_line_error, tapad
from tests.support import InProcessTapad


def test_batches_are_acknowledged_whole_and_tally_agrees_with_the_ledger(
    tapad_server: InProcessTapad, store_url: str, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.json"
    result = tapad("loadgen", "post", "--url", tapad_server.url, "-n", "40", "-c", "4",
                   "--batch", "250", "--ledger", str(ledger_path), "--json")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["acknowledged"] == 40 and report["failures"] == {}
    assert report["ledger"]["added"] == 40 * 250  # every event of every 200
    ledger = load_ledger(ledger_path)
    assert ledger.events == 10_000
    assert len(ledger.hours) > 1  # the 5% past-hour share reached other hours

    check = tapad("tally", "--store", store_url, "--ledger", str(ledger_path))
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("size", ["-1", "10001"])
def test_a_batch_size_out_of_range_is_one_line(size: str) -> None:
    result = tapad("loadgen", "post", "--url", "http://127.0.0.1:9", "--batch", size)
    assert_one_line_error(result, "--batch must be between 1 and 10000 events")
