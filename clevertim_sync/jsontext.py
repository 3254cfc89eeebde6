"""JSON text read and written exactly: the values a server served, whatever the fast paths refuse.

Owns: `read` (the fast reader), `loads` (exact values), `dumps` (the stored text of a value: `raw`),
`canonical` (the bytes a content hash is taken of), `typed_text` (the one rule for text in typed
columns and child rows) and `odd_text` (whether a stored text holds what that rule changes).

Reading: msgspec, in C, keeps an integer of any size exactly (orjson reads one past 64 bits as a
float, silently: guarding against that meant scanning every body for 19 digits in a row, 0.1 s
of CPU for the 110 MB of listings at 100k contacts). It refuses a lone surrogate escape
("\\ud800": valid JSON, and what Python's own `json.dumps` writes for a broken string), bytes that
are not UTF-8, a number beyond a double (1e400) or past 4300 digits, and nesting past about a
thousand levels. The standard library's json keeps all of these exactly: it is used only where
msgspec refuses, so clean data costs what it cost.
Writing: orjson, whose bytes every content hash was taken of; it refuses nesting past 254 levels
and integers past 64 bits, which the standard library's json then writes.

The stored text is always valid UTF-8 that every database takes: NUL is written `\\u0000` and a lone
surrogate as its `\\udXXX` escape, as JSON allows. PostgreSQL's text columns refuse NUL and no
database stores a lone surrogate, so typed columns and child rows follow `typed_text`: each of them
becomes U+FFFD there (raw keeps the value exactly).

Numbers: integers of any size are kept; a number beyond a double's range is integral and kept as
that integer (1e400 is the integer 10**400: the same JSON number); one below it (1e-400) is 0.0,
as every JSON reader that uses doubles reads it.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import orjson

REPLACEMENT = "\ufffd"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ODD_TYPED = re.compile("[\x00\ud800-\udfff]")
_MAX_DIGITS = 4000  # below Python's int <-> str limit (4300): a longer number cannot be kept
# Deepest nesting kept: past orjson's writing limit (254), well within the interpreter's recursion
# limit (1000 frames) that the standard library's json and `typed_text` spend a frame a level of.
MAX_DEPTH = 400


_READER = msgspec.json.Decoder()
# What `read` raises for a text it refuses (RecursionError: nested past its limit).
REFUSED = (msgspec.DecodeError, RecursionError)


def read(text: str | bytes) -> Any:
    """The value of a JSON text by the fast reader (exact for everything it takes). Raises one of
    REFUSED for a text it refuses: not JSON, or JSON only the exact reader (`loads`) takes."""
    return _READER.decode(text)


def _exact_float(text: str) -> float | int:
    """A JSON number with a fraction or exponent: a double, or the integer it is when no double
    can hold it (1e400)."""
    value = float(text)
    if value not in (float("inf"), float("-inf")):
        return value
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the scanner gave a JSON number
        raise ValueError("not a number") from None
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int) or exponent > _MAX_DIGITS:
        raise ValueError("a number too large to keep")
    return int(number)


_DECODER = json.JSONDecoder(parse_float=_exact_float, strict=False)


def loads(text: str | bytes) -> Any:
    """The value of a JSON text, exactly (see the module's docstring). Raises ValueError (the
    text is not JSON, or a number cannot be kept) or RecursionError (nested too deep to read)."""
    try:
        return read(text)
    except REFUSED:
        pass
    return _DECODER.decode(text if isinstance(text, str) else text.decode("utf-8", "replace"))


def decoder() -> json.JSONDecoder:
    """The exact decoder (`raw_decode` reads one value of a longer text: a listing's entries)."""
    return _DECODER


def _escape_surrogate(found: re.Match[str]) -> str:
    return f"\\u{ord(found.group()):04x}"


def dumps(value: Any) -> str:
    """The stored JSON text of `value`: orjson's when it can write it, else the standard library's
    with lone surrogates as escapes. Raises RecursionError past MAX_DEPTH levels."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _stdlib_text(value, sort_keys=False)


def canonical(value: Any) -> bytes:
    """Sorted-key compact JSON of `value` (what a content hash is taken of): orjson's bytes when
    it can write them (every clean record's hash stays what it was), else the standard library's,
    lone surrogates escaped. Raises RecursionError past MAX_DEPTH levels."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _stdlib_text(value, sort_keys=True).encode()


def _stdlib_text(value: Any, *, sort_keys: bool) -> str:
    if depth(value) > MAX_DEPTH:
        raise RecursionError(f"nested more than {MAX_DEPTH} levels deep")
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, allow_nan=False)
    return _LONE_SURROGATE.sub(_escape_surrogate, text)


def depth(value: Any) -> int:
    """How many lists and objects deep `value` is (a scalar: 0), without recursion."""
    deepest = 0
    todo = [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        todo.extend((child, level + 1) for child in children)
    return deepest


def odd_text(stored: str) -> bool:
    """Whether a stored JSON text (from `dumps`) may hold a NUL or a lone surrogate (an escaped
    backslash before a `u` can say yes wrongly: `typed_text` then changes nothing)."""
    return "\\u0000" in stored or "\\ud" in stored


def typed_text(value: Any) -> Any:
    """`value` with NUL and lone surrogates replaced by U+FFFD in every string (keys included): the
    form of a record that typed columns and child rows are built from."""
    # Plain loops, not comprehensions: one frame a level (MAX_DEPTH levels fit the recursion limit).
    if isinstance(value, str):
        return _ODD_TYPED.sub(REPLACEMENT, value)
    if isinstance(value, list):
        items = []
        for item in value:
            items.append(typed_text(item))
        return items
    if isinstance(value, dict):
        mapping = {}
        for key, item in value.items():
            mapping[typed_text(key)] = typed_text(item)
        return mapping
    return value
