"""The published description (tapad/server/openapi.yaml) keeps in step with the code.

Routes are read from the handler's source (every ``path == "..."`` it compares, the
dashboard's files, the scopes of tapad/server/auth.py) and status codes from every
``status=`` the server's modules answer with: a route or a status added to the code and
not to the description fails here. The fuzz test (test_fuzz_api.py) checks the answers
themselves.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tapad.server
from tapad.server.auth import OPEN_PATHS, SCOPES
from tapad.server.dashboard import DASHBOARD_FILES, STATIC
from tapad.server.openapi import OPENAPI_PATH, description
from tests.support import TapadServer

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(tapad.server.__file__).parent
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Not the handler's: aiohttp answers 400 for a request it cannot parse (a request line or a
# header field over 8190 bytes too), which every operation's 400 covers.
EDGE_STATUSES = {400}


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method.upper(), operation


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _described(path: str) -> str:
    """The description's path for a served one: the dashboard's files share one."""
    if path.startswith(STATIC):
        return STATIC + "{file}"
    return path


def _compared_paths(source: Path) -> set[str]:
    """Every string the handler compares ``path`` with (``path == "/x"``)."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Name)
            and node.left.id == "path"
        ):
            for right in node.comparators:
                if isinstance(right, ast.Constant) and isinstance(right.value, str):
                    found.add(right.value)
    return found


def _int(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    return None


def _statuses_in_code() -> set[int]:
    """Every ``status=NNN`` in the server's modules, every ``...Refused(NNN, ...)`` (a
    refusal carrying its status), and 200 (aiohttp's default)."""
    found = {200}
    for module in SERVER.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "status":
                found.add(_int(node.value) or 200)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id.endswith("Refused")
                and node.args
                and _int(node.args[0]) is not None
            ):
                found.add(_int(node.args[0]) or 200)
    return found


def test_docs_copy_is_the_package_file() -> None:
    """docs/openapi.yaml links to the one source, tapad/server/openapi.yaml."""
    docs = ROOT / "docs" / "openapi.yaml"
    assert docs.read_bytes() == (SERVER / "openapi.yaml").read_bytes()


def test_is_openapi_3_1_with_both_security_schemes() -> None:
    doc = description()
    assert doc["openapi"].startswith("3.1.")
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["key"] == {**schemes["key"], "type": "apiKey", "in": "query", "name": "key"}


def test_every_route_in_code_is_described() -> None:
    described = {(p, m) for p, m, _ in _operations(description())}
    paths = {p for p, _ in described}
    in_code = _compared_paths(SERVER / "app.py") | set(DASHBOARD_FILES) | {OPENAPI_PATH}
    in_code |= OPEN_PATHS | {path for _, path in SCOPES}
    missing = sorted(p for p in in_code if _described(p) not in paths)
    assert not missing, f"routes served but not in openapi.yaml: {missing}"
    scoped = {(_described(p), "GET" if m == "HEAD" else m) for m, p in SCOPES}
    assert not scoped - described, f"methods not described: {sorted(scoped - described)}"


def test_every_status_in_code_is_described() -> None:
    assert {413, 415} <= _statuses_in_code(), "the batch's refusals are not found"
    doc = description()
    described = {int(s) for _, _, op in _operations(doc) for s in op["responses"]}
    missing = (_statuses_in_code() | EDGE_STATUSES) - described
    assert not missing, f"statuses the server answers but openapi.yaml lacks: {sorted(missing)}"


def test_scoped_operations_answer_401_and_declare_security() -> None:
    """Every write and read describes its 401 and both ways to send the token; open ones none."""
    doc = description()
    scoped = {(_described(p), "GET" if m == "HEAD" else m) for m, p in SCOPES}
    for path, method, operation in _operations(doc):  # OPTIONS: the CORS preflight, open
        if (path, method) in scoped:
            assert "401" in operation["responses"], (path, method)
            assert operation["security"] == [{"bearer": []}, {"key": []}], (path, method)
            unauthorized = _resolve(doc, operation["responses"]["401"])
            assert "WWW-Authenticate" in unauthorized["headers"]
        else:
            assert operation["security"] == [], (path, method)
            assert "401" not in operation["responses"], (path, method)


def test_every_operation_describes_405_and_503s_carry_retry_after() -> None:
    doc = description()
    for path, method, operation in _operations(doc):
        responses = operation["responses"]
        assert "405" in responses, (path, method)
        if "503" in responses:
            assert "Retry-After" in _resolve(doc, responses["503"])["headers"], (path, method)


def test_served_description_is_the_file_and_open(tmp_path: Path) -> None:
    """/openapi.json: the YAML as JSON, no token needed even when tokens are set."""
    tapad = TapadServer(f"sqlite:///{tmp_path}/t.db", "--read-token", "r", "--write-token", "w")
    tapad.start()
    try:
        response = httpx.get(f"{tapad.url}/openapi.json", timeout=10)
        served_paths = [p for p in description()["paths"] if "{" not in p]
        answers = {p: httpx.get(f"{tapad.url}{p}", timeout=10).status_code for p in served_paths}
    finally:
        tapad.stop()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == description()
    not_served = {p for p, status in answers.items() if status == 404}
    assert not not_served, f"described but answering 404: {sorted(not_served)}"


@pytest.mark.parametrize("path", ["/analytics", "/metrics", "/healthz", "/openapi.json"])
def test_describes_only_methods_the_route_answers(path: str) -> None:
    described = {m for p, m, _ in _operations(description()) if p == path and m != "OPTIONS"}
    allowed = {m for m, p in SCOPES if p == path} | ({"GET"} if path in OPEN_PATHS else set())
    assert described == {m for m in allowed if m != "HEAD"}
