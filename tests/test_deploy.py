"""The compose stack's files, checked without a Docker engine.

compose.yaml is parsed and its services, commands and health checks are checked, and
docker-compose 1.29 (Debian 12's) must accept it; the analyticsserver command and health
check are run for real against a real password-protected redis-server; deploy/nginx.conf
passes ``nginx -t`` and routes what it must; the lock file pins every dependency with hashes;
the Prometheus rules pass ``promtool check rules``. tests/deploy/ runs the stack itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tapad.server.drain import KEEPALIVE_GRACE
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
    assert set(SERVICES) == {"redis", "analyticsserver", "nginx", "prometheus"}
    # Prometheus is opt-in (--profile monitoring); the default stack is the other three.
    assert SERVICES["prometheus"]["profiles"] == ["monitoring"]
    default = {name for name, svc in SERVICES.items() if "profiles" not in svc}
    assert default == {"redis", "analyticsserver", "nginx"}
    assert [name for name in default if "ports" in SERVICES[name]] == ["nginx"]
    assert interpolate(SERVICES["prometheus"]["ports"][0], {}).startswith("127.0.0.1:")
    (published,) = SERVICES["nginx"]["ports"]
    # On this machine only, unless .env opens it up.
    assert interpolate(published, {}) == "127.0.0.1:8080:80"
    assert interpolate(published, {"TAPAD_PUBLISH_ADDRESS": "0.0.0.0"}) == "0.0.0.0:8080:80"
    for name, svc in SERVICES.items():
        assert "healthcheck" in svc, f"{name} has no health check"
        assert "container_name" not in svc, f"{name}: a fixed name cannot be scaled"


def test_the_official_images_are_the_defaults_and_env_may_name_stand_ins() -> None:
    images = {name: svc["image"] for name, svc in SERVICES.items() if "build" not in svc}
    official = {name: interpolate(image, {}) for name, image in images.items()}
    assert re.fullmatch(r"redis:7\.[\w.-]+", official["redis"])
    assert re.fullmatch(r"prom/prometheus:v[\w.-]+", official["prometheus"])
    version = re.fullmatch(r"nginx:(\d+)\.(\d+)[\w.-]*", official["nginx"])
    assert version and (int(version[1]), int(version[2])) >= (1, 28)  # "resolve" in upstream
    for name, image in images.items():
        variable = f"{name.upper()}_IMAGE"
        assert interpolate(image, {variable: "tapad-local/x:1"}) == "tapad-local/x:1", name
    args = SERVICES["analyticsserver"]["build"]["args"]
    assert interpolate(args["PYTHON_IMAGE"], {}) == "python:3.11-slim"
    assert interpolate(args["PYTHON_IMAGE"], {"PYTHON_IMAGE": "p:1"}) == "p:1"


def test_the_compose_file_has_no_top_level_name_and_docker_compose_1_29_accepts_it(
    tmp_path: Path,
) -> None:
    """docker-compose 1.29 (Debian 12) refused the file for its top-level ``name:``."""
    assert "name" not in COMPOSE
    tools = [[tool] for tool in ("docker-compose",) if shutil.which(tool)]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        tools.append(["docker", "compose"])
    if not tools:
        pytest.skip("neither docker-compose nor docker compose is installed")
    (tmp_path / ".env").write_text("REDIS_PASSWORD=pw\nNGINX_IMAGE=tapad-local/nginx:x\n")
    for tool in tools:
        # --project-directory: .env and relative paths as if compose.yaml were there.
        command = [*tool, "-f", str(ROOT / "compose.yaml"), "--project-directory", str(tmp_path)]
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        result = subprocess.run(
            [*command, "config"], capture_output=True, text=True, env=env, timeout=60
        )
        assert result.returncode == 0, f"{tool}: {result.stderr}"
        config = yaml.safe_load(result.stdout)
        assert config["services"]["nginx"]["image"] == "tapad-local/nginx:x"
        assert config["services"]["redis"]["user"] == "redis"
        (tmp_path / "empty.env").write_text("TAPAD_WORKERS=2\n")
        missing = subprocess.run(
            [*command, "--env-file", str(tmp_path / "empty.env"), "config"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert missing.returncode != 0  # no REDIS_PASSWORD: refused, with the reason
        assert "set REDIS_PASSWORD in .env" in missing.stderr + missing.stdout


def test_redis_runs_as_the_redis_user_with_aof_a_volume_and_a_password() -> None:
    redis = SERVICES["redis"]
    # Not root: the command is "sh -c ...", which the image's entrypoint does not drop.
    assert redis["user"] == "redis"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
    volume = redis["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


def test_the_analyticsserver_is_built_here_and_listens_for_nginx() -> None:
    app = SERVICES["analyticsserver"]
    assert app["build"]["context"] == "."
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
    assert ["ARG", "PYTHON_IMAGE=python:3.11-slim"] in instructions
    froms = [words[1] for words in instructions if words[0] == "FROM"]
    assert froms and set(froms) == {"${PYTHON_IMAGE}"}


def test_the_lock_pins_every_dependency_with_hashes_and_the_builds_use_it() -> None:
    from packaging.requirements import Requirement

    text = (ROOT / "requirements.lock").read_text()
    pins: dict[str, str] = {}
    hashes: dict[str, int] = {}
    for block in re.split(r"\n(?=[A-Za-z])", text.split("\n", 2)[2]):
        head = block.split("\\", 1)[0].split(";")[0].strip()
        name, _, version = head.partition("==")
        key = re.sub(r"[-_.]+", "-", name).lower()
        pins[key] = version
        hashes[key] = block.count("--hash=sha256:")
    assert text.splitlines()[1].strip() == "#    make lock"
    assert all(hashes.values()), [name for name, count in hashes.items() if not count]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        key = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert key in pins, f"{requirement.name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[key], prereleases=True), (
            f"requirements.lock pins {key}=={pins[key]} outside pyproject's "
            f"{requirement.specifier}: run make lock"
        )
        for extra in requirement.extras:  # redis[hiredis]
            assert extra in pins, f"{extra} (extra of {key}) is not locked: run make lock"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock" in dockerfile
    assert "--require-hashes" in dockerfile and "--no-deps" in dockerfile
    assert "--require-hashes -r requirements.lock" in (ROOT / "scripts" / "test").read_text()


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
    assert block[0].split() == [
        "server",
        "analyticsserver:8080",
        "resolve",
        "max_fails=1",
        "fail_timeout=10s;",
    ]
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=1s", NGINX_CONF, re.M)
    assert re.search(r"^\s*zone analyticsserver", NGINX_CONF, re.M)
    assert re.search(r"^\s*keepalive \d+;", NGINX_CONF, re.M)
    assert 'proxy_set_header Connection "";' in NGINX_CONF

    local = Nginx(tmp_path / "nginx", NGINX_CONF, [f"{LOOPBACK}:1", f"{LOOPBACK}:2"])
    result = local.test_config()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr

    broken = Nginx(tmp_path / "broken", NGINX_CONF.replace("keepalive 64;", "keepalive;"), [])
    assert broken.test_config().returncode != 0  # nginx -t can fail: it is really checking


def seconds(conf: str, pattern: str) -> float:
    """The one duration ``pattern`` captures in ``conf`` (nginx's "250ms", "4s", "10s")."""
    (value,) = re.findall(pattern, conf, re.M)
    found = re.fullmatch(r"(\d+)(ms|s)", value)
    assert found, value
    return int(found[1]) / (1000 if found[2] == "ms" else 1)


def test_nginx_leaves_a_draining_replica_alone_until_its_address_has_left_the_list() -> None:
    """The sums that keep scaling down from costing a client a 502.

    Docker's DNS drops a replica only once its container has exited (its address with it),
    and nginx asks again 1 s after an answer expires (valid=1s: every 2 s, whole seconds).
    Until then a connection to the gone address hangs, and if the re-resolution changes
    nginx's list meanwhile, the request cannot go to another server ("no live upstreams").
    So the replica, refused once right after SIGTERM, must stay out of rotation (max_fails=1,
    fail_timeout) through its drain (tapad's KEEPALIVE_GRACE at most, waiting for nginx to
    close idle keep-alive connections, which it does after keepalive_timeout) and those 2 s,
    plus 1 s for nginx's whole-second clock. fail_timeout=2s missed this: one 502 in about
    six scale-downs under load.
    """
    valid = seconds(NGINX_CONF, r"^\s*resolver 127\.0\.0\.11 valid=(\w+)")
    fail_timeout = seconds(NGINX_CONF, r"^\s*server analyticsserver:8080 .*fail_timeout=(\w+);")
    keepalive_timeout = seconds(NGINX_CONF, r"^\s*keepalive_timeout (\w+);")
    assert keepalive_timeout < KEEPALIVE_GRACE  # nginx, not tapad, closes idle connections
    assert fail_timeout > KEEPALIVE_GRACE + (valid + 1) + 1


def test_the_deploy_nginx_conf_as_is_on_a_recent_nginx(tmp_path: Path) -> None:
    """Only nginx >= 1.27.3 knows ``resolve`` in an upstream (as in the compose image)."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    assert found, out
    version = tuple(int(x) for x in found.groups())
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


def test_nginx_sends_the_dashboard_and_hours_to_tapad_and_refuses_metrics(tmp_path: Path) -> None:
    """Whatever tapad serves reaches it through nginx, path and query intact (/, the hours
    API, /analytics, /healthz); /metrics is refused by nginx itself and never reaches it."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    seen: list[str] = []

    class Upstream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = f"upstream saw {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    upstream = ThreadingHTTPServer((LOOPBACK, 0), Upstream)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    local = Nginx(tmp_path / "nginx", NGINX_CONF, [f"{LOOPBACK}:{upstream.server_address[1]}"])
    local.start()
    try:
        paths = [
            "/",
            "/analytics/hours?from=2026-11-29T00&to=2026-11-29T23&format=csv",
            "/analytics?timestamp=1764374400000",
            "/healthz",
            "/static/dashboard.js",
        ]
        for path in paths:
            status, _, body = http("GET", f"{local.url}{path}")
            assert (status, body) == (200, f"upstream saw {path}"), path
        status = http("GET", f"{local.url}/metrics")[0]
        assert status == 403
        assert seen == paths  # /metrics never reached the upstream
    finally:
        local.stop()
        upstream.shutdown()
        upstream.server_close()


PROMTOOL = shutil.which("promtool") or "promtool"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (apt-get install -y prometheus)",
)


