"""A store seen through the metrics: every call timed, every failure counted.

A wrapper rather than code in each store, so the three stores stay free of metrics and the
numbers mean the same whichever store is behind them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from tapad.server.metrics import Metrics
from tapad.store.base import Event, HourCounts, Store

T = TypeVar("T")
OPS = ("write", "read", "ping")


class MeasuredStore:
    """Times every call and counts failures; the store is unchanged."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._errors = {op: metrics.store_errors.labels(op) for op in OPS}
        self._seconds = {op: metrics.store_seconds.labels(op) for op in OPS}

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
        except Exception:  # a StoreError, or one nobody foresaw: both are store failures
            self._errors[op].inc()
            raise
        finally:
            self._seconds[op].observe(time.perf_counter() - start)

    async def connect(self) -> None:
        await self._store.connect()

    async def write(self, events: Sequence[Event]) -> None:
        await self._measure("write", self._store.write(events))

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
