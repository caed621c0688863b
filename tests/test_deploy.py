"""The compose stack, checked without a Docker engine.

compose.yaml is parsed and its services, commands and health checks are checked;
the analyticsserver command and health check are run for real against a real
password-protected redis-server; deploy/nginx.conf passes ``nginx -t``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import (
    LOOPBACK,
    NGINX,
    Nginx,
    RedisServer,
    TapadServer,
    free_port,
    http,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: ${VAR}, ${VAR:-default}, ${VAR:?error}, and $$ for $."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if op == ":?" and not value:
            raise KeyError(arg)
        if op == ":-" and not value:
            return arg
        return value

    text = re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, text)
    return text.replace("$$", "$")


def test_three_services_and_only_nginx_publishes_a_port() -> None:
    assert set(SERVICES) == {"redis", "analyticsserver", "nginx"}
    assert [name for name, svc in SERVICES.items() if "ports" in svc] == ["nginx"]
    (published,) = SERVICES["nginx"]["ports"]
    # On this machine only, unless .env opens it up.
    assert interpolate(published, {}) == "127.0.0.1:8080:80"
    assert interpolate(published, {"TAPAD_PUBLISH_ADDRESS": "0.0.0.0"}) == "0.0.0.0:8080:80"
    for name, svc in SERVICES.items():
        assert "healthcheck" in svc, f"{name} has no health check"
        assert "container_name" not in svc, f"{name}: a fixed name cannot be scaled"


def test_redis_is_the_official_image_with_aof_a_volume_and_a_password() -> None:
    redis = SERVICES["redis"]
    assert re.fullmatch(r"redis:[\w.-]+", redis["image"])
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
    volume = redis["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


def test_the_analyticsserver_is_built_here_and_listens_for_nginx() -> None:
    app = SERVICES["analyticsserver"]
    assert app["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert app["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert "8080" in [str(p) for p in app["expose"]]
    store = interpolate(app["environment"]["TAPAD_STORE"], {"REDIS_PASSWORD": "pw"})
    assert store == "redis://:pw@redis:6379/0"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(app["healthcheck"]["test"])
    nginx = SERVICES["nginx"]
    assert nginx["depends_on"]["analyticsserver"]["condition"] == "service_healthy"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    version = re.fullmatch(r"nginx:(\d+)\.(\d+)[\w.-]*", nginx["image"])
    assert version and (int(version[1]), int(version[2])) >= (1, 28)  # "resolve" in upstream


def test_no_secret_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert ".env" not in tracked
    assert ".env.example" in tracked or (ROOT / ".env.example").exists()
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(example) >= {"REDIS_PASSWORD"}
    assert "change-me" in example["REDIS_PASSWORD"]


def test_the_dockerfile_runs_tapad_as_a_user_not_root() -> None:
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line]
    instructions = [words for words in lines if not words[0].startswith("#")]
    users = [words[1] for words in instructions if words[0] == "USER"]
    assert users and users[-1] != "root"
    assert ["ENTRYPOINT", '["tapad"]'] in instructions
    assert any(words[0] == "FROM" and words[1].startswith("python:3.1") for words in instructions)


def test_the_compose_command_and_health_checks_work_against_a_real_redis(
    tmp_path: Path,
) -> None:
    """Run redis and the analyticsserver as compose would, on loopback: redis's command (AOF,
    password from the environment), the store URL from the environment, and both health
    checks (redis-cli with REDISCLI_AUTH, /healthz)."""
    password = "s3cr3tpassw0rd"
    redis_svc = SERVICES["redis"]
    redis_env = {
        k: interpolate(str(v), {"REDIS_PASSWORD": password})
        for k, v in redis_svc["environment"].items()
    }
    sh, dash_c, script = (
        interpolate(a, {"REDIS_PASSWORD": password}) for a in redis_svc["command"]
    )
    assert (sh, dash_c) == ("sh", "-c") and script.startswith("exec redis-server ")
    redis = RedisServer(tmp_path / "redis")  # only for its free port, cli() and stop()
    here = f"exec redis-server --port {redis.port} --bind {LOOPBACK} --dir {redis.workdir} "
    redis.proc = subprocess.Popen(
        ["sh", "-c", script.replace("exec redis-server ", here, 1)],
        env={"PATH": os.environ["PATH"], **redis_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(redis.port, proc=redis.proc)
        config = subprocess.run(
            ["redis-cli", "-p", str(redis.port), "CONFIG", "GET", "append*"],
            env={"REDISCLI_AUTH": password},
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
        assert config[config.index("appendonly") + 1] == "yes"
        assert config[config.index("appendfsync") + 1] == "always"
        assert "NOAUTH" in redis.cli("PING")  # without the password: refused
        app = SERVICES["analyticsserver"]
        env = {
            k: interpolate(str(v), {"REDIS_PASSWORD": password})
            for k, v in app["environment"].items()
        }
        env["TAPAD_STORE"] = env["TAPAD_STORE"].replace("@redis:6379", f"@{LOOPBACK}:{redis.port}")

        check = SERVICES["redis"]["healthcheck"]["test"][1].replace(
            "redis-cli", f"redis-cli -p {redis.port}"
        )
        ok = subprocess.run(["sh", "-c", check], env={"REDISCLI_AUTH": password}, timeout=10)
        assert ok.returncode == 0
        bad = subprocess.run(["sh", "-c", check], env={"REDISCLI_AUTH": "wrong"}, timeout=10)
        assert bad.returncode != 0

        port = free_port()
        command = [
            LOOPBACK if arg == "0.0.0.0" else str(port) if arg == "8080" else arg
            for arg in app["command"]
        ]
        assert command[0] == "serve"
        server = TapadServer(None, *command[3:], port=port, env=env)
        server.start()
        try:
            assert http("GET", f"{server.url}/healthz")[0] == 200
            test = app["healthcheck"]["test"]
            assert test[:2] == ["CMD", "python"]
            health = [sys.executable, *(a.replace(":8080/", f":{port}/") for a in test[2:])]
            assert subprocess.run(health, timeout=10).returncode == 0
            redis.stop()  # the store goes away: /healthz is 503 and the check fails
            assert subprocess.run(health, timeout=10, capture_output=True).returncode != 0
        finally:
            server.stop()
        assert password not in server.log.decode()  # the startup line redacts it
        assert ":***@" in server.log.decode()
    finally:
        redis.stop()


def test_the_deploy_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    # The compose upstream: the service name, re-resolved, in shared memory, kept alive.
    block = NGINX_CONF.split("# tapad:upstream-servers begin")[1].split(
        "# tapad:upstream-servers end"
    )
    assert block[0].split() == ["server", "analyticsserver:8080", "resolve;"]
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=5s", NGINX_CONF, re.M)
    assert re.search(r"^\s*zone analyticsserver", NGINX_CONF, re.M)
    assert re.search(r"^\s*keepalive \d+;", NGINX_CONF, re.M)
    assert 'proxy_set_header Connection "";' in NGINX_CONF

    local = Nginx(tmp_path / "nginx", NGINX_CONF, [f"{LOOPBACK}:1", f"{LOOPBACK}:2"])
    result = local.test_config()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr

    broken = Nginx(tmp_path / "broken", NGINX_CONF.replace("keepalive 64;", "keepalive;"), [])
    assert broken.test_config().returncode != 0  # nginx -t can fail: it is really checking


def test_the_deploy_nginx_conf_as_is_on_a_recent_nginx(tmp_path: Path) -> None:
    """Only nginx >= 1.27.3 knows ``resolve`` in an upstream (as in the compose image)."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr
    version = tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())
    if version < (1, 27, 3):
        pytest.skip(f"local nginx {'.'.join(map(str, version))} predates upstream 'resolve'")
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.replace("listen 80;", f"listen {LOOPBACK}:{free_port()};"))
    globals_ = f"pid {tmp_path / 'pid'}; error_log {tmp_path / 'error.log'};"
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-g", globals_],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
