"""The redis-py pieces tapad relies on, in one place.

tapad talks RESP itself on the hot path (``tapad.store.redis.protocol``) and only borrows two
things from redis-py: its reading of a ``redis://`` / ``rediss://`` / ``unix://`` URL
into connection settings (so every URL redis-py users know works the same here) and
its cluster key-slot function. Neither is documented API, so both are named here and
checked by ``tests/adapters/test_redis_py.py``, which names the redis-py version when
they change.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.connection import parse_url as _parse_url
from redis.crc import key_slot as _key_slot

VERSION: str = redis.__version__


def parse_url(url: str) -> dict[str, Any]:
    """Connection settings of a Redis URL: host, port, db, username, password, path (unix
    socket), the ``ssl_*`` query options, and ``connection_class`` (whose name says TLS or
    unix socket)."""
    found: dict[str, Any] = _parse_url(url)  # type: ignore[no-untyped-call]
    return found


def is_tls(settings: dict[str, Any]) -> bool:
    return getattr(settings.get("connection_class"), "__name__", "") == "SSLConnection"


def key_slot(key: bytes) -> int:
    """The cluster slot of a key (CRC16 of its hash tag, modulo 16384)."""
    return int(_key_slot(key))
