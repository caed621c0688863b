"""``POST /analytics/batch``: a request body in, a list of Events (or one refusal) out.

Everything the contract says about a batch's body lives here: the three content types, gzip,
the two limits (checked before any event is validated), and the rules of each event, so the
handler in app.py stays a few lines: read, parse, submit, answer.

Decoding is msgspec's: one C call per NDJSON line (or one for a whole JSON array) decodes
and validates an event into a small struct; Python then only checks what msgspec cannot say
(a fractional timestamp, a control character) and builds the Event tuple. When an event is
refused, ``explain`` looks at it again, slowly, to name the field in the contract's words:
the fast path never formats a message.

The body is read in bounded chunks and inflated with a cap on the output (aiohttp's own
decompression is turned off in guard.py), so neither a large body nor a gzip bomb ever
holds more than ``MAX_BODY`` + 1 bytes in memory.
"""

from __future__ import annotations

import re
import time
import zlib
from typing import Annotated, Any, Literal

import msgspec
from aiohttp.web_request import BaseRequest

from tapad.buckets import MAX_TIMESTAMP_MS, MS_PER_HOUR
from tapad.server.query import MAX_USER_CHARS, BadRequest
from tapad.server.window import Window
from tapad.store.base import Event

MAX_EVENTS = 10_000
MAX_BODY = 4 * 1024 * 1024  # bytes, counted after decompression
MAX_ID_CHARS = 128
# Compressed bodies may be a little larger than what they inflate to (incompressible data):
# a raw gzip body this much over MAX_BODY cannot be within it, and is not read further.
GZIP_SLACK = 64 * 1024
NDJSON = ("application/x-ndjson", "text/plain")  # text/plain: what sendBeacon sends
JSON = "application/json"
TYPES = "application/x-ndjson, application/json or text/plain"

_new_event = tuple.__new__  # as in query.py: the Event tuple built in C
_ARRAY_INDEX = re.compile(r"at `\$\[(\d+)\]")  # a msgspec error's path into the array


class BatchRefused(Exception):
    """The batch is refused as a whole; ``str()`` is the one-line body."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close  # the body is left unread: close the connection after answering


Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMESTAMP_MS)]
WholeFloat = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMESTAMP_MS)]  # 2511.0 is 2511


class WireEvent(msgspec.Struct, gc=False):
    """One event as a client sends it; unknown fields are ignored."""

    user: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USER_CHARS)]
    event: Literal["click", "impression"]
    timestamp: Timestamp | WholeFloat | None = None
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)] | None = None


_decode_one = msgspec.json.Decoder(WireEvent).decode
_decode_array = msgspec.json.Decoder(list[WireEvent]).decode
_decode_raw_array = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_any = msgspec.json.Decoder().decode


def body_kind(content_type: str | None, content_encoding: str | None) -> tuple[bool, bool]:
    """(NDJSON rather than a JSON array, gzip) for the request's headers; 415 otherwise."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if media in NDJSON:
        ndjson = True
    elif media == JSON:
        ndjson = False
    else:
        got = repr(media[:60]) if media else "none"
        raise BatchRefused(415, f"Content-Type: must be {TYPES}, got {got}")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("gzip", "identity", "x-gzip"):
        raise BatchRefused(415, f"Content-Encoding: must be gzip or none, got {encoding[:60]!r}")
    return ndjson, encoding != "identity"


def too_large(close: bool = False) -> BatchRefused:
    return BatchRefused(
        413, f"body: at most {MAX_BODY // (1024 * 1024)} MiB after decompression", close
    )


async def read_body(request: BaseRequest, gzip: bool) -> bytes:
    """The body, inflated if ``gzip``; 413 past ``MAX_BODY``, read no further than that."""
    raw_limit = MAX_BODY + GZIP_SLACK if gzip else MAX_BODY
    declared = request.content_length
    if declared is not None and declared > raw_limit:
        # Not a byte read. A body a little over the limit is read to its end by aiohttp
        # after the answer (its lingering read), so the connection stays usable: a proxy
        # streaming it on is not cut off mid-body.
        raise too_large(close=True)
    chunks: list[bytes] = []
    size = raw = 0
    inflate = zlib.decompressobj(wbits=31) if gzip else None
    async for chunk in request.content.iter_any():
        raw += len(chunk)
        if raw > raw_limit:
            raise too_large()
        if inflate is None:
            chunks.append(chunk)
            continue
        data = chunk
        try:
            while data:
                # max_length: never more than one byte past the limit, however small
                # the input; what is left waits in unconsumed_tail
                piece = inflate.decompress(data, MAX_BODY + 1 - size)
                size += len(piece)
                if size > MAX_BODY:
                    raise too_large()
                chunks.append(piece)
                data = inflate.unconsumed_tail
                if inflate.eof and inflate.unused_data:  # another gzip member follows
                    data = inflate.unused_data + data
                    inflate = zlib.decompressobj(wbits=31)
        except zlib.error:
            raise BatchRefused(400, "body: not valid gzip") from None
    if inflate is not None and not inflate.eof and raw:
        raise BatchRefused(400, "body: not valid gzip (it ends too soon)")
    return b"".join(chunks)


