"""Request parsing and validation: raw query string in, an Event or an hour out.

Pure functions, no aiohttp: the contract's rules live here and are unit-tested
(and fuzzed) on their own. Every refusal is a BadRequest whose text is the one
line the client sees, naming the parameter.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from tapad.buckets import MAX_TIMESTAMP_MS, MS_PER_HOUR, hour_of
from tapad.hour_rows import FORMATS, MAX_HOURS
from tapad.store.base import Event

if TYPE_CHECKING:  # window.py imports BadRequest from here
    from tapad.server.window import Window

MAX_USER_CHARS = 256
_KINDS = {"click": True, "impression": False}
# Event(...) runs the NamedTuple's Python-level __new__; tuple.__new__ makes the same
# object in C, half the time (the shortcut's own cost, on every POST).
_new_event = tuple.__new__
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a '%' not followed by two hex digits


class BadRequest(ValueError):
    """A client error; ``str()`` is the one-line 400 body."""


def _decode(name: str, raw: str) -> str:
    if "%" not in raw and "+" not in raw:
        return raw
    if "%" in raw and _BAD_ESCAPE.search(raw):
        raise BadRequest(
            f"{name}: invalid percent-encoding (a '%' must be followed by two hex digits)"
        )
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"{name}: not valid UTF-8 after percent-decoding") from None


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def split_query(query: str) -> dict[str, list[str]]:
    """Every parameter with all its values, so 'given twice' can be told from 'given once'."""
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = _decode("parameter name", name)
        params.setdefault(name, []).append(value)
    return params


def _only(params: dict[str, list[str]], name: str, what: str) -> str:
    values = params.get(name)
    if values is None:
        raise BadRequest(f"{name}: required ({what})")
    if len(values) > 1:
        raise BadRequest(f"{name}: given {len(values)} times, must be given once")
    return _decode(name, values[0])


def parse_timestamp(params: dict[str, list[str]], name: str = "timestamp") -> int:
    """The hour bucket of the request's timestamp (or of ``from``/``to``, same rules)."""
    return hour_of(parse_timestamp_ms(params, name))


def parse_timestamp_ms(params: dict[str, list[str]], name: str = "timestamp") -> int:
    """The request's timestamp in milliseconds, within the contract's range."""
    text = _only(params, name, "milliseconds since the Unix epoch")
    digits = text.lstrip("0") or "0"
    if not text.isascii() or not text.isdigit():
        raise BadRequest(
            f"{name}: must be a decimal integer of milliseconds since the Unix epoch, "
            f"got {_show(text)}"
        )
    if len(digits) > 15 or int(digits) > MAX_TIMESTAMP_MS:
        raise BadRequest(f"{name}: must be between 0 and {MAX_TIMESTAMP_MS}, got {_show(text)}")
    return int(digits)


def parse_user(params: dict[str, list[str]]) -> str:
    user = _only(params, "user", "the user name")
    if not user:
        raise BadRequest("user: must not be empty")
    if len(user) > MAX_USER_CHARS:
        raise BadRequest(f"user: at most {MAX_USER_CHARS} characters, got {len(user)}")
    if not user.isprintable():  # rare: only then look closer
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in user):
            raise BadRequest("user: must not contain control characters")
        if any("\ud800" <= ch <= "\udfff" for ch in user):  # raw bytes a lax parser let in
            raise BadRequest("user: not valid UTF-8")
    return user


MAX_ID_CHARS = 128


def check_id(event_id: str) -> str:
    """An event id: 1 to 128 characters without control characters (a UUID is typical)."""
    if not 1 <= len(event_id) <= MAX_ID_CHARS:
        raise BadRequest(f"id: must be 1 to {MAX_ID_CHARS} characters, got {len(event_id)}")
    if not event_id.isprintable():
        if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in event_id):
            raise BadRequest("id: must not contain control characters")
        if any("\ud800" <= ch <= "\udfff" for ch in event_id):
            raise BadRequest("id: not valid UTF-8")
    return event_id


def parse_id(params: dict[str, list[str]]) -> str | None:
    """The optional event id of a single POST (or the pixel)."""
    if "id" not in params:
        return None
    return check_id(_only(params, "id", "an event id"))


def parse_kind(params: dict[str, list[str]]) -> bool:
    """True for a click, False for an impression."""
    named: list[bool] = []
    for key, is_click in _KINDS.items():
        named.extend([is_click] * len(params.get(key, ())))
    for raw in params.get("event", ()):
        value = _decode("event", raw)
        if value not in _KINDS:
            raise BadRequest(f"event: must be click or impression, got {_show(value)}")
        named.append(_KINDS[value])
    if not named:
        raise BadRequest("click/impression: one of click, impression or event= is required")
    if len(named) > 1:
        raise BadRequest("click/impression: the kind of event must be named exactly once")
    return named[0]


