"""What the single-Redis and the cluster store share about talking to a Redis server:
where to connect (``endpoint_of``), one lazily opened link per server (``NodeLink``),
one way to turn a failure into a StoreError (``store_error``), and how a batch whose
reply was lost is settled (``kill_and_read``, ``InDoubt``).

A batch whose reply is lost (the link timed out or broke after sending it) may or may
not have been executed, and may still be: its bytes can sit in the server's socket
buffer. Every batch therefore also sets its link's commit marker (a key named after
the link, holding the link's batch number, with a TTL) inside the same MULTI/EXEC.
To settle it, the store opens a new connection, kills the old one by the id the
server gave it (``CLIENT KILL ID``: after that reply nothing more can run on it; "0
killed" means it is gone already) and then reads the marker, in one round trip. The
marker at or past the batch's number: applied, exactly once. Below it or missing:
not applied, and now never will be. Batches on one connection run in order, so one
marker per link settles every batch sent on it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from tapad.adapters import redis_py
from tapad.store.base import StoreConfigError, StoreError
from tapad.store.redis.protocol import (
    CommandError,
    Endpoint,
    LinkClosed,
    RedisLink,
    ReplyError,
    pack,
)
from tapad.store.url import StoreSettings

log = logging.getLogger("tapad.store")

FAILURES = (OSError, TimeoutError, CommandError)  # LinkClosed is an OSError (ConnectionError)
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def endpoint_of(settings: StoreSettings) -> Endpoint:
    """The connection settings of a redis://, rediss:// or unix:// URL (read by redis-py's
    URL parser, so they mean what they mean there), or of a redis+cluster:// URL's first
    node (the others differ only in host and port). StoreConfigError for a bad one."""
    if settings.scheme == "redis+cluster":
        parts = urlsplit(settings.url)
        host, port = settings.hosts[0]
        return Endpoint(
            host,
            port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
    try:
        base, _, query = settings.url.partition("?")
        query = "&".join(p for p in query.split("&") if p and not p.startswith("prefix="))
        found = redis_py.parse_url(f"{base}?{query}" if query else base)
        tls = tls_context(found) if redis_py.is_tls(found) else None
    except (ValueError, TypeError, OSError) as exc:
        raise StoreConfigError(f"store URL {settings.redacted()!r}: {exc}") from None
    return Endpoint(
        host=found.get("host") or "127.0.0.1",
        port=int(found.get("port") or 6379),
        path=found.get("path"),
        tls=tls,
        username=found.get("username"),
        password=found.get("password"),
        db=int(found.get("db") or 0),
    )


def tls_context(found: dict[str, object]) -> ssl.SSLContext:
    """TLS as redis-py sets it up from the same ``ssl_*`` URL options: certificates checked
    against the system's CAs (or ``ssl_ca_certs``/``ssl_ca_path``) unless told otherwise."""
    reqs = str(found.get("ssl_cert_reqs") or "required").lower()
    if reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
    context = ssl.create_default_context(
        cafile=found.get("ssl_ca_certs"),  # type: ignore[arg-type]
        capath=found.get("ssl_ca_path"),  # type: ignore[arg-type]
    )
    check = found.get("ssl_check_hostname")
    context.check_hostname = reqs != "none" and check not in (False, "false", "0", "no")
    context.verify_mode = CERT_REQS[reqs]
    if found.get("ssl_certfile"):
        context.load_cert_chain(found["ssl_certfile"], found.get("ssl_keyfile"))  # type: ignore[arg-type]
    return context


def describe(exc: BaseException) -> str:
    """One line about a Redis failure, without any password the URL may carry."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def store_error(name: str, exc: BaseException) -> StoreError:
    return StoreError(f"redis {name}: {describe(exc)}")


class NodeLink:
    """The one hot-path link to one Redis server, opened on first use and after a failure.

    Each server has its own lock: opening a link to one cluster master never waits on
    another's."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._link: RedisLink | None = None
        self._lock = asyncio.Lock()

    def ready(self) -> RedisLink | None:
        link = self._link
        return link if link is not None and link.error is None else None

    async def get(self) -> RedisLink:
        link = self._link
        if link is None or link.error is not None:
            async with self._lock:
                link = self._link
                if link is None or link.error is not None:
                    link = self._link = await RedisLink.open(self.endpoint, self._timeout)
        return link

    async def call(self, *command: object) -> object:
        return await (await self.get()).call(*command)

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()


async def kill_and_read(link: RedisLink, old: RedisLink, markers: list[str]) -> list[object]:
    """On a new link: end ``old`` on the server for good, then read ``markers`` (in that
    order, one round trip). ID and ADDR together: after a restart another client may
    have been given the old id."""
    kill = pack(("CLIENT", "KILL", "ID", old.client_id, "ADDR", old.client_addr))
    replies = await link.request(
        b"".join([kill, *(pack(("GET", key)) for key in markers)]), 1 + len(markers)
    )
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise CommandError(str(reply))
    return replies[1:]


def applied(marker: object, seq: int) -> bool:
    """Whether a commit marker's value says batch ``seq`` of its link was applied."""
    return marker is not None and int(marker) >= seq  # type: ignore[call-overload]


@dataclass
class InDoubt:
    """How this store's in-doubt batches (reply lost after sending) turned out. Tests
    assert on them; the server can export them."""

    applied: int = 0
    not_applied: int = 0
    unknown: int = 0
    settling: int = 0  # batches being settled right now (while > 0, the store is silent)
    # settled() calls so far: one int to compare after every batch (not part of equality)
    changes: int = field(default=0, compare=False, repr=False)

    def settled(self, name: str, outcome: str, events: int, waited: float) -> None:
        """Count one in-doubt batch (or cluster part) and log it in one line."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.changes += 1
        level = logging.WARNING if outcome == "unknown" else logging.INFO
        log.log(
            level,
            "in-doubt batch on %s (%d events) settled after %.2fs: %s",
            name,
            events,
            waited,
            outcome.replace("_", " "),
        )


async def settle(
    node: NodeLink, old: RedisLink, markers: list[str], seq: int, deadline: float
) -> list[bool] | None:
    """Whether each marker says batch ``seq`` of ``old`` was applied, trying on fresh
    links until ``deadline`` (loop time); None if the server stayed out of reach, or if
    ``old`` cannot be ended (its Redis user may not run CLIENT INFO and CLIENT KILL)."""
    if not old.client_id:
        log.warning("cannot settle an in-doubt batch: the Redis user may not run CLIENT KILL")
        return None
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                link = await node.get()
                values = await kill_and_read(link, old, markers)
            return [applied(value, seq) for value in values]
        except FAILURES:
            node.close()
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))


__all__ = [
    "FAILURES",
    "InDoubt",
    "LinkClosed",
    "NodeLink",
    "describe",
    "endpoint_of",
    "kill_and_read",
    "settle",
    "store_error",
]
