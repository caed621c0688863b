"""Checking and stamping events at the call, so a bad one fails where it was made.

The rules are the server's (the contract's single POST and batch): a user of 1 to 256
characters, a timestamp in milliseconds from 0 to the end of year 9999, an id of 1 to
128 characters without control characters. The server's own window (``--accept-past``)
cannot be known here; an event outside it is refused by the server and reported.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Sequence

import msgspec

MAX_TIMESTAMP_MS = 253_402_300_799_999
MAX_USER_CHARS = 256
MAX_ID_CHARS = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# (timestamp, user, "click" or "impression", id): a plain tuple, the cheapest to make in
# the caller's thread. An id the caller did not give is the number the IdMaker drew; the
# sender writes it out (``IdMaker.text``) when it encodes the batch.
Event = tuple[int, str, str, str | int]


def check_user(user: object) -> str:
    if not isinstance(user, str):
        raise TypeError(f"user: must be a str, got {type(user).__name__}")
    if not 1 <= len(user) <= MAX_USER_CHARS:
        raise ValueError(f"user: must be 1 to {MAX_USER_CHARS} characters, got {len(user)}")
    return user


def check_timestamp(timestamp: object) -> int:
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise TypeError(f"timestamp: must be an int of milliseconds, got {timestamp!r}")
    if not 0 <= timestamp <= MAX_TIMESTAMP_MS:
        raise ValueError(f"timestamp: must be 0 to {MAX_TIMESTAMP_MS} ms, got {timestamp}")
    return timestamp


def check_id(event_id: object) -> str:
    if not isinstance(event_id, str):
        raise TypeError(f"id: must be a str, got {type(event_id).__name__}")
    if not 1 <= len(event_id) <= MAX_ID_CHARS or _CONTROL.search(event_id):
        raise ValueError(f"id: must be 1 to {MAX_ID_CHARS} characters without control characters")
    return event_id


def now_ms() -> int:
    return int(time.time() * 1000)


class IdMaker:
    """Event ids unique across processes and restarts, for the cost of a counter.

    A ``uuid4()`` per event costs microseconds of the caller's time; a random 96-bit
    prefix drawn once per process (again after ``fork()``, with an empty queue) and a
    counter give ids as unique: two processes share a prefix with odds of about n^2 / 2^97.
    The caller's thread only draws the number (``next``); the id's text is made when the
    batch is encoded.
    """

    def __init__(self) -> None:
        self.prefix = ""
        self.next = itertools.count().__next__
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(12) + "-"
        self.next = itertools.count().__next__

    def text(self, event_id: str | int) -> str:
        return event_id if isinstance(event_id, str) else f"{self.prefix}{event_id:x}"


def stamp(user: str, kind: str, timestamp: int | None, event_id: str | None, ids: IdMaker) -> Event:
    """An event checked and stamped at the call: the caller's clock and a drawn id, unless
    given (``click()`` and ``impression()`` of both clients)."""
    return (
        now_ms() if timestamp is None else check_timestamp(timestamp),
        check_user(user),
        kind,
        ids.next() if event_id is None else check_id(event_id),
    )


def encode(events: Sequence[Event], ids: IdMaker) -> bytes:
    """The body of one ``POST /analytics/batch``: a JSON array (msgspec writes it in a
    third of the time the json module takes, on the sender's thread)."""
    text = ids.text
    return _ENCODER.encode(
        [{"timestamp": t, "user": u, "event": k, "id": text(i)} for t, u, k, i in events]
    )


_ENCODER = msgspec.json.Encoder()
