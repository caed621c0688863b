from __future__ import annotations

import pytest

from tapad.buckets import MAX_TIMESTAMP_MS, MS_PER_HOUR
from tapad.server.query import BadRequest, parse_get, parse_post
from tapad.store.base import Event

TS = 1_764_266_400_000  # 2025-11-27T18:00Z


def test_post_click_and_impression() -> None:
    assert parse_post(f"timestamp={TS}&user=alice&click") == Event(TS // MS_PER_HOUR, "alice", True)
    assert parse_post(f"user=bob&impression&timestamp={TS + 1}") == Event(
        TS // MS_PER_HOUR, "bob", False
    )


@pytest.mark.parametrize("kind", ["click", "click=", "click=1", "event=click", "click=false"])
def test_kind_value_is_ignored(kind: str) -> None:
    assert parse_post(f"timestamp={TS}&user=a&{kind}").click is True


def test_user_is_percent_decoded_and_case_sensitive() -> None:
    assert parse_post(f"timestamp={TS}&user=J%C3%BCrgen%20K&click").user == "Jürgen K"
    assert parse_post(f"timestamp={TS}&user=a%26b%3Dc&click").user == "a&b=c"
    assert parse_post(f"timestamp={TS}&user=Alice&click").user != "alice"


def test_timestamp_bounds() -> None:
    assert parse_get("timestamp=0") == 0
    assert parse_get(f"timestamp={MAX_TIMESTAMP_MS}") == MAX_TIMESTAMP_MS // MS_PER_HOUR
    assert parse_get("timestamp=000123") == 0


def test_user_length_limit() -> None:
    assert parse_post(f"timestamp={TS}&user={'x' * 256}&click").user == "x" * 256
    with pytest.raises(BadRequest, match=r"^user: at most 256"):
        parse_post(f"timestamp={TS}&user={'x' * 257}&click")


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("user=a&click", "timestamp: required"),
        ("timestamp=&user=a&click", "timestamp: must be a decimal"),
        ("timestamp=-1&user=a&click", "timestamp: must be a decimal"),
        ("timestamp=%2B1&user=a&click", "timestamp: must be a decimal"),
        ("timestamp=1.5&user=a&click", "timestamp: must be a decimal"),
        ("timestamp=1e3&user=a&click", "timestamp: must be a decimal"),
        ("timestamp=%201&user=a&click", "timestamp: must be a decimal"),
        ("timestamp=%D9%A1&user=a&click", "timestamp: must be a decimal"),  # Arabic-Indic one
        (f"timestamp={MAX_TIMESTAMP_MS + 1}&user=a&click", "timestamp: must be between"),
        ("timestamp=" + "9" * 5000 + "&user=a&click", "timestamp: must be between"),
        ("timestamp=1&timestamp=2&user=a&click", "timestamp: given 2 times"),
        ("timestamp=1&click", "user: required"),
        ("timestamp=1&user=&click", "user: must not be empty"),
        ("timestamp=1&user=a&user=b&click", "user: given 2 times"),
        ("timestamp=1&user=%FF&click", "user: not valid UTF-8"),
        ("timestamp=1&user=a%00b&click", "user: must not contain control"),
        ("timestamp=1&user=a", "click/impression: one of"),
        ("timestamp=1&user=a&click&impression", "click/impression: the kind"),
        ("timestamp=1&user=a&click&click", "click/impression: the kind"),
        ("timestamp=1&user=a&click&event=click", "click/impression: the kind"),
        ("timestamp=1&user=a&event=view", "event: must be click or impression"),
    ],
)
def test_post_rejections_name_the_parameter(query: str, names: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_post(query)
    message = str(info.value)
    assert message.startswith(names)
    assert "\n" not in message


def test_get_ignores_other_parameters_but_checks_timestamp() -> None:
    assert parse_get(f"timestamp={TS}&user=x&click") == TS // MS_PER_HOUR
    with pytest.raises(BadRequest, match=r"^timestamp: required"):
        parse_get("")
