"""The ledger: what the server acknowledged, per hour, so ``tally`` and ``get --verify``
can hold the store to it.

Acknowledged events (200) are the ledger's floor: the store must hold at least them. Events
whose outcome is unknown (a 504, a client timeout, a connection lost after the request was
sent) are kept apart: the store may or may not hold them, so they only raise the ceiling
(``acked <= stored <= acked + unknown``). A 503 is a promise that nothing was recorded, so
those events are in neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapad.buckets import format_hour, parse_hour

FORMAT = "tapad-ledger/1"


class LedgerError(Exception):
    """The ledger file cannot be read or written; ``str()`` is one line for the user."""


@dataclass
class Tally:
    """Events of one hour: clicks, impressions and the distinct users behind them."""

    clicks: int = 0
    impressions: int = 0
    users: set[str] = field(default_factory=set)

    @property
    def unique_users(self) -> int:
        return len(self.users)

    @property
    def events(self) -> int:
        return self.clicks + self.impressions

    def add(self, user: str, click: bool) -> None:
        if click:
            self.clicks += 1
        else:
            self.impressions += 1
        self.users.add(user)

    def merge(self, other: Tally) -> None:
        self.clicks += other.clicks
        self.impressions += other.impressions
        self.users |= other.users

    def to_json(self) -> dict[str, Any]:
        return {
            "clicks": self.clicks,
            "impressions": self.impressions,
            "unique_users": self.unique_users,
            "users": sorted(self.users),
        }

    @classmethod
    def from_json(cls, entry: Any) -> Tally:
        users = entry["users"]
        clicks, impressions = int(entry["clicks"]), int(entry["impressions"])
        if not isinstance(users, list) or clicks < 0 or impressions < 0:
            raise ValueError("bad numbers or users")
        return cls(clicks, impressions, {str(u) for u in users})


@dataclass
class HourEntry(Tally):
    """One hour of the ledger: the acknowledged events, and apart those of unknown outcome."""

    unknown: Tally = field(default_factory=Tally)


@dataclass
class Ledger:
    hours: dict[int, HourEntry] = field(default_factory=dict)

    def record(self, hour: int, user: str, click: bool) -> None:
        """An acknowledged event (200)."""
        self._entry(hour).add(user, click)

    def record_unknown(self, hour: int, user: str, click: bool) -> None:
        """An event whose outcome is unknown (504, timeout, connection lost after sending)."""
        self._entry(hour).unknown.add(user, click)

    def _entry(self, hour: int) -> HourEntry:
        entry = self.hours.get(hour)
        if entry is None:
            entry = self.hours[hour] = HourEntry()
        return entry

    def merge(self, other: Ledger) -> None:
        """Add another run's events: one ledger can follow a store across several runs."""
        for hour, theirs in other.hours.items():
            mine = self._entry(hour)
            mine.merge(theirs)
            mine.unknown.merge(theirs.unknown)

    @property
    def events(self) -> int:
        """Acknowledged events."""
        return sum(e.events for e in self.hours.values())

    @property
    def unknown_events(self) -> int:
        return sum(e.unknown.events for e in self.hours.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "hours": {
                format_hour(hour): _entry_json(entry)
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
                acked = Tally.from_json(entry)
                unknown = Tally.from_json(entry["unknown"]) if "unknown" in entry else Tally()
            except (ValueError, KeyError, TypeError) as exc:
                raise LedgerError(f"{source}: hour {text!r} is malformed ({exc})") from None
            ledger.hours[hour] = HourEntry(acked.clicks, acked.impressions, acked.users, unknown)
        return ledger


def _entry_json(entry: HourEntry) -> dict[str, Any]:
    data = entry.to_json()
    if entry.unknown.events:  # ledgers without unknown events read as before
        data["unknown"] = entry.unknown.to_json()
    return data


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
