"""``tapad serve`` as a user starts it: startup line, bad options, a store that comes late."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import RedisServer, TapadServer, free_port, http, parse_counts, wait_until


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapad", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "store",
    ["postgres://db/x", "sqlite://host/x.db", "redis://h:port/0", "redis://u:s3cret@h:99999/0"],
)
def test_malformed_store_url_is_one_line_and_nonzero(store: str) -> None:
    result = run_cli("serve", "--port", str(free_port()), "--store", store)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


def test_a_file_that_is_not_a_sqlite_database_ends_serve_at_start(tmp_path: Path) -> None:
    csv = tmp_path / "notadb.db"
    csv.write_text("hour,timestamp,unique_users,clicks,impressions\n" * 200)
    result = run_cli("serve", "--port", str(free_port()), "--store", f"sqlite:///{csv}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {csv} is not a SQLite database"]
    assert csv.read_text().startswith("hour,timestamp")  # left as it was


@pytest.mark.parametrize("command", ["tally", "export"])
def test_tally_and_export_refuse_a_file_that_is_not_a_sqlite_database(
    tmp_path: Path, command: str
) -> None:
    csv = tmp_path / "notadb.db"
    csv.write_text("hour,timestamp,unique_users,clicks,impressions\n" * 200)
    result = run_cli(command, "--store", f"sqlite:///{csv}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {csv} is not a SQLite database"]


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    srv = TapadServer(f"sqlite:///{tmp_path}/a.db").start()
    try:
        result = run_cli("serve", "--port", str(srv.port), "--store", f"sqlite:///{tmp_path}/b.db")
        assert result.returncode != 0
        assert result.stderr.strip().splitlines()[-1].startswith("error: cannot listen on")
        assert "Traceback" not in result.stderr
    finally:
        srv.stop()


def test_environment_variables_configure_serve(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "TAPAD_PORT": str(port),
        "TAPAD_HOST": "127.0.0.1",
        "TAPAD_STORE": f"sqlite:///{tmp_path}/e.db",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapad", "serve"],
        env={**__import__("os").environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"tapad listening on http://127.0.0.1:{port} store sqlite:///")
        assert http("POST", f"http://127.0.0.1:{port}/analytics?timestamp=5&user=a&click")[0] == 200
        assert (tmp_path / "e.db").is_file()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # also closes the pipes


def test_startup_line_redacts_the_password(redis_server: RedisServer) -> None:
    redis_server.cli("CONFIG", "SET", "requirepass", "pa55word")
    try:
        url = f"redis://:pa55word@127.0.0.1:{redis_server.port}/0"
        srv = TapadServer(url).start()
        assert http("POST", f"{srv.url}/analytics?timestamp=5&user=a&click")[0] == 200
        srv.stop()
        output = srv.log.decode()
        assert "listening on" in output and ":***@127.0.0.1" in output
        assert "pa55word" not in output
    finally:
        redis_server.cli("-a", "pa55word", "--no-auth-warning", "CONFIG", "SET", "requirepass", "")


def test_store_down_at_start_gives_503_then_recovers(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    srv = TapadServer(redis.url, "--store-timeout", "0.5").start()
    try:
        status, headers, body = http("POST", f"{srv.url}/analytics?timestamp=5&user=a&click")
        assert status == 503 and "Retry-After" in headers and body.count("\n") == 1
        assert http("GET", f"{srv.url}/healthz")[0] == 503
        assert http("GET", f"{srv.url}/analytics?timestamp=5")[0] == 503

        redis.start()
        wait_until(
            lambda: http("GET", f"{srv.url}/healthz")[0] == 200,
            10,
            interval=0.1,
            what="the server noticing the store came back",
        )
        assert http("POST", f"{srv.url}/analytics?timestamp=5&user=a&click")[0] == 200
        _, _, body = http("GET", f"{srv.url}/analytics?timestamp=5")
        assert parse_counts(body) == {"unique_users": 1, "clicks": 1, "impressions": 0}
    finally:
        srv.stop()
        redis.stop()


def test_python_dash_m_and_help() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve",):
        assert command in result.stdout
