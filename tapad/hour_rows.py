"""The rows of ``GET /analytics/hours`` and ``tapad export``, written in one place.
(Days, for ``tapad export --by day``, are written here too, in the same manner.)

The server and the export command both read hours from a store and hand them here,
so the two give the very same bytes for the same range (a test holds them to it).
Rows are written as text pieces, one per row, so ``export`` can stream a range far
longer than one request may ask for and the server can join a short one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from tapad.buckets import format_hour, format_hours, hour_start_ms
from tapad.store.base import HourCounts

MAX_HOURS: Final = 744  # one request covers at most 31 days
FORMATS: Final = ("json", "csv")
CONTENT_TYPES: Final = {"json": "application/json", "csv": "text/csv; charset=utf-8"}
CSV_HEADER: Final = "hour,timestamp,unique_users,clicks,impressions\n"

DAY_CSV_HEADER: Final = "day,timestamp,unique_users,clicks,impressions\n"
HOURS_PER_DAY: Final = 24

HourRows = Iterable[tuple[int, HourCounts]]  # (hour, its counts), oldest first
DayRows = Iterable[tuple[int, HourCounts]]  # (day: hours since the epoch // 24, its counts)


def csv_row(label: str, hour: int, counts: HourCounts) -> str:
    return (
        f"{label},{hour_start_ms(hour)},"
        f"{counts.unique_users},{counts.clicks},{counts.impressions}\n"
    )


def json_row(label: str, hour: int, counts: HourCounts) -> str:
    # Written out rather than json.dumps'd: every value is a number or an hour label of
    # digits and dashes, and this is the same text json.dumps gives, several times faster.
    return (
        f'{{"hour": "{label}", "timestamp": {hour_start_ms(hour)}, '
        f'"unique_users": {counts.unique_users}, "clicks": {counts.clicks}, '
        f'"impressions": {counts.impressions}}}'
    )


def render(fmt: str, rows: HourRows) -> Iterator[str]:
    """The document for ``rows`` in ``fmt`` (json or csv), piece by piece."""
    rows = list(rows)
    labels = format_hours(hour for hour, _ in rows)
    if fmt == "csv":
        yield CSV_HEADER
        for label, (hour, counts) in zip(labels, rows, strict=True):
            yield csv_row(label, hour, counts)
        return
    yield '{"hours": ['
    sep = ""
    for label, (hour, counts) in zip(labels, rows, strict=True):
        yield sep + json_row(label, hour, counts)
        sep = ", "
    yield "]}\n"


def render_text(fmt: str, rows: HourRows) -> str:
    return "".join(render(fmt, rows))


def render_days(fmt: str, rows: DayRows) -> Iterator[str]:
    """The document for whole UTC days: ``unique_users`` is each day's distinct users (not
    the sum of its hours), clicks and impressions the sums of its hours."""
    if fmt == "csv":
        yield DAY_CSV_HEADER
    else:
        yield '{"days": ['
    sep = ""
    for day, counts in rows:
        hour = day * HOURS_PER_DAY
        label = format_hour(hour)[:10]
        if fmt == "csv":
            yield csv_row(label, hour, counts)
            continue
        yield (
            f'{sep}{{"day": "{label}", "timestamp": {hour_start_ms(hour)}, '
            f'"unique_users": {counts.unique_users}, "clicks": {counts.clicks}, '
            f'"impressions": {counts.impressions}}}'
        )
        sep = ", "
    if fmt != "csv":
        yield "]}\n"
