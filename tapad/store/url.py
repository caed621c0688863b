"""Store settings parsed from one URL, the way arq reads its Redis DSN."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from tapad.settings import default
from tapad.store.base import StoreConfigError

DEFAULT_STORE_URL: str = default("store_url")
SCHEMES = ("sqlite", "redis", "rediss", "unix", "redis+cluster")


@dataclass(frozen=True)
class StoreSettings:
    """Everything needed to open a store. ``url`` keeps the original text for redis-py."""

    scheme: str
    url: str
    path: str = ""  # sqlite file or unix socket
    hosts: tuple[tuple[str, int], ...] = ()  # redis+cluster start nodes
    prefix: str = "tapad:"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_redis(self) -> bool:
        return self.scheme != "sqlite"

    def redacted(self) -> str:
        return redact(self.url)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs and error lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable store URL>"
    netloc = parts.netloc
    if "@" in netloc:
        creds, _, hostport = netloc.rpartition("@")
        user = creds.split(":", 1)[0] if ":" in creds else ""
        netloc = f"{user}:***@{hostport}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}={v}" if v else k
        for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    text = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{text}?{query}" if query else text


HOST_PORT = re.compile(r"[\w.-]+:\d{1,5}")


def no_scheme(url: str) -> str:
    """The line for a URL given without ``scheme://``: the URL the user most likely meant.

    A bare path is the usual slip (``--store /var/lib/tapad/tapad.db``); a bare
    ``host:port`` is a Redis server.
    """
    if HOST_PORT.fullmatch(url):
        return f"store URL {url!r} has no scheme; for a Redis server write redis://{url}"
    if "@" in url:  # user:password@host: the URL is not repeated, it may hold a password
        return "store URL has no scheme: start it with one of: " + ", ".join(
            f"{s}://" for s in SCHEMES
        )
    return f"store URL {url!r} has no scheme; for a SQLite file write sqlite:///{url}"


def parse_store_url(url: str) -> StoreSettings:
    """Parse and check a store URL; raise StoreConfigError with one line a user can act on."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreConfigError(no_scheme(url))
    if scheme not in SCHEMES:
        raise StoreConfigError(
            f"store URL {redact(url)!r} must start with one of: "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    try:
        parts = urlsplit(url)
        port = parts.port if scheme in ("redis", "rediss") else None
    except ValueError as exc:
        raise StoreConfigError(f"store URL {redact(url)!r} is malformed: {exc}") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    prefix = query.pop("prefix", "tapad:")

    if scheme == "sqlite":
        if parts.netloc:
            raise StoreConfigError(
                f"store URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise StoreConfigError(f"store URL {url!r} names no database file")
        return StoreSettings(scheme, url, path=unquote(path), prefix=prefix, options=query)

    if scheme == "unix":
        if not parts.path:
            raise StoreConfigError(f"store URL {redact(url)!r} names no socket path")
        return StoreSettings(scheme, url, path=parts.path, prefix=prefix, options=query)

    if scheme == "redis+cluster":
        hosts = []
        for node in rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2].split(","):
            host, _, port_text = node.strip().rpartition(":")
            if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise StoreConfigError(
                    f"store URL {redact(url)!r}: each node must be host:port, got {node!r}"
                )
            hosts.append((host.strip("[]"), int(port_text)))
        return StoreSettings(scheme, url, hosts=tuple(hosts), prefix=prefix, options=query)

    # redis:// and rediss://
    if not parts.hostname:
        raise StoreConfigError(f"store URL {redact(url)!r} names no host")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise StoreConfigError(f"store URL {redact(url)!r}: database must be a number, got {db!r}")
    del port  # checked above: urlsplit raises on a bad port
    return StoreSettings(scheme, url, prefix=prefix, options=query)
