"""Security as a user or an attacker would try it: Redis AUTH (ACL user + password) and TLS
through the store URL, passwords in no log, 503 body or /healthz, a default bind on
127.0.0.1, only nginx published by the compose stack, and no secret in the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.reliability.tools import TS
from tests.support import (
    LOOPBACK,
    RedisServer,
    TapadServer,
    free_port,
    http,
    listening_addresses,
    parse_counts,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
USER = "tapad-app"
PASSWORD = "Pa55-w0rd/secret"  # has a '/': it goes in the URL percent-encoded
PASSWORD_IN_URL = "Pa55-w0rd%2Fsecret"
WRONG = "Wr0ng-pa55word"


def acl_redis(tmp_path: Path, *extra: str) -> RedisServer:
    """A Redis where the default user needs a password and tapad has its own ACL user."""
    return RedisServer(
        tmp_path / "redis",
        None,
        "--requirepass",
        "default-" + PASSWORD,
        "--user",
        USER,
        "on",
        f">{PASSWORD}",
        "~tapad:*",
        "+@all",
        *extra,
    )


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, PASSWORD_IN_URL, WRONG, "default-" + PASSWORD):
            assert secret not in text, f"a password leaked: {text[:500]}"


def test_acl_user_and_password_work_and_never_show(tmp_path: Path) -> None:
    redis = acl_redis(tmp_path)
    redis.start()
    url = f"redis://{USER}:{PASSWORD_IN_URL}@{LOOPBACK}:{redis.port}/0"
    srv = TapadServer(url).start()
    try:
        assert http("POST", f"{srv.url}/analytics?timestamp={TS}&user=a&click")[0] == 200
        _, _, body = http("GET", f"{srv.url}/analytics?timestamp={TS}")
        assert parse_counts(body) == {"unique_users": 1, "clicks": 1, "impressions": 0}
        redis.stop()  # the store goes away: errors must not carry the password either
        bodies = [http("POST", f"{srv.url}/analytics?timestamp={TS}&user=b&click")[2]]
        bodies.append(http("GET", f"{srv.url}/healthz")[2])
        bodies.append(http("GET", f"{srv.url}/metrics")[2])
    finally:
        srv.stop()
        redis.stop()
    log = srv.log.decode()
    assert f"redis://{USER}:***@{LOOPBACK}:{redis.port}/0" in log
    assert_no_secret(log, *bodies)


def test_wrong_password_is_one_clear_line_and_503(tmp_path: Path) -> None:
    redis = acl_redis(tmp_path)
    redis.start()
    srv = TapadServer(f"redis://{USER}:{WRONG}@{LOOPBACK}:{redis.port}/0").start()
    try:
        status, headers, body = http("POST", f"{srv.url}/analytics?timestamp={TS}&user=a&click")
        assert status == 503 and headers.get("Retry-After") == "1"
        health_status, _, health = http("GET", f"{srv.url}/healthz")
        assert health_status == 503
    finally:
        srv.stop()
        redis.stop()
    log = srv.log.decode()
    assert_no_secret(log, body, health)
    auth_lines = [line for line in log.splitlines() if "invalid username-password" in line]
    assert auth_lines, log  # the reason, in Redis's own words
    assert "Traceback" not in log


def test_the_literal_password_never_shows_while_the_store_fails(tmp_path: Path) -> None:
    """Given in the environment as a user should, then refused mid-run (the password was
    changed on Redis), then Redis gone: no answer and no log line holds the password, and no
    answer names the user or the host either (those are for the log)."""
    redis = acl_redis(tmp_path)
    redis.start()
    url = f"redis://{USER}:{PASSWORD_IN_URL}@{LOOPBACK}:{redis.port}/0"
    srv = TapadServer(None, env={"TAPAD_STORE": url}).start()
    answers: list[tuple[int, dict[str, str], str]] = []

    def ask_everything(user: str) -> None:
        answers.append(http("POST", f"{srv.url}/analytics?timestamp={TS}&user={user}&click"))
        answers.append(http("GET", f"{srv.url}/analytics?timestamp={TS}"))
        answers.append(http("GET", f"{srv.url}/healthz"))
        answers.append(http("GET", f"{srv.url}/metrics"))

    try:
        ask_everything("a")
        assert [a[0] for a in answers] == [200, 200, 200, 200]
        redis.cli("--user", "default", "--pass", "default-" + PASSWORD, "--no-auth-warning",
                  "ACL", "SETUSER", USER, "resetpass", ">another-one")  # fmt: skip
        redis.cli("--user", "default", "--pass", "default-" + PASSWORD, "--no-auth-warning",
                  "CLIENT", "KILL", "USER", USER)  # fmt: skip
        ask_everything("b")  # reconnects with the old password: refused
        redis.stop()
        ask_everything("c")
    finally:
        srv.stop()
        redis.stop()
    statuses = [status for status, _, _ in answers]
    assert statuses[4:6] == [503, 503] and statuses[8:10] == [503, 503], statuses
    assert statuses[6] == statuses[10] == 503, statuses  # /healthz
    log = srv.log.decode()
    assert "WRONGPASS" in log or "invalid username-password" in log, log  # the reason is logged
    texts = [body for _, _, body in answers]
    texts += [" ".join(f"{k}: {v}" for k, v in headers.items()) for _, headers, _ in answers]
    assert_no_secret(log, *texts)
    for status, _, body in answers:
        if status != 200:
            assert USER not in body and str(redis.port) not in body, body


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.timeout(120)  # makes a certificate, starts redis with TLS
def test_tls_with_auth_through_a_rediss_url(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install -y openssl)")
    cert, key = make_cert(tmp_path)
    tls_port = free_port()
    tls = [
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    ]  # fmt: skip
    redis = acl_redis(tmp_path, *tls)
    try:
        redis.start()
    except RuntimeError:
        pytest.skip("redis-server here is built without TLS (it refused --tls-port)")
    base = f"rediss://{USER}:{PASSWORD_IN_URL}@{LOOPBACK}:{tls_port}/0"
    good = TapadServer(f"{base}?ssl_ca_certs={cert}").start()
    unverified = TapadServer(base).start()  # the self-signed certificate is not trusted
    try:
        assert http("POST", f"{good.url}/analytics?timestamp={TS}&user=t&click")[0] == 200
        _, _, body = http("GET", f"{good.url}/analytics?timestamp={TS}")
        assert parse_counts(body)["clicks"] == 1
        status, _, _ = http("POST", f"{unverified.url}/analytics?timestamp={TS}&user=u&click")
        assert status == 503
        status, _, refused = http("GET", f"{unverified.url}/healthz")
        assert (status, refused) == (503, "store unavailable\n")  # the reason goes to the log
    finally:
        good.stop()
        unverified.stop()
        redis.stop()
    assert "certificate verify failed" in unverified.log.decode()
    assert_no_secret(good.log.decode(), unverified.log.decode(), refused)


def test_serve_binds_loopback_by_default(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapad", "serve", "--port", str(port), "--store",
         f"sqlite:///{tmp_path}/t.db"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"tapad listening on http://127.0.0.1:{port} ")
        listening = wait_until(lambda: listening_addresses(port), 10, interval=0.05)
        assert listening == ["0100007F"], listening  # 127.0.0.1 only, no 0.0.0.0 or ::
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # also closes the pipe


def test_compose_publishes_only_nginx_and_holds_no_password() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    # The default stack; opt-in profiles (monitoring: Prometheus) publish on loopback only.
    default = [name for name, svc in services.items() if "profiles" not in svc]
    assert sorted(name for name in default if services[name].get("ports")) == ["nginx"]
    for svc in services.values():
        if "profiles" in svc:
            assert all(
                p.startswith("${TAPAD_PROMETHEUS_ADDRESS:-127.0.0.1}:") for p in svc["ports"]
            )
    redis = services["redis"]
    command = redis["command"] if isinstance(redis["command"], str) else " ".join(redis["command"])
    # Redis takes its password from the environment when it starts, not from this file
    # ("$$" is compose's escape: the shell in the container expands it).
    assert '--requirepass "$$REDIS_PASSWORD"' in command, command
    assert str(redis["environment"]["REDIS_PASSWORD"]).startswith("${REDIS_PASSWORD:?"), redis
    store = services["analyticsserver"]["environment"]["TAPAD_STORE"]
    assert store.startswith("redis://:${REDIS_PASSWORD:?"), store


def test_no_secret_is_tracked_in_git() -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    names = [f.decode() for f in files if f]
    assert ".env" not in names
    assert not [n for n in names if n.endswith((".pem", ".key", ".p12", ".rdb", ".aof"))]
    marker = "-----BEGIN " + "PRIVATE KEY-----"  # split so this file does not match itself
    rsa_marker = "-----BEGIN RSA " + "PRIVATE KEY-----"
    for name in names:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        assert marker not in text and rsa_marker not in text, name
