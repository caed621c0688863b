"""``tapad export``: a range of hours straight from the store, as ``GET /analytics/hours`` gives it.

The rows and their text come from ``tapad.hour_rows``, the very code the server answers with,
so a file exported here and a range asked over HTTP are the same bytes. A range longer than
one request may ask for is read in chunks of that size (one store round trip each) and
written as it comes, with a progress bar when standard error is a terminal.
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
from tapad.hour_rows import MAX_HOURS, render
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

STORE_TIMEOUT = 5.0  # seconds per store call: a one-off command can wait longer than a server
PROGRESS_FROM_HOURS = MAX_HOURS  # a bar only when there is more than one chunk to read


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


async def export_rows(
    url: str, first: int | None, last: int | None
) -> tuple[int, int, list[tuple[int, HourCounts]]]:
    """Resolve the defaults (the oldest hour with data .. now) and read the rows."""
    store = open_existing(url)
    try:
        await store.connect()
        if first is None or last is None:
            with_data = await store.hours()
            now = current_hour()
            if last is None:
                last = max([now, *with_data[:1]])
            if first is None:
                first = min([last, *with_data[-1:]])
        if first > last:
            raise ExportError(f"--from {format_hour(first)} is after --to {format_hour(last)}")
        with progress_bar(last - first + 1) as done:
            return first, last, await read_range(store, first, last, done)
    except StoreConfigError as exc:
        raise ExportError(str(exc)) from None
    except (StoreError, OSError) as exc:
        raise ExportError(f"cannot read store {redact(url)}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):  # never hide the real error behind close's
            await store.close()


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


def run_export(
    store_url: str, from_text: str | None, to_text: str | None, fmt: str, out: Path | None
) -> str:
    """Write the rows; return a one-line summary for standard error."""
    first = parse_bound("--from", from_text)
    last = parse_bound("--to", to_text)
    if first is not None and last is not None and first > last:
        raise ExportError(f"--from {format_hour(first)} is after --to {format_hour(last)}")
    first, last, rows = asyncio.run(export_rows(store_url, first, last))
    with output(out) as fh:
        for piece in render(fmt, rows):
            fh.write(piece)
    where = "standard output" if out is None or str(out) == "-" else str(out)
    return f"exported {len(rows)} hours ({format_hour(first)} to {format_hour(last)}) to {where}"


@contextlib.contextmanager
def progress_bar(hours: int) -> Iterator[Callable[[int], None]]:
    """A bar on a terminal for a long range; elsewhere (pipes, CI) nothing at all."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal or hours <= PROGRESS_FROM_HOURS:
        yield lambda _: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("reading hours"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("export", total=hours)
        yield lambda n: progress.advance(task, n)
