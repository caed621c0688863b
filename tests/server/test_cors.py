"""CORS (``--cors-origins``) header by header, over real HTTP; the browser's side of it is
in tests/test_browser.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tapad.buckets import MS_PER_HOUR
from tapad.server.cors import BadOrigins, parse_origins
from tests.support import InProcessTapad, Nginx, RedisServer

NGINX_CONF = (Path(__file__).parents[2] / "deploy" / "nginx.conf").read_text()
PAGE = "https://shop.example"
OTHER = "https://evil.example"
TS = 3_200_000 * MS_PER_HOUR
ALLOW_HEADERS = "Content-Type, Content-Encoding, Authorization"
# (method, path and query, body): every endpoint, answers of every kind
REQUESTS = [
    ("POST", f"/analytics?timestamp={TS}&user=ann&click", None),  # 200
    ("GET", f"/analytics?timestamp={TS}", None),
    ("POST", "/analytics/batch", b'{"user": "bo", "event": "click"}\n'),
    ("GET", "/analytics/pixel.gif?user=cy&impression", None),
    ("GET", f"/analytics/hours?from={TS}&to={TS}", None),
    ("GET", "/healthz", None),
    ("GET", "/metrics", None),
    ("GET", "/tapad.js", None),
    ("GET", "/", None),
    ("POST", "/analytics?user=ann&click", None),  # 400
    ("GET", "/analytics/pixel.gif?click", None),  # 400
    ("POST", "/analytics/batch", b"{"),  # 400
    ("DELETE", "/analytics", None),  # 405
    ("GET", "/nothing-here", None),  # 404
]


def cors_headers(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.lower().startswith("access-control-")}


def send(
    server: InProcessTapad, method: str, target: str, body: bytes | None, **headers: str
) -> httpx.Response:
    if body is not None:
        headers["Content-Type"] = "application/x-ndjson"
    return httpx.request(method, server.url + target, content=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessTapad]:
    url = f"sqlite:///{tmp_path_factory.mktemp('cors')}/tapad.db"
    srv = InProcessTapad(url, cors_origins=f"{PAGE}, http://127.0.0.1:8000/").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessTapad]:
    """A server without --cors-origins."""
    srv = InProcessTapad(f"sqlite:///{tmp_path_factory.mktemp('plain')}/tapad.db").start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(("method", "target", "body"), REQUESTS)
def test_every_answer_to_an_allowed_origin_carries_its_origin_and_vary(
    server: InProcessTapad, method: str, target: str, body: bytes | None
) -> None:
    for origin in (PAGE, "http://127.0.0.1:8000"):
        answer = send(server, method, target, body, Origin=origin)
        assert answer.headers["Access-Control-Allow-Origin"] == origin, answer.status_code
        assert answer.headers["Vary"] == "Origin"
        assert answer.headers["Access-Control-Expose-Headers"] == "Tapad-Duplicate, Retry-After"


@pytest.mark.parametrize(("method", "target", "body"), REQUESTS)
def test_other_origins_and_no_origin_get_no_cors_headers(
    server: InProcessTapad, closed: InProcessTapad, method: str, target: str, body: bytes | None
) -> None:
    for srv, headers in [
        (server, {"Origin": OTHER}),
        (server, {"Origin": "https://SHOP.example.evil"}),
        (server, {}),
        (closed, {"Origin": PAGE}),
    ]:
        answer = send(srv, method, target, body, **headers)
        assert cors_headers(answer) == {}, (srv, headers)
        assert "Vary" not in answer.headers


def test_a_5xx_carries_the_cors_headers_too(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    srv = InProcessTapad(redis.url, store_timeout=0.5, commit_deadline=1.0, cors_origins=PAGE)
    srv.start()
    try:
        redis.stop()
        answer = send(srv, "POST", f"/analytics?timestamp={TS}&user=ann&click", None, Origin=PAGE)
        assert answer.status_code == 503
        assert answer.headers["Access-Control-Allow-Origin"] == PAGE
        assert answer.headers["Vary"] == "Origin"
    finally:
        srv.stop()
        redis.stop()


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/analytics", "GET, POST"),
        ("/analytics/batch", "POST"),
        ("/analytics/pixel.gif", "GET"),
        ("/analytics/hours", "GET, HEAD"),
        ("/healthz", "GET, HEAD"),
        ("/tapad.js", "GET, HEAD"),
    ],
)
def test_a_preflight_from_an_allowed_origin_is_204(
    server: InProcessTapad, path: str, methods: str
) -> None:
    answer = httpx.options(
        server.url + path,
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": methods.split(", ")[-1],
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert answer.status_code == 204
    assert answer.content == b""
    assert cors_headers(answer) == {
        "access-control-allow-origin": PAGE,
        "access-control-allow-methods": methods,
        "access-control-allow-headers": ALLOW_HEADERS,
        "access-control-max-age": "600",
        "access-control-expose-headers": "Tapad-Duplicate, Retry-After",
    }
    assert answer.headers["Vary"] == "Origin"


def test_a_preflight_from_another_origin_is_a_one_line_403(server: InProcessTapad) -> None:
    answer = httpx.options(
        f"{server.url}/analytics/batch",
        headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code == 403
    assert answer.text == f"origin not allowed: {OTHER} (see tapad serve --cors-origins)\n"
    assert cors_headers(answer) == {}


def test_options_without_an_origin_or_on_no_endpoint(server: InProcessTapad) -> None:
    """Not a preflight: answered as without CORS (405 naming the methods, 404)."""
    answer = httpx.options(f"{server.url}/analytics")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, POST"
    answer = httpx.options(f"{server.url}/nowhere", headers={"Origin": PAGE})
    assert answer.status_code == 404
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE  # a 404 it may read


def test_without_the_option_options_is_405_and_nothing_says_cors(closed: InProcessTapad) -> None:
    answer = httpx.options(
        f"{closed.url}/analytics/batch",
        headers={"Origin": PAGE, "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert answer.text == "method OPTIONS not allowed; use POST\n"
    assert cors_headers(answer) == {}


def test_star_allows_every_origin_and_echoes_it(tmp_path: Path) -> None:
    srv = InProcessTapad(f"sqlite:///{tmp_path}/tapad.db", cors_origins="*").start()
    try:
        for origin in (PAGE, OTHER, "null"):  # "null": a sandboxed iframe, as ad slots are
            answer = httpx.get(f"{srv.url}/healthz", headers={"Origin": origin})
            assert answer.headers["Access-Control-Allow-Origin"] == origin
            assert answer.headers["Vary"] == "Origin"
        assert cors_headers(httpx.get(f"{srv.url}/healthz")) == {}
    finally:
        srv.stop()


def test_origins_are_parsed_as_browsers_send_them() -> None:
    assert parse_origins("*") is None
    assert parse_origins(" https://A.example/ ,http://127.0.0.1:8000") == frozenset(
        {
            "https://a.example",
            "http://127.0.0.1:8000",
        }
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", "--cors-origins: give origins (https://example.com,...) or *"),
        ("*,https://a.example", "--cors-origins: * allows every origin; give it alone"),
        ("a.example", "--cors-origins: 'a.example' is not an origin (scheme://host[:port], "
                      "e.g. https://example.com)"),
        ("https://a.example/shop", "--cors-origins: 'https://a.example/shop' is not an origin "
                                   "(scheme://host[:port], e.g. https://example.com)"),
        ("https://*.a.example", "--cors-origins: 'https://*.a.example' is not an origin "
                                "(scheme://host[:port], e.g. https://example.com)"),
        ("ftp://a.example", "--cors-origins: 'ftp://a.example' is not an origin "
                            "(scheme://host[:port], e.g. https://example.com)"),
    ],
)  # fmt: skip
def test_bad_origins_are_refused_in_one_line(text: str, line: str) -> None:
    with pytest.raises(BadOrigins) as refused:
        parse_origins(text)
    assert str(refused.value) == line


def test_serve_refuses_bad_origins_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tapad", "serve", "--port", "0", "--cors-origins", "a.example"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: --cors-origins: 'a.example' is not an origin "
        "(scheme://host[:port], e.g. https://example.com)"
    ]


def test_nginx_passes_preflights_and_the_pixel(server: InProcessTapad, tmp_path: Path) -> None:
    """deploy/nginx.conf limits no method: OPTIONS and the pixel reach tapad as they are."""
    proxy = Nginx(tmp_path / "nginx", NGINX_CONF, [f"127.0.0.1:{server.port}"]).start()
    try:
        answer = httpx.options(
            f"{proxy.url}/analytics/batch",
            headers={"Origin": PAGE, "Access-Control-Request-Method": "POST"},
        )
        assert answer.status_code == 204
        assert answer.headers["Access-Control-Allow-Origin"] == PAGE
        assert answer.headers["Access-Control-Allow-Methods"] == "POST"
        answer = httpx.get(
            f"{proxy.url}/analytics/pixel.gif?user=via-nginx&click&timestamp={TS}",
            headers={"Origin": PAGE},
        )
        assert answer.status_code == 200 and len(answer.content) == 43
        assert answer.headers["Content-Type"] == "image/gif"
        assert answer.headers["Cache-Control"] == "no-store, no-cache, must-revalidate"
        assert answer.headers["Access-Control-Allow-Origin"] == PAGE
        script = httpx.get(f"{proxy.url}/tapad.js")
        assert script.status_code == 200 and b"sendBeacon" in script.content
    finally:
        proxy.stop()
