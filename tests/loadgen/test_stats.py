from __future__ import annotations

import itertools
import random

import pytest

from tapad.loadgen.stats import histogram, percentile


def test_nearest_rank_percentiles_on_one_to_hundred() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (0, 1, 50, 90, 99, 99.5, 100)] == [
        1, 1, 50, 90, 99, 100, 100,
    ]  # fmt: skip


def test_percentiles_are_observed_values_not_interpolated() -> None:
    values = [1.0, 2.0, 10.0, 100.0]
    assert percentile(values, 50) == 2.0
    assert percentile(values, 75) == 10.0
    assert percentile(values, 76) == 100.0
    assert percentile([0.25], 99) == 0.25


def test_percentile_matches_its_definition_on_random_data() -> None:
    rng = random.Random(5)
    values = sorted(rng.expovariate(1.0) for _ in range(997))
    for p in (10, 50, 90, 99, 99.9):
        got = percentile(values, p)
        at_or_below = sum(v <= got for v in values)
        below = sum(v < got for v in values)
        assert at_or_below / len(values) >= p / 100  # at least p% are <= it
        assert below / len(values) < p / 100  # and it is the smallest such value


@pytest.mark.parametrize(("values", "p"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values: list[float], p: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, p)


@pytest.mark.parametrize("spread", [2.0, 1000.0])
def test_histogram_puts_every_value_in_the_bucket_that_holds_it(spread: float) -> None:
    rng = random.Random(9)
    values = sorted(rng.uniform(0.001, 0.001 * spread) for _ in range(5000))
    buckets = histogram(values, buckets=10)
    assert len(buckets) == 10
    assert sum(b.count for b in buckets) == len(values)
    assert buckets[0].low == values[0] and buckets[-1].high == values[-1]
    for left, right in itertools.pairwise(buckets):
        assert left.high == right.low and left.low < left.high
    for i, bucket in enumerate(buckets):
        last = i == len(buckets) - 1
        inside = [v for v in values if bucket.low <= v and (v < bucket.high or last)]
        assert bucket.count == len(inside)


def test_histogram_of_a_single_value() -> None:
    buckets = histogram([0.002] * 3)
    assert [(b.low, b.high, b.count) for b in buckets] == [(0.002, 0.002, 3)]
    assert histogram([]) == []
