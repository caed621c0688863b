"""The prometheus-client private parts tapad relies on still behave as tapad expects.

A failure here names the installed prometheus-client version: a release changed what
``tapad/adapters/prometheus.py`` uses, and that module is the one to update.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram

from tapad.adapters import prometheus as adapter

VERSION = f"{adapter.LIBRARY} {version(adapter.LIBRARY)}"
BUCKETS = (0.001, 0.01, 0.1)


def changed(what: str) -> str:
    return f"{VERSION} changed {what}: update tapad/adapters/prometheus.py"


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_histogram_children_keep_their_sum_and_buckets() -> None:
    child = Histogram("h", "h", ["m"], buckets=BUCKETS, registry=CollectorRegistry()).labels("x")
    total = getattr(child, adapter.SUM, None)
    assert callable(getattr(total, "inc", None)), changed(f"a Histogram child's {adapter.SUM}")
    buckets = getattr(child, adapter.BUCKETS, None)
    assert isinstance(buckets, list), changed(f"a Histogram child's {adapter.BUCKETS}")
    assert len(buckets) == len(BUCKETS) + 1, changed(f"{adapter.BUCKETS} (one per bound, +Inf)")


def test_added_observations_read_as_if_observed_one_by_one() -> None:
    seconds = [0.0005, 0.001, 0.003, 0.02, 0.02, 0.5]
    observed, added = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("h", "h", ["m"], buckets=BUCKETS, registry=observed).labels("x")
    for s in seconds:
        one_by_one.observe(s)
    per_bucket = [0, 0, 0, 0]
    for s in seconds:  # as Metrics.request_done tallies them: the first bound >= s
        per_bucket[next((i for i, b in enumerate(BUCKETS) if s <= b), len(BUCKETS))] += 1
    child = Histogram("h", "h", ["m"], buckets=BUCKETS, registry=added).labels("x")
    try:
        adapter.add_observations(child, sum(seconds), per_bucket)
    except (AttributeError, TypeError, ValueError) as exc:
        pytest.fail(changed(f"a Histogram child's parts ({exc})"))
    assert samples(added) == samples(observed), changed("how a histogram counts its values")
    assert samples(added)[("h_count", "")] == len(seconds)  # not two empty histograms


def test_values_made_after_the_switch_go_to_the_shared_folder(tmp_path: Path) -> None:
    """In a fresh process, as a forked worker: prometheus_client is imported before the
    folder is set, then tapad switches to multiprocess values."""
    script = textwrap.dedent(
        f"""
        import os
        from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
        from tapad.adapters.prometheus import use_multiprocess_values

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        use_multiprocess_values()
        Counter("tapad_adapter_probe", "probe", registry=CollectorRegistry()).inc(7)
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed, path={str(tmp_path)!r})
        print(generate_latest(summed).decode())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "tapad_adapter_probe_total 7.0" in out, changed(f"values.{adapter.VALUE_CLASS}") + out
