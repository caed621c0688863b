"""UTC hour buckets.

An hour is stored as an integer: whole hours since the Unix epoch. Integers keep
store keys short and arithmetic trivial; people see hours as ``YYYY-MM-DDTHH``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

SECONDS_PER_HOUR = 3600
MS_PER_HOUR = SECONDS_PER_HOUR * 1000
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_HOUR_TEXT = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2})")


def hour_of(timestamp_ms: int) -> int:
    """The hour bucket that contains a timestamp in milliseconds."""
    return timestamp_ms // MS_PER_HOUR


def current_hour() -> int:
    return hour_of(int(time.time() * 1000))


def format_hour(hour: int) -> str:
    return datetime.fromtimestamp(hour * SECONDS_PER_HOUR, tz=UTC).strftime("%Y-%m-%dT%H")


def format_hours(hours: Iterable[int]) -> Iterator[str]:
    """``format_hour`` of each hour, the date written once per day: a range's labels.

    A UTC day is always 24 hours (Unix time has no leap seconds), so the date part of
    24 hours in a row is the same text.
    """
    day, date = -1, ""
    for hour in hours:
        this_day, hh = divmod(hour, 24)
        if this_day != day:
            day, date = this_day, format_hour(hour)[:11]  # YYYY-MM-DDT
        yield f"{date}{hh:02d}"


def hour_start_ms(hour: int) -> int:
    """The first millisecond of an hour bucket."""
    return hour * MS_PER_HOUR


def hour_ends_at(hour: int, after_hours: int = 0) -> float:
    """Unix time (seconds) at which an hour ends, or ``after_hours`` hours after that.

    Retention on every store counts from here: an hour's data goes once this moment,
    with ``after_hours`` the retention, has passed.
    """
    return float((hour + 1 + after_hours) * SECONDS_PER_HOUR)


def oldest_kept_hour(retention_hours: int, now: float) -> int:
    """The oldest hour a retention of ``retention_hours`` still keeps at Unix time ``now``."""
    return int(now // SECONDS_PER_HOUR) - retention_hours


def parse_hour(text: str) -> int:
    """Read an hour as a person writes it: ``YYYY-MM-DDTHH``, ``now`` or epoch milliseconds.

    Raises ValueError with a message fit to show the user.
    """
    text = text.strip()
    if text == "now":
        return current_hour()
    if text.isdigit():
        ms = int(text)
        if ms > MAX_TIMESTAMP_MS:
            raise ValueError(f"{text!r} is past the end of year 9999")
        return hour_of(ms)
    match = _HOUR_TEXT.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not an hour: use YYYY-MM-DDTHH, 'now' or epoch milliseconds")
    year, month, day, hh = (int(g) for g in match.groups())
    try:
        moment = datetime(year, month, day, hh, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid hour: {exc}") from None
    return int(moment.timestamp()) // SECONDS_PER_HOUR
