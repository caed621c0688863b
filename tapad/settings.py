"""The one table of ``tapad serve`` settings: name, default, environment variable, help.

The typer options, ``ServeSettings``, the stores' defaults and the README's configuration
table all come from here, so a default is changed in one place (as datasette does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # the ServeSettings field; the option is --name-with-dashes
    default: Any
    help: str
    env: str | None = None  # environment variable that sets it, if any


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address to listen on.", "TAPAD_HOST"),
    Setting("port", 8080, "Port to listen on.", "TAPAD_PORT"),
    Setting("store_url", "sqlite:///tapad-data/tapad.db", "The store's URL.", "TAPAD_STORE"),
    Setting(
        "store_timeout",
        0.75,
        # A POST may wait for the batch ahead of it and then its own: two store timeouts,
        # which must stay under the 2 s in which every POST is promised an answer.
        "Seconds before a store call counts as failed (503).",
    ),
    Setting(
        "commit_deadline",
        5.0,
        "Seconds a batch whose commit is in doubt may take to resolve before its POSTs "
        "answer 504 (outcome unknown).",
    ),
    Setting("max_pending", 50_000, "Events waiting for commit before POST answers 503."),
    Setting(
        "max_connections", 10_000, "Open connections per process; past it new ones are closed."
    ),
    Setting("shutdown_timeout", 10.0, "Seconds to finish in-flight requests on SIGTERM."),
    Setting("workers", 1, "Worker processes sharing the port (SO_REUSEPORT).", "TAPAD_WORKERS"),
    Setting(
        "shards", None, "Shards per hour on Redis (default: the store's, else 1; 16 on a cluster)."
    ),
    Setting(
        "unique",
        None,
        "Unique users: exact (a set) or hll (HyperLogLog, ~0.81% error; Redis only). "
        "Default: the store's, else exact.",
    ),
    Setting(
        "retention_hours",
        None,
        "Keep each hour this many hours after it ends, then remove it. "
        "Default: the store's, else for ever.",
        "TAPAD_RETENTION_HOURS",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def default(name: str) -> Any:
    """The default of one setting, for code outside the CLI (stores, ServeSettings)."""
    return BY_NAME[name].default
