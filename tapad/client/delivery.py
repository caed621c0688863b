"""What to do with the server's answer to a batch: shared by ``Client`` and ``AsyncClient``.

Acknowledged (``200``), worth retrying with the same ids (``429``, ``500``, ``502``,
``503``, ``504``, a timeout, a broken connection), or refused (anything else: the same
request would be refused again, so its events are reported and dropped from the queue).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from tapad.client.errors import DeliveryError

log = logging.getLogger("tapad.client")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_FIRST = 0.1  # seconds before the first retry; doubles each time, with jitter
BACKOFF_CAP = 10.0
RETRY_AFTER_CAP = 60.0  # a Retry-After longer than this is taken as this

ErrorHandler = Callable[[DeliveryError], None]


@dataclass
class Stats:
    """Counts of events (``retried``: events sent again)."""

    queued: int = 0
    sent: int = 0
    acknowledged: int = 0
    duplicates: int = 0
    retried: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "duplicates": self.duplicates,
            "retried": self.retried,
            "refused": self.refused,
        }


@dataclass
class Answer:
    """One attempt's outcome: ``status`` None means no answer (timeout, connection)."""

    status: int | None
    text: str = ""
    retry_after: str | None = None
    accepted: int = 0
    duplicates: int = 0

    @property
    def acknowledged(self) -> bool:
        return self.status == 200

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRY_STATUSES


def batch_target(url: str, write_token: str | None, batch_size: int) -> tuple[str, dict[str, str]]:
    """Where a client posts its batches, and the headers of every request; ValueError for a
    URL that is not HTTP or a batch size the server would refuse."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url: must start with http:// or https://, got {url!r}")
    if not 1 <= batch_size <= 10_000:
        raise ValueError("batch_size: must be 1 to 10000 (the server's batch limit)")
    headers = {"Content-Type": "application/json"}
    if write_token:
        headers["Authorization"] = f"Bearer {write_token}"
    return url.rstrip("/") + "/analytics/batch", headers


def parse_ack(text: str, events: int) -> tuple[int, int]:
    """``accepted`` and ``duplicates`` from a ``200``'s body (all accepted if unreadable)."""
    try:
        body = json.loads(text)
        return int(body["accepted"]), int(body["duplicates"])
    except (ValueError, KeyError, TypeError):
        return events, 0


def retry_delay(retries: int, retry_after: str | None) -> float:
    """Exponential backoff with full jitter, never shorter than the server's Retry-After."""
    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_FIRST * 2**retries))
    if retry_after is not None and retry_after.strip().isdigit():
        delay = max(delay, min(float(retry_after), RETRY_AFTER_CAP))
    return delay


def refused(answer: Answer, events: int, gave_up_after: float | None = None) -> DeliveryError:
    if gave_up_after is not None:
        message = f"still failing after {gave_up_after:g}s of retries"
        if answer.text:
            message += f": {answer.text}"
    else:
        message = answer.text or "refused"
    return DeliveryError(answer.status, message, events)


def report(error: DeliveryError, on_error: ErrorHandler | None) -> None:
    """The log always hears of a refused batch; ``on_error`` too, if given."""
    log.error("tapad.client: %s", error)
    if on_error is not None:
        try:
            on_error(error)
        except Exception:  # the handler's own bug must not stop the sender
            log.exception("tapad.client: on_error raised")


def one_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""
