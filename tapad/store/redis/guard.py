"""Whether a Redis keeps what tapad acknowledges, read from ``INFO``.

A 200 promises the event is kept. A Redis with a ``maxmemory-policy`` other than
``noeviction`` throws keys away when memory runs out, acknowledged counts and user sets
included, while every write still succeeds and PING still answers: nothing in the hot path
can see it. A Redis with neither AOF nor RDB save points loses everything on restart. So
each Redis (every master of a cluster) is read at start and then every ``CHECK_EVERY``
seconds, off the hot path, with ``INFO`` (which works where ``CONFIG`` is renamed away) and
``CONFIG GET save`` where it is allowed:

- an evicting policy ends ``tapad serve`` at start (StoreConfigError: one line, exit 2),
  unless it was started with ``--allow-eviction``, which logs a warning instead;
- a policy changed while serving, or ``evicted_keys`` growing between two checks, makes
  ``condition().evicting`` true (/healthz 503, an error line at most every ``LOG_EVERY``);
- no persistence is a warning: the store works, but a Redis restart loses everything.

The stores (node.py, cluster.py) only say which nodes to read; the decisions are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from tapad.store.base import CHECK_EVERY, StoreCondition, StoreConfigError, StoreError
from tapad.store.redis.link import FAILURES, NodeLink
from tapad.store.redis.protocol import CommandError

log = logging.getLogger("tapad.store")

LOG_EVERY = 60.0  # seconds between two error lines about eviction
NO_EVICTION = "noeviction"
# Without CONFIG, save points are guessed from the last save: Redis's longest default
# save point is an hour, so changes waiting longer than that mean there is none.
QUIET_SAVES = 3600


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one node's INFO (and CONFIG GET save, if allowed) says."""

    policy: str
    evicted_keys: int
    aof: bool
    last_save: int  # rdb_last_save_time, Unix seconds
    changes: int  # rdb_changes_since_last_save
    now: int  # the server's clock, Unix seconds
    save_points: str | None  # None: CONFIG not allowed here


def parse_info(text: str) -> dict[str, str]:
    """``field:value`` lines of an INFO reply; section headers and blank lines skipped."""
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def report_of(info: Mapping[str, str], save_points: str | None, clock: float) -> NodeReport:
    """The few INFO fields the guard needs (a field missing reads as harmless)."""
    usec = info.get("server_time_usec")
    return NodeReport(
        policy=info.get("maxmemory_policy", NO_EVICTION),
        evicted_keys=int(info.get("evicted_keys", "0")),
        aof=info.get("aof_enabled", "0") == "1",
        last_save=int(info.get("rdb_last_save_time", "0")),
        changes=int(info.get("rdb_changes_since_last_save", "0")),
        now=int(usec) // 1_000_000 if usec else int(clock),
        save_points=save_points,
    )


class NodeReader:
    """Reads one node's report over its hot-path link: one INFO (plus one CONFIG GET while
    CONFIG is allowed) per check, never per request."""

    def __init__(self, node: NodeLink, timeout: float) -> None:
        self.node = node
        self._timeout = timeout
        self._config = True  # False once CONFIG was refused (renamed, or not in the ACL)

    async def read(self) -> NodeReport:
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self.node.call("INFO")
                save: str | None = None
                if self._config:
                    try:
                        reply = await self.node.call("CONFIG", "GET", "save")
                        if isinstance(reply, list) and len(reply) == 2:
                            save = bytes(reply[1]).decode()
                    except CommandError:
                        self._config = False
        except FAILURES as exc:
            if not isinstance(exc, CommandError):
                self.node.close()  # a half-read reply stream can't be trusted
            raise
        if not isinstance(raw, bytes):
            raise CommandError(f"INFO answered {type(raw).__name__}")
        return report_of(parse_info(raw.decode()), save, time.time())


Reports = Callable[[], Awaitable[dict[str, NodeReport]]]  # node name ("host:port") -> report


