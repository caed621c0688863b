"""GET /metrics: Prometheus text that adds up, for one process and for --workers 2 (every
scrape, whichever worker answers it, counts every worker's requests, dead ones included)."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.tools import TS
from tests.support import (
    InProcessTapad,
    RedisServer,
    TapadServer,
    http,
    listening_addresses,
    running,
    wait_until,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of /metrics by (name, labels)."""
    status, headers, text = http("GET", f"{url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests(samples: Samples, method: str, status: str) -> float:
    key = ("tapad_http_request_duration_seconds_count", (("method", method), ("status", status)))
    return samples.get(key, 0.0)


def fresh_post(url: str, user: str) -> int:
    """One POST on a new connection (so SO_REUSEPORT may pick any worker)."""
    req = urllib.request.Request(
        f"{url}/analytics?timestamp={TS}&user={user}&click",
        method="POST",
        headers={"Connection": "close"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        status: int = resp.status
        return status


def test_metrics_count_requests_batches_and_store_errors(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    srv = InProcessTapad(redis.url).start()  # one process's metrics: it can be this one
    try:
        for i in range(30):
            assert fresh_post(srv.url, f"m{i}") == 200
        for _ in range(4):
            assert http("POST", f"{srv.url}/analytics?timestamp=x&user=a&click")[0] == 400
        assert http("GET", f"{srv.url}/analytics?timestamp={TS}")[0] == 200
        assert http("BREW", f"{srv.url}/analytics")[0] in (400, 405)
        samples = scrape(srv.url)
        assert requests(samples, "POST", "200") == 30
        assert requests(samples, "POST", "400") == 4
        assert requests(samples, "GET", "200") >= 1
        assert samples[("tapad_batch_size_events_sum", ())] == 30
        assert samples[("tapad_store_duration_seconds_count", (("op", "write"),))] >= 1
        assert samples[("tapad_store_errors_total", (("op", "write"),))] == 0
        assert samples[("tapad_pending_events", ())] == 0
        bucket = ("tapad_http_request_duration_seconds_bucket",)
        assert any(k[0] == bucket[0] for k in samples)

        redis.stop()
        assert http("POST", f"{srv.url}/analytics?timestamp={TS}&user=x&click")[0] == 503
        assert http("GET", f"{srv.url}/healthz")[0] == 503
        samples = scrape(srv.url)
        assert samples[("tapad_store_errors_total", (("op", "write"),))] >= 1
        assert samples[("tapad_store_errors_total", (("op", "ping"),))] >= 1
        assert requests(samples, "POST", "503") == 1
    finally:
        srv.stop()
        redis.stop()


def metric_files(folder: Path) -> list[Path]:
    return [p for d in folder.glob("tapad-metrics-*") for p in d.iterdir()]


def test_metrics_add_up_across_workers_and_survive_a_dead_worker(
    tmp_path: Path, sqlite_url: str
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    env_without = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    srv = TapadServer(sqlite_url, "--workers", "2", env={**env_without, **env})
    srv.start()
    try:
        wait_until(
            lambda: len([f for f in metric_files(tmpdir) if f.name.startswith("histogram_")]) >= 2,
            20,
            interval=0.05,
            what="two workers started",
        )
        wait_until(lambda: len(listening_addresses(srv.port)) == 2, 20, what="two workers listen")
        for i in range(200):
            assert fresh_post(srv.url, f"w{i}") == 200
        pids = {int(f.stem.split("_")[-1]) for f in metric_files(tmpdir)}
        assert len(pids) == 2
        for _ in range(6):  # whichever worker answers, it counts both
            assert requests(scrape(srv.url), "POST", "200") == 200

        victim = pids.pop()
        os.kill(victim, signal.SIGKILL)  # the supervisor starts another one
        wait_until(
            lambda: len({f.stem.split("_")[-1] for f in metric_files(tmpdir)}) >= 3,
            20,
            interval=0.05,
            what="the dead worker replaced",
        )
        for i in range(20):
            assert fresh_post(srv.url, f"after{i}") == 200
        samples = scrape(srv.url)
        assert requests(samples, "POST", "200") == 220  # the dead worker's count stays
        assert samples[("tapad_batch_size_events_sum", ())] == 220
        assert samples[("tapad_pending_events", ())] == 0
    finally:
        code = srv.stop()
    assert code == 0
    assert list(tmpdir.glob("tapad-metrics-*")) == [], "the metrics folder was not removed"


def test_a_killed_supervisors_metrics_folder_is_removed_by_the_next_one(
    tmp_path: Path, sqlite_url: str
) -> None:
    """SIGKILL leaves no time to clean up; the next supervisor removes what it left."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env_without = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env = {**env_without, "TMPDIR": str(tmpdir)}
    killed = TapadServer(sqlite_url, "--workers", "2", env=env).start()
    assert killed.proc is not None
    (left,) = tmpdir.glob("tapad-metrics-*")
    assert left.name.startswith(f"tapad-metrics-{killed.proc.pid}-")
    killed.kill()
    assert left.is_dir()  # nobody removed it

    someone_elses = tmpdir / f"tapad-metrics-{os.getpid()}-alive"  # a live supervisor's
    someone_elses.mkdir()
    # the killed supervisor's workers follow it (PDEATHSIG) and let go of the store
    workers = {int(f.stem.split("_")[-1]) for f in left.iterdir()}
    wait_until(lambda: not any(running(pid) for pid in workers), what="the workers gone")
    srv = TapadServer(sqlite_url, "--workers", "2", env=env).start()
    try:
        assert not left.exists()
        assert someone_elses.is_dir()
        assert fresh_post(srv.url, "after") == 200
    finally:
        assert srv.stop() == 0
    assert sorted(p.name for p in tmpdir.glob("tapad-metrics-*")) == [someone_elses.name]
