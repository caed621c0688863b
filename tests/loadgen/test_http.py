"""loadgen's own HTTP/1.1 client (tapad/loadgen/http.py) against a raw server on 127.0.0.1.

The server answers each request with bytes the test scripts, so every way of framing an
answer (Content-Length, chunked, to the end of the connection, an interim 100, bytes
trickling in one at a time) and every way of getting it wrong is met for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from tapad.loadgen.http import Answer, Connection, Endpoint, HttpError

R = TypeVar("R")
Script = Callable[[int], list[bytes]]  # n-th request -> the writes that answer it ("" closes)


async def serve(script: Script, test: Callable[[str], Awaitable[R]]) -> tuple[R, list[bytes], int]:
    """Run ``test(base_url)`` against a server answering with ``script``.

    Returns what the test returned, the requests the server saw, and how many
    connections it accepted.
    """
    seen: list[bytes] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                seen.append(head)
                for chunk in script(len(seen) - 1):
                    if chunk == b"":
                        writer.close()
                        return
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.001)  # on purpose: each chunk arrives on its own
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await test(f"http://127.0.0.1:{port}/analytics")
    finally:
        server.close()
    return result, seen, connections


async def requests(base: str, n: int, method: str = "GET") -> list[Answer]:
    connection = Connection(Endpoint(base))
    try:
        return [await connection.request(method, "/analytics?timestamp=1") for _ in range(n)]
    finally:
        connection.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


def test_content_length_answers_reuse_one_connection() -> None:
    answers, seen, connections = asyncio.run(
        serve(lambda n: [OK], lambda base: requests(base, 3, "POST"))
    )
    assert [(a.status, a.body) for a in answers] == [(200, b"hello")] * 3
    assert connections == 1
    assert seen[0].startswith(b"POST /analytics?timestamp=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 0\r\n" in seen[0]


def test_chunked_body_with_extension_and_trailer() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=x\r\nuniqu\r\n9\r\ne_users,7\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    answers, _, connections = asyncio.run(serve(lambda n: [answer], lambda base: requests(base, 2)))
    assert [a.body for a in answers] == [b"unique_users,7"] * 2
    assert connections == 1


def test_a_body_that_ends_with_the_connection_then_a_new_connection() -> None:
    answer = [b"HTTP/1.0 200 OK\r\n\r\nto the end", b""]
    answers, _, connections = asyncio.run(serve(lambda n: answer, lambda base: requests(base, 2)))
    assert [a.body for a in answers] == [b"to the end"] * 2
    assert connections == 2


def test_connection_close_makes_the_next_request_reconnect() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    answers, _, connections = asyncio.run(serve(lambda n: [answer], lambda base: requests(base, 3)))
    assert [a.body for a in answers] == [b"ok"] * 3
    assert connections == 3


def test_an_interim_100_is_skipped_and_bytes_may_trickle_in() -> None:
    whole = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    trickle = [whole[i : i + 1] for i in range(len(whole))]
    answers, _, _ = asyncio.run(serve(lambda n: trickle, lambda base: requests(base, 2)))
    assert [(a.status, a.body) for a in answers] == [(200, b"hello")] * 2


def test_503_carries_retry_after() -> None:
    answer = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n"
    (first,), _, _ = asyncio.run(serve(lambda n: [answer], lambda base: requests(base, 1)))
    assert (first.status, first.retry_after, first.body) == (503, "3", b"")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    ],
)
def test_what_is_not_http_is_an_http_error(answer: bytes, words: str) -> None:
    with pytest.raises(HttpError, match=words):
        asyncio.run(serve(lambda n: [answer], lambda base: requests(base, 1)))


def test_a_connection_closed_mid_answer_is_a_connection_error() -> None:
    half = [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly part", b""]
    with pytest.raises(ConnectionError):
        asyncio.run(serve(lambda n: half, lambda base: requests(base, 1)))
