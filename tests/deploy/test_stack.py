"""The compose stack, run for real on this machine's Docker daemon.

Builds the images (the official ones when present or pullable, else deploy/local-images.sh's
stand-ins from Debian packages), brings the stack up with 3 replicas and Prometheus with the
compose tool the machine has, drives ``tapad loadgen post`` through nginx with a ledger while
scaling 3 -> 4 -> 2 (no failed request, no retry, every replica serving, Prometheus scraping
every replica), sends batches of events through nginx into the same ledger, restarts Redis,
checks every hour of the ledger through nginx exactly, checks that nothing but nginx's master
runs as root, and ends with ``down -v``.

Skips only when no Docker daemon answers (.ci/run starts one). Images already built are
reused, so a second run takes a couple of minutes; the first builds the stand-ins (about
3 minutes here). The time of each step is printed (pytest -s) and kept in the test's
``timings`` property.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tapad.buckets import hour_start_ms
from tapad.loadgen.ledger import load_ledger
from tests.support import LOOPBACK, free_port, http, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # CI runs it; `make test-fast` leaves it out
OFFICIAL = {
    "PYTHON_IMAGE": "python:3.11-slim",
    "REDIS_IMAGE": "redis:7.4-alpine",
    "NGINX_IMAGE": "nginx:1.28-alpine",
    "PROMETHEUS_IMAGE": "prom/prometheus:v2.53.3",
}
RATE = 250  # POSTs per second through nginx while scaling: real load, light on 2 cores
REQUESTS = 15_000  # a minute of load: longer than the two scale steps take


def run(
    command: list[str], timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after timeout."""
    try:
        return wait_until(check, timeout, interval=0.5, what=what)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def docker_daemon_problem() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed (apt-get install -y docker.io docker-compose)"
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=60)
    if info.returncode != 0:
        return f"no Docker daemon answers (.ci/run starts one): {info.stderr.strip()[:200]}"
    return None


def compose_tool() -> list[str] | None:
    """``docker compose`` (v2) if the machine has it, else ``docker-compose`` (1.29)."""
    if run(["docker", "compose", "version"], timeout=60).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@dataclass
class Stack:
    tool: list[str]
    project: str
    env_file: Path
    port: int
    prometheus_port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def compose(self, *args: str, timeout: float = 900) -> str:
        command = [
            *self.tool,
            "-f", str(ROOT / "compose.yaml"),
            "--project-directory", str(ROOT),
            "--env-file", str(self.env_file),
            "-p", self.project,
            "--profile", "monitoring",
            *args,
        ]  # fmt: skip
        result = run(command, timeout=timeout, cwd=ROOT)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-3000:]}"
        return str(result.stdout)

    def timed(self, name: str, *args: str) -> str:
        start = time.monotonic()
        out = self.compose(*args)
        self.timings[name] = round(time.monotonic() - start, 1)
        return out

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def healthy(self, service: str, count: int) -> bool:
        ids = self.containers(service)
        if len(ids) != count:
            return False
        states = str(run(["docker", "inspect", "-f", "{{.State.Health.Status}}", *ids]).stdout)
        return states.split() == ["healthy"] * count

    def address(self, container: str) -> str:
        address = run(
            ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
             container]
        ).stdout.strip()  # fmt: skip
        return str(address)


def official_images_available() -> bool:
    """The official images are here already, or Docker Hub answers a pull."""
    missing = [i for i in OFFICIAL.values() if run(["docker", "image", "inspect", i]).returncode]
    for image in missing:
        try:
            if run(["docker", "pull", image], timeout=120).returncode != 0:
                return False
        except subprocess.TimeoutExpired:
            return False
    return True


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = docker_daemon_problem()
    if problem:
        pytest.skip(problem)
    tool = compose_tool()
    if tool is None:
        pytest.fail("a Docker daemon runs but no compose tool: apt-get install -y docker-compose")
    with running_stack(tmp_path_factory.mktemp("stack"), tool) as stack:
        yield stack


