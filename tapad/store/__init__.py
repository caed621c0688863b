"""Stores behind one small interface (see ``base.Store``); ``open_store`` picks one by URL."""

from __future__ import annotations

from tapad.store.base import (
    CommitUnknown,
    Event,
    HourCounts,
    InDoubt,
    PartialWrite,
    Store,
    StoreConfigError,
    StoreError,
    StoreFault,
    UniqueCount,
)
from tapad.store.options import StoreOptions
from tapad.store.url import DEFAULT_STORE_URL, StoreSettings, parse_store_url, redact

__all__ = [
    "DEFAULT_STORE_URL",
    "CommitUnknown",
    "Event",
    "HourCounts",
    "InDoubt",
    "PartialWrite",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreFault",
    "StoreOptions",
    "StoreSettings",
    "UniqueCount",
    "open_store",
    "parse_store_url",
    "redact",
]


def open_store(url: str, options: StoreOptions = StoreOptions()) -> Store:
    """Open the store a URL names. Raises StoreConfigError with one line for a bad URL.

    Call ``await store.connect()`` before relying on ``store.unique_mode``.
    """
    settings = parse_store_url(url)
    if settings.scheme == "sqlite":
        from tapad.store.sqlite import SQLiteStore

        if options.unique not in (None, "exact"):
            raise StoreConfigError(
                "the sqlite store counts unique users exactly; --unique hll needs Redis"
            )
        if options.shards not in (None, 1):
            raise StoreConfigError("the sqlite store has no shards; --shards needs Redis")
        return SQLiteStore(
            settings.path, options, synchronous=settings.options.get("synchronous", "full")
        )
    if settings.scheme == "redis+cluster":
        from tapad.store.redis.cluster import ClusterStore

        return ClusterStore(settings, options)
    from tapad.store.redis.node import RedisStore

    return RedisStore(settings, options)
