"""Run a load job in several processes, for when one Python process is the bottleneck.

One process drives about as many requests as one core of a bare aiohttp server can
answer; against several server processes (``tapad serve --workers N``, or servers behind
nginx) on a machine with a core to spare, a second loadgen process drives more. Each
child runs its share of the requests and connections on its own event loop and
publishes its counters a few times a second into shared memory for the live display;
the parent merges the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator, MutableSequence
from dataclasses import replace
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from rich.console import Console
from rich.text import Text

from tapad.loadgen.job import Job, JobResult, run_job
from tapad.loadgen.report import progress_line
from tapad.loadgen.runner import Outcome

FIELDS = 3  # done, failed, retried per child


class ProcessError(Exception):
    """A child process failed outside the load itself; ``str()`` is one line."""


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan(job: Job, processes: int) -> list[Job]:
    """Each child's share: requests, connections and rate divided, its own random stream."""
    requests = split(job.config.requests, processes)
    conns = split(job.config.concurrency, processes)
    jobs = []
    for i in range(processes):
        rate = job.config.rate / processes if job.config.rate else None
        config = replace(job.config, requests=requests[i], concurrency=conns[i], rate=rate)
        seed = None if job.seed is None else job.seed + i * 1_000_003
        jobs.append(replace(job, config=config, seed=seed))
    return jobs


def tune_gc() -> None:
    """Names and imports live for the whole run; the hot path allocates a lot, keeps little."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _child(
    job: Job,
    index: int,
    counters: MutableSequence[int],
    barrier: Barrier,
    results: Queue[tuple[int, JobResult | str]],
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the loop's own handler is in place
    tune_gc()

    async def main() -> JobResult:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        outcome = Outcome(requests=job.config.requests)
        base = index * FIELDS

        def publish() -> None:
            counters[base], counters[base + 1] = outcome.done, outcome.failed
            counters[base + 2] = outcome.retried

        async def publisher() -> None:
            while True:
                publish()
                await asyncio.sleep(0.2)

        task = asyncio.create_task(publisher())
        try:
            return await run_job(job, outcome, stop)
        finally:
            task.cancel()
            publish()

    try:
        barrier.wait(timeout=60)  # start together: the clock spans one shared run
        results.put((index, asyncio.run(main())))
    except BaseException as exc:  # the parent turns this into one line
        results.put((index, f"{type(exc).__name__}: {exc}"))


def run_processes(job: Job, processes: int, console: Console | None, title: str) -> JobResult:
    """Run ``job`` split over ``processes`` children; show progress on ``console`` if given."""
    jobs = plan(job, processes)
    ctx = (
        mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    )
    counters = ctx.Array("q", FIELDS * processes, lock=False)
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(j, i, counters, barrier, results), daemon=True)
        for i, j in enumerate(jobs)
    ]
    tune_gc()
    for child in children:
        child.start()

    def forward(signum: int, frame: object) -> None:  # Ctrl-C: let every child stop cleanly
        for child in children:
            if child.pid is not None and child.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, forward)
    started = time.perf_counter()
    collected: dict[int, JobResult] = {}
    try:
        with _display(console) as show:
            while len(collected) < processes:
                try:
                    index, result = results.get(timeout=0.2)
                except queue.Empty:
                    if all(not c.is_alive() for c in children) and results.empty():
                        raise ProcessError("a load process ended without a result") from None
                    done = sum(counters[i * FIELDS] for i in range(processes))
                    failed = sum(counters[i * FIELDS + 1] for i in range(processes))
                    retried = sum(counters[i * FIELDS + 2] for i in range(processes))
                    elapsed = time.perf_counter() - started
                    show(progress_line(title, done, job.config.requests, elapsed, failed, retried))
                    continue
                if isinstance(result, str):
                    raise ProcessError(f"a load process failed: {result}")
                collected[index] = result
    finally:
        signal.signal(signal.SIGINT, previous)
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    merged = JobResult(Outcome())
    for index in sorted(collected):
        merged.merge(collected[index])
    return merged


@contextlib.contextmanager
def _display(console: Console | None) -> Iterator[Callable[[Text], None]]:
    if console is None or not console.is_terminal:
        yield lambda line: None
        return
    from rich.live import Live

    with Live(console=console, transient=True, auto_refresh=False) as live:
        yield lambda line: live.update(line, refresh=True)