@contextmanager
def running_stack(workdir: Path, tool: list[str], replicas: int = 3) -> Iterator[Stack]:
    """Images (official or stand-ins), a build, and ``up`` with ``replicas`` replicas and the
    monitoring profile, until nginx is healthy; ``down -v`` and the image removed after.
    Shared by the test and tests/deploy/soak.py."""
    project = f"tapadtest{os.getpid()}"
    env_file = workdir / "env"
    settings = {
        "REDIS_PASSWORD": secrets.token_hex(24),
        "TAPAD_PUBLISH_PORT": str(free_port()),
        "TAPAD_PROMETHEUS_PORT": str(free_port()),
        # Its own tag: runs from two checkouts at once never share an image.
        "TAPAD_IMAGE": f"tapad-test:{project}",
    }
    text = (ROOT / ".env.example").read_text()
    for key, value in settings.items():
        text, found = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        if not found:
            text += f"{key}={value}\n"
    env_file.write_text(text)
    stack = Stack(
        tool,
        project,
        env_file,
        int(settings["TAPAD_PUBLISH_PORT"]),
        int(settings["TAPAD_PROMETHEUS_PORT"]),
    )

    start = time.monotonic()
    if official_images_available():
        env_file.write_text(text + "".join(f"{k}={v}\n" for k, v in OFFICIAL.items()))
    else:
        images = run(
            ["bash", str(ROOT / "deploy" / "local-images.sh"), "--env-file", str(env_file)],
            timeout=1200,
        )
        assert images.returncode == 0, images.stderr[-3000:]
    stack.timings["images"] = round(time.monotonic() - start, 1)
    try:
        stack.timed("build", "build", "analyticsserver")
        # The seed's command, with three replicas and the monitoring profile.
        stack.timed("up", "up", "--build", "--scale", f"analyticsserver={replicas}", "-d")
        wait_for("the stack to be healthy", lambda: stack.healthy("nginx", 1))
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans")
        run(["docker", "rmi", settings["TAPAD_IMAGE"]])
        left = run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]
        )
        assert left.stdout.split() == [], "down -v left containers behind"
        volumes = run(["docker", "volume", "ls", "-q", "--filter", f"name={project}"])
        assert volumes.stdout.split() == [], "down -v left volumes behind"
        print(f"\nstack timings (s): {json.dumps(stack.timings)}")


def posts_served(container: str) -> int:
    """POSTs a replica answered, from its own /metrics (read inside its container)."""
    script = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:8080/metrics', timeout=5).read().decode())"
    )
    result = run(["docker", "exec", container, "python", "-c", script], timeout=60)
    if result.returncode != 0:
        return -1  # stopping or gone
    pattern = r'^tapad_http_request_duration_seconds_count\{[^}]*method="POST"[^}]*\} (\S+)$'
    return int(sum(float(v) for v in re.findall(pattern, result.stdout, re.M)))


def every_replica_serves(stack: Stack, count: int, since: dict[str, int]) -> dict[str, int]:
    """Wait until ``count`` replicas run and each answered POSTs beyond ``since``."""

    def check() -> dict[str, int] | None:
        now = {c: posts_served(c) for c in stack.containers("analyticsserver")}
        if len(now) == count and all(n > since.get(c, 0) for c, n in now.items()):
            return now
        return None

    served: dict[str, int] = wait_for(f"each of {count} replicas to answer POSTs", check)
    return served


def prometheus_scrapes(stack: Stack, replicas: list[str]) -> bool:
    """Prometheus' healthy tapad targets are exactly these replicas (DNS service discovery)."""
    url = f"http://{LOOPBACK}:{stack.prometheus_port}/api/v1/targets?state=active"
    status, _, body = http("GET", url)
    if status != 200:
        return False
    targets = json.loads(body)["data"]["activeTargets"]
    up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
    everyone = {t["labels"]["instance"] for t in targets}
    expected = {f"{stack.address(c)}:8080" for c in replicas}
    return bool(up == everyone == expected)


