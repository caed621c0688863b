"""What ``tapad loadgen post`` and ``get`` do between option parsing and the load engine."""

from __future__ import annotations

import asyncio
import json
import signal
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from yarl import URL

from tapad.loadgen.job import Job, JobResult, run_job
from tapad.loadgen.ledger import LedgerError, load_ledger, save_ledger
from tapad.loadgen.processes import ProcessError, run_processes, tune_gc
from tapad.loadgen.report import live_progress, print_report, summary
from tapad.loadgen.runner import LoadConfig, Outcome
from tapad.loadgen.traffic import Mix
from tapad.loadgen.verify import BELOW_LEDGER, HLL_TOLERANCE
from tapad.words import counted

DEFAULT_USERS = 10_000  # generated names when --users is not given
BATCH_TYPE = "application/x-ndjson"
MAX_BATCH = 10_000  # events in one POST /analytics/batch (docs: the contract)
INTERRUPTED = 130


class LoadgenError(Exception):
    """A problem the user can fix before any request is sent; ``str()`` is one line."""


@dataclass(frozen=True)
class LoadOptions:
    url: str
    requests: int
    concurrency: int
    mix: Mix
    rate: float | None = None
    retries: int = 5
    timeout: float = 10.0
    seed: int | None = None
    json: bool = False
    processes: int = 1
    batch: int = 0  # POST: events per request, to /analytics/batch (0: single POSTs)
    ids: bool = False  # POST: an id on every event, every failure retried with it
    retry_for: float = 300.0  # with ids: seconds an event is retried until acknowledged
    token: str | None = field(default=None, repr=False)  # write token (post) or read (get)


