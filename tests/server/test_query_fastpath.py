"""The parser's shortcut for plain requests agrees with the full parser, always.

``parse_post``/``parse_get`` first try a one-pass shortcut (``_fast_post``,
``_fast_get``) that answers only plain requests. A shortcut that accepted what the
full parser refuses, or read a value differently, would change the contract; so
for any query, whenever the shortcut answers, the full parser must give the same
answer. And it must really answer the common requests, or it is dead weight.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tapad.buckets import MAX_TIMESTAMP_MS
from tapad.server import query as q
from tapad.store.base import Event

ANY_CHAR = st.characters(codec=None, categories=None)
NAMES = st.sampled_from(["timestamp", "user", "click", "impression", "event", "x", ""])
VALUES = st.one_of(
    st.text(ANY_CHAR, max_size=20),
    st.sampled_from(["", "0", "00", "%41", "+", "a+b", "=", "click", "\x7f", "\udcff", " "]),
    st.integers(-5, 10**17).map(str),
    st.just(str(MAX_TIMESTAMP_MS)),
    st.just(str(MAX_TIMESTAMP_MS + 1)),
    st.just("0" * 16 + "1"),
    st.just("u" * 257),
)
PAIRS = st.tuples(NAMES, st.sampled_from(["=", ""]), VALUES)
QUERIES = st.one_of(
    st.text(ANY_CHAR, max_size=200),
    st.lists(PAIRS, max_size=6).map(lambda ps: "&".join(f"{n}{s}{v}" for n, s, v in ps)),
)


def full_post(query: str) -> object:
    try:
        params = q.split_query(query)
        return Event(q.parse_timestamp(params), q.parse_user(params), q.parse_kind(params))
    except q.BadRequest as exc:
        return exc


def full_get(query: str) -> object:
    try:
        return q.parse_timestamp(q.split_query(query))
    except q.BadRequest as exc:
        return exc


@settings(max_examples=1500, deadline=None)
@given(QUERIES)
def test_the_post_shortcut_answers_only_as_the_full_parser_does(query: str) -> None:
    fast = q._fast_post(query)
    if fast is not None:
        assert fast == full_post(query)


@settings(max_examples=800, deadline=None)
@given(QUERIES)
def test_the_get_shortcut_answers_only_as_the_full_parser_does(query: str) -> None:
    fast = q._fast_get(query)
    if fast is not None:
        assert fast == full_get(query)


def test_plain_requests_take_the_shortcut() -> None:
    ts = 1_764_278_400_123
    for query in (
        f"timestamp={ts}&user=u12345&impression",
        f"user=alice&click=1&timestamp={ts}",
        f"timestamp={ts}&user=bob&click=&other=x",
    ):
        assert q._fast_post(query) == full_post(query)
    assert q._fast_get(f"timestamp={ts}") == ts // 3_600_000
    assert q._fast_get("timestamp=0") == 0  # hour 0 is an answer, not "no shortcut"
    for query in (f"timestamp={ts}&user=J%C3%BCrgen&click", f"timestamp={ts}&user=a&event=click"):
        assert q._fast_post(query) is None  # escapes and event= go the long way
