"""Checking GET answers: well formed, and never below what the ledger says was acknowledged."""

from __future__ import annotations

from dataclasses import dataclass, field

from tapad.buckets import format_hour
from tapad.loadgen.ledger import Ledger

MALFORMED = "malformed answer"
BELOW_LEDGER = "below ledger"
KEEP = 10  # mismatches kept for the report
# How far an approximate (HyperLogLog) unique count may be from the ledger: its standard error
# is about 0.81%, so 3% is well past 3 sigma. ``loadgen get --hll`` and ``tally`` both use it.
HLL_TOLERANCE = 0.03


def parse_answer(body: bytes) -> tuple[int, int, int] | None:
    """(unique users, clicks, impressions) from a GET body, or None if it is not one."""
    try:
        lines = body.decode("ascii").split("\n")
        if len(lines) != 4 or lines[3]:
            return None
        values = []
        for line, name in zip(lines, ("unique_users", "clicks", "impressions"), strict=False):
            key, _, number = line.partition(",")
            if key != name or not number.isdigit():
                return None
            values.append(int(number))
    except UnicodeDecodeError:
        return None
    return values[0], values[1], values[2]


@dataclass
class Verifier:
    """Holds GET answers to a ledger; ``tolerance`` allows approximate (hll) unique counts."""

    ledger: Ledger | None = None
    tolerance: float = 0.0
    mismatches: list[str] = field(default_factory=list)
    checked: int = 0

    def check(self, hour: int, body: bytes) -> str | None:
        answer = parse_answer(body)
        if answer is None:
            return MALFORMED
        if self.ledger is None:
            return None
        self.checked += 1
        entry = self.ledger.hours.get(hour)
        if entry is None:
            return None
        users, clicks, impressions = answer
        floor_users = entry.unique_users * (1 - self.tolerance)
        if users >= floor_users and clicks >= entry.clicks and impressions >= entry.impressions:
            return None
        if len(self.mismatches) < KEEP:
            self.mismatches.append(
                f"{format_hour(hour)}: answered users {users}, clicks {clicks}, impressions "
                f"{impressions}; ledger has {entry.unique_users}, {entry.clicks}, "
                f"{entry.impressions}"
            )
        return BELOW_LEDGER