class Guard:
    """The verdicts on one store's nodes, kept as a ``StoreCondition`` for /healthz and
    /metrics, and the background task that refreshes them."""

    def __init__(
        self,
        allow_eviction: bool,
        every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_eviction = allow_eviction
        self.every = every
        self.condition = StoreCondition()
        self._clock = clock
        self._seen: dict[str, NodeReport] = {}
        self._told_policy: set[tuple[str, str]] = set()  # (node, policy) warned of
        self._logged = -LOG_EVERY  # clock of the last error line about eviction
        self._task: asyncio.Task[None] | None = None

    def judge(self, reports: Mapping[str, NodeReport], starting: bool = False) -> None:
        """Update the condition from every node's report; at start, StoreConfigError for
        an evicting policy unless eviction is allowed."""
        evicting_now: list[str] = []
        evicted = 0
        persistent = True
        for name, report in reports.items():
            before = self._seen.get(name)
            self._seen[name] = report
            evicted += report.evicted_keys
            if report.policy != NO_EVICTION:
                self._bad_policy(name, report.policy, starting)
                evicting_now.append(f"maxmemory-policy {report.policy}")
            if before is not None and report.evicted_keys > before.evicted_keys:
                grew = report.evicted_keys - before.evicted_keys
                evicting_now.append(f"{grew} keys evicted since the last check")
            if not self._persistent(report, before):
                persistent = False
        self._say_persistence(persistent)
        evicting = bool(evicting_now) and not self.allow_eviction
        if self.allow_eviction:  # the policy was warned of once: only evictions seen now
            evicting_now = [e for e in evicting_now if not e.startswith("maxmemory-policy")]
        if evicting_now and self._clock() - self._logged >= LOG_EVERY:
            self._logged = self._clock()
            log.log(
                logging.WARNING if self.allow_eviction else logging.ERROR,
                "redis may be losing acknowledged events: %s%s; set maxmemory-policy "
                "noeviction (docs/operations.md)",
                "; ".join(sorted(set(evicting_now))),
                "" if self.allow_eviction else " (/healthz answers 503)",
            )
        self.condition = StoreCondition(
            evicting=evicting, evicted_keys=evicted, persistent=persistent
        )

    def _bad_policy(self, name: str, policy: str, starting: bool) -> None:
        line = (
            f"redis at {name} has maxmemory-policy {policy}: it may evict acknowledged "
            f"events; set maxmemory-policy noeviction, or start with --allow-eviction to "
            f"keep only what fits"
        )
        if starting and not self.allow_eviction:
            raise StoreConfigError(line)
        if self.allow_eviction and (name, policy) not in self._told_policy:
            self._told_policy.add((name, policy))
            log.warning("%s (--allow-eviction: serving anyway)", line.partition(";")[0])

    @staticmethod
    def _persistent(report: NodeReport, before: NodeReport | None) -> bool:
        if report.aof:
            return True
        if report.save_points is not None:
            return report.save_points.strip() != ""
        # CONFIG not allowed: no save for longer than any default save point, changes waiting
        moved = before is not None and report.last_save != before.last_save
        return moved or report.changes == 0 or report.now - report.last_save < QUIET_SAVES

    def _say_persistence(self, persistent: bool) -> None:
        if persistent == self.condition.persistent:
            return
        if persistent:
            log.info("redis persistence is on again")
        else:
            log.warning(
                "redis has no persistence (appendonly no, no save points): a Redis restart "
                "loses every event; turn on appendonly (docs/operations.md)"
            )

    # -- the background check --------------------------------------------------------------

    async def first(self, reports: Reports) -> None:
        """The check at start: StoreConfigError for an evicting policy."""
        self.judge(await reports(), starting=True)

    def watch(self, reports: Reports) -> None:
        """Check every ``every`` seconds from now on, on a task of its own. A store out of
        reach at start is judged once it answers: an evicting policy then turns /healthz
        503 instead of ending the server."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(reports), name="tapad-redis-guard"
            )

    async def _run(self, reports: Reports) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                self.judge(await reports())
            except StoreError as exc:  # out of reach: the last verdict holds
                log.debug("redis check failed: %s", exc)
            except Exception:  # a bug: say so, keep checking
                log.exception("redis check failed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
