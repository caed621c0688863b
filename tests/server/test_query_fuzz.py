"""Property tests of the request parser: whatever the query string, the parser returns a
result or raises BadRequest (a 400 with one line), never any other exception, and what it
accepts the stores can hold (valid UTF-8, no control characters, 1..256 characters)."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tapad.buckets import MAX_TIMESTAMP_MS, MS_PER_HOUR
from tapad.server.query import MAX_USER_CHARS, BadRequest, parse_get, parse_post, split_query

# Any code point, lone surrogates included: aiohttp hands over the raw path decoded with
# surrogateescape, so a parser must survive them.
ANY_CHAR = st.characters(codec=None, categories=None)
NAMES = st.sampled_from(["timestamp", "user", "click", "impression", "event", "x", ""])
FRAGMENTS = st.one_of(
    st.text(ANY_CHAR, max_size=30),
    st.sampled_from(["%", "%0", "%zz", "%00", "%FF", "%C3", "%ED%A0%80", "+", "=", "&", "%25"]),
    st.integers(-10, 10**20).map(str),
)
PAIRS = st.tuples(NAMES, st.sampled_from(["=", "", "=="]), st.lists(FRAGMENTS, max_size=4))
QUERIES = st.one_of(
    st.text(ANY_CHAR, max_size=300),
    st.lists(PAIRS, max_size=8).map(
        lambda pairs: "&".join(f"{n}{sep}{''.join(v)}" for n, sep, v in pairs)
    ),
)
SETTINGS = settings(max_examples=600, deadline=None)


def check_user(user: str) -> None:
    assert 1 <= len(user) <= MAX_USER_CHARS
    user.encode("utf-8")  # strict: a store could not hold it otherwise
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in user)


@SETTINGS
@given(QUERIES)
@example("timestamp=1&user=a\udcff&click")
@example("timestamp=1&user=%&click")
@example("timestamp=" + "9" * 5000 + "&user=a&click")
def test_parse_post_returns_an_event_or_raises_bad_request(query: str) -> None:
    try:
        event = parse_post(query)
    except BadRequest as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 400
        return
    check_user(event.user)
    assert 0 <= event.hour <= MAX_TIMESTAMP_MS // MS_PER_HOUR
    assert isinstance(event.click, bool)


@SETTINGS
@given(QUERIES)
def test_parse_get_returns_an_hour_or_raises_bad_request(query: str) -> None:
    try:
        hour = parse_get(query)
    except BadRequest:
        return
    assert 0 <= hour <= MAX_TIMESTAMP_MS // MS_PER_HOUR


@SETTINGS
@given(QUERIES)
def test_split_query_returns_a_dict_or_raises_bad_request(query: str) -> None:
    try:
        params = split_query(query)
    except BadRequest:
        return
    assert all(isinstance(v, list) and v for v in params.values())


USERS = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]),
    min_size=1,
    max_size=MAX_USER_CHARS,
)


@SETTINGS
@given(
    st.integers(0, MAX_TIMESTAMP_MS),
    USERS,
    st.sampled_from(["click", "impression", "event=click", "event=impression"]),
    st.booleans(),
)
def test_what_a_client_encodes_the_parser_gives_back(
    ts: int, user: str, kind: str, plus: bool
) -> None:
    encoded = quote_plus(user, safe="") if plus else quote(user, safe="")
    event = parse_post(f"timestamp={ts}&user={encoded}&{kind}")
    assert event.user == user
    assert event.hour == ts // MS_PER_HOUR
    assert event.click == kind.endswith("click")
    assert parse_get(f"timestamp={ts}") == ts // MS_PER_HOUR
