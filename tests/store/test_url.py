from __future__ import annotations

import pytest

from tapad.store import StoreConfigError, StoreOptions, open_store, parse_store_url, redact


def test_sqlite_relative_and_absolute() -> None:
    assert parse_store_url("sqlite:///data/t.db").path == "data/t.db"
    assert parse_store_url("sqlite:////var/lib/t.db").path == "/var/lib/t.db"


def test_redis_urls() -> None:
    s = parse_store_url("redis://user:secret@10.0.0.1:6380/2?prefix=ads:")
    assert (s.scheme, s.prefix, s.is_redis) == ("redis", "ads:", True)
    assert parse_store_url("rediss://h:6379").scheme == "rediss"
    assert parse_store_url("unix:///run/redis.sock?db=1").path == "/run/redis.sock"
    assert parse_store_url("redis+cluster://a:7000,b:7001").hosts == (("a", 7000), ("b", 7001))


@pytest.mark.parametrize(
    "url",
    [
        "postgres://x",
        "tapad.db",
        "sqlite://host/x.db",
        "sqlite:///",
        "redis://",
        "redis://h:notaport",
        "redis://h:6379/zero",
        "redis+cluster://a:7000,b",
        "unix://",
    ],
)
def test_malformed_urls_are_one_clear_line(url: str) -> None:
    with pytest.raises(StoreConfigError) as info:
        parse_store_url(url)
    assert "\n" not in str(info.value)


def test_redaction_hides_passwords() -> None:
    assert redact("redis://u:hunter2@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis://:hunter2@h:1") == "redis://:***@h:1"
    assert "hunter2" not in redact("unix:///s.sock?password=hunter2")
    with pytest.raises(StoreConfigError) as info:
        parse_store_url("redis://u:hunter2@h:bad/0")
    assert "hunter2" not in str(info.value)


def test_sqlite_refuses_hll() -> None:
    with pytest.raises(StoreConfigError):
        open_store("sqlite:///x.db", StoreOptions(unique="hll"))


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("/var/lib/tapad/tapad.db", "sqlite:////var/lib/tapad/tapad.db"),
        ("data/tapad.db", "sqlite:///data/tapad.db"),
        ("tapad.db", "sqlite:///tapad.db"),
    ],
)
def test_a_bare_path_gets_the_sqlite_url_to_write(url: str, suggestion: str) -> None:
    with pytest.raises(StoreConfigError) as info:
        parse_store_url(url)
    assert str(info.value) == (
        f"store URL {url!r} has no scheme; for a SQLite file write {suggestion}"
    )
    assert parse_store_url(suggestion).path == url


def test_a_bare_host_and_port_gets_the_redis_url_to_write() -> None:
    with pytest.raises(StoreConfigError) as info:
        parse_store_url("localhost:6379")
    assert "redis://localhost:6379" in str(info.value) and "\n" not in str(info.value)
