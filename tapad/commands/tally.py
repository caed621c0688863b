"""``tapad tally``: read each hour straight from the store and hold it to a ledger.

Going around the HTTP server is the point: if the server lied (acknowledged an event it
never committed, or counted one twice), only the store itself can show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapad.buckets import format_hour, parse_hour
from tapad.loadgen.ledger import HourEntry, Ledger
from tapad.loadgen.verify import HLL_TOLERANCE
from tapad.store import (
    HourCounts,
    StoreConfigError,
    StoreError,
    StoreOptions,
    UniqueCount,
    open_store,
    parse_store_url,
    redact,
)
from tapad.words import counted


class TallyError(Exception):
    """A problem the user can fix; ``str()`` is the one line they see."""


@dataclass(frozen=True)
class HourRow:
    hour: int
    counts: HourCounts

    @property
    def events(self) -> int:
        return self.counts.clicks + self.counts.impressions


@dataclass(frozen=True)
class Tally:
    """What ``tally`` read: the rows, newest first, and the distinct users over all of them
    (a user of several hours counted once, unlike the sum of the rows)."""

    rows: list[HourRow]
    unique_mode: str
    distinct: UniqueCount


async def read_store(url: str, hour: int | None, extra_hours: set[int]) -> Tally:
    """The rows for ``hour`` (or every hour with data, plus ``extra_hours``), newest first."""
    try:
        settings = parse_store_url(url)
        if settings.scheme == "sqlite" and not Path(settings.path).is_file():
            raise TallyError(
                f"no database at {settings.path} (check --store; tapad serve creates it)"
            )
        store = open_store(url, StoreOptions(timeout=5.0))
    except StoreConfigError as exc:
        raise TallyError(str(exc)) from None
    try:
        await store.connect()
        hours = {hour} if hour is not None else set(await store.hours()) | extra_hours
        ordered = sorted(hours, reverse=True)
        rows = [
            HourRow(h, c) for h, c in zip(ordered, await store.read_hours(ordered), strict=True)
        ]
        return Tally(rows, store.unique_mode, await store.uniques(ordered))
    except StoreConfigError as exc:
        raise TallyError(str(exc)) from None
    except (StoreError, OSError) as exc:
        raise TallyError(f"cannot read store {redact(url)}: {exc}") from None
    finally:
        # closing a store that never connected must not hide the real error
        with contextlib.suppress(Exception):
            await store.close()


def compare(
    rows: list[HourRow], ledger: Ledger, unique_mode: str, *, at_least: bool = False
) -> list[str]:
    """One line per number outside what the ledger allows.

    The store must hold every acknowledged event, and may hold any of those whose outcome is
    unknown (504, timeout): ``acked <= stored <= acked + unknown``, for clicks, impressions and
    unique users alike (users: approximately on hll). Without unknown events that is equality.
    ``at_least``: only the lower bound, for a store that other writers fill too.
    """
    differences = []
    for row in rows:
        entry = ledger.hours.get(row.hour) or HourEntry()
        label = format_hour(row.hour)
        counts = row.counts
        checks = (
            ("unique users", counts.unique_users, entry.unique_users,
             len(entry.users | entry.unknown.users)),
            ("clicks", counts.clicks, entry.clicks, entry.clicks + entry.unknown.clicks),
            ("impressions", counts.impressions, entry.impressions,
             entry.impressions + entry.unknown.impressions),
        )  # fmt: skip
        for name, have, low, high in checks:
            approximate = name == "unique users" and unique_mode == "hll"
            slack = HLL_TOLERANCE * max(high, 1) if approximate else 0
            if low - slack <= have and (at_least or have <= high + slack):
                continue
            expected = f"{low}" if high == low else f"{low} acknowledged + {high - low} unknown"
            if at_least:
                expected = f"at least {low}"
            note = f" (more than {HLL_TOLERANCE:.0%} apart)" if approximate else ""
            differences.append(f"{label} {name}: store {have}, ledger {expected}{note}")
    return differences


@dataclass(frozen=True)
class UnknownOutcomes:
    """How the events of unknown outcome turned out, read from the store's counts."""

    events: int
    recorded: int

    @property
    def not_recorded(self) -> int:
        return self.events - self.recorded