def parse_event(
    params: dict[str, list[str]], window: Window | None = None, now_ms: int | None = None
) -> Event:
    """The one event a single POST or the pixel names: the same rules for both.

    With a ``window``, one outside it is refused (after every other parameter is found
    valid). ``now_ms``: the server's clock at receipt, for a pixel that leaves
    ``timestamp`` out (then no window applies); None where ``timestamp`` is required (the
    POST). Other parameters are ignored: the pixel's ``key`` (the write token, checked
    before parsing) or an ad server's cache buster.
    """
    if now_ms is not None and "timestamp" not in params:
        hour = now_ms // MS_PER_HOUR
        return Event(hour, parse_user(params), parse_kind(params), parse_id(params))
    ms = parse_timestamp_ms(params)
    event = Event(hour_of(ms), parse_user(params), parse_kind(params), parse_id(params))
    if window is not None:
        window.check(ms, window.now() if now_ms is None else now_ms)
    return event


def parse_post(query: str, window: Window | None = None) -> Event:
    """The event of a POST's query string; with a ``window``, one outside it is refused
    (after every other parameter is found valid, on both paths)."""
    event = _fast_post(query, window)
    if event is not None:
        return event
    return parse_event(split_query(query), window)


def parse_pixel(query: str, now_ms: int, window: Window | None = None) -> Event:
    """``GET /analytics/pixel.gif``: as the POST, ``timestamp`` optional (``now_ms``)."""
    return parse_event(split_query(query), window, now_ms)


def parse_get(query: str) -> int:
    hour = _fast_get(query)
    if hour is not None:
        return hour
    return parse_timestamp(split_query(query))


def parse_hours_query(query: str) -> tuple[int, int, str]:
    """``GET /analytics/hours``: the first and last hour and the format (json or csv)."""
    params = split_query(query)
    first = parse_timestamp(params, "from")
    last = parse_timestamp(params, "to")
    formats = params.get("format")
    if formats is not None and len(formats) > 1:
        raise BadRequest(f"format: given {len(formats)} times, must be given once")
    fmt = _decode("format", formats[0]) if formats else "json"
    if fmt not in FORMATS:
        raise BadRequest(f"format: must be json or csv, got {_show(fmt)}")
    _check_range(first, last)
    return first, last, fmt


def parse_uniques_query(query: str) -> tuple[int, int]:
    """``GET /analytics/uniques``: the first and last hour, by the rules of the hours API."""
    params = split_query(query)
    first = parse_timestamp(params, "from")
    last = parse_timestamp(params, "to")
    _check_range(first, last)
    return first, last


def _check_range(first: int, last: int) -> None:
    if first > last:
        raise BadRequest("from: must not be after to")
    if last - first + 1 > MAX_HOURS:
        raise BadRequest(
            f"to: one request covers at most {MAX_HOURS} hours, from..to spans {last - first + 1}"
        )


# -- the hot path's shortcut -----------------------------------------------------------
# Nearly every request is plain: no escapes, each parameter once, valid values. These take
# it in one pass without building the parameter dict (a fraction of parse_post's time under
# load; docs/performance.md has the figures). They answer only when the full parser above
# would give the very same result, and return None for everything else - which the full
# parser then accepts or refuses with its exact message. tests/server/test_query_fastpath.py
# checks the two agree.


def _fast_post(query: str, window: Window | None = None) -> Event | None:
    if "%" in query or "+" in query:  # escapes: let the full parser decode them
        return None
    pairs = query.split("&")
    if len(pairs) == 3:  # the usual order, timestamp=..&user=..&click (or impression)
        first, second, third = pairs
        if first[:10] == "timestamp=" and second[:5] == "user=":
            kind = third.partition("=")[0]
            if kind == "click" or kind == "impression":
                return _event(first[10:], second[5:], kind == "click", window)
    ts = user = None
    click: bool | None = None
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name == "timestamp":
            if ts is not None:
                return None
            ts = value
        elif name == "user":
            if user is not None:
                return None
            user = value
        elif name == "click" or name == "impression":
            if click is not None:
                return None
            click = name == "click"
        elif name == "event" or name == "id":  # the full parser checks these
            return None
    if ts is None or click is None or user is None:
        return None
    return _event(ts, user, click, window)


def _event(ts: str, user: str, click: bool, window: Window | None) -> Event | None:
    """The event of a plain POST's raw values, or None if any needs the full parser's look."""
    if not user or len(user) > MAX_USER_CHARS or not user.isprintable():
        return None
    if not (0 < len(ts) <= 15 and ts.isdigit() and ts.isascii()):
        return None
    ms = int(ts)
    if ms > MAX_TIMESTAMP_MS:
        return None
    if window is not None:
        window.check(ms, window.now())
    return _new_event(Event, (ms // MS_PER_HOUR, user, click, None))


def _fast_get(query: str) -> int | None:
    if query[:10] == "timestamp=":  # a '&' later makes the digits test fail
        ts = query[10:]
        if 0 < len(ts) <= 15 and ts.isdigit() and ts.isascii():
            ms = int(ts)
            if ms <= MAX_TIMESTAMP_MS:
                return ms // MS_PER_HOUR
    return None