# Past the suite's 300 s: a first run builds the stand-in images (about 3 minutes here) and
# the tapad image inside this test's module fixture, then runs a minute of load.
@pytest.mark.timeout(1200)
def test_scaled_under_load_restarted_exact_and_nothing_as_root(
    stack: Stack, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    assert http("GET", f"{stack.url}/healthz")[0] == 200
    assert http("GET", f"{stack.url}/metrics")[0] == 403  # nginx keeps /metrics private
    # The dashboard and every file it loads come through nginx from the image's package data.
    status, headers, page = http("GET", f"{stack.url}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html"), status
    assert 'data-metric="clicks"' in page
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page)
    assert assets, "the dashboard loads no files of its own"
    for asset in assets:
        assert http("GET", f"{stack.url}{asset}")[0] == 200, asset
    ledger = tmp_path / "ledger.json"
    load = subprocess.Popen(
        [sys.executable, "-m", "tapad", "loadgen", "post", "--url", stack.url,
         "-n", str(REQUESTS), "-c", "16", "--rate", str(RATE), "--retries", "0",
         "--ledger", str(ledger), "--seed", "10", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        three = every_replica_serves(stack, 3, {})
        wait_for("Prometheus to scrape the 3 replicas", lambda: prometheus_scrapes(stack, [*three]))

        stack.timed("scale 3->4", "up", "--build", "--scale", "analyticsserver=4", "-d")
        wait_for("4 healthy replicas", lambda: stack.healthy("analyticsserver", 4))
        four = every_replica_serves(stack, 4, three)  # the new one too, and the old ones still
        wait_for("Prometheus to scrape the 4 replicas", lambda: prometheus_scrapes(stack, [*four]))

        stack.timed("scale 4->2", "up", "--build", "--scale", "analyticsserver=2", "-d")
        two = every_replica_serves(stack, 2, four)
        wait_for(
            "Prometheus to drop the 2 replicas gone", lambda: prometheus_scrapes(stack, [*two])
        )
        assert load.poll() is None, "the load ended before the scaling did: raise REQUESTS"
        out, err = load.communicate(timeout=REQUESTS / RATE * 3 + 60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    summary = json.loads(out) if out.strip() else {"stderr": err[-2000:]}
    if load.returncode != 0 or summary.get("failed") or summary.get("retried"):
        nginx_errors = [line for line in stack.compose("logs", "nginx").splitlines() if "[" in line]
        pytest.fail(f"loadgen: {summary}\nnginx said: {nginx_errors[-30:]}")
    # No client saw a failure, and none was retried: not one refused or timed-out connect.
    assert (summary["failed"], summary["failures"], summary["retried"]) == (0, {}, 0), summary
    assert summary["acknowledged"] == REQUESTS

    # Batches through nginx into the same ledger: 20 of 1,000 events (NDJSON, about 70 KB).
    batches = run(
        [sys.executable, "-m", "tapad", "loadgen", "post", "--url", stack.url, "-n", "20",
         "-c", "4", "--batch", "1000", "--ledger", str(ledger), "--seed", "11", "--json"],
    )  # fmt: skip
    assert batches.returncode == 0, batches.stdout + batches.stderr
    assert json.loads(batches.stdout)["ledger"]["added"] == 20_000

    # Redis restarts (AOF, fsync always): nothing acknowledged is lost.
    start = time.monotonic()
    stack.compose("restart", "redis")
    wait_for("Redis healthy again", lambda: stack.healthy("redis", 1))
    wait_for("tapad answering again", lambda: http("GET", f"{stack.url}/healthz")[0] == 200)
    stack.timings["redis restart"] = round(time.monotonic() - start, 1)

    # Every hour of the ledger, through nginx, exactly: one GET per hour and the hours API.
    hours = load_ledger(ledger).hours
    for hour, entry in hours.items():
        status, _, body = http("GET", f"{stack.url}/analytics?timestamp={hour_start_ms(hour)}")
        expected = (
            f"unique_users,{entry.unique_users}\nclicks,{entry.clicks}\n"
            f"impressions,{entry.impressions}\n"
        )
        assert (status, body) == (200, expected), hour
    first, last = min(hours), max(hours)
    status, _, body = http(
        "GET", f"{stack.url}/analytics/hours?from={hour_start_ms(first)}&to={hour_start_ms(last)}"
    )
    assert status == 200, body
    rows = json.loads(body)["hours"]
    assert len(rows) == last - first + 1
    for row in rows:
        found = hours.get(row["timestamp"] // 3_600_000)
        counts = (found.unique_users, found.clicks, found.impressions) if found else (0, 0, 0)
        assert (row["unique_users"], row["clicks"], row["impressions"]) == counts, row

    # Nothing runs as root but nginx's master process.
    for service in ("redis", "analyticsserver", "nginx", "prometheus"):
        for container in stack.containers(service):
            top = run(["docker", "top", container, "-eo", "pid,uid,args"]).stdout.splitlines()[1:]
            assert top, f"{service}: no processes"
            for line in top:
                _, uid, args = line.split(None, 2)
                if uid == "0":
                    assert service == "nginx" and args.startswith("nginx: master"), (service, line)

    # The rules file Prometheus loaded passes the image's own promtool.
    (prometheus,) = stack.containers("prometheus")
    check = run(
        ["docker", "exec", prometheus, "promtool", "check", "rules",
         "/etc/prometheus/prometheus-rules.yml"]
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    record_property("timings", stack.timings)
    print(f"\nloadgen through nginx while scaling: {json.dumps(summary)}")