@needs_promtool
def test_the_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    deploy = ROOT / "deploy"
    for check in (
        ["check", "rules", "prometheus-rules.yml"],
        # --syntax-only: the read token's file exists only in the container (compose.yaml);
        # tests/deploy/test_prometheus_token.py scrapes with it for real.
        ["check", "config", "--syntax-only", "prometheus.yml"],
        ["test", "rules", "prometheus-rules.test.yml"],  # each alert fires when it should
    ):
        result = subprocess.run(
            [PROMTOOL, *check], cwd=deploy, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
    # promtool can fail: a rule on a mistyped expression is refused.
    broken = tmp_path / "rules.yml"
    broken.write_text(
        (deploy / "prometheus-rules.yml").read_text().replace("> 0.01", "> > 0.01", 1)
    )
    refused = subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True)
    assert refused.returncode != 0


def test_the_prometheus_rules_name_metrics_tapad_serves(tmp_path: Path) -> None:
    """Every tapad_* series the rules use is one a real server's /metrics exposes (a
    renamed metric would leave an alert that can never fire)."""
    rules = (ROOT / "deploy" / "prometheus-rules.yml").read_text()
    used = set(re.findall(r"\b(tapad_\w+)", rules))
    assert {
        "tapad_http_request_duration_seconds_count",
        "tapad_pending_events",
        "tapad_store_errors_total",
    } <= used
    server = TapadServer(f"sqlite:///{tmp_path}/data.db")
    server.start()
    try:
        http("POST", f"{server.url}/analytics?timestamp=1764374400000&user=u&event=click")
        exposed = http("GET", f"{server.url}/metrics")[2]
    finally:
        server.stop()
    names = set(re.findall(r"^(tapad_\w+)", exposed, re.M))
    assert used <= names, f"not exposed by tapad: {sorted(used - names)}"


