"""``StoreOptions``: what ``tapad serve`` asks of a store, as one object.

The options reach a store through ``open_store`` and its constructor; keeping them in one
value means a new store option is one field here (its default from tapad/settings.py's
table) instead of a parameter threaded through every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapad.settings import default


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """``shards``, ``unique`` and ``retention_hours`` left as None adopt what the store was
    set up with (the defaults for a new store); given, a store set up otherwise is refused.
    ``timeout`` and ``commit_deadline`` are in seconds."""

    timeout: float = default("store_timeout")
    commit_deadline: float = default("commit_deadline")
    shards: int | None = default("shards")
    unique: str | None = default("unique")
    retention_hours: int | None = default("retention_hours")
    dedup_hours: int = default("dedup_hours")
    allow_eviction: bool = default("allow_eviction")
    exact_uniques_limit: int = default("exact_uniques_limit")
    # Not a setting: seconds between checks that a Redis keeps what it is given
    # (tapad/store/redis/guard.py), the first in ``connect``; None for none (``tally``,
    # ``export``: tools that only read). ``tapad serve`` checks every 30 s.
    check_every: float | None = None
