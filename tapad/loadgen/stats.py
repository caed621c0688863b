"""Latency statistics: nearest-rank percentiles and a log-scale histogram.

Nearest-rank (the smallest value that at least p% of samples do not exceed) always
reports a latency that was really observed, which is what a person reading "p99"
expects; interpolating between two samples would invent one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0..100) of values sorted ascending."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Bucket:
    low: float
    high: float
    count: int


def histogram(sorted_values: Sequence[float], buckets: int = 12) -> list[Bucket]:
    """Counts in ``buckets`` bins between min and max, log-spaced when the range is wide.

    Latencies have a long tail; equal-width bins would put nearly everything in the
    first bin and show nothing of the tail's shape.
    """
    if not sorted_values:
        return []
    low, high = sorted_values[0], sorted_values[-1]
    if high <= low or buckets < 2:
        return [Bucket(low, high, len(sorted_values))]
    if low > 0 and high / low > 10:
        ratio = (high / low) ** (1 / buckets)
        edges = [low * ratio**i for i in range(buckets)] + [high]
    else:
        step = (high - low) / buckets
        edges = [low + step * i for i in range(buckets)] + [high]
    counts = [0] * buckets
    edge = 1
    for value in sorted_values:  # sorted: walk the edges once
        while edge < buckets and value >= edges[edge]:
            edge += 1
        counts[edge - 1] += 1
    return [Bucket(edges[i], edges[i + 1], counts[i]) for i in range(buckets)]
