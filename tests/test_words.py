from __future__ import annotations

from tapad.words import counted


def test_one_is_singular_and_everything_else_plural() -> None:
    assert counted(1, "hour") == "1 hour"
    assert counted(0, "hour") == "0 hours"
    assert counted(12_000, "acknowledged event") == "12,000 acknowledged events"
    assert counted(2, "difference") == "2 differences"
