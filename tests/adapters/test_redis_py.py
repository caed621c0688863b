"""The redis-py pieces behind tapad/adapters/redis_py.py still do what tapad needs.

When one of these fails after a redis-py upgrade, the message names the version:
adapt tapad/adapters/redis_py.py (or pin redis below that version).
"""

from __future__ import annotations

from tapad.adapters import redis_py

WHO = f"redis-py {redis_py.VERSION} changed: adapt tapad/adapters/redis_py.py"


def test_a_tls_url_with_user_password_and_options() -> None:
    got = redis_py.parse_url("rediss://ann:p%40ss@db.example:6380/2?ssl_ca_certs=/ca.pem")
    want = {
        "host": "db.example",
        "port": 6380,
        "db": 2,
        "username": "ann",
        "password": "p@ss",
        "ssl_ca_certs": "/ca.pem",
    }
    assert {k: got.get(k) for k in want} == want, WHO
    assert redis_py.is_tls(got), WHO


def test_a_plain_url_and_a_unix_socket_url() -> None:
    plain = redis_py.parse_url("redis://db.example")
    assert (plain.get("host"), plain.get("port"), redis_py.is_tls(plain)) == (
        "db.example",
        None,
        False,
    ), WHO
    unix = redis_py.parse_url("unix:///run/redis.sock?db=3")
    assert (unix.get("path"), unix.get("db"), redis_py.is_tls(unix)) == (
        "/run/redis.sock",
        3,
        False,
    ), WHO


def test_key_slot_follows_the_cluster_spec() -> None:
    # Values from the Redis Cluster specification's CRC16 (XMODEM) of the hash tag.
    assert redis_py.key_slot(b"foo") == 12182, WHO
    assert redis_py.key_slot(b"tapad:{12.3}:u") == redis_py.key_slot(b"12.3"), WHO
