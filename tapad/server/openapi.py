"""``GET /openapi.json``: the API's published description, from ``openapi.yaml``.

The description is written once, as YAML beside this module (package data; the repository's
docs/openapi.yaml is a link to it), read when first asked for and answered as JSON from
memory. tests/server/test_openapi.py keeps it in step with the routes and the status
codes the code answers; tests/server/test_fuzz_api.py fuzzes a live server against it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from aiohttp import web

OPENAPI_PATH = "/openapi.json"
HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-cache"}


@cache
def description() -> dict[str, Any]:
    """The description as a mapping (also what the tests walk)."""
    text = (files("tapad.server") / "openapi.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@cache
def _body() -> bytes:
    return json.dumps(description(), separators=(",", ":")).encode()


def openapi_response() -> web.Response:
    return web.Response(body=_body(), headers=HEADERS)
