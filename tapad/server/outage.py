"""Store trouble as the operator and ``/healthz`` see it: a few log lines, a few words.

Every failure of a batch or a coalesced read comes here, whatever raised it: a store
error, a commit in doubt, a store configuration fault, or an exception nobody foresaw
(a bug). During an outage the store fails thousands of batches a second, so the log gets
the first failure, a summary at most every ``EVERY`` seconds, and a line when the store is
back; never one line (or one traceback) per batch. The details, hosts and exception text
included, go to that log only: ``/healthz`` and the answers get a few fixed words.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tapad.store.base import (
    CommitUnknown,
    PartialWrite,
    StoreConfigError,
    StoreError,
    StoreFault,
)

log = logging.getLogger("tapad.server")

EVERY = 5.0  # seconds between "still failing" lines
MISCONFIGURED = "store misconfigured: see the server log"


def is_fault(exc: BaseException) -> bool:
    """A store configuration fault: retrying will not help until someone fixes the store
    (a StoreConfigError, or a command that failed inside a committed transaction)."""
    return isinstance(exc, StoreConfigError | StoreFault)


def foreseen(exc: BaseException) -> bool:
    return isinstance(exc, StoreError | StoreConfigError)


class Outage:
    """One kind of store call failing (writes or reads): its log lines and its few words."""

    def __init__(
        self,
        what: str,
        unit: str,
        words: str | None,
        *,
        writes: bool,
        on_unforeseen: Callable[[], None] | None = None,
    ) -> None:
        self.what = what  # "batches", "reads": one failed call each
        self.unit = unit  # the requests each held: "events", "GETs"
        # What /healthz says while they fail; None: only faults and errors nobody foresaw
        # count (a read that fails because the store is down: PING says so already).
        self.words = words
        self.writes = writes  # a failed write may be in doubt (504), a failed read never
        self.on_unforeseen = on_unforeseen  # counts a failure the store's metrics missed
        self.since: float | None = None
        self.last_line = 0.0
        self.calls = self.requests = 0
        self.last_failure: tuple[float, str] | None = None  # (when, words) until a success
        self.fault = False  # a configuration fault: holds until a call succeeds

    def failed(self, requests: int, exc: BaseException) -> None:
        """Count one failed call holding ``requests`` requests; log if a line is due."""
        now = time.monotonic()
        if not foreseen(exc):
            if self.on_unforeseen is not None:
                self.on_unforeseen()
            self.last_failure = (now, "internal error: see the server log")
        elif self.words is not None:
            self.last_failure = (now, self.words)
        if is_fault(exc) and not self.fault:
            self.fault = True
            if not isinstance(exc, StoreFault):  # a StoreFault's store said it in its own line
                log.error("store misconfigured: %s; fix the store (docs/operations.md)", exc)
        self.calls += 1
        self.requests += requests
        if self.since is None or now - self.last_line >= EVERY:
            log.warning(
                "store failing: %d %s (%d %s) failed, %s: %s",
                self.calls,
                self.what,
                self.requests,
                self.unit,
                self.answered(exc),
                exc if foreseen(exc) else f"{type(exc).__name__}: {exc}",
                exc_info=None if foreseen(exc) else exc,  # a bug's traceback, rate-limited
            )
            self.since = self.since or now
            self.last_line = now
            self.calls = self.requests = 0

    def answered(self, exc: BaseException) -> str:
        if isinstance(exc, PartialWrite):
            return "each event answered by its part"
        in_doubt = isinstance(exc, CommitUnknown) or not foreseen(exc)
        return "answered 504 (outcome unknown)" if self.writes and in_doubt else "answered 503"

    def succeeded(self) -> None:
        self.last_failure = None
        self.fault = False
        if self.since is not None:
            if self.calls:
                log.warning(
                    "%d more %s (%d %s) failed", self.calls, self.what, self.requests, self.unit
                )
            log.warning(
                "store back after %.1fs: %s succeed again", time.monotonic() - self.since, self.what
            )
            self.since = None
            self.calls = self.requests = 0

    def failing(self, within: float) -> str | None:
        """The few words for /healthz if a call failed in the last ``within`` seconds and
        none has succeeded since; a configuration fault holds until one succeeds."""
        if self.fault:
            return MISCONFIGURED
        failure = self.last_failure
        if failure is None or time.monotonic() - failure[0] > within:
            return None
        return failure[1]
