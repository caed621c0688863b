"""What ``tapad usernames fetch`` and ``generate`` do, between option parsing and the work."""

from __future__ import annotations

import sys
from pathlib import Path

from tapad.usernames.fetch import FetchError, fetch_usernames
from tapad.usernames.generate import generate_usernames
from tapad.usernames.namesfile import NamesFileError, read_names, write_names
from tapad.words import counted


class UsernamesError(Exception):
    """A problem the user can fix; ``str()`` is the one line they see."""


def check_url(url: str) -> None:
    """Refuse a URL httpx would choke on later, with a line that says what is wrong."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UsernamesError(f"--url {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsernamesError(f"--url {url!r} must be an http:// or https:// URL with a host")


def run_fetch(
    url: str, count: int, threads: int, out: Path, timeout: float, max_failures: int
) -> str:
    """Fetch into ``out`` (merged, atomic) and return the summary line.

    On failure the names gathered so far are still saved, because a slow source is
    expensive to ask twice; the error line says how many there are.
    """
    from rich.console import Console

    check_url(url)
    try:
        existing = read_names(out, missing_ok=True)
    except NamesFileError as exc:
        raise UsernamesError(str(exc)) from None
    console = Console(stderr=True)
    progress = None
    on_progress = None
    if console.is_terminal and len(existing) < count:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        task = progress.add_task("fetching names", total=count, completed=len(existing))

        def on_progress(total: int) -> None:
            progress.update(task, completed=total)

    try:
        if progress is not None:
            progress.start()
        try:
            names, stats = fetch_usernames(
                url,
                count,
                threads=threads,
                existing=existing,
                timeout=timeout,
                max_failures=max_failures,
                on_progress=on_progress,
            )
        finally:
            if progress is not None:
                progress.stop()
    except FetchError as exc:
        saved = ""
        if len(exc.names) > len(existing):
            _save(out, exc.names)
            saved = f" ({counted(len(exc.names), 'name')} saved to {out})"
        raise UsernamesError(f"fetch stopped: {exc}{saved}") from None
    if len(names) > len(existing) or not out.exists():
        _save(out, names)
    new = len(names) - len(existing)
    return (
        f"{out}: {counted(len(names), 'name')} ({new:,} new, {counted(stats.requests, 'request')}, "
        f"{stats.failures:,} failed and retried)"
    )


def run_generate(count: int, seed: int, out: Path | None) -> str | None:
    """Write generated names to ``out`` (or stdout) and return the summary line, if any."""
    try:
        names = generate_usernames(count, seed)
    except ValueError as exc:
        raise UsernamesError(str(exc)) from None
    if out is None or str(out) == "-":
        sys.stdout.write("".join(f"{name}\n" for name in names))
        return None
    _save(out, names)
    return f"{out}: {counted(len(names), 'name')} (seed {seed})"


def _save(out: Path, names: list[str]) -> None:
    try:
        write_names(out, names)
    except NamesFileError as exc:
        raise UsernamesError(str(exc)) from None
