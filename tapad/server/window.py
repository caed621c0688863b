"""Which event timestamps a server takes: ``--accept-past HOURS`` and ``--accept-future MINUTES``.

A timestamp in seconds where milliseconds were meant (``1765065600`` for 2025-12-07) is a
valid millisecond count in January 1970: the contract's range alone lets it in, and every
``tapad export`` afterwards starts in 1970. A window keeps such events out with a 400 that
says what went wrong. Without one (the default: the contract's full range), nothing is
refused and the log says, at most once a minute, that seconds-looking events arrive.

``Window.check`` is the one check, shared by every way of writing an event (the single
POST, batches, the pixel): a few integer comparisons against a "now" the caller reads
once per request (or batch).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from tapad.buckets import MAX_TIMESTAMP_MS, MS_PER_HOUR
from tapad.server.query import BadRequest

log = logging.getLogger("tapad.server")

# Milliseconds before 1973-03-03T09:46:40Z: no real ad event, but exactly what a timestamp
# in seconds between 1973 and 5138 reads as.
SECONDS_BELOW = 100_000_000_000
MS_PER_MINUTE = 60_000
WARN_EVERY_MS = MS_PER_MINUTE
UNLIMITED = MAX_TIMESTAMP_MS + 1  # a bound no timestamp of the contract's range passes


class Window:
    """The accepted range of event timestamps around "now", and the seconds warning."""

    def __init__(self, past_hours: int | None = None, future_minutes: int | None = None) -> None:
        self.past_hours = past_hours
        self.future_minutes = future_minutes
        self.limited = past_hours is not None or future_minutes is not None
        self._past_ms = UNLIMITED if past_hours is None else past_hours * MS_PER_HOUR
        self._future_ms = UNLIMITED if future_minutes is None else future_minutes * MS_PER_MINUTE
        self._warned_at: int | None = None  # now_ms of the last seconds warning
        self._unwarned = 0  # seconds-looking events since that warning

    @staticmethod
    def now() -> int:
        """The current time in milliseconds: read once per request, passed to ``check``."""
        return time.time_ns() // 1_000_000

    def check(self, ms: int, now_ms: int) -> None:
        """Return if an event at ``ms`` is taken at ``now_ms``; else raise ``BadRequest``
        with the one line naming ``timestamp`` (a batch puts ``event N: `` before it)."""
        if ms >= SECONDS_BELOW and now_ms - self._past_ms <= ms <= now_ms + self._future_ms:
            return  # the hot path: three comparisons
        if ms < SECONDS_BELOW:
            if self.limited:
                raise BadRequest(f"timestamp: {ms} looks like seconds; send milliseconds")
            self._warn_seconds(ms, now_ms)
            return  # no window: the contract's full range
        if ms < now_ms - self._past_ms:
            raise BadRequest(
                f"timestamp: {ms} is more than {_plural(self.past_hours, 'hour')} "
                "in the past (--accept-past)"
            )
        raise BadRequest(
            f"timestamp: {ms} is more than {_plural(self.future_minutes, 'minute')} "
            "in the future (--accept-future)"
        )

    def _warn_seconds(self, ms: int, now_ms: int) -> None:
        """Log a seconds-looking event taken without a window, at most once a minute."""
        self._unwarned += 1
        if self._warned_at is not None and now_ms - self._warned_at < WARN_EVERY_MS:
            return
        when = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
        log.warning(
            "recorded %d event(s) in 1970-1973 in the last minute, e.g. timestamp=%d (%s): "
            "it looks like seconds, not milliseconds; set --accept-past (and "
            "--accept-future) to refuse such events with a 400",
            self._unwarned,
            ms,
            when,
        )
        self._warned_at = now_ms
        self._unwarned = 0


def _plural(count: int | None, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
