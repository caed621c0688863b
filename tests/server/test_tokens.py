"""Write and read tokens (api.md, Tokens) on a live ``tapad serve``, endpoint by endpoint.

Every scoped route of tapad/server/auth.py (SCOPES) has a sample request here, so a new
endpoint added to SCOPES without one fails ``test_every_scoped_route_is_sampled``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tapad.buckets import MS_PER_HOUR
from tapad.server.auth import SCOPES, Scope, Tokens
from tapad.server.query import parse_hours_query, parse_post
from tests.support import TapadServer, parse_counts

HOUR = 490_000  # an hour of its own: 2025-11-24T16
TS = HOUR * MS_PER_HOUR + 1234
WRITE = ("w-first-5d0e", "w-second-91aa")  # two: the old and the new while rotating
READ = ("r-first-7b3c", "r-second-e4f2")
WRONG = "not-a-token-0000"
# Described but not served by this tree yet: remove a route here once it is.
NOT_YET_SERVED: set[str] = set()

SAMPLES: dict[tuple[str, str], str] = {
    ("POST", "/analytics"): f"/analytics?timestamp={TS}&user=alice&click",
    ("POST", "/analytics/batch"): "/analytics/batch",
    ("GET", "/analytics/pixel.gif"): f"/analytics/pixel.gif?timestamp={TS}&user=carl&impression",
    ("GET", "/analytics"): f"/analytics?timestamp={TS}",
    ("GET", "/analytics/hours"): f"/analytics/hours?from={TS}&to={TS}",
    ("HEAD", "/analytics/hours"): f"/analytics/hours?from={TS}&to={TS}",
    ("GET", "/analytics/uniques"): f"/analytics/uniques?from={TS}&to={TS}",
    ("HEAD", "/analytics/uniques"): f"/analytics/uniques?from={TS}&to={TS}",
    ("GET", "/metrics"): "/metrics",
    ("HEAD", "/metrics"): "/metrics",
}
OPEN = [
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("GET", "/static/dashboard.js"),
    ("GET", "/tapad.js"),
    ("HEAD", "/"),
]
TOKENS = {Scope.WRITE: WRITE, Scope.READ: READ}
OTHER = {Scope.WRITE: Scope.READ, Scope.READ: Scope.WRITE}
ROUTES = sorted(SAMPLES, key=lambda r: (SCOPES[r].value, r))


def _id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


def _with_key(target: str, token: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}key={token}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TapadServer]:
    db = tmp_path_factory.mktemp("tokens") / "tapad.db"
    tapad = TapadServer(
        f"sqlite:///{db}", "--write-token", ",".join(WRITE), "--read-token", " , ".join(READ)
    ).start()
    yield tapad
    tapad.stop()


@pytest.fixture(scope="module")
def client(server: TapadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def _send(
    client: httpx.Client, route: tuple[str, str], token: str | None = None, how: str = "header"
) -> httpx.Response:
    target = SAMPLES[route]
    headers = {}
    if token is not None and how == "header":
        headers["Authorization"] = f"Bearer {token}"
    if token is not None and how == "key":
        target = _with_key(target, token)
    body = None
    if route[1] == "/analytics/batch":
        headers["Content-Type"] = "application/x-ndjson"
        body = f'{{"timestamp": {TS}, "user": "bea", "event": "click"}}\n'.encode()
    return client.request(route[0], target, headers=headers, content=body)


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    if response.request.method != "HEAD":
        assert response.text.endswith("\n") and response.text.count("\n") == 1, response.text


def test_every_scoped_route_is_sampled() -> None:
    scoped = {route for route in SCOPES if route[1] not in NOT_YET_SERVED}
    assert scoped == set(SAMPLES), "give each scoped route a sample request here"


@pytest.mark.parametrize("route", ROUTES, ids=_id)
def test_missing_token_is_refused(client: httpx.Client, route: tuple[str, str]) -> None:
    _assert_refused(_send(client, route))


@pytest.mark.parametrize("route", ROUTES, ids=_id)
@pytest.mark.parametrize("how", ["header", "key"])
def test_wrong_token_is_refused(client: httpx.Client, route: tuple[str, str], how: str) -> None:
    _assert_refused(_send(client, route, WRONG, how))


@pytest.mark.parametrize("route", ROUTES, ids=_id)
@pytest.mark.parametrize("how", ["header", "key"])
def test_the_other_scopes_token_is_refused(
    client: httpx.Client, route: tuple[str, str], how: str
) -> None:
    for token in TOKENS[OTHER[SCOPES[route]]]:
        _assert_refused(_send(client, route, token, how))


@pytest.mark.parametrize("route", ROUTES, ids=_id)
@pytest.mark.parametrize("how", ["header", "key"])
def test_each_of_the_rotated_tokens_is_taken(
    client: httpx.Client, route: tuple[str, str], how: str
) -> None:
    for token in TOKENS[SCOPES[route]]:
        response = _send(client, route, token, how)
        assert response.status_code == 200, response.text


def test_bearer_scheme_is_case_insensitive_and_others_are_refused(client: httpx.Client) -> None:
    target = SAMPLES[("GET", "/analytics")]
    assert client.get(target, headers={"Authorization": f"bearer {READ[0]}"}).status_code == 200
    _assert_refused(client.get(target, headers={"Authorization": f"Basic {READ[0]}"}))
    _assert_refused(client.get(target, headers={"Authorization": "Bearer"}))
    _assert_refused(client.get(target, headers={"Authorization": f"Bearer {READ[0]}x"}))
    _assert_refused(client.get(_with_key(target, READ[0][:-1])))


def test_a_refused_write_is_not_recorded(client: httpx.Client) -> None:
    ts = (HOUR + 1) * MS_PER_HOUR
    target = f"/analytics?timestamp={ts}&user=mallory&impression"
    _assert_refused(client.post(target))
    _assert_refused(client.post(_with_key(target, READ[0])))
    read = {"Authorization": f"Bearer {READ[1]}"}
    counts = client.get(f"/analytics?timestamp={ts}", headers=read)
    assert parse_counts(counts.text) == {"unique_users": 0, "clicks": 0, "impressions": 0}
    assert client.post(_with_key(target, WRITE[1])).status_code == 200
    counts = client.get(_with_key(f"/analytics?timestamp={ts}", READ[0]))
    assert parse_counts(counts.text) == {"unique_users": 1, "clicks": 0, "impressions": 1}


@pytest.mark.parametrize(("method", "path"), OPEN)
def test_open_endpoints_stay_open(client: httpx.Client, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 200


def test_other_methods_still_answer_405(client: httpx.Client) -> None:
    for method, path in [("PUT", "/analytics"), ("POST", "/metrics"), ("DELETE", "/metrics")]:
        response = client.request(method, path)
        assert response.status_code == 405 and "Allow" in response.headers


def test_tokens_are_never_logged_nor_shown(tmp_path: Path) -> None:
    tapad = TapadServer(
        f"sqlite:///{tmp_path}/tapad.db",
        "--write-token",
        WRITE[0],
        "--read-token",
        READ[0],
        "--access-log",  # a line per request: with key= as key=***, no headers
    ).start()
    try:
        with httpx.Client(base_url=tapad.url, timeout=10) as c:
            for route in ROUTES:
                for token in (*WRITE, *READ, WRONG):
                    _send(c, route, token, "header")
                    _send(c, route, token, "key")
            c.post(f"/analytics?timestamp=x&user=u&click&key={WRITE[0]}")  # a 400
            c.post(f"/nowhere?key={WRITE[0]}")  # a 404
            metrics = c.get("/metrics", headers={"Authorization": f"Bearer {READ[0]}"}).text
    finally:
        tapad.stop()
    shown = tapad.log.decode() + metrics
    assert "tapad_http_request" in metrics
    assert "key=***" in shown, "no access log line with key= to check"
    for token in (*WRITE, *READ, WRONG):
        assert token not in shown


@pytest.mark.parametrize("scope", [Scope.WRITE, Scope.READ])
def test_tokens_from_the_environment(tmp_path: Path, scope: Scope) -> None:
    """TAPAD_WRITE_TOKEN / TAPAD_READ_TOKEN; the other scope, unset, stays open."""
    env = {"TAPAD_WRITE_TOKEN": "", "TAPAD_READ_TOKEN": ""}  # empty: none, as in a compose .env
    env[f"TAPAD_{scope.name}_TOKEN"] = ",".join(TOKENS[scope])
    tapad = TapadServer(f"sqlite:///{tmp_path}/tapad.db", env=env).start()
    try:
        with httpx.Client(base_url=tapad.url, timeout=10) as c:
            for route in ROUTES:
                if SCOPES[route] is scope:
                    _assert_refused(_send(c, route))
                    assert _send(c, route, TOKENS[scope][1], "key").status_code == 200
                else:
                    assert _send(c, route).status_code == 200
    finally:
        tapad.stop()


def test_a_malformed_token_is_one_line_and_exit_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tapad", "serve", "--port", "0", "--read-token", "has space"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--read-token" in run.stderr
    assert "has space" not in run.stderr


def test_no_tokens_means_no_token_work() -> None:
    assert Tokens.configured(None, None) is None
    assert Tokens.configured("", " , ") is None


def test_the_query_parsers_ignore_key() -> None:
    assert parse_post(f"timestamp={TS}&user=a&click&key=k") == parse_post(
        f"timestamp={TS}&user=a&click"
    )
    assert parse_post(f"key=k&user=a&impression&timestamp={TS}").user == "a"
    assert parse_hours_query(f"from={TS}&to={TS}&key=k")[:2] == (HOUR, HOUR)


def _loadgen(server: TapadServer, command: str, *args: str) -> tuple[int, dict[str, Any]]:
    run = subprocess.run(
        [sys.executable, "-m", "tapad", "loadgen", command, "--url", server.url, "-n", "50",
         "-c", "4", "--retries", "0", "--json", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, json.loads(run.stdout)


def test_loadgen_sends_its_token(server: TapadServer) -> None:
    code, report = _loadgen(server, "post", "--token", WRITE[1])
    assert code == 0 and report["acknowledged"] == 50, report
    code, report = _loadgen(server, "get", "--token", READ[0])
    assert code == 0 and report["acknowledged"] == 50, report
    code, report = _loadgen(server, "post", "--token", READ[0])  # the other scope's
    assert code != 0 and report["acknowledged"] == 0, report
    code, report = _loadgen(server, "get")
    assert code != 0 and report["acknowledged"] == 0, report


def test_loadgen_refuses_a_token_that_would_break_the_header(server: TapadServer) -> None:
    command = ["loadgen", "post", "--url", server.url, "--token", "a\r\nX: y"]
    run = subprocess.run(
        [sys.executable, "-m", "tapad", *command],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--token" in run.stderr