@pytest.mark.parametrize(
    ("files", "mirror"),
    [
        # deb822 (Debian 12's default): the security stanza is skipped even when first.
        (
            {
                "sources.list.d/debian.sources": (
                    "Types: deb\nURIs: http://mirror.test/debian-security\n"
                    "Suites: bookworm-security\nComponents: main\n\n"
                    "Types: deb\nURIs: http://mirror.test/debian\n"
                    "Suites: bookworm bookworm-updates\nComponents: main\n"
                ),
            },
            "http://mirror.test/debian",
        ),
        # One-line format with options; -updates and other repositories are skipped.
        (
            {
                "sources.list": (
                    "# a comment\n"
                    "deb http://other.test/apt stable-extra main\n"
                    "deb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian "
                    "bookworm-updates main\n"
                    "deb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian bookworm main\n"
                ),
            },
            "http://mirror.test/debian",
        ),
        ({"sources.list": "# nothing\n"}, None),
    ],
    ids=["deb822", "one-line", "none"],
)
def test_local_images_finds_the_machine_s_debian_mirror(
    tmp_path: Path, files: dict[str, str], mirror: str | None
) -> None:
    """deploy/local-images.sh takes its Debian mirror from the apt sources (never a host
    name of its own): both apt formats, the release suite, not security or updates."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "local-images.sh"), "--print-mirror"],
        env={"PATH": os.environ["PATH"], "TAPAD_APT_ETC": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mirror is None:
        assert result.returncode == 1
        assert result.stderr.startswith("error: no Debian mirror")
        assert len(result.stderr.splitlines()) == 1
    else:
        assert (result.returncode, result.stdout) == (0, f"{mirror}\n"), result.stderr


def test_no_registry_or_mirror_host_is_written_into_the_deploy_files() -> None:
    """The stand-ins take their mirror and pip index from the machine, never from the repo."""
    for path in [ROOT / "compose.yaml", ROOT / "Dockerfile", *sorted((ROOT / "deploy").rglob("*"))]:
        if path.is_file():
            text = path.read_text()
            hosts = re.findall(r"\b(?:https?|ftp)://([\w.-]+)", text)
            allowed = {"127.0.0.1", "localhost", *SERVICES}  # compose's own service names
            assert [h for h in hosts if h not in allowed] == [], path
