"""Stores behind one small interface (see ``base.Store``); ``open_store`` picks one by URL."""

from __future__ import annotations

from tapad import settings as _settings
from tapad.store.base import (
    CommitUnknown,
    Event,
    HourCounts,
    PartialWrite,
    Store,
    StoreConfigError,
    StoreError,
    StoreFault,
    UniqueCount,
)
from tapad.store.url import DEFAULT_STORE_URL, StoreSettings, parse_store_url, redact

__all__ = [
    "DEFAULT_STORE_URL",
    "CommitUnknown",
    "Event",
    "HourCounts",
    "PartialWrite",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreFault",
    "StoreSettings",
    "UniqueCount",
    "open_store",
    "parse_store_url",
    "redact",
]


def open_store(
    url: str,
    *,
    timeout: float | None = None,
    shards: int | None = None,
    unique: str | None = None,
    retention_hours: int | None = None,
    commit_deadline: float | None = None,
    dedup_hours: int | None = None,
    allow_eviction: bool = False,
    check_every: float | None = None,
    exact_uniques_limit: int | None = None,
) -> Store:
    """Open the store a URL names. Raises StoreConfigError with one line for a bad URL.

    ``shards`` and ``unique`` left as None adopt what the store was set up with (the
    defaults for a new store); given explicitly, a store set up otherwise is refused.
    ``timeout``, ``commit_deadline`` and ``exact_uniques_limit`` (Redis: see docs/uniques.md)
    left as None take the defaults of tapad.settings.
    Call ``await store.connect()`` before relying on ``store.unique_mode``.
    ``check_every`` (Redis): seconds between checks that the store keeps what it is given
    (tapad/store/redis/guard.py), None for none (tools that only read); an evicting
    Redis is refused at ``connect`` unless ``allow_eviction``.
    """
    if timeout is None:
        timeout = _settings.default("store_timeout")
    if commit_deadline is None:
        commit_deadline = _settings.default("commit_deadline")
    if exact_uniques_limit is None:
        exact_uniques_limit = _settings.default("exact_uniques_limit")
    settings = parse_store_url(url)
    if settings.scheme == "sqlite":
        from tapad.store.sqlite import SQLiteStore

        if unique not in (None, "exact"):
            raise StoreConfigError(
                "the sqlite store counts unique users exactly; --unique hll needs Redis"
            )
        if shards not in (None, 1):
            raise StoreConfigError("the sqlite store has no shards; --shards needs Redis")
        return SQLiteStore(
            settings.path,
            timeout=timeout,
            synchronous=settings.options.get("synchronous", "full"),
            commit_deadline=commit_deadline,
            retention_hours=retention_hours,
            dedup_hours=dedup_hours or _settings.default("dedup_hours"),
        )
    if settings.scheme == "redis+cluster":
        from tapad.store.redis.cluster import ClusterStore

        return ClusterStore(
            settings,
            timeout=timeout,
            commit_deadline=commit_deadline,
            shards=shards,
            unique=unique,
            retention_hours=retention_hours,
            dedup_hours=dedup_hours,
            allow_eviction=allow_eviction,
            check_every=check_every,
            exact_uniques_limit=exact_uniques_limit,
        )
    from tapad.store.redis.node import RedisStore

    return RedisStore(
        settings,
        timeout=timeout,
        commit_deadline=commit_deadline,
        shards=shards,
        unique=unique,
        retention_hours=retention_hours,
        dedup_hours=dedup_hours,
        allow_eviction=allow_eviction,
        check_every=check_every,
        exact_uniques_limit=exact_uniques_limit,
    )
