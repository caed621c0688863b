"""CI's smoke run of the benchmark: ``python bench/run.py --quick`` works end to end.

It checks that the one command starts every target, measures it and writes its
table, not how fast anything is (the targets live in docs/performance.md, measured
by a full run, never in a timed test). wrk is the one tool the benchmark cannot
do without: without it this test is skipped, and says how to install it.
redis-server and nginx are installed by scripts/test; should one be missing, the
run goes on with ``--skip-missing`` and the table says which target was skipped.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # CI runs it; `make test-fast` leaves it out


@pytest.mark.timeout(600)  # the whole benchmark, quick: about 3 minutes under load
def test_quick_benchmark_run_writes_a_table(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk): bench/run.py needs it")
    out = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--skip-missing", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # the main table, then bench/growth.py and bench/scaling.py, each quick
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    table = (folder / "results.md").read_text()
    assert str(folder / "results.md") in out.stdout  # it says where the table is
    assert "| target | method | req/s | x yardstick |" in table
    data = json.loads((folder / "results.json").read_text())
    rows = {(row["target"], row["method"]): row for row in data["rows"]}
    for target in ("yardstick", "tapad-sqlite", "tapad-redis", "nginx"):
        for method in ("POST", "GET"):
            row = rows[(target, method)]
            if row["skipped"]:  # only a missing tool may skip a target, and the table says so
                assert "not installed" in row["skipped"], row["skipped"]
                assert row["skipped"] in table
                continue
            assert row["runs"], f"{target} {method} not measured"
            assert all(run["requests"] > 0 for run in row["runs"])
    assert rows[("yardstick", "POST")]["runs"], "the yardstick must always run"
    # the other targets: the hour filling up, and the cluster against one Redis
    if shutil.which("redis-server") is not None:
        stores = {step["store"] for step in data["growth"]["steps"]}
        assert stores == {"sqlite", "redis", "redis-hll"}, data["growth"]
        assert all(step["users"] >= 20_000 for step in data["growth"]["steps"])
        assert "x an empty hour" in table
        assert data["scaling"]["cluster (3 masters, 3 shards)"]["events_per_s"] > 0
        assert "3-master cluster" in table
    for method in ("POST", "GET"):  # with dashboards polling beside wrk (bench/dashboard_poll.py)
        assert rows[("tapad-sqlite-dashboard", method)]["runs"], f"{method} with dashboards"
    polls = [n for n in data["notes"] if n.startswith("tapad-sqlite-dashboard, last run:")]
    assert polls and "dashboard polls:" in polls[0], data["notes"]
    assert not (folder / "data").exists(), "the data folder is removed at the end"
    for url in data["urls"].values():  # every server it started is stopped
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 1):
            pass


def test_ab_compares_servers_cpu_per_request() -> None:
    """``bench/ab.py`` starts the servers it is given, measures each and compares the medians."""
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        pytest.skip("bench/ab.py needs wrk and redis-server (apt-get install -y wrk redis-server)")
    out = subprocess.run(
        [
            sys.executable,
            "bench/ab.py",
            "--rounds",
            "1",
            "--seconds",
            "1",
            f"yardstick={sys.executable} bench/yardstick.py --port {{port}}",
            f"tapad={sys.executable} -m tapad serve --port {{port}} --store {{redis}}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    medians = [line for line in out.stdout.splitlines() if "median CPU" in line]
    assert [line.split()[0] for line in medians] == ["yardstick", "tapad"], out.stdout
    assert "x yardstick: 1.000" in medians[0]
    # tapad's rounds say how many requests shared a store call; the yardstick has no store.
    yard, tapad = (line for line in out.stdout.splitlines() if line.startswith("[1]"))
    assert "per store call" not in yard and "per store call" in tapad, out.stdout
    # Every request costs a server at least a receive and a send (wrk does not pipeline).
    io_calls = [float(line.split("I/O calls")[1].split()[0]) for line in medians]
    assert all(calls >= 1.0 for calls in io_calls), out.stdout
