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
from typing import TYPE_CHECKING, Any

from tapad.hours import format_hour, parse_hour
from tapad.loadgen.verify import HLL_TOLERANCE
from tapad.store import (
    HourCounts,
    StoreConfigError,
    StoreError,
    open_store,
    parse_store_url,
    redact,
)

if TYPE_CHECKING:
    from tapad.loadgen.ledger import Ledger


class TallyError(Exception):
    """A problem the user can fix; ``str()`` is the one line they see."""


@dataclass(frozen=True)
class HourRow:
    hour: int
    counts: HourCounts

    @property
    def events(self) -> int:
        return self.counts.clicks + self.counts.impressions


async def read_store(
    url: str, hour: int | None, extra_hours: set[int]
) -> tuple[list[HourRow], str]:
    """The rows for ``hour`` (or every hour with data, plus ``extra_hours``), newest first."""
    try:
        settings = parse_store_url(url)
        if settings.scheme == "sqlite" and not Path(settings.path).is_file():
            raise TallyError(
                f"no database at {settings.path} (check --store; tapad serve creates it)"
            )
        store = open_store(url, timeout=5.0)
    except StoreConfigError as exc:
        raise TallyError(str(exc)) from None
    try:
        await store.connect()
        hours = {hour} if hour is not None else set(await store.hours()) | extra_hours
        ordered = sorted(hours, reverse=True)
        rows = [
            HourRow(h, c) for h, c in zip(ordered, await store.read_hours(ordered), strict=True)
        ]
        return rows, store.unique_mode
    except StoreConfigError as exc:
        raise TallyError(str(exc)) from None
    except (StoreError, OSError) as exc:
        raise TallyError(f"cannot read store {redact(url)}: {exc}") from None
    finally:
        # closing a store that never connected must not hide the real error
        with contextlib.suppress(Exception):
            await store.close()


def compare(rows: list[HourRow], ledger: Ledger, unique_mode: str) -> list[str]:
    """One line per number that differs; clicks and impressions must match exactly."""
    differences = []
    for row in rows:
        entry = ledger.hours.get(row.hour)
        want = (entry.unique_users, entry.clicks, entry.impressions) if entry else (0, 0, 0)
        got = (row.counts.unique_users, row.counts.clicks, row.counts.impressions)
        label = format_hour(row.hour)
        for name, have, expected in zip(
            ("unique users", "clicks", "impressions"), got, want, strict=True
        ):
            if have == expected:
                continue
            if name == "unique users" and unique_mode == "hll":
                if abs(have - expected) <= HLL_TOLERANCE * max(expected, 1):
                    continue
                differences.append(
                    f"{label} {name}: store {have}, ledger {expected} "
                    f"(more than {HLL_TOLERANCE:.0%} apart)"
                )
                continue
            differences.append(f"{label} {name}: store {have}, ledger {expected}")
    return differences


def run_tally(
    store_url: str, hour_text: str | None, ledger_path: Path | None, as_json: bool
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
    rows, unique_mode = asyncio.run(read_store(store_url, hour, extra))
    differences = compare(rows, ledger, unique_mode) if ledger is not None else []
    if as_json:
        _print_json(store_url, rows, unique_mode, ledger_path, differences)
    else:
        _print_table(store_url, rows, unique_mode, ledger_path, differences)
    return 1 if differences else 0


def _totals(rows: list[HourRow]) -> HourCounts:
    total = HourCounts()
    for row in rows:
        total = total + row.counts
    return total


def _print_json(
    store_url: str,
    rows: list[HourRow],
    unique_mode: str,
    ledger_path: Path | None,
    differences: list[str],
) -> None:
    total = _totals(rows)
    data: dict[str, Any] = {
        "store": redact(store_url),
        "unique_mode": unique_mode,
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
            "unique_users_summed": total.unique_users,
            "clicks": total.clicks,
            "impressions": total.impressions,
            "events": total.clicks + total.impressions,
        },
    }
    if ledger_path is not None:
        data["ledger"] = {"path": str(ledger_path), "differences": differences}
    print(json.dumps(data))


def _print_table(
    store_url: str,
    rows: list[HourRow],
    unique_mode: str,
    ledger_path: Path | None,
    differences: list[str],
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    uniques = "unique users" + (" (≈ hll)" if unique_mode == "hll" else "")
    table = Table(title=f"tally {redact(store_url)}", title_justify="left", show_footer=bool(rows))
    total = _totals(rows)
    table.add_column("hour (UTC)", footer="total")
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
    else:
        console.print("the store holds no events" if ledger_path is None else "no hours to show")
    if ledger_path is None:
        return
    if not differences:
        console.print(f"[green]ledger {ledger_path} agrees with the store[/green]", highlight=False)
        return
    for line in differences:
        console.print(f"[red]differs[/red] {line}", highlight=False)
    console.print(
        f"[red]{len(differences)} difference(s) from ledger {ledger_path}[/red]", highlight=False
    )
