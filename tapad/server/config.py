"""``ServeSettings``: what ``tapad serve`` was asked for, and the error of a failed start.

Apart from the server's code so that the CLI, the supervisor and tests can name a
configuration without loading the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tapad.settings import default
from tapad.store.base import CHECK_EVERY
from tapad.store.options import StoreOptions

SUMMARY_EVERY = 60.0  # seconds between the log's summary lines (tapad/server/access_log.py)


@dataclass(frozen=True)
class ServeSettings:
    """One field per entry of the one table (tapad/settings.py), defaulting to its default."""

    host: str = default("host")
    port: int = default("port")
    store_url: str = default("store_url")
    store_timeout: float = default("store_timeout")
    commit_deadline: float = default("commit_deadline")
    max_pending: int = default("max_pending")
    max_connections: int = default("max_connections")
    max_batch: int = 2048  # not a setting: the committer's batch cap
    shutdown_timeout: float = default("shutdown_timeout")
    workers: int = default("workers")
    shards: int | None = default("shards")
    unique: str | None = default("unique")
    retention_hours: int | None = default("retention_hours")
    dedup_hours: int = default("dedup_hours")
    cors_origins: str | None = default("cors_origins")
    allow_eviction: bool = default("allow_eviction")
    access_log: bool = default("access_log")
    accept_past: int | None = default("accept_past")
    accept_future: int | None = default("accept_future")
    exact_uniques_limit: int = default("exact_uniques_limit")
    # Secrets: kept out of the repr, so no log line or traceback shows them.
    write_token: str | None = field(default=default("write_token"), repr=False)
    read_token: str | None = field(default=default("read_token"), repr=False)
    reuse_port: bool = False  # not a setting: set for the worker processes
    store_check_every: float = CHECK_EVERY  # not a setting: tests check more often
    summary_every: float = SUMMARY_EVERY  # not a setting: seconds between summary lines

    def store_options(self) -> StoreOptions:
        """What the store is asked for (``open_store(url, settings.store_options())``)."""
        return StoreOptions(
            timeout=self.store_timeout,
            commit_deadline=self.commit_deadline,
            shards=self.shards,
            unique=self.unique,
            retention_hours=self.retention_hours,
            dedup_hours=self.dedup_hours,
            allow_eviction=self.allow_eviction,
            exact_uniques_limit=self.exact_uniques_limit,
            check_every=self.store_check_every,
        )


class StartupError(Exception):
    """The server cannot start; ``str()`` is the one line the user sees."""
