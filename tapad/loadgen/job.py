"""One load job: the traffic, what to do with each answer, and what the run proves.

A job is what one process runs; ``tapad loadgen --processes N`` runs N of them, each
with its share of the requests and connections, and merges their results.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tapad.loadgen.ledger import Ledger
from tapad.loadgen.runner import LoadConfig, MakeRequest, OnAnswer, OnUnknown, Outcome, run_load
from tapad.loadgen.traffic import Mix, Traffic
from tapad.loadgen.verify import Verifier


@dataclass(frozen=True)
class Job:
    method: str  # "POST" or "GET"
    base: str  # http://host:port/analytics
    config: LoadConfig
    mix: Mix
    seed: int | None = None
    users: list[str] = field(default_factory=list)  # POST: the names to send
    record: bool = False  # POST: keep a ledger of what was acknowledged
    verify: Ledger | None = None  # GET: answers must not fall below this
    tolerance: float = 0.0  # GET: share unique users may fall below (hll)
    batch: int = 0  # POST: events per request to /analytics/batch (0: single POSTs)
    ids: bool = False  # POST: every event carries an id (retried with config.retry_for)


@dataclass
class JobResult:
    outcome: Outcome
    ledger: Ledger = field(default_factory=Ledger)  # POST: acknowledged events
    checked: int = 0  # GET: answers compared with the ledger
    mismatches: list[str] = field(default_factory=list)

    def merge(self, other: JobResult) -> None:
        """Fold another process's result in: the numbers add up, the clock spans both."""
        mine, theirs = self.outcome, other.outcome
        mine.requests += theirs.requests
        mine.done += theirs.done
        mine.acknowledged += theirs.acknowledged
        mine.unknown += theirs.unknown
        mine.retried += theirs.retried
        mine.duplicates += theirs.duplicates
        mine.statuses.update(theirs.statuses)
        mine.failures.update(theirs.failures)
        mine.latencies.extend(theirs.latencies)
        mine.started = min(mine.started, theirs.started) if mine.started else theirs.started
        mine.finished = max(mine.finished, theirs.finished)
        mine.interrupted = mine.interrupted or theirs.interrupted
        mine.gave_up = mine.gave_up or theirs.gave_up
        self.ledger.merge(other.ledger)
        self.checked += other.checked
        self.mismatches.extend(other.mismatches[: max(0, 10 - len(self.mismatches))])


async def run_job(job: Job, outcome: Outcome, stop: asyncio.Event | None = None) -> JobResult:
    """Run one job in this event loop, filling ``outcome`` as it goes."""
    traffic = Traffic(job.base, job.users or ["-"], job.mix, seed=job.seed, ids=job.ids)
    result = JobResult(outcome)
    if job.method == "POST":
        users, record = traffic.users, result.ledger.record
        record_unknown = result.ledger.record_unknown
        make: MakeRequest = traffic.post
        on_answer: OnAnswer
        on_unknown: OnUnknown

        if job.batch:
            size = job.batch

            def make_batch() -> tuple[str, list[tuple[int, int, bool]], bytes]:
                return traffic.post_batch(size)

            def on_batch(tokens: list[tuple[int, int, bool]], body: bytes) -> str | None:
                for hour, index, click in tokens:  # a 200 acknowledges every event
                    record(hour, users[index], click)
                return None

            def on_batch_unknown(tokens: list[tuple[int, int, bool]]) -> None:
                for hour, index, click in tokens:
                    record_unknown(hour, users[index], click)

            make, on_answer, on_unknown = make_batch, on_batch, on_batch_unknown
        else:

            def on_single(token: tuple[int, int, bool], body: bytes) -> str | None:
                hour, index, click = token
                record(hour, users[index], click)
                return None

            def on_single_unknown(token: tuple[int, int, bool]) -> None:
                hour, index, click = token
                record_unknown(hour, users[index], click)

            on_answer, on_unknown = on_single, on_single_unknown

        def ignore(token: object, body: bytes) -> None:
            return None

        if job.record:
            await run_load(job.base, job.config, make, on_answer, outcome, stop, on_unknown)
        else:
            await run_load(job.base, job.config, make, ignore, outcome, stop)
        return result
    verifier = Verifier(job.verify, job.tolerance)
    await run_load(job.base, job.config, traffic.get, verifier.check, outcome, stop)
    result.checked, result.mismatches = verifier.checked, verifier.mismatches
    return result
