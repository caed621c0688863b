from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tapad.buckets import MS_PER_HOUR
from tapad.loadgen.traffic import Mix, Traffic

NOW = 1_795_000_000_000 + 1_234_567  # some moment well inside an hour
HOUR = NOW // MS_PER_HOUR


def make(mix: Mix, users: list[str] | None = None) -> Traffic:
    return Traffic("http://h:1/analytics", users or ["ann", "bob"], mix, now_ms=NOW, seed=3)


def test_current_hour_events_are_in_this_hour_and_never_in_the_future() -> None:
    traffic = make(Mix(old_ratio=0.0))
    for _ in range(5000):
        url, (hour, _, _) = traffic.post()
        ts = int(parse_qs(urlsplit(str(url)).query)["timestamp"][0])
        assert HOUR * MS_PER_HOUR <= ts <= NOW
        assert hour == HOUR


def test_past_events_spread_over_old_hours_and_the_ratio_holds() -> None:
    traffic = make(Mix(old_ratio=0.05, old_hours=24))
    hours = [traffic.post()[1][0] for _ in range(40_000)]
    past = [h for h in hours if h != HOUR]
    assert all(HOUR - 24 <= h <= HOUR - 1 for h in past)
    assert set(past) == set(range(HOUR - 24, HOUR))  # every past hour is reached
    assert 0.04 < len(past) / len(hours) < 0.06


def test_click_ratio_and_users_come_through_in_the_url() -> None:
    users = ["ann", "b&b=1", "zoë"]
    traffic = make(Mix(click_ratio=0.25), users)
    clicks = 0
    for _ in range(8000):
        url, (_, index, click) = traffic.post()
        query = parse_qs(urlsplit(str(url)).query, keep_blank_values=True)
        assert query["user"] == [users[index]]  # quoted so & and = survive
        assert ("click" in query) == click and ("impression" in query) != click
        clicks += click
    assert 0.22 < clicks / 8000 < 0.28


def test_get_urls_carry_only_a_timestamp() -> None:
    url, hour = make(Mix()).get()
    query = parse_qs(urlsplit(str(url)).query)
    assert list(query) == ["timestamp"] and int(query["timestamp"][0]) // MS_PER_HOUR == hour


@pytest.mark.parametrize(
    ("mix", "word"),
    [
        (Mix(old_ratio=1.5), "--old-ratio"),
        (Mix(click_ratio=-0.1), "--click-ratio"),
        (Mix(old_ratio=0.1, old_hours=0), "--old-hours"),
    ],
)
def test_impossible_mixes_are_refused(mix: Mix, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        mix.check()
