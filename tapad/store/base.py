"""The one small interface every store implements.

What the server needs from a store: connect, apply a batch of events atomically (and say
which of them carried an id it already held), read hours (several in one round trip), say
whether it is alive (``ping``) and whether it keeps what it is given (``condition``,
``probe_write``), and close; it shows ``unique_mode`` at startup and exports ``in_doubt``,
how batches whose reply was lost turned out. ``fault`` is the line /healthz gives for a
store in a state only an operator can fix. ``tally`` and ``export`` also list the hours
that have data, ``tapad delete`` removes hours, and ``GET /analytics/uniques`` counts the
distinct users of a range of hours. Keeping the interface this small is what lets SQLite,
Redis and Redis Cluster stand behind the same hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

log = logging.getLogger("tapad.store")


class Event(NamedTuple):
    hour: int
    user: str
    click: bool  # False means an impression
    id: str | None = None  # an event id: counted once per (hour, user, id)


Duplicates = frozenset[int]  # positions in a batch of events whose id was already recorded
NO_DUPLICATES: Duplicates = frozenset()


@dataclass(frozen=True, slots=True)
class HourCounts:
    unique_users: int = 0
    clicks: int = 0
    impressions: int = 0

    def __add__(self, other: HourCounts) -> HourCounts:
        """For totals over hours (``tally``)."""
        return HourCounts(
            self.unique_users + other.unique_users,
            self.clicks + other.clicks,
            self.impressions + other.impressions,
        )


class UniqueCount(NamedTuple):
    """Distinct users over a range of hours (``Store.uniques``)."""

    unique_users: int
    exact: bool  # False: a HyperLogLog estimate (standard error about 0.81%)


class StoreError(Exception):
    """The store could not do what was asked; the caller may retry later (HTTP 503)."""


class CommitUnknown(StoreError):
    """The store went silent while a batch was being committed and did not come back within
    the commit deadline: the batch may or may not have been applied (HTTP 504). Raised only
    after the store tried to find out (see docs/operations.md); never for a batch that was
    not sent."""


class StoreFault(CommitUnknown):
    """A command failed inside a committed transaction (e.g. WRONGTYPE: a key under the
    prefix that tapad did not write): Redis applied the other commands, so the batch is
    applied in part. A configuration fault, not an outage: the store sets its ``fault``
    (a line for /healthz, which its ping() then fails with) and refuses every later write
    before sending it, so no retry adds to a hour in that state. See docs/operations.md."""


class PartialWrite(StoreError):
    """A batch was applied in part: a Redis Cluster master failed while its part was in
    flight, and the other masters had committed theirs. Each POST gets its own answer:
    ``committed(event)``: 200; ``in_doubt(event)``: its part's outcome stayed unknown past
    the commit deadline, 504; neither: its part is known not applied, 503."""

    def __init__(
        self,
        message: str,
        parts: set[tuple[int, int]],
        shard_of: Callable[[str], int],
        unknown: set[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(message)
        self._parts = parts  # the committed (hour, shard) parts
        self._unknown = unknown or set()  # the parts in doubt
        self._shard_of = shard_of

    def committed(self, event: Event) -> bool:
        return (event.hour, self._shard_of(event.user)) in self._parts

    def in_doubt(self, event: Event) -> bool:
        return bool(self._unknown) and (event.hour, self._shard_of(event.user)) in self._unknown


CHECK_EVERY = 30.0  # seconds between a store's own checks of how it keeps events


@dataclass(frozen=True, slots=True)
class StoreCondition:
    """What a store's own checks last found about its keeping of acknowledged events.

    Read by /healthz and each /metrics scrape, so it never does I/O on the store: Redis
    stores keep it from a background check of ``INFO`` (tapad/store/redis/guard.py),
    SQLite reads the free space of its file system."""

    # The store may throw acknowledged events away (a Redis evicting keys, or whose
    # maxmemory-policy lets it) and tapad was not started to accept that.
    evicting: bool = False
    evicted_keys: int | None = None  # keys the store says it evicted (Redis's counter)
    persistent: bool = True  # False: a restart of the store loses everything it holds
    disk_free_bytes: int | None = None  # free space under the store's file (SQLite)


class StoreConfigError(Exception):
    """The store refuses this configuration (bad URL, mismatched layout); retrying won't help."""


