"""``tapad export``: a range of hours straight from the store, as ``GET /analytics/hours`` gives it.

The rows and their text come from ``tapad.hour_rows``, the very code the server answers with,
so a file exported here and a range asked over HTTP are the same bytes. A range longer than
one request may ask for is read in chunks of that size (one store round trip each) and
written as it comes, with a progress bar when standard error is a terminal.

``--by day`` writes one row per UTC day instead: the range is widened to whole days, and each
day's unique users are its distinct users (``Store.uniques`` over its 24 hours), not the sum
of its hours'.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from tapad.buckets import current_hour, format_hour, parse_hour
from tapad.hour_rows import HOURS_PER_DAY, MAX_HOURS, render, render_days
from tapad.store import (
    HourCounts,
    Store,
    StoreConfigError,
    StoreError,
    StoreOptions,
    open_store,
    parse_store_url,
    redact,
)
from tapad.words import counted

STORE_TIMEOUT = 5.0  # seconds per store call: a one-off command can wait longer than a server
PROGRESS_FROM_HOURS = MAX_HOURS  # a bar only when there is more than one chunk to read
# Without --from the range starts at the oldest hour with data: one stray event from 1970 (a
# timestamp sent in seconds) makes that half a million hours. Past this many, say so first.
LONG_EXPORT_HOURS = MAX_HOURS


class ExportError(Exception):
    """A problem the user can fix; ``str()`` is the one line they see."""


def parse_bound(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_hour(text)
    except ValueError as exc:
        raise ExportError(f"{option} {exc}") from None


def open_existing(url: str) -> Store:
    """The store a URL names; an SQLite file must already exist (export never creates one)."""
    try:
        settings = parse_store_url(url)
        if settings.scheme == "sqlite" and not Path(settings.path).is_file():
            raise ExportError(
                f"no database at {settings.path} (check --store; tapad serve creates it)"
            )
        return open_store(url, StoreOptions(timeout=STORE_TIMEOUT))
    except StoreConfigError as exc:
        raise ExportError(str(exc)) from None


async def read_range(
    store: Store, first: int, last: int, done: Callable[[int], None]
) -> list[tuple[int, HourCounts]]:
    """Every hour of first..last with its counts, one round trip per ``MAX_HOURS`` hours."""
    rows: list[tuple[int, HourCounts]] = []
    for start in range(first, last + 1, MAX_HOURS):
        hours = list(range(start, min(start + MAX_HOURS, last + 1)))
        rows.extend(zip(hours, await store.read_hours(hours), strict=True))
        done(len(hours))
    return rows


async def daily(store: Store, rows: list[tuple[int, HourCounts]]) -> list[tuple[int, HourCounts]]:
    """Whole days' rows from their hours' rows: the hours' clicks and impressions summed, the
    day's distinct users counted by the store."""
    days: dict[int, HourCounts] = {}
    for hour, counts in rows:
        day = hour // HOURS_PER_DAY
        days[day] = days.get(day, HourCounts()) + counts
    out = []
    for day, counts in days.items():
        start = day * HOURS_PER_DAY
        distinct = await store.uniques(range(start, start + HOURS_PER_DAY))
        out.append((day, HourCounts(distinct.unique_users, counts.clicks, counts.impressions)))
    return out


async def export_rows(
    url: str, first: int | None, last: int | None, by: str = "hour"
) -> tuple[int, int, list[tuple[int, HourCounts]]]:
    """Resolve the defaults (the oldest hour with data .. now) and read the rows (of hours,
    or with ``by="day"`` of whole days)."""
    store = open_existing(url)
    try:
        await store.connect()
        if first is None or last is None:
            oldest_asked = first is None
            with_data = await store.hours()
            now = current_hour()
            if last is None:
                last = max([now, *with_data[:1]])
            if first is None:
                first = min([last, *with_data[-1:]])
            if oldest_asked and last - first + 1 > LONG_EXPORT_HOURS:
                print(long_export_notice(first, last), file=sys.stderr, flush=True)
        if first > last:
            raise ExportError(f"--from {format_hour(first)} is after --to {format_hour(last)}")
        if by == "day":
            first -= first % HOURS_PER_DAY
            last += HOURS_PER_DAY - 1 - last % HOURS_PER_DAY
        with progress_bar(last - first + 1) as done:
            rows = await read_range(store, first, last, done)
        if by == "day":
            rows = await daily(store, rows)
        return first, last, rows
    except StoreConfigError as exc:
        raise ExportError(str(exc)) from None
    except (StoreError, OSError) as exc:
        raise ExportError(f"cannot read store {redact(url)}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):  # never hide the real error behind close's
            await store.close()


def long_export_notice(first: int, last: int) -> str:
    """What a long export without ``--from`` is about to write, and how to narrow it."""
    return (
        f"writing {last - first + 1:,} hours ({format_hour(first)} to {format_hour(last)}): "
        f"the oldest hour with data is {format_hour(first)}; give --from to start later "
        "(tapad delete removes stray hours)"
    )


@contextlib.contextmanager
def output(out: Path | None) -> Iterator[IO[str]]:
    """Standard output, or ``out`` written whole or not at all (a temp file renamed at the end)."""
    if out is None or str(out) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    part = out.with_name(f".{out.name}.part")
    try:
        with open(part, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(part, out)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            part.unlink()


FORMATS = ("csv", "json")
DEFAULT_FORMAT = "csv"


def choose_format(fmt: str | None, out: Path | None) -> str:
    """``--format``, else the one ``--out``'s extension names, else csv.

    ``--out hours.json`` means JSON: writing CSV into it would surprise. A ``--format``
    that says otherwise is a slip to point out, not to settle silently either way.
    """
    suffix = out.suffix.lower().lstrip(".") if out is not None and str(out) != "-" else ""
    named = suffix if suffix in FORMATS else None
    if fmt is None:
        return named or DEFAULT_FORMAT
    if named is not None and named != fmt:
        raise ExportError(f"--format {fmt} contradicts --out {out} (a .{named} file)")
    return fmt


def run_export(
    store_url: str,
    from_text: str | None,
    to_text: str | None,
    fmt: str | None,
    out: Path | None,
    by: str = "hour",
) -> str:
    """Write the rows (of hours, or of days); return a one-line summary for standard error."""
    fmt = choose_format(fmt, out)
    first = parse_bound("--from", from_text)
    last = parse_bound("--to", to_text)
    if first is not None and last is not None and first > last:
        raise ExportError(f"--from {format_hour(first)} is after --to {format_hour(last)}")
    first, last, rows = asyncio.run(export_rows(store_url, first, last, by))
    with output(out) as fh:
        for piece in render_days(fmt, rows) if by == "day" else render(fmt, rows):
            fh.write(piece)
    where = "standard output" if out is None or str(out) == "-" else str(out)
    span = f"{format_hour(first)} to {format_hour(last)}"
    return f"exported {counted(len(rows), 'day' if by == 'day' else 'hour')} ({span}) to {where}"


@contextlib.contextmanager
def progress_bar(
    hours: int, label: str = "reading hours", longer_than: int = PROGRESS_FROM_HOURS
) -> Iterator[Callable[[int], None]]:
    """A bar on a terminal for a long range; elsewhere (pipes, CI) nothing at all."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal or hours <= longer_than:
        yield lambda _: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("export", total=hours)
        yield lambda n: progress.advance(task, n)