def unknown_outcomes(rows: list[HourRow], ledger: Ledger) -> UnknownOutcomes:
    """Events past the acknowledged ones in each hour are unknown ones that were recorded.

    Exact when the store holds only this ledger's events and ``compare`` found nothing.
    """
    recorded = 0
    for row in rows:
        entry = ledger.hours.get(row.hour)
        if entry is None:
            continue
        for have, acked, unknown in (
            (row.counts.clicks, entry.clicks, entry.unknown.clicks),
            (row.counts.impressions, entry.impressions, entry.unknown.impressions),
        ):
            recorded += min(max(have - acked, 0), unknown)
    return UnknownOutcomes(ledger.unknown_events, recorded)


def beyond_ledger(rows: list[HourRow], ledger: Ledger) -> int:
    """Events the store holds past what the ledger accounts for (acknowledged + unknown)."""
    extra = 0
    for row in rows:
        entry = ledger.hours.get(row.hour) or HourEntry()
        extra += max(row.counts.clicks - entry.clicks - entry.unknown.clicks, 0)
        extra += max(row.counts.impressions - entry.impressions - entry.unknown.impressions, 0)
    return extra


@dataclass(frozen=True)
class Check:
    """What was held to the ledger and what came of it."""

    differences: list[str]
    exact: bool  # False: other writers, so only "at least the ledger's" was checked
    other_events: int = 0

    def note(self, ledger_path: Path) -> str:
        """The one line saying that the store holds more than the ledger accounts for."""
        return (
            f"the store holds {counted(self.other_events, 'event')} more than ledger "
            f"{ledger_path} accounts for (other writers?): checked that it holds at least what "
            "the ledger acknowledged (--exact to require equality)"
        )


def check(rows: list[HourRow], ledger: Ledger, unique_mode: str, exact: bool) -> Check:
    """Equality when the store holds only the ledger's events (or ``exact``), else at least.

    A ledger knows only what its own load sent. A store that others also write to (the
    README's quick start, a second load run without the ledger) holds more, and all a ledger
    can then say is that nothing it was promised is missing.
    """
    differences = compare(rows, ledger, unique_mode)
    if exact or not differences:
        return Check(differences, exact=True)
    lower = compare(rows, ledger, unique_mode, at_least=True)
    return Check(lower, exact=False, other_events=beyond_ledger(rows, ledger))


def run_tally(
    store_url: str,
    hour_text: str | None,
    ledger_path: Path | None,
    as_json: bool,
    exact: bool = False,
) -> int:
    """Print the store's hours (and any difference from the ledger); 1 if there is one."""
    hour = None
    if hour_text is not None:
        try:
            hour = parse_hour(hour_text)
        except ValueError as exc:
            raise TallyError(f"--hour {exc}") from None
    ledger = None
    if ledger_path is not None:
        from tapad.loadgen.ledger import LedgerError, load_ledger

        try:
            ledger = load_ledger(ledger_path)
        except LedgerError as exc:
            raise TallyError(str(exc)) from None
    extra = set(ledger.hours) if ledger is not None else set()
    tally = asyncio.run(read_store(store_url, hour, extra))
    rows = tally.rows
    held = check(rows, ledger, tally.unique_mode, exact) if ledger is not None else Check([], True)
    unknown = unknown_outcomes(rows, ledger) if ledger is not None else UnknownOutcomes(0, 0)
    if as_json:
        _print_json(store_url, tally, ledger_path, held, unknown)
    else:
        _print_table(store_url, tally, ledger_path, held, unknown)
    return 1 if held.differences else 0


