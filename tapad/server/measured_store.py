"""A store seen through the metrics: every call timed, every failure counted.

A wrapper rather than code in each store, so the three stores stay free of metrics and the
numbers mean the same whichever store is behind them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from tapad.server.metrics import IN_DOUBT_OUTCOMES, Metrics
from tapad.store.base import Event, HourCounts, Store, StoreConfigError, StoreError

T = TypeVar("T")
OPS = ("write", "read", "ping")


class MeasuredStore:
    """Times every call and counts failures; the store is unchanged."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._errors = {op: metrics.store_errors.labels(op) for op in OPS}
        self._seconds = {op: metrics.store_seconds.labels(op) for op in OPS}
        # How the store settled batches whose reply was lost, if it counts them (Redis does).
        self._in_doubt = getattr(store, "in_doubt", None)
        self._settled = {o: metrics.in_doubt.labels(o) for o in IN_DOUBT_OUTCOMES}
        self._settled_seen = dict.fromkeys(IN_DOUBT_OUTCOMES, 0)

    @property
    def unique_mode(self) -> str:
        return self._store.unique_mode

    @property
    def inner(self) -> Store:
        """The store measured (for what only it knows, such as in-doubt outcome counts)."""
        return self._store

    async def _measure(self, op: str, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await call
        except (StoreError, StoreConfigError):  # those nobody foresaw: counted by the Outage
            self._errors[op].inc()
            raise
        finally:
            self._seconds[op].observe(time.perf_counter() - start)

    async def connect(self) -> None:
        await self._store.connect()

    async def write(self, events: Sequence[Event]) -> None:
        try:
            await self._measure("write", self._store.write(events))
        finally:
            if self._in_doubt is not None:
                self._count_settled()

    def _count_settled(self) -> None:
        """Carry the store's in-doubt counts over to the metric (once per batch: cheap)."""
        for outcome, seen in self._settled_seen.items():
            now = getattr(self._in_doubt, outcome, seen)
            if now != seen:
                self._settled[outcome].inc(now - seen)
                self._settled_seen[outcome] = now

    async def read(self, hour: int) -> HourCounts:
        return await self._measure("read", self._store.read(hour))

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        return await self._measure("read", self._store.read_hours(hours))

    async def hours(self) -> list[int]:
        return await self._store.hours()

    async def ping(self) -> None:
        await self._measure("ping", self._store.ping())

    async def close(self) -> None:
        await self._store.close()
