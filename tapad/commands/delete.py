"""``tapad delete``: remove every count, user and id of a range of hours.

For bad data (a client that sent seconds for milliseconds, a test run against production)
that should not wait for ``--retention-hours``. Each hour goes in one transaction of the
store (``Store.delete_hours``), so servers may keep running: an event of a removed hour is
committed before the hour's transaction (and removed with it) or after (and kept). It
asks first, and refuses outright when there is no terminal to ask on and no ``--yes``:
a script never removes data by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

from tapad.buckets import format_hour
from tapad.commands.export import ExportError, open_existing, parse_bound, progress_bar
from tapad.store import Store, StoreConfigError, StoreError, redact
from tapad.store.sqlite import SQLiteStore

PROGRESS_FROM_HOURS = 48  # hours in the range past which a terminal shows a bar


class DeleteError(Exception):
    """A problem the user can fix, or a refusal; ``str()`` is the one line they see."""


class Declined(Exception):
    """The user answered no: nothing removed."""


def hours_text(first: int, last: int) -> str:
    count = last - first + 1
    return f"{count} hour{'' if count == 1 else 's'}"


def question(url: str, first: int, last: int) -> str:
    return (
        f"Remove every count, user and id of {hours_text(first, last)} "
        f"{format_hour(first)}..{format_hour(last)} from {redact(url)}? [y/N] "
    )


def ask_terminal(prompt: str) -> bool:
    """The question on standard error, the answer from standard input: yes or no."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def run_delete(
    store_url: str,
    from_text: str,
    to_text: str,
    yes: bool,
    ask: Callable[[str], bool] = ask_terminal,
    interactive: Callable[[], bool] = sys.stdin.isatty,
) -> list[str]:
    """Remove the hours; return the lines that say what was done."""
    try:
        first = parse_bound("--from", from_text)
        last = parse_bound("--to", to_text)
        assert first is not None and last is not None
        if first > last:
            raise DeleteError(f"--from {format_hour(first)} is after --to {format_hour(last)}")
        store = open_existing(store_url)
    except ExportError as exc:
        raise DeleteError(str(exc)) from None
    span = f"{hours_text(first, last)} ({format_hour(first)} to {format_hour(last)})"
    if not yes:
        if not interactive():
            raise DeleteError(
                f"nothing removed: no terminal to confirm on; add --yes to remove {span} "
                f"from {redact(store_url)}"
            )
        if not ask(question(store_url, first, last)):
            raise Declined("nothing removed")
    note = asyncio.run(delete_range(store, store_url, first, last))
    return [f"removed {span}", *([note] if note else [])]


async def delete_range(store: Store, url: str, first: int, last: int) -> str | None:
    """Remove first..last; on SQLite give the space back, and say how it went."""
    try:
        await store.connect()
        with progress_bar(last - first + 1, "removing hours", PROGRESS_FROM_HOURS) as done:
            await store.delete_hours(range(first, last + 1), done)
        if isinstance(store, SQLiteStore):
            return space_note(await store.reclaim())
        return None
    except StoreConfigError as exc:
        raise DeleteError(str(exc)) from None
    except (StoreError, OSError) as exc:
        raise DeleteError(f"cannot remove from store {redact(url)}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):  # never hide the real error behind close's
            await store.close()


def space_note(freed_pages: int | None) -> str:
    if freed_pages is None:
        return (
            "the file keeps its size: new events reuse the freed space (tapad serve "
            "--retention-hours switches the file to incremental vacuum, which shrinks it)"
        )
    return f"gave {freed_pages} free pages back to the file system"