@dataclass
class InDoubt:
    """How a store's in-doubt batches (reply lost after sending) turned out. Tests
    assert on them; the server exports them. A store that never loses a reply after
    sending (SQLite) keeps them at zero."""

    applied: int = 0
    not_applied: int = 0
    unknown: int = 0
    settling: int = 0  # batches being settled right now (while > 0, the store is silent)
    # settled() calls so far: one int to compare after every batch (not part of equality)
    changes: int = field(default=0, compare=False, repr=False)

    def settled(self, name: str, outcome: str, events: int, waited: float) -> None:
        """Count one in-doubt batch (or cluster part) and log it in one line."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.changes += 1
        level = logging.WARNING if outcome == "unknown" else logging.INFO
        log.log(
            level,
            "in-doubt batch on %s (%d events) settled after %.2fs: %s",
            name,
            events,
            waited,
            outcome.replace("_", " "),
        )


class Store(Protocol):
    @property
    def in_doubt(self) -> InDoubt:
        """How batches whose reply was lost turned out (the server exports the counts)."""

    @property
    def fault(self) -> str | None:
        """Set with a StoreFault: what /healthz says until an operator fixes the store."""

    @property
    def unique_mode(self) -> str:
        """ "exact" or "hll" (read-only: the store's layout decides it)."""

    async def connect(self) -> None:
        """Check the store at start: StoreConfigError is fatal, StoreError means not yet."""

    async def write(self, events: Sequence[Event]) -> Duplicates:
        """Apply all events or none, exactly once.

        Returns: applied; the positions of the events not counted because their ``id`` was
        already recorded for that hour and user (earlier, or earlier in this batch).
        StoreError: known not applied, and never will be (HTTP 503, safe
        to retry). CommitUnknown: may or may not have been applied (HTTP 504). PartialWrite
        (cluster): some parts applied, the others known not applied.
        """

    async def read(self, hour: int) -> HourCounts:
        """One hour's counts (``tally``, tests)."""

    async def read_hours(self, hours: Sequence[int]) -> list[HourCounts]:
        """Several hours' counts in one round trip, in the order asked (coalesced GETs)."""

    async def hours(self) -> list[int]:
        """Every hour that has data, newest first."""

    async def delete_hours(
        self, hours: Sequence[int], progress: Callable[[int], None] | None = None
    ) -> int:
        """Remove every count, user and id of ``hours`` (``tapad delete``), each hour in one
        transaction (on a cluster, one per slot of the hour), safe beside running servers:
        an event of such an hour is committed before (removed) or after (kept). Returns
        the hours that had data; ``progress(n)`` is told as n more of ``hours`` are done."""

    async def uniques(self, hours: Sequence[int]) -> UniqueCount:
        """Distinct users over ``hours`` (a user seen in several counts once), counted off
        the hot path: never one long store call that would hold up writes and reads
        (docs/uniques.md says how each store does it)."""

    async def ping(self) -> None: ...

    async def probe_write(self) -> None:
        """Find out whether the store takes writes now, recording nothing that counts:
        StoreError if not. /healthz calls it while writes are failing and no batch is
        under way, so that a server no POST reaches can say it is healthy again."""

    def condition(self) -> StoreCondition:
        """What the store's own checks last found (cheap, no store round trip)."""

    async def close(self) -> None: ...


def aggregate(
    events: Sequence[Event], shard_of: Callable[[str], int] | None = None
) -> dict[tuple[int, int], tuple[set[str], int, int]]:
    """Fold a batch per (hour, shard) into (users, clicks, impressions): one store write each.

    Without ``shard_of`` every event is in shard 0, as on SQLite and an unsharded Redis.
    """
    parts: dict[tuple[int, int], tuple[set[str], int, int]] = {}
    for hour, user, click, _ in events:
        key = (hour, shard_of(user) if shard_of is not None else 0)
        entry = parts.get(key)
        if entry is None:
            parts[key] = ({user}, int(click), int(not click))
        else:
            entry[0].add(user)
            parts[key] = (entry[0], entry[1] + click, entry[2] + (not click))
    return parts