def _totals(rows: list[HourRow]) -> HourCounts:
    total = HourCounts()
    for row in rows:
        total = total + row.counts
    return total


def _print_json(
    store_url: str,
    tally: Tally,
    ledger_path: Path | None,
    held: Check,
    unknown: UnknownOutcomes,
) -> None:
    rows = tally.rows
    total = _totals(rows)
    data: dict[str, Any] = {
        "store": redact(store_url),
        "unique_mode": tally.unique_mode,
        "hours": [
            {
                "hour": format_hour(r.hour),
                "unique_users": r.counts.unique_users,
                "clicks": r.counts.clicks,
                "impressions": r.counts.impressions,
                "events": r.events,
            }
            for r in rows
        ],
        "totals": {
            "unique_users": tally.distinct.unique_users,
            "unique_users_exact": tally.distinct.exact,
            "unique_users_summed": total.unique_users,
            "clicks": total.clicks,
            "impressions": total.impressions,
            "events": total.clicks + total.impressions,
        },
    }
    if ledger_path is not None:
        data["ledger"] = {
            "path": str(ledger_path),
            "check": "exact" if held.exact else "at least",
            "other_events": held.other_events,
            "differences": held.differences,
            "unknown": {
                "events": unknown.events,
                "recorded": unknown.recorded,
                "not_recorded": unknown.not_recorded,
            },
        }
    print(json.dumps(data))


def _print_table(
    store_url: str,
    tally: Tally,
    ledger_path: Path | None,
    held: Check,
    unknown: UnknownOutcomes,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = tally.rows
    uniques = "unique users" + (" (≈ hll)" if tally.unique_mode == "hll" else "")
    table = Table(title=f"tally {redact(store_url)}", title_justify="left", show_footer=bool(rows))
    total = _totals(rows)
    # A user seen in several hours is in several rows: the column's total is a sum of
    # hours, and says so; the distinct users over the range are the line below the table.
    table.add_column("hour (UTC)", footer="sum of hours")
    table.add_column(uniques, justify="right", footer=f"{total.unique_users:,}")
    table.add_column("clicks", justify="right", footer=f"{total.clicks:,}")
    table.add_column("impressions", justify="right", footer=f"{total.impressions:,}")
    table.add_column("events", justify="right", footer=f"{total.clicks + total.impressions:,}")
    for row in rows:
        table.add_row(
            format_hour(row.hour),
            f"{row.counts.unique_users:,}",
            f"{row.counts.clicks:,}",
            f"{row.counts.impressions:,}",
            f"{row.events:,}",
        )
    if rows:
        console.print(table)
        estimate = "" if tally.distinct.exact else " (≈ hll estimate)"
        console.print(
            f"distinct users over these {len(rows):,} hours: "
            f"{tally.distinct.unique_users:,}{estimate}",
            highlight=False,
        )
    else:
        console.print("the store holds no events" if ledger_path is None else "no hours to show")
    if ledger_path is None:
        return
    differences = held.differences
    if not held.exact:
        console.print(held.note(ledger_path), highlight=False, soft_wrap=True)
    if not differences and not held.exact:
        console.print(
            f"[green]ledger {ledger_path}: the store holds every acknowledged event[/green]",
            highlight=False,
        )
        return
    if not differences:
        exactly = "" if unknown.events else " exactly"  # no event of unknown outcome to allow
        console.print(
            f"[green]ledger {ledger_path} agrees with the store{exactly}[/green]", highlight=False
        )
        if unknown.events:
            console.print(
                f"{unknown.events:,} events of unknown outcome (504, timeout): "
                f"{unknown.recorded:,} recorded, {unknown.not_recorded:,} not",
                highlight=False,
            )
        return
    for line in differences:
        console.print(f"[red]differs[/red] {line}", highlight=False)
    console.print(
        f"[red]{counted(len(differences), 'difference')} from ledger {ledger_path}[/red]",
        highlight=False,
    )
