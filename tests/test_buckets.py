from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tapad.buckets import MAX_TIMESTAMP_MS, format_hour, format_hours, hour_of, parse_hour


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_hour_bucket_edges() -> None:
    start = ms("2026-11-27T18:00:00")
    assert hour_of(start) == hour_of(start + 3_599_999)
    assert hour_of(start + 3_600_000) == hour_of(start) + 1
    assert hour_of(start - 1) == hour_of(start) - 1
    assert hour_of(0) == 0


def test_format_and_parse_round_trip() -> None:
    hour = hour_of(ms("2026-11-27T18:42:10"))
    assert format_hour(hour) == "2026-11-27T18"
    assert parse_hour("2026-11-27T18") == hour
    assert parse_hour(str(ms("2026-11-27T18:59:59"))) == hour
    assert format_hour(hour_of(MAX_TIMESTAMP_MS)) == "9999-12-31T23"


def test_parse_now_is_current_hour() -> None:
    assert parse_hour("now") == hour_of(int(datetime.now(UTC).timestamp() * 1000))


@pytest.mark.parametrize("text", ["2026-11-27", "2026-13-01T00", "2026-11-27T24", "yesterday", ""])
def test_parse_hour_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hour(text)


def test_format_hours_is_format_hour_for_runs_and_scattered_hours() -> None:
    last = hour_of(MAX_TIMESTAMP_MS)
    for start, count in ((0, 50), (hour_of(ms("2026-11-27T18:00:00")), 744), (last - 30, 31)):
        hours = range(start, start + count)  # across midnights, and to the end of 9999
        assert list(format_hours(hours)) == [format_hour(h) for h in hours]
    scattered = [5, 500_000, 4, 23, 24, 493_000, 493_023]
    assert list(format_hours(scattered)) == [format_hour(h) for h in scattered]
