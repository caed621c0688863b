"""Names out of one answer from a source: randomuser.me JSON or plain text, one name a line."""

from __future__ import annotations

import json


class NotNamesError(ValueError):
    """The answer is neither shape; retrying the same URL will not change that."""


def parse_names(body: str, content_type: str = "") -> list[str]:
    """Recognise the shape by content type first, then by the first character.

    Sources often send JSON as ``text/plain`` (or text as ``application/octet-stream``),
    so the body has the last word.
    """
    stripped = body.lstrip()
    if "json" in content_type.lower() or stripped.startswith(("{", "[")):
        return _from_json(stripped)
    if "html" in content_type.lower() or stripped.startswith("<"):
        raise NotNamesError("answered HTML, not names (JSON results[].login.username or text)")
    names = [line.strip() for line in body.splitlines()]
    return [name for name in names if name and len(name) <= 256]


def _from_json(body: str) -> list[str]:
    try:
        data = json.loads(body)
    except ValueError:
        raise NotNamesError("answered malformed JSON") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise NotNamesError("answered JSON without a results list (randomuser.me shape)")
    names = []
    for item in results:
        login = item.get("login") if isinstance(item, dict) else None
        name = login.get("username") if isinstance(login, dict) else None
        if isinstance(name, str) and name.strip() and len(name) <= 256:
            names.append(name.strip())
    if results and not names:
        raise NotNamesError("answered JSON whose results carry no login.username")
    return names