def parse_events(
    body: bytes, ndjson: bool, now_ms: int | None = None, window: Window | None = None
) -> list[Event]:
    """Every event of the body, or BatchRefused (413: too many; 400: the first bad one).

    ``now_ms``: the server's clock at receipt, for events without a timestamp (and the
    "now" of ``window``, the server's --accept-past/--accept-future, for those with one).
    """
    if len(body) > MAX_BODY:
        raise too_large()
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    if ndjson:
        lines = [line for line in body.split(b"\n") if line and not line.isspace()]
        _check_count(len(lines))
        wires: list[WireEvent] = []
        append = wires.append
        for position, line in enumerate(lines, 1):
            try:
                append(_decode_one(line))
            except msgspec.ValidationError as exc:
                message = explain(position, line) or f"event {position}: {exc}"
                raise BatchRefused(400, message) from None
            except msgspec.DecodeError:
                raise BatchRefused(400, f"event {position}: not valid JSON") from None
        return _events(wires, now_ms, lines, window)
    if not body.strip():
        raise BatchRefused(400, "body: no events (an empty batch)")
    try:
        array = _decode_array(body)
    except msgspec.DecodeError as exc:  # ValidationError included: find which event
        raise _array_refusal(body, exc) from None
    _check_count(len(array))
    return _events(array, now_ms, None, window)


def _check_count(count: int) -> None:
    if count > MAX_EVENTS:
        raise BatchRefused(413, f"body: at most {MAX_EVENTS} events, got {count}")
    if not count:
        raise BatchRefused(400, "body: no events (an empty batch)")


def _events(
    wires: list[WireEvent], now_ms: int, lines: list[bytes] | None, window: Window | None
) -> list[Event]:
    """Events from decoded wire events; what msgspec cannot check is checked here."""
    now_hour = now_ms // MS_PER_HOUR
    events: list[Event] = []
    append = events.append
    for wire in wires:
        ts, user, event_id = wire.timestamp, wire.user, wire.id
        if ts is None:
            hour = now_hour
        elif type(ts) is int:
            hour = ts // MS_PER_HOUR
        elif float(ts).is_integer():  # 2511.0; msgspec checked the range
            hour = int(ts) // MS_PER_HOUR
        else:
            hour = -1
        if (
            hour < 0
            or not user.isprintable()
            or (event_id is not None and not event_id.isprintable())
        ):  # rare: only then look closer (a space other than " " is not "printable")
            position = len(events) + 1
            if lines is not None:
                problem = explain(position, lines[position - 1])
            else:
                problem = event_problem(msgspec.structs.asdict(wire))
                problem = problem and f"event {position}: {problem}"
            if problem is not None:
                raise BatchRefused(400, problem)
        if window is not None and ts is not None:
            try:
                window.check(int(ts), now_ms)
            except BadRequest as exc:
                raise BatchRefused(400, f"event {len(events) + 1}: {exc}") from None
        append(_new_event(Event, (hour, user, wire.event == "click", event_id)))
    return events


def _array_refusal(body: bytes, exc: msgspec.DecodeError) -> BatchRefused:
    """Why a JSON array body failed: 413 if it holds too many events, else the first bad
    event by position, else the body as a whole."""
    try:
        raws = _decode_raw_array(body)
    except msgspec.DecodeError:
        if isinstance(exc, msgspec.ValidationError):  # valid JSON, but not an array
            return BatchRefused(400, "body: must be a JSON array of events")
        return BatchRefused(400, "body: not valid JSON")
    _check_count(len(raws))
    found = _ARRAY_INDEX.search(str(exc))
    if found is not None and int(found[1]) < len(raws):
        index = int(found[1])
        message = explain(index + 1, bytes(raws[index]))
        if message is not None:
            return BatchRefused(400, message)
        return BatchRefused(400, f"event {index + 1}: {exc}")
    return BatchRefused(400, f"body: {exc}")


# -- the slow path: why an event was refused, in the contract's words ---------------------


def explain(position: int, raw: bytes) -> str | None:
    """The one-line refusal for the event at ``position`` (counting from 1), or None if
    the event is valid after all."""
    try:
        value = _decode_any(raw)
    except msgspec.DecodeError:
        return f"event {position}: not valid JSON"
    problem = event_problem(value)
    return None if problem is None else f"event {position}: {problem}"


def event_problem(value: Any) -> str | None:
    """What is wrong with a decoded event, naming the field; None if nothing is."""
    if not isinstance(value, dict):
        return f"must be a JSON object, got {_json_type(value)}"
    if "timestamp" in value:
        problem = _timestamp_problem(value["timestamp"])
        if problem:
            return f"timestamp: {problem}"
    if "user" not in value:
        return "user: required (the user name)"
    problem = _text_problem(value["user"], MAX_USER_CHARS, _USER_CONTROL)
    if problem:
        return f"user: {problem}"
    kind = value.get("event")
    if kind is None:
        return "event: required (click or impression)"
    if kind not in ("click", "impression"):
        shown = repr(kind[:40]) if isinstance(kind, str) else _json_type(kind)
        return f"event: must be click or impression, got {shown}"
    if value.get("id") is not None:
        problem = _text_problem(value["id"], MAX_ID_CHARS, _CONTROL)
        if problem:
            return f"id: {problem}"
    return None


def _timestamp_problem(ts: Any) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return f"must be a JSON number of milliseconds, got {_json_type(ts)}"
    if isinstance(ts, float) and not ts.is_integer():
        return f"must be a whole number of milliseconds, got {ts!r}"
    if not 0 <= ts <= MAX_TIMESTAMP_MS:
        return f"must be between 0 and {MAX_TIMESTAMP_MS}, got {ts!r}"
    return None


# Control characters: a user name follows the single POST (C0 and DEL); an id refuses
# every character of Unicode's "Cc" category (C1 as well).
_USER_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _text_problem(text: Any, most: int, control: re.Pattern[str]) -> str | None:
    if not isinstance(text, str):
        return f"must be a string, got {_json_type(text)}"
    if not 1 <= len(text) <= most:
        return f"must be 1 to {most} characters, got {len(text)}"
    if control.search(text):
        return "must not contain control characters"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
