"""``--processes``: the work split over child processes adds up to one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapad.loadgen.job import Job
from tapad.loadgen.ledger import load_ledger
from tapad.loadgen.processes import plan, split
from tapad.loadgen.runner import LoadConfig
from tapad.loadgen.traffic import Mix
from tests.loadgen.cli import assert_one_line_error, tapad
from tests.support import InProcessTapad


@pytest.mark.parametrize(("total", "parts"), [(10, 3), (2, 2), (7, 1), (1, 4)])
def test_split_shares_differ_by_at_most_one_and_add_up(total: int, parts: int) -> None:
    shares = split(total, parts)
    assert len(shares) == parts and sum(shares) == total
    assert max(shares) - min(shares) <= 1


def test_plan_divides_requests_connections_and_rate_and_varies_the_seed() -> None:
    job = Job("POST", "http://h:1/analytics", LoadConfig("POST", 1001, 32, rate=300.0), Mix(),
              seed=5)  # fmt: skip
    jobs = plan(job, 3)
    assert [j.config.requests for j in jobs] == [334, 334, 333]
    assert [j.config.concurrency for j in jobs] == [11, 11, 10]
    assert all(j.config.rate == 100.0 for j in jobs)
    assert len({j.seed for j in jobs}) == 3 and jobs[0].seed == 5


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_two_processes_post_and_verify_like_one(
    tapad_server: InProcessTapad, store_url: str, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.json"
    post = tapad("loadgen", "post", "--url", tapad_server.url, "-n", "1001", "-c", "8",
                 "--processes", "2", "--ledger", str(ledger_path), "--json")  # fmt: skip
    report = json.loads(post.stdout)
    assert post.returncode == 0, post.stderr
    assert report["requests"] == report["acknowledged"] == 1001
    assert load_ledger(ledger_path).events == 1001
    tally = tapad("tally", "--store", store_url, "--ledger", str(ledger_path))
    assert tally.returncode == 0, tally.stdout

    get = tapad("loadgen", "get", "--url", tapad_server.url, "-n", "300", "-c", "4",
                "--processes", "2", "--verify", str(ledger_path), "--json")  # fmt: skip
    report = json.loads(get.stdout)
    assert get.returncode == 0 and report["verify"]["checked"] == 300


def test_more_processes_than_connections_is_one_line() -> None:
    result = tapad("loadgen", "post", "-c", "2", "--processes", "3")
    assert_one_line_error(result, "--processes")
