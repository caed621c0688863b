"""Requests past the size limits get a 414 or a 431 in tapad's words, over a raw socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tapad.server.guard import MAX_FIELD_SIZE, MAX_LINE_SIZE
from tests.reliability.tools import raw_exchange
from tests.support import InProcessTapad, http


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessTapad]:
    srv = InProcessTapad(f"sqlite:///{tmp_path_factory.mktemp('limits')}/t.db").start()
    yield srv
    srv.stop()


def answer(server: InProcessTapad, request: bytes) -> tuple[str, dict[str, str], str]:
    raw = raw_exchange(server.port, request, timeout=30)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *fields = head.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (f.partition(": ") for f in fields)}
    return status, headers, body.decode()


def test_a_url_over_the_limit_is_414_in_one_plain_line(server: InProcessTapad) -> None:
    url = b"/analytics?timestamp=5&user=" + b"a" * MAX_LINE_SIZE
    status, headers, body = answer(server, b"GET " + url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status.endswith(" 414 URI Too Long"), status
    assert headers["content-type"].startswith("text/plain")
    assert (
        body == f"request line too long: at most {MAX_LINE_SIZE} bytes of method, URL and version\n"
    )
    assert "bytearray" not in body and "aaaa" not in body


def test_a_header_over_the_limit_is_431(server: InProcessTapad) -> None:
    request = (
        b"GET /analytics?timestamp=5 HTTP/1.1\r\nX-Big: " + b"b" * MAX_FIELD_SIZE + b"\r\n\r\n"
    )
    status, headers, body = answer(server, request)
    assert status.endswith(" 431 Request Header Fields Too Large"), status
    assert headers["content-type"].startswith("text/plain")
    assert body.startswith("request headers too large: ") and body.count("\n") == 1
    assert "bbbb" not in body


def test_too_many_headers_is_431(server: InProcessTapad) -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(500))
    status, _, body = answer(server, b"GET /analytics?timestamp=5 HTTP/1.1\r\n" + many + b"\r\n")
    assert status.endswith(" 431 Request Header Fields Too Large"), status
    assert body.startswith("request headers too large: ")


def test_just_under_the_limits_is_served(server: InProcessTapad) -> None:
    line = b"GET /analytics?timestamp=5&x=" + b"a" * 100
    headers = b"Host: x\r\nX-Big: " + b"b" * 8000 + b"\r\n\r\n"
    status, _, _ = answer(server, line + b" HTTP/1.1\r\n" + headers)
    assert status.endswith(" 200 OK"), status
    assert http("GET", f"{server.url}/analytics?timestamp=5")[0] == 200
