"""``GET /metrics``: Prometheus text format, correct with one process or ``--workers N``.

One process keeps its numbers in memory. With workers, the supervisor makes a
temporary folder and sets ``PROMETHEUS_MULTIPROC_DIR`` before it forks; every
worker then writes its numbers to its own mmap'ed files there, and whichever
worker answers ``/metrics`` sums all of them, so no worker hides another's.
Counters and histograms of a dead worker stay in the sum (totals never go
backwards); its pending-events gauge is dropped (``mark_process_dead``).

The hot path pays one dict lookup and one bisect per request (one process: the
requests are tallied in plain lists and folded into the histogram at each scrape)
or one histogram observe (workers): label children are bound once and kept, and the
method label is folded to a fixed set so a client cannot grow the label space by
inventing methods.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import astuple, dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from tapad.adapters.prometheus import add_observations, use_multiprocess_values
from tapad.server.metrics_folder import multiprocess_dir
from tapad.store.base import StoreCondition

CONTENT_TYPE = CONTENT_TYPE_LATEST
METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
IN_DOUBT_OUTCOMES = ("applied", "not_applied", "unknown")  # a store's ``in_doubt`` counts
# What a store's own checks found (StoreCondition), set at each scrape: every worker checks
# the same store, so the value set last is the store's (a gauge appears once its store
# has a value: a Redis has no disk to report, SQLite no evictions).
CONDITION_GAUGES = {
    "evicting": (
        "tapad_store_evicting",
        "1 while the store may be throwing acknowledged events away (a Redis evicting keys, "
        "or with a maxmemory-policy other than noeviction); /healthz answers 503.",
    ),
    "evicted_keys": (
        "tapad_store_evicted_keys",
        "Keys the Redis store says it evicted (INFO evicted_keys, summed over masters).",
    ),
    "disk_free_bytes": (
        "tapad_store_disk_free_bytes",
        "Free bytes of the file system under the SQLite file; a full disk refuses writes (503).",
    ),
}
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Tally:
    """One histogram child's observations in a plain list, added to it at each scrape.

    ``observe()`` takes a lock per value it touches and walks the buckets in Python; the
    store's timings and the batch sizes are observed once per batch or read, which under
    load is thousands of times a second. With workers (``direct``) any worker may answer
    the scrape, so each value goes to the shared files at once, as before.
    """

    __slots__ = ("_bounds", "_child", "_counts", "observe")

    def __init__(self, child: Histogram, bounds: tuple[float, ...], direct: bool) -> None:
        self._child = child
        self._bounds = bounds
        # [sum, count per bucket..., count above the last bound]
        self._counts: list[float] = [0.0] * (len(bounds) + 2)
        self.observe: Callable[[float], None] = child.observe if direct else self._tally

    def _tally(self, value: float) -> None:
        counts = self._counts
        counts[0] += value
        counts[1 + bisect_left(self._bounds, value)] += 1

    def fold(self) -> None:
        counts = self._counts
        if any(counts[1:]):
            add_observations(self._child, counts[0], counts[1:])
            counts[:] = [0.0] * len(counts)


@dataclass(frozen=True)
class Totals:
    """This process's counts since it started, for the log's summary of each minute."""

    requests: int = 0
    client_errors: int = 0  # answered 4xx
    server_errors: int = 0  # answered 5xx
    events: int = 0  # committed or attempted, in batches sent to the store
    batches: int = 0
    store_errors: int = 0

    def __sub__(self, other: Totals) -> Totals:
        return Totals(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


class Metrics:
    """Every tapad metric of this process, bound to its own registry."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess:
            # The value class is chosen when prometheus_client is imported, which in a
            # forked worker happened in the parent before the folder existed: pick again.
            use_multiprocess_values()
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Histogram(
            "tapad_http_request_duration_seconds",
            "Time from request parsed to response ready; _count is requests by method and status.",
            ["method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "tapad_batch_size_events",
            "Events per group-commit batch written to the store.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.pending = Gauge(
            "tapad_pending_events",
            "Events waiting for their commit (POST answers 503 past --max-pending).",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.store_errors = Counter(
            "tapad_store_errors",
            "Store calls that failed or timed out, by operation.",
            ["op"],
            registry=reg,
        )
        self.store_seconds = Histogram(
            "tapad_store_duration_seconds",
            "Time of each store call (one per batch, coalesced read or health check).",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.outcome_unknown = Counter(
            "tapad_events_outcome_unknown",
            "Events answered 504: their batch may or may not have been applied.",
            registry=reg,
        )
        self.in_doubt = Counter(
            "tapad_store_in_doubt_batches",
            "Batches whose commit reply was lost after sending, by how the store settled them "
            "(applied: 200, not_applied: retried or 503, unknown: 504).",
            ["outcome"],
            registry=reg,
        )
        self.malformed = Counter(
            "tapad_http_malformed_requests",
            "Requests aiohttp refused with a 4xx before tapad saw them (bad HTTP, URL too long).",
            registry=reg,
        )
        self.refused_connections = Counter(
            "tapad_connections_refused",
            "Connections closed at once because --max-connections were open.",
            registry=reg,
        )
        self._request_children: dict[tuple[str, int], Histogram] = {}
        # (method, status) -> [sum of seconds, count per bucket..., count above the last]
        self._tally: dict[tuple[str, int], list[float]] | None = None if self.multiprocess else {}
        # Read at each scrape so the gauge is exact here even while a batch hangs; the
        # committer also sets it once per batch, which is what other workers' scrapes see.
        self.pending_source: Callable[[], int] | None = None
        self.condition_source: Callable[[], StoreCondition] | None = None
        self._condition_gauges: dict[str, Gauge] = {}
        direct = self.multiprocess
        self.batch_sizes = Tally(self.batch_size, BATCH_BUCKETS, direct)
        self.store_timings = {
            op: Tally(self.store_seconds.labels(op), LATENCY_BUCKETS, direct)
            for op in ("write", "read", "ping")
        }
        for op in ("write", "read", "ping"):  # show zeros before the first failure
            self.store_errors.labels(op)
        for outcome in IN_DOUBT_OUTCOMES:
            self.in_doubt.labels(outcome)

    def request_done(self, method: str, status: int, seconds: float) -> None:
        """Count one answered request (hot path: a dict lookup and a bisect, no lock).

        With one process the request is tallied in a plain list and folded into the
        histogram when /metrics is scraped, so every scrape is still exact; observe()
        costs several times as much (a lock per value it touches; figures in
        docs/performance.md). With workers any
        worker may answer the scrape, so each request goes to the shared files at once.
        """
        tally = self._tally
        if tally is not None:
            counts = tally.get((method, status))
            if counts is not None:
                counts[0] += seconds
                counts[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1
                return
            if method in METHODS:  # never tally client-invented methods: the dict would grow
                tally[(method, status)] = [seconds] + [0] * (len(LATENCY_BUCKETS) + 1)
                tally[(method, status)][1 + bisect_left(LATENCY_BUCKETS, seconds)] = 1
                return
        child = self._request_children.get((method, status))
        if child is None:
            child = self._bind_request(method, status)
        child.observe(seconds)

    def batch_started(self, events: int, pending: int) -> None:
        """A batch of ``events`` goes to the store, ``pending`` events wait (per batch)."""
        self.batch_sizes.observe(events)
        self.pending_changed(pending)

    def pending_changed(self, pending: int) -> None:
        """Set the pending gauge, unless each scrape reads it from ``pending_source``
        (one process): with workers the other workers' scrapes see only what is set."""
        if self.multiprocess or self.pending_source is None:
            self.pending.set(pending)

    def _fold_tally(self) -> None:
        """Move the tallied requests into the histogram (same buckets as observe() uses)."""
        self.batch_sizes.fold()
        for timing in self.store_timings.values():
            timing.fold()
        for (method, status), counts in (self._tally or {}).items():
            if not any(counts[1:]):
                continue
            child = self._request_children.get((method, status))
            if child is None:
                child = self._bind_request(method, status)
            add_observations(child, counts[0], counts[1:])
            counts[:] = [0.0] + [0] * (len(counts) - 1)

    def _bind_request(self, method: str, status: int) -> Histogram:
        label = method if method in METHODS else "other"
        child = self.requests.labels(label, str(status))
        if method in METHODS:  # never cache client-invented methods: the dict would grow
            self._request_children[(method, status)] = child
        return child

    def _show_condition(self, condition: StoreCondition) -> None:
        for field, (name, doc) in CONDITION_GAUGES.items():
            value = getattr(condition, field)
            if value is None:
                continue
            gauge = self._condition_gauges.get(field)
            if gauge is None:
                gauge = self._condition_gauges[field] = Gauge(
                    name, doc, multiprocess_mode="mostrecent", registry=self.registry
                )
            gauge.set(float(value))

    def totals(self) -> Totals:
        """This process's counts so far (not every worker's, unlike a scrape)."""
        self._fold_tally()
        requests = client = server = 0
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_count"):
                    n = int(sample.value)
                    requests += n
                    status = sample.labels.get("status", "")
                    client += n if status.startswith("4") else 0
                    server += n if status.startswith("5") else 0
        events = batches = 0
        for metric in self.batch_size.collect():
            for sample in metric.samples:
                if sample.name.endswith("_sum"):
                    events = int(sample.value)
                elif sample.name.endswith("_count"):
                    batches = int(sample.value)
        errors = sum(
            int(sample.value)
            for metric in self.store_errors.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        return Totals(requests, client, server, events, batches, errors)

    def render(self) -> bytes:
        """The text a scrape gets: this process's numbers, or every worker's."""
        if self.pending_source is not None:
            self.pending.set(self.pending_source())
        if self.condition_source is not None:
            self._show_condition(self.condition_source())
        self._fold_tally()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