def analytics_url(url: str) -> str:
    """``http://host:port`` (or a URL already ending in /analytics) to the endpoint URL."""
    try:
        parsed = URL(url.strip())
    except (ValueError, TypeError) as exc:
        raise LoadgenError(f"--url {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LoadgenError(f"--url {url!r} must be an http:// or https:// URL with a host")
    try:
        parsed.port  # noqa: B018 - a port out of range raises here
    except ValueError as exc:
        raise LoadgenError(f"--url {url!r}: {exc}") from None
    path = parsed.path.rstrip("/")
    if not path.endswith("/analytics"):
        path += "/analytics"
    return str(parsed.with_path(path).with_query(None).with_fragment(None))


async def check_reachable(base: str, timeout: float) -> None:
    """Fail with one line before starting if nothing listens, instead of n failed requests."""
    url = URL(base)
    try:
        async with asyncio.timeout(min(timeout, 5.0)):
            _, writer = await asyncio.open_connection(url.host, url.port)
    except TimeoutError:
        raise LoadgenError(f"cannot reach {url.origin()}: no answer (timed out)") from None
    except OSError as exc:
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        if isinstance(exc, ConnectionRefusedError):
            reason += " (is tapad serve running?)"
        raise LoadgenError(f"cannot reach {url.origin()}: {reason}") from None
    writer.close()


def load_users(path: Path | None) -> list[str]:
    from tapad.usernames.namesfile import NamesFileError, read_names

    if path is None:
        from tapad.usernames.generate import generate_usernames

        return generate_usernames(DEFAULT_USERS, seed=0)
    try:
        users = read_names(path)
    except NamesFileError as exc:
        raise LoadgenError(f"--users {exc}") from None
    if not users:
        raise LoadgenError(f"--users {path} holds no names")
    return users


async def _drive_here(job: Job, json_output: bool) -> JobResult:
    """Run the job in this process, with live progress on a terminal; Ctrl-C stops it."""
    console = Console()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    outcome = Outcome(requests=job.config.requests)
    progress = live_progress(console, outcome, job.method) if not json_output else nullcontext()
    try:
        async with progress:
            return await run_job(job, outcome, stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _execute(job: Job, options: LoadOptions) -> JobResult:
    """Check the server answers, then run the job in one process or several."""
    from tapad.eventloop import install_uvloop

    install_uvloop()
    asyncio.run(check_reachable(job.base, options.timeout))
    if options.processes > 1:
        console = None if options.json else Console()
        try:
            return run_processes(job, options.processes, console, job.method)
        except ProcessError as exc:
            raise LoadgenError(str(exc)) from None
    tune_gc()
    return asyncio.run(_drive_here(job, options.json))


def _job(options: LoadOptions, base: str, method: str, **fields: Any) -> Job:
    if options.processes > options.concurrency:
        raise LoadgenError("--processes cannot exceed --concurrency (one connection at least each)")
    if options.token is not None and not (
        options.token and all("!" <= ch <= "~" for ch in options.token)
    ):
        raise LoadgenError("--token must be printable ASCII without spaces")
    config = LoadConfig(
        method=method,
        requests=options.requests,
        concurrency=options.concurrency,
        rate=options.rate,
        retries=options.retries,
        timeout=options.timeout,
        content_type=BATCH_TYPE if method == "POST" and options.batch else None,
        retry_for=options.retry_for if method == "POST" and options.ids else None,
        token=options.token,
    )
    batch = options.batch if method == "POST" else 0
    ids = options.ids and method == "POST"
    return Job(method, base, config, options.mix, options.seed, batch=batch, ids=ids, **fields)


def _finish(
    options: LoadOptions, outcome: Outcome, title: str, extra: dict[str, Any], notes: list[str]
) -> int:
    console = Console()
    if options.json:
        print(json.dumps({**summary(outcome), **extra}))
    else:
        print_report(console, outcome, title)
        for note in notes:
            console.print(note, highlight=False)
    if outcome.interrupted:
        return INTERRUPTED
    return 1 if outcome.failed else 0


def run_post(options: LoadOptions, users_path: Path | None, ledger_path: Path | None) -> int:
    """Send POSTs; add what was acknowledged to the ledger. Exit code: 1 if any failed."""
    _check_mix(options.mix)
    if not 0 <= options.batch <= MAX_BATCH:
        raise LoadgenError(f"--batch must be between 1 and {MAX_BATCH} events, got {options.batch}")
    base = analytics_url(options.url)
    users = load_users(users_path)
    previous = None
    if ledger_path is not None:
        try:
            previous = load_ledger(ledger_path, missing_ok=True)
        except LedgerError as exc:
            raise LoadgenError(str(exc)) from None
    job = _job(options, base, "POST", users=users, record=ledger_path is not None)
    result = _execute(job, options)
    outcome, run_ledger = result.outcome, result.ledger
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if ledger_path is not None and previous is not None:
        previous.merge(run_ledger)
        try:
            save_ledger(ledger_path, previous)
        except LedgerError as exc:
            raise LoadgenError(str(exc)) from None
        unknown = (
            f", +{run_ledger.unknown_events:,} of unknown outcome"
            if run_ledger.unknown_events
            else ""
        )
        notes.append(
            f"ledger {ledger_path}: +{counted(run_ledger.events, 'acknowledged event')}{unknown} "
            f"({previous.events:,} acknowledged in all, {counted(len(previous.hours), 'hour')})"
        )
        extra["ledger"] = {
            "path": str(ledger_path),
            "added": run_ledger.events,
            "added_unknown": run_ledger.unknown_events,
        }
    return _finish(options, outcome, f"loadgen post {base}", extra, notes)


def run_get(options: LoadOptions, verify_path: Path | None, hll: bool) -> int:
    """Send GETs; with a ledger, count every answer below it as a failure."""
    _check_mix(options.mix)
    base = analytics_url(options.url)
    ledger = None
    if verify_path is not None:
        try:
            ledger = load_ledger(verify_path)
        except LedgerError as exc:
            raise LoadgenError(str(exc)) from None
    tolerance = HLL_TOLERANCE if hll else 0.0
    result = _execute(_job(options, base, "GET", verify=ledger, tolerance=tolerance), options)
    outcome = result.outcome
    notes = []
    if ledger is not None:
        below = outcome.failures.get(BELOW_LEDGER, 0)
        verdict = "[red]FAILED[/red]" if below else "[green]ok[/green]"
        notes.append(
            f"verify {verify_path}: {result.checked:,} answers checked, "
            f"{below:,} below the ledger: {verdict}"
        )
        notes.extend(f"  {line}" for line in result.mismatches)
    extra = {"verify": {"checked": result.checked, "mismatches": result.mismatches}}
    return _finish(options, outcome, f"loadgen get {base}", extra if ledger else {}, notes)


def _check_mix(mix: Mix) -> None:
    try:
        mix.check()
    except ValueError as exc:
        raise LoadgenError(str(exc)) from None
