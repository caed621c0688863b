from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapad.buckets import parse_hour
from tapad.loadgen.ledger import Ledger, LedgerError, load_ledger, save_ledger
from tapad.loadgen.verify import BELOW_LEDGER, MALFORMED, Verifier, parse_answer

H = parse_hour("2026-11-27T18")


def test_record_merge_and_round_trip(tmp_path: Path) -> None:
    first, second = Ledger(), Ledger()
    first.record(H, "ann", True)
    first.record(H, "ann", False)
    second.record(H, "bob", True)
    second.record(H - 1, "ann", False)
    first.merge(second)
    assert (first.hours[H].clicks, first.hours[H].impressions, first.hours[H].unique_users) == (
        2, 1, 2,
    )  # fmt: skip
    assert first.events == 4
    path = tmp_path / "ledger.json"
    save_ledger(path, first)
    assert json.loads(path.read_text())["hours"]["2026-11-27T18"]["users"] == ["ann", "bob"]
    again = load_ledger(path)
    assert again.hours.keys() == first.hours.keys()
    assert all(again.hours[h] == first.hours[h] for h in first.hours)


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"format": "other"}', '{"format": "tapad-ledger/1", "hours": {"x": {}}}'],
)
def test_bad_ledgers_are_refused_with_a_message(text: str, tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    path.write_text(text)
    with pytest.raises(LedgerError, match="ledger"):
        load_ledger(path)


def test_unknown_outcomes_are_kept_apart_merged_and_round_tripped(tmp_path: Path) -> None:
    first, second = Ledger(), Ledger()
    first.record(H, "ann", True)
    first.record_unknown(H, "bob", True)
    second.record_unknown(H, "cy", False)
    second.record_unknown(H - 2, "dee", True)
    second.record(H - 1, "eve", True)
    first.merge(second)
    assert (first.events, first.unknown_events) == (2, 3)
    assert first.hours[H].users == {"ann"}
    assert (first.hours[H].unknown.clicks, first.hours[H].unknown.impressions) == (1, 1)
    assert first.hours[H].unknown.users == {"bob", "cy"}
    path = tmp_path / "ledger.json"
    save_ledger(path, first)
    again = load_ledger(path)
    assert again.hours == first.hours
    saved = json.loads(path.read_text())["hours"]
    assert saved["2026-11-27T18"]["unknown"]["users"] == ["bob", "cy"]
    assert "unknown" not in saved["2026-11-27T17"]  # no unknown events there: as before


def test_missing_ledger() -> None:
    with pytest.raises(LedgerError, match="no such file"):
        load_ledger(Path("/nonexistent/ledger.json"))
    assert load_ledger(Path("/nonexistent/ledger.json"), missing_ok=True).hours == {}


def test_parse_answer() -> None:
    assert parse_answer(b"unique_users,3\nclicks,2\nimpressions,1\n") == (3, 2, 1)
    for bad in (b"", b"unique_users,3\nclicks,2\n", b"clicks,2\nunique_users,3\nimpressions,1\n",
                b"unique_users,-1\nclicks,2\nimpressions,1\n", b"\xff"):  # fmt: skip
        assert parse_answer(bad) is None


def test_verifier_accepts_more_and_flags_less() -> None:
    ledger = Ledger()
    for user in ("a", "b", "c"):
        ledger.record(H, user, True)
    verifier = Verifier(ledger)
    assert verifier.check(H, b"unique_users,3\nclicks,5\nimpressions,0\n") is None
    assert verifier.check(H - 5, b"unique_users,0\nclicks,0\nimpressions,0\n") is None
    assert verifier.check(H, b"unique_users,2\nclicks,3\nimpressions,0\n") == BELOW_LEDGER
    assert verifier.check(H, b"oops") == MALFORMED
    assert len(verifier.mismatches) == 1 and "2026-11-27T18" in verifier.mismatches[0]
    hll = Verifier(ledger, tolerance=0.5)
    assert hll.check(H, b"unique_users,2\nclicks,3\nimpressions,0\n") is None
