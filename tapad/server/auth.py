"""Who may write and who may read: the routes' scopes and the one token check.

``SCOPES`` is the one list of which method on which path writes and which reads: a new
endpoint is added there, and ``TapadHandler`` checks every request against it before it
routes (``Tokens.refuse``). Anything not in the list (``/healthz``, ``/openapi.json``,
the dashboard's files, a method that answers 405) is open.

A token is taken from ``Authorization: Bearer <token>`` or, for pixels and beacons that
cannot set headers, from the query parameter ``key=<token>``. It is compared with every
configured token in constant time (``hmac.compare_digest``, no early exit), and is never
put into a log line, an answer or a metric label.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from enum import Enum
from urllib.parse import unquote_plus

from aiohttp import web

WRITE_TOKEN_ENV = "TAPAD_WRITE_TOKEN"
READ_TOKEN_ENV = "TAPAD_READ_TOKEN"


class Scope(Enum):
    WRITE = "write"
    READ = "read"


# (method, path) -> the token it needs. Paths and methods not here are open.
SCOPES: dict[tuple[str, str], Scope] = {
    ("POST", "/analytics"): Scope.WRITE,
    ("POST", "/analytics/batch"): Scope.WRITE,
    ("GET", "/analytics/pixel.gif"): Scope.WRITE,
    ("GET", "/analytics"): Scope.READ,
    ("GET", "/analytics/hours"): Scope.READ,
    ("HEAD", "/analytics/hours"): Scope.READ,
    ("GET", "/analytics/uniques"): Scope.READ,
    ("HEAD", "/analytics/uniques"): Scope.READ,
    ("GET", "/metrics"): Scope.READ,
    ("HEAD", "/metrics"): Scope.READ,
}
OPEN_PATHS = frozenset({"/", "/healthz", "/openapi.json", "/tapad.js"})  # documented as open


def parse_tokens(text: str | None, what: str) -> tuple[bytes, ...]:
    """``--write-token``/``--read-token``: comma-separated tokens (several while rotating).

    Empty (unset, or ``TAPAD_READ_TOKEN=`` in a compose .env) means no token: open. A token
    is printable ASCII without spaces or commas, so it survives a header and a URL as is.
    The error names the option, never the token.
    """
    if text is None:
        return ()
    tokens = [t.strip() for t in text.split(",")]
    tokens = [t for t in tokens if t]
    for position, token in enumerate(tokens, 1):
        if not all("!" <= ch <= "~" for ch in token):
            raise ValueError(
                f"{what}: token {position} must be printable ASCII without spaces "
                "(letters, digits and punctuation but the comma)"
            )
    return tuple(t.encode() for t in tokens)


def _matches(given: bytes, tokens: tuple[bytes, ...]) -> bool:
    """Constant time over every configured token: no early exit on the first match."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token)
    return found


def _from_query(query: str) -> list[str]:
    """Every ``key=`` value of a raw query string, percent-decoded."""
    if "key=" not in query:
        return []
    found = []
    for pair in query.split("&"):
        if pair[:4] == "key=":
            try:
                found.append(unquote_plus(pair[4:], errors="strict"))
            except UnicodeDecodeError:
                continue  # not a token anybody configured
    return found


def _from_header(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization")  # aiohttp's headers: any case of the name
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def unauthorized(scope: Scope) -> web.Response:
    """401, one line, naming how to send the token (never which ones are configured)."""
    return web.Response(
        status=401,
        text=f"unauthorized: this needs the {scope.value} token, as "
        "'Authorization: Bearer <token>' or the query parameter key=<token>\n",
        content_type="text/plain",
        headers={"WWW-Authenticate": "Bearer"},
    )


class Tokens:
    """The configured write and read tokens; made only when at least one is set."""

    def __init__(self, write: tuple[bytes, ...], read: tuple[bytes, ...]) -> None:
        self.by_scope = {Scope.WRITE: write, Scope.READ: read}

    @classmethod
    def configured(cls, write: str | None, read: str | None) -> Tokens | None:
        """None when neither is set: the handler then does no token work at all."""
        tokens = cls(parse_tokens(write, "--write-token"), parse_tokens(read, "--read-token"))
        return tokens if any(tokens.by_scope.values()) else None

    def refuse(
        self, method: str, path: str, query: str, headers: Mapping[str, str]
    ) -> web.Response | None:
        """The 401 for a request that lacks its scope's token; None to let it through."""
        scope = SCOPES.get((method, path))
        if scope is None:
            return None
        tokens = self.by_scope[scope]
        if not tokens:
            return None
        given = [g for g in (_from_header(headers), *_from_query(query)) if g]
        found = False
        for candidate in given:
            try:
                found |= _matches(candidate.encode(), tokens)
            except UnicodeEncodeError:  # lone surrogates: not a configured token
                continue
        return None if found else unauthorized(scope)
