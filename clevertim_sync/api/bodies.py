"""What an answer that is not the API's JSON looks like, told without its content.

Owns: `describe` (a body's size, where its parse failed, its shape) and `html_title`. An error
message goes to the terminal, the log, `status`, `last_error` and the alerts (Slack, e-mail): a
listing's first bytes are a customer's name, e-mail and notes, so a body is never quoted. What is
told instead is what a person needs to tell a proxy page from a truncated download or a server
bug: the size, the byte/line/column where JSON parsing stopped, the JSON type and top-level keys
(only keys that look like identifiers), an HTML page's <title>, or "binary".
"""

from __future__ import annotations

import html
import re
from typing import Any

import orjson

HEAD = 1 << 16  # bytes looked at for an HTML title or the kind of text
TITLE_CHARS = 80
KEYS_NAMED = 8  # top-level keys named; more are counted
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_WORD = re.compile(r"[A-Za-z][A-Za-z_ -]{0,23}")


def looks_like_html(content_type: str, raw: bytes) -> bool:
    return "html" in content_type.lower() or raw.lstrip()[:1] == b"<"


def html_title(raw: bytes) -> str | None:
    """An HTML page's <title>, on one line and shortened, or None."""
    found = _TITLE.search(raw[:HEAD])
    if found is None:
        return None
    text = " ".join(html.unescape(found.group(1).decode("utf-8", "replace")).split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


def word(value: Any) -> str:
    """A value the server set in an envelope (`status`), quoted only when it is a short word."""
    if isinstance(value, str) and _WORD.fullmatch(value):
        return repr(value)
    return "null" if value is None else f"a {type(value).__name__}"


def describe(raw: bytes, content_type: str = "") -> str:
    """`raw`'s size and shape, e.g. "135735 bytes, invalid JSON at character 135735 (line 1, column
    135736), starting as a JSON object" or "2048 bytes, HTML page titled 'Sign in'"."""
    size = f"{len(raw)} bytes"
    if not raw:
        return "empty body"
    if looks_like_html(content_type, raw):
        title = html_title(raw)
        return f"{size}, HTML page " + (f"titled {title!r}" if title else "without a title")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"{size}, {_broken(raw, exc)}"
    return f"{size}, {_shape(doc)}"


def _shape(doc: Any) -> str:
    if isinstance(doc, dict):
        return "JSON object with " + _keys(doc)
    if isinstance(doc, list):
        return f"JSON array of {len(doc)} entries"
    return f"JSON {type(doc).__name__}" if doc is not None else "JSON null"


def _keys(doc: dict[str, Any]) -> str:
    if not doc:
        return "no keys"
    named = [k for k in doc if _IDENTIFIER.fullmatch(k)][:KEYS_NAMED]
    others = len(doc) - len(named)
    told = "keys " + ", ".join(named) if named else ""
    if others:
        told += (" and " if told else "") + f"{others} other key{'s' if others > 1 else ''}"
    return told


def _broken(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    head = raw[:HEAD]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as bad:
        if bad.start < len(head) - 3:  # not merely a character cut at the end of the head
            return f"binary or not UTF-8 (byte {bad.start} is not UTF-8)"
    if b"\0" in head:
        return "binary (it holds NUL bytes)"
    first = head.lstrip()[:1]
    start = {b"{": "a JSON object", b"[": "a JSON array", b'"': "a JSON string"}.get(first, "text")
    return f"invalid JSON at character {exc.pos} (line {exc.lineno}, column {exc.colno}), starting as {start}"
