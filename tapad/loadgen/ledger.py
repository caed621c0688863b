"""The ledger: what the server acknowledged, per hour, so ``tally`` and ``get --verify``
can hold the store to it.

Only acknowledged events go in: a request that failed or timed out may or may not have
been recorded, and the ledger must never claim more than the server promised.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapad.hours import format_hour, parse_hour

FORMAT = "tapad-ledger/1"


class LedgerError(Exception):
    """The ledger file cannot be read or written; ``str()`` is one line for the user."""


@dataclass
class HourEntry:
    clicks: int = 0
    impressions: int = 0
    users: set[str] = field(default_factory=set)

    @property
    def unique_users(self) -> int:
        return len(self.users)


@dataclass
class Ledger:
    hours: dict[int, HourEntry] = field(default_factory=dict)

    def record(self, hour: int, user: str, click: bool) -> None:
        entry = self.hours.get(hour)
        if entry is None:
            entry = self.hours[hour] = HourEntry()
        if click:
            entry.clicks += 1
        else:
            entry.impressions += 1
        entry.users.add(user)

    def merge(self, other: Ledger) -> None:
        """Add another run's events: one ledger can follow a store across several runs."""
        for hour, theirs in other.hours.items():
            mine = self.hours.setdefault(hour, HourEntry())
            mine.clicks += theirs.clicks
            mine.impressions += theirs.impressions
            mine.users |= theirs.users

    @property
    def events(self) -> int:
        return sum(e.clicks + e.impressions for e in self.hours.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "hours": {
                format_hour(hour): {
                    "clicks": entry.clicks,
                    "impressions": entry.impressions,
                    "unique_users": entry.unique_users,
                    "users": sorted(entry.users),
                }
                for hour, entry in sorted(self.hours.items(), reverse=True)
            },
        }

    @classmethod
    def from_json(cls, data: object, source: str = "ledger") -> Ledger:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LedgerError(f'{source} is not a tapad ledger (no "format": "{FORMAT}")')
        ledger = cls()
        hours = data.get("hours")
        if not isinstance(hours, dict):
            raise LedgerError(f'{source}: "hours" must be an object')
        for text, entry in hours.items():
            try:
                hour = parse_hour(text)
                users = entry["users"]
                clicks, impressions = int(entry["clicks"]), int(entry["impressions"])
                if not isinstance(users, list) or clicks < 0 or impressions < 0:
                    raise ValueError("bad numbers or users")
            except (ValueError, KeyError, TypeError) as exc:
                raise LedgerError(f"{source}: hour {text!r} is malformed ({exc})") from None
            ledger.hours[hour] = HourEntry(clicks, impressions, {str(u) for u in users})
        return ledger


def load_ledger(path: Path, *, missing_ok: bool = False) -> Ledger:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return Ledger()
        raise LedgerError(f"ledger {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LedgerError(f"ledger {path} is not JSON: {exc}") from None
    return Ledger.from_json(data, f"ledger {path}")


def save_ledger(path: Path, ledger: Ledger) -> None:
    """Write in one rename: an interrupted run must not leave a half-written ledger."""
    directory = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(ledger.to_json(), handle, indent=1)
            handle.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise LedgerError(f"cannot write ledger {path}: {exc.strerror or exc}") from None
