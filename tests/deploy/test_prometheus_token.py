"""Prometheus scrapes a tapad that has a read token, the way the compose stack sets it up.

deploy/prometheus.yml takes the token from the file compose.yaml writes from
TAPAD_READ_TOKEN as the container starts. Here a real Prometheus (Debian's) runs that
configuration, pointed at a real tapad instead of the compose service, with the file
written by the very command compose.yaml runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import LOOPBACK, TapadServer, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
READ = "prom-read-3f9d"
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def _entrypoint_script() -> str:
    """The shell line compose.yaml runs before Prometheus, less the final exec."""
    entrypoint = COMPOSE["services"]["prometheus"]["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    script: str = entrypoint[2].replace("$$", "$")
    return script.partition(" && exec ")[0]


def test_compose_passes_the_tokens_through() -> None:
    env = COMPOSE["services"]["analyticsserver"]["environment"]
    assert env["TAPAD_WRITE_TOKEN"] == "${TAPAD_WRITE_TOKEN:-}"
    assert env["TAPAD_READ_TOKEN"] == "${TAPAD_READ_TOKEN:-}"
    prometheus = COMPOSE["services"]["prometheus"]["environment"]
    assert prometheus["TAPAD_READ_TOKEN"] == "${TAPAD_READ_TOKEN:-}"
    example = (ROOT / ".env.example").read_text()
    assert "\nTAPAD_WRITE_TOKEN=\n" in example and "\nTAPAD_READ_TOKEN=\n" in example


def _targets(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api/v1/targets", timeout=5) as r:
        active: list[dict[str, Any]] = json.load(r)["data"]["activeTargets"]
        return active


@pytest.fixture
def tapad(tmp_path: Path) -> Iterator[TapadServer]:
    server = TapadServer(f"sqlite:///{tmp_path}/t.db", "--read-token", f"old-1,{READ}").start()
    yield server
    server.stop()


@pytest.mark.skipif(PROMETHEUS is None, reason="apt-get install -y prometheus")
@pytest.mark.parametrize("token", [f"{READ},next-2", "wrong-token"])
def test_prometheus_scrapes_metrics_with_the_read_token(
    tapad: TapadServer, tmp_path: Path, token: str
) -> None:
    token_file = tmp_path / "tapad-read-token"
    script = _entrypoint_script().replace("/tmp/tapad-read-token", str(token_file))
    subprocess.run(["sh", "-c", script], env={"TAPAD_READ_TOKEN": token}, check=True)
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/tmp/tapad-read-token"
    job["authorization"]["credentials_file"] = str(token_file)
    del job["dns_sd_configs"]  # the compose service's name: here, the test's tapad
    job["static_configs"] = [{"targets": [f"{LOOPBACK}:{tapad.port}"]}]
    config["global"]["scrape_interval"] = "1s"
    config.pop("rule_files", None)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    assert PROMETHEUS is not None
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address={LOOPBACK}:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def scraped() -> dict[str, Any] | None:
            try:
                targets = _targets(port)
            except OSError:
                return None
            done = [t for t in targets if t.get("lastScrape", "").startswith("2")]
            return done[0] if done and done[0]["health"] != "unknown" else None

        target = wait_until(scraped, timeout=30)
    finally:
        prometheus.terminate()
        prometheus.wait(20)
    assert target is not None
    if token.startswith(READ):  # the first of the list, as compose.yaml writes it
        assert target["health"] == "up", target
    else:
        assert target["health"] == "down" and "401" in target["lastError"], target
