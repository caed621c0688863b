"""Where a Redis store connects: a store URL read into an ``Endpoint``, TLS included.

Apart from the links themselves (link.py, protocol.py) because it runs once, at startup,
and reads the URL the way redis-py does, so an option means what it means there.
"""

from __future__ import annotations

import ssl
from urllib.parse import unquote, urlsplit

from tapad.adapters import redis_py
from tapad.store.base import StoreConfigError
from tapad.store.redis.protocol import Endpoint
from tapad.store.url import StoreSettings

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
