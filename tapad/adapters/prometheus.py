"""prometheus-client's private parts that tapad's metrics use.

- ``values.ValueClass``: the client picks in-memory or mmap'ed (multiprocess) values once,
  when it is imported. A forked worker imported it in the supervisor, before the shared
  folder existed, so the choice is made again in the worker.
- A histogram child's ``_sum`` and ``_buckets``: one process tallies its requests in plain
  lists (cheaper than ``observe()``, which takes a lock per value) and adds the tallies to
  the histogram at each scrape, which ``observe()`` cannot do for many values at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Histogram, values

LIBRARY = "prometheus-client"
SUM = "_sum"  # a Histogram child's running sum (a value with .inc())
BUCKETS = "_buckets"  # its per-bucket counts, one per upper bound, +Inf last
VALUE_CLASS = "ValueClass"  # prometheus_client.values: the class every new value is made of


def use_multiprocess_values() -> None:
    """Make the values of metrics created from now on live in ``PROMETHEUS_MULTIPROC_DIR``."""
    setattr(values, VALUE_CLASS, values.MultiProcessValue())


def add_observations(child: Histogram, total: float, per_bucket: Sequence[float]) -> None:
    """Add many observations at once: ``total`` to the sum, ``per_bucket[i]`` to bucket i
    (the bucket ``observe()`` would have chosen: the first upper bound >= the value)."""
    getattr(child, SUM).inc(total)
    for bucket, n in zip(getattr(child, BUCKETS), per_bucket, strict=True):
        if n:
            bucket.inc(n)
