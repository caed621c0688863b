"""What a person sees: a live progress line on a terminal, a summary table at the end.

The live display polls the run's counters a few times a second from its own task, so
the workers never call into rich. In a pipe there is no live display and rich prints
the table without colour codes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tapad.loadgen.runner import Outcome
from tapad.loadgen.stats import histogram, percentile

PERCENTILES = (50, 90, 99)


def progress_line(
    title: str, done: int, total: int, elapsed: float, failed: int, retried: int
) -> Text:
    """One line of live progress: a bar, done/total, rate, errors and retries."""
    rate = done / elapsed if elapsed else 0.0
    share = min(1.0, done / total) if total else 0.0
    width = 30
    filled = int(share * width)
    line = Text(f"{title} ")
    line.append("━" * filled, style="magenta")
    line.append("━" * (width - filled), style="grey23")
    line.append(f" {done:,}/{total:,}  {rate:,.0f} req/s  ")
    line.append(f"errors {failed:,}", style="red" if failed else "green")
    if retried:
        line.append(f"  retried {retried:,}", style="yellow")
    return line


@contextlib.asynccontextmanager
async def live_progress(console: Console, outcome: Outcome, title: str) -> AsyncIterator[None]:
    """Show done/total, rate and errors while the block runs (only on a terminal)."""
    if not console.is_terminal:
        yield
        return
    from rich.live import Live

    def render() -> Text:
        return progress_line(
            title, outcome.done, outcome.requests, outcome.elapsed, outcome.failed,
            outcome.retried,
        )  # fmt: skip

    with Live(render(), console=console, transient=True, auto_refresh=False) as live:

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.2)
                live.update(render(), refresh=True)

        ticker = asyncio.create_task(tick())
        try:
            yield
        finally:
            ticker.cancel()


def summary(outcome: Outcome) -> dict[str, Any]:
    """The numbers of a run, for the table and for ``--json``; latencies in milliseconds."""
    values = sorted(outcome.latencies)
    latency = {}
    if values:
        latency = {f"p{p}": round(percentile(values, p) * 1000, 3) for p in PERCENTILES}
        latency["max"] = round(values[-1] * 1000, 3)
    return {
        "requests": outcome.done,
        "planned": outcome.requests,
        "acknowledged": outcome.acknowledged,
        # each request's last answer by status: 200 recorded, 503 not, 504 unknown
        "answers": {str(status): n for status, n in sorted(outcome.statuses.items())},
        "unknown": outcome.unknown,
        "failed": outcome.failed,
        "failures": dict(sorted(outcome.failures.items())),
        "retried": outcome.retried,
        "duplicates": outcome.duplicates,
        "seconds": round(outcome.elapsed, 3),
        "throughput": round(outcome.done / outcome.elapsed, 1) if outcome.elapsed else 0.0,
        "latency_ms": latency,
        "interrupted": outcome.interrupted,
        "gave_up": outcome.gave_up or None,
    }


def print_report(console: Console, outcome: Outcome, title: str) -> None:
    data = summary(outcome)
    console.print(title, style="bold", highlight=False)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    sent = f"{data['requests']:,}"
    if data["requests"] != data["planned"]:
        sent += f" of {data['planned']:,}"
    table.add_row("requests", sent)
    table.add_row("acknowledged", f"{data['acknowledged']:,}")
    for status in ("200", "503", "504"):  # apart: recorded, not recorded, unknown
        table.add_row(f"answered {status}", f"{data['answers'].get(status, 0):,}")
    if outcome.unknown:
        table.add_row("outcome unknown", Text(f"{outcome.unknown:,}", style="yellow"))
    if data["failures"]:
        for label, count in data["failures"].items():
            table.add_row(f"failed: {label}", Text(f"{count:,}", style="red"))
    else:
        table.add_row("failed", Text("0", style="green"))
    table.add_row("retried", f"{data['retried']:,}")
    if outcome.duplicates:  # retries whose first attempt had been recorded after all
        table.add_row("acknowledged as duplicates", f"{outcome.duplicates:,}")
    table.add_row("time", f"{data['seconds']:.2f} s")
    table.add_row("throughput", f"{data['throughput']:,.0f} req/s")
    for name, value in data["latency_ms"].items():
        table.add_row(f"latency {name}", f"{value:.2f} ms")
    if outcome.interrupted:
        table.add_row("interrupted", Text("yes", style="yellow"))
    if outcome.gave_up:
        table.add_row("gave up", Text(outcome.gave_up, style="red"))
    console.print(table)
    values = sorted(outcome.latencies)
    if len(values) > 1:
        console.print(latency_histogram(values))


def latency_histogram(sorted_values: list[float], width: int = 40) -> Table:
    buckets = histogram(sorted_values)
    top = max(b.count for b in buckets) or 1
    table = Table(title="latency histogram", title_justify="left", box=None, padding=(0, 1))
    table.add_column("ms", justify="right")
    table.add_column("")
    table.add_column("count", justify="right")
    for bucket in buckets:
        bar = "█" * round(bucket.count / top * width) if bucket.count else ""
        if bucket.count and not bar:
            bar = "▏"
        table.add_row(
            f"{bucket.low * 1000:.2f} - {bucket.high * 1000:.2f}",
            Text(bar, style="cyan"),
            f"{bucket.count:,}",
        )
    return table
