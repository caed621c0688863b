"""The one table of ``tapad serve`` settings: name, default, environment variable, help.

Every default lives here and nowhere else, so it is changed in one place (as datasette
does). The rest follows the table:

- ``tapad serve``'s options are built from it (tapad/cli.py, ``options_from_table``) and
  handed on as one mapping, ``ServeSettings(**options)``;
- ``ServeSettings`` (tapad/server/config.py) has one field per entry, defaulting to
  ``default(name)``;
- the stores take one ``StoreOptions`` (tapad/store/options.py), built by
  ``ServeSettings.store_options()``, whose defaults are the table's too;
- the README's configuration table is ``python -m tapad.settings``'s output, and
  tests/test_settings.py fails when the two disagree.

Adding a serve option is one entry here, a field of the same name in ``ServeSettings``
(tests/test_settings.py checks there is one), and the code that uses it; then paste the
regenerated table into the README. The option's type is its default's; give ``kind`` when
the default is None, and ``choices`` for a fixed set of words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # the ServeSettings field; the option is --name-with-dashes unless ``option`` says
    default: Any
    help: str
    env: str | None = None  # environment variable that sets it, if any
    option: str | None = None
    min: int | float | None = None
    max: int | float | None = None
    default_text: str | None = None  # how the README states a default of None
    kind: type | None = None  # the value's type; None: the default's
    choices: tuple[str, ...] | None = None  # the words it takes (any case), if a fixed set
    metavar: str | None = None  # what the option takes, as its help shows it (None: a flag)

    @property
    def flag(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")

    @property
    def value_type(self) -> type:
        return self.kind or type(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "host",
        "127.0.0.1",
        "Address to listen on (0.0.0.0 to listen on every interface).",
        "TAPAD_HOST",
        metavar="ADDRESS",
    ),
    Setting(
        "port",
        8080,
        "Port to listen on.",
        "TAPAD_PORT",
        min=0,
        max=65535,
        metavar="PORT",
    ),
    Setting(
        "store_url",
        "sqlite:///tapad-data/tapad.db",
        "The store: sqlite:///path.db, redis://[user:password@]host:port/db, rediss://..., "
        "unix:///path.sock or redis+cluster://host:port,...",
        "TAPAD_STORE",
        option="--store",
        metavar="URL",
    ),
    Setting(
        "store_timeout",
        0.75,
        # A POST may wait for the batch ahead of it and then its own: two store timeouts,
        # which must stay under the 2 s in which every POST is promised an answer.
        "Seconds before a store call counts as failed (the request gets 503); a POST waits "
        "at most about two of these (the batch ahead of it, then its own).",
        min=0.05,
        metavar="SECONDS",
    ),
    Setting(
        "commit_deadline",
        5.0,
        "Seconds a batch whose commit is in doubt may take to resolve before its POSTs "
        "answer 504 (outcome unknown).",
        min=0.05,
        metavar="SECONDS",
    ),
    Setting(
        "max_pending",
        50_000,
        "Events waiting for commit before POST answers 503 at once.",
        min=1,
        metavar="EVENTS",
    ),
    Setting(
        "max_connections",
        10_000,
        "Open connections per process; past it a new one is closed at once.",
        min=1,
        metavar="N",
    ),
    Setting(
        "shutdown_timeout",
        10.0,
        "Seconds to finish requests in flight on SIGTERM or SIGINT.",
        min=0.0,
        metavar="SECONDS",
    ),
    Setting(
        "workers",
        1,
        "Worker processes on one port (SO_REUSEPORT), supervised: a dead worker is "
        "restarted, SIGTERM drains them all.",
        "TAPAD_WORKERS",
        min=1,
        metavar="N",
    ),
    Setting(
        "shards",
        None,
        "Shards per hour on Redis, by a hash of the user (default: the store's, else 1; "
        "one per master on a cluster).",
        min=1,
        max=4096,
        default_text="the store's; else 1 (Redis), one per master (cluster)",
        kind=int,
        metavar="N",
    ),
    Setting(
        "unique",
        None,
        "Unique users: exact (a set) or hll (HyperLogLog per hour and shard, ~0.81% error, "
        "at most ~14 KB; Redis only). Default: the store's, else exact.",
        default_text="the store's; else `exact`",
        kind=str,
        choices=("exact", "hll"),
        metavar="exact|hll",
    ),
    Setting(
        "dedup_hours",
        48,
        "Remember event ids until their hour is this many hours past its end (never longer "
        "than the hour is kept): a retry with the same id within it is counted once.",
        "TAPAD_DEDUP_HOURS",
        min=1,
        metavar="HOURS",
    ),
    Setting(
        "retention_hours",
        None,
        "Keep each hour this many hours after it ends, then remove it (a GET then answers "
        "zeros). Default: the store's, else for ever.",
        "TAPAD_RETENTION_HOURS",
        min=1,
        default_text="the store's; else for ever",
        kind=int,
        metavar="HOURS",
    ),
    Setting(
        "cors_origins",
        None,
        "Origins whose pages may read answers and send preflighted requests "
        "(https://a.example,https://b.example, or * for any): CORS headers on every answer "
        "to them, 204 to their preflight OPTIONS. Pixels and beacons need none.",
        "TAPAD_CORS_ORIGINS",
        default_text="none (no CORS headers; OPTIONS answers 405)",
        kind=str,
        metavar="ORIGINS",
    ),
    Setting(
        "allow_eviction",
        False,
        "Serve on a Redis whose maxmemory-policy may evict keys (acknowledged events can "
        "then be lost): a warning instead of refusing to start.",
    ),
    Setting(
        "access_log",
        False,
        "Log one line per request (address, request line, status, bytes, time); key= "
        "values show as key=***, headers never. Off: no cost per request.",
        "TAPAD_ACCESS_LOG",
    ),
    Setting(
        "accept_past",
        None,
        "Refuse (400) events more than this many hours in the past, and timestamps that "
        "look like seconds. Default: any, back to 1970 (recommended: 48, or the longest "
        "a client may buffer).",
        "TAPAD_ACCEPT_PAST",
        min=1,
        default_text="any",
        kind=int,
        metavar="HOURS",
    ),
    Setting(
        "accept_future",
        None,
        "Refuse (400) events more than this many minutes in the future (clock skew), and "
        "timestamps that look like seconds. Default: any, up to year 9999 (recommended: 5).",
        "TAPAD_ACCEPT_FUTURE",
        min=0,
        default_text="any",
        kind=int,
        metavar="MINUTES",
    ),
    Setting(
        "exact_uniques_limit",
        200_000,
        "Redis: GET /analytics/uniques counts exactly while the range's hours hold at most this "
        "many user entries in all, merged in short steps; past it, a HyperLogLog estimate "
        "(docs/uniques.md).",
        min=0,
        metavar="MEMBERS",
    ),
    Setting(
        "write_token",
        None,
        "Tokens (comma-separated, several while rotating) one of which every write must "
        "carry, as 'Authorization: Bearer TOKEN' or key=TOKEN. Default: writes are open.",
        "TAPAD_WRITE_TOKEN",
        default_text="none: open",
        kind=str,
        metavar="TOKENS",
    ),
    Setting(
        "read_token",
        None,
        "Tokens one of which every read (GET /analytics..., /metrics) must carry, as for "
        "--write-token. Default: reads are open.",
        "TAPAD_READ_TOKEN",
        default_text="none: open",
        kind=str,
        metavar="TOKENS",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def default(name: str) -> Any:
    """The default of one setting, for ``ServeSettings`` and ``StoreOptions``."""
    return BY_NAME[name].default


def markdown_table() -> str:
    """The README's configuration table, as it must read."""
    lines = [
        "| option | environment | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        env = f"`{s.env}`" if s.env else ""
        shown = s.default_text if s.default is None else f"`{s.default}`"
        meaning = s.help.replace("|", r"\|")
        lines.append(f"| `{s.flag}` | {env} | {shown} | {meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
