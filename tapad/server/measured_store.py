"""A store seen through the metrics: every call timed, every failure counted.

A wrapper rather than code in each store, so the three stores stay free of metrics and the
numbers mean the same whichever store is behind them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import TypeVar

from tapad.server.metrics import IN_DOUBT_OUTCOMES, Metrics
from tapad.store.base import (
    Duplicates,
    Event,
    HourCounts,
    InDoubt,
    Store,
    StoreCondition,
    StoreConfigError,
    StoreError,
    UniqueCount,
)

T = TypeVar("T")
OPS = ("write", "read", "ping")


class MeasuredStore:
    """Times every call and counts failures; the store is unchanged.

    ``write`` and ``read_hours`` run once per batch and per coalesced read: they time the
    call themselves rather than through ``_measure``, one coroutine frame less each.
    """

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._errors = {op: metrics.store_errors.labels(op) for op in OPS}
        self._seconds = {op: metrics.store_timings[op].observe for op in OPS}
        self._write_error = self._errors["write"].inc
        self._write_seconds = self._seconds["write"]
        self._read_error = self._errors["read"].inc
        self._read_seconds = self._seconds["read"]
        # How the store settled batches whose reply was lost (zeros on SQLite).
        self._in_doubt = store.in_doubt
        self._settled = [metrics.in_doubt.labels(o) for o in IN_DOUBT_OUTCOMES]
        self._settled_seen = self._settled_counts()
        self._changes_seen = self._in_doubt.changes

    @property
    def unique_mode(self) -> str:
        return self._store.unique_mode

    @property
    def in_doubt(self) -> InDoubt:
        return self._store.in_doubt

    @property
    def fault(self) -> str | None:
        return self._store.fault

    async def _measure(self, op: str, call: Awaitable[T]) -> T:
        start = perf_counter()
        try:
            return await call
        except (StoreError, StoreConfigError):  # those nobody foresaw: counted by the Outage
            self._errors[op].inc()
            raise
        finally:
            self._seconds[op](perf_counter() - start)

    async def connect(self) -> None:
        await self._store.connect()

    async def write(self, events: Sequence[Event]) -> Duplicates:
        start = perf_counter()
        try:
            return await self._store.write(events)
        except (StoreError, StoreConfigError):  # as in _measure
            self._write_error()
            raise
        finally:
            self._write_seconds(perf_counter() - start)
            self._count_settled()

    def _settled_counts(self) -> tuple[int, ...]:
        return tuple(getattr(self._in_doubt, outcome) for outcome in IN_DOUBT_OUTCOMES)

    def _count_settled(self) -> None:
        """Carry the store's in-doubt counts over to the metric (once per batch: cheap,
        one attribute compared while nothing changed)."""
        changes = self._in_doubt.changes
        if changes == self._changes_seen:
            return
        self._changes_seen = changes
        now = self._settled_counts()
        if now != self._settled_seen:
            for counter, was, count in zip(self._settled, self._settled_seen, now, strict=True):
                if count != was:
                    counter.inc(count - was)
            self._settled_seen = now

    async def read(self, hour: int) -> HourCounts:
        return await self._measure("read", self._store.read(hour))

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        start = perf_counter()
        try:
            return await self._store.read_hours(hours)
        except (StoreError, StoreConfigError):  # as in _measure
            self._read_error()
            raise
        finally:
            self._read_seconds(perf_counter() - start)

    async def hours(self) -> list[int]:
        return await self._store.hours()

    async def delete_hours(
        self, hours: Sequence[int], progress: Callable[[int], None] | None = None
    ) -> int:
        return await self._store.delete_hours(hours, progress)

    async def uniques(self, hours: Sequence[int]) -> UniqueCount:
        """Not timed: a count over a long range takes far longer than a read, and would
        hide the reads' own timings in the same histogram."""
        return await self._store.uniques(hours)

    async def ping(self) -> None:
        await self._measure("ping", self._store.ping())

    async def probe_write(self) -> None:
        await self._store.probe_write()

    def condition(self) -> StoreCondition:
        return self._store.condition()

    async def close(self) -> None:
        await self._store.close()
