"""What a served value means, whatever its spelling: the one place that reads Clevertim's variants.

Owns: turning the plausible spellings of a value (`docs: Variants to expect`) into one meaning:
booleans as true/false, 0/1, "0"/"1", "true"/"false"; ids and references as integers or numeric
strings; a reference as one id or a list of ids; date parts as numbers or numeric strings; empty
strings where null was meant; custom field values of any JSON type as canonical JSON text; a
note's HTML against its plain text. The mirror's typed columns (mirror/columns.py), the
three-way merge (writeback/merge.py), the "already applied" checks and the matching of a create
whose answer was lost all read values through here, so they agree on what equals what.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from clevertim_sync import jsontext
from clevertim_sync.resources import Kind, Prop

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


def as_bool(value: Any) -> bool | None:
    """true/false, 0/1, "0"/"1", "true"/"false" (any case, spaces around) -> bool; else None."""
    if value.__class__ is bool:
        return bool(value)
    if value.__class__ is int:
        return True if value == 1 else False if value == 0 else None
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


def as_int(value: Any) -> int | None:
    """An integer (not a bool) or a numeric ASCII string ("445", "-3") within 64 bits; else None."""
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] == "-" else text
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
            return None
        value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def as_ids(value: Any) -> list[int]:
    """Every usable id of a reference: one id, a numeric string, or a list of them (null and ""
    are no id). Entries that are no id (a bool, a float, a word) are left out."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [i for i in (as_int(v) for v in items) if i is not None]


def single_ref(value: Any) -> int | None:
    """The scalar column of a reference: the id when it holds exactly one, else None."""
    if value.__class__ is int:
        return as_int(value)
    if isinstance(value, list):
        return as_int(value[0]) if len(value) == 1 else None
    return as_int(value)


def as_text_id(value: Any) -> str | None:
    """An id of a text-id resource (folders: "f1001"): a non-empty string, trimmed, or an integer
    as its decimal text (7 -> "7", so the two spellings are one id); anything else is no id."""
    if isinstance(value, str):
        text = jsontext.typed_text(value.strip())  # an id is a typed column: no NUL (PostgreSQL)
        return text or None
    if value.__class__ is int:
        return str(value)
    return None


def text_ids(value: Any) -> list[str]:
    """Every usable id of a list of text ids (a record's `files`): see `as_text_id`."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [i for i in (as_text_id(v) for v in items) if i is not None]


def record_id(record: Any) -> tuple[int | None, str | None]:
    """(the record's id, None) or (None, why it has no usable id)."""
    if not isinstance(record, dict):
        return None, f"an entry is a {type(record).__name__}, not an object"
    if "id" not in record:
        return None, "an entry has no id"
    rid = record["id"]
    if rid.__class__ is int:
        return rid, None
    found = as_int(rid) if isinstance(rid, str) else None
    if found is None:
        return None, f"an entry's id is not an integer (id={told_id(rid)})"
    return found, None


_ID_SPELLING = re.compile(r"[A-Za-z0-9_.-]{0,24}")


def told_id(value: Any) -> str:
    """An odd id as a message may show it: an id-like spelling ("f1001", 1.5, None) as it is,
    anything else (a name or an e-mail served where an id belongs) by its type only."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str) and _ID_SPELLING.fullmatch(value) and any(c.isdigit() for c in value):
        return repr(value)
    return f"a {type(value).__name__}"


def record_text_id(record: Any) -> tuple[str | None, str | None]:
    """`record_id` for a resource whose ids are text (`Resource.id_kind`): "f1001" is an id, and
    7 is "7"."""
    if not isinstance(record, dict) or "id" not in record:
        return None, record_id(record)[1]
    found = as_text_id(record["id"])
    return (
        (found, None)
        if found is not None
        else (None, f"an entry's id is no text id (id={told_id(record['id'])})")
    )


def with_text_id(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its id spelled as `as_text_id` gives it (a copy only when needed)."""
    rid = record.get("id")
    if rid.__class__ is str and rid == rid.strip():
        return record
    found = as_text_id(rid)
    return record if found is None else {**record, "id": found}


def with_int_id(record: dict[str, Any]) -> dict[str, Any]:
    """The record with a numeric-string id spelled as its integer (a copy only when needed): the
    one spelling under which the mirror stores a record's identity."""
    rid = record.get("id")
    if rid.__class__ is int or not isinstance(rid, str):
        return record
    found = as_int(rid)
    return record if found is None else {**record, "id": found}


def date_part(value: Any) -> int | None:
    """One part of {y, mo, d, h, mi}: a number or a numeric string; null and "" are absent."""
    if value is None or value == "":
        return None
    return as_int(value)


def cf_text(value: Any) -> str | None:
    """A custom field value as text: a string as it is, anything else as canonical JSON
    (sorted keys): 5 -> "5", true -> "true", {"b": 1, "a": 2} -> '{"a":2,"b":1}'."""
    if value is None or isinstance(value, str):
        return value
    try:
        return jsontext.canonical(value).decode()
    except TypeError:  # not JSON (only a caller's own object could be): still text, never repr
        return orjson.dumps(str(value)).decode()


_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<\s*(br|/p|/div|/li)\s*/?\s*>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def plain_text(value: str) -> str:
    """A note's HTML as the plain text a person typed: tags dropped, entities decoded, runs of
    whitespace one space, trimmed. "<p>Call  back</p>" and "Call back" give the same text."""
    text = _BREAK.sub(" ", value)
    text = html.unescape(_TAG.sub("", text))
    return _SPACE.sub(" ", text).strip()


def meaning(prop: Prop | None, value: Any, *, loose: bool = False) -> Any:
    """A comparable normal form of `value` as `prop` reads it: equal forms mean the same value.

    Strings are trimmed and "" is null; with `loose` (matching a lost create) a string is also
    read as plain text (HTML tags dropped, whitespace collapsed). Without a prop, a value that
    reads as a boolean or an integer is compared as that.
    """
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    kind = prop.kind if prop is not None else None
    if kind is Kind.BOOL:
        b = as_bool(value)
        return ("bool", b) if b is not None else ("raw", _json(value))
    if kind in (Kind.INT, Kind.REF):
        if kind is Kind.REF and isinstance(value, list):
            ids = as_ids(value)
            if len(ids) == len(value):
                return ("ids", tuple(sorted(set(ids)))) if len(ids) != 1 else ("id", ids[0])
            return ("raw", _json(value))
        i = as_int(value)
        return ("id", i) if i is not None else ("raw", _json(value))
    if kind is Kind.INT_LIST:
        ids = as_ids(value) if isinstance(value, list) else []
        return (
            ("ids", tuple(sorted(ids)))
            if isinstance(value, list) and len(ids) == len(value)
            else _json(value)
        )
    if kind is Kind.DECIMAL:
        number = _decimal(value)
        return ("decimal", number) if number is not None else ("raw", _json(value))
    if kind is Kind.TIMESTAMP and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return ("raw", value)
        return ("at", (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed).astimezone(UTC))
    if kind is Kind.DATE_PARTS and isinstance(value, dict):
        return (
            "parts",
            tuple(sorted((str(k), date_part(v)) for k, v in value.items() if date_part(v) is not None)),
        )
    if kind is Kind.STR_LIST and isinstance(value, list):
        return ("strs", tuple(_text(v, loose) if isinstance(v, str) else _json(v) for v in value))
    if kind is Kind.CUSTOM_FIELDS and isinstance(value, dict):
        out = []
        for key, v in value.items():
            values = v if isinstance(v, list) else [v]
            texts = tuple(_text(t, loose) for t in (cf_text(x) for x in values) if t is not None)
            out.append((as_int(key) if as_int(key) is not None else str(key), texts))
        return ("cf", tuple(sorted(out, key=repr)))
    if kind is None:  # no prop to ask: a number in any spelling is that number, "1" and 445 too
        if value.__class__ is bool:
            return ("bool", value)
        number = _decimal(value)
        if number is not None:
            return ("number", number)  # Decimal: 4500 == 4500.0 == "4500"
        b = as_bool(value)
        if b is not None:
            return ("bool", b)
    if isinstance(value, str):
        return ("str", _text(value, loose))
    return ("raw", _json(value))


def same_meaning(prop: Prop | None, a: Any, b: Any, *, loose: bool = False) -> bool:
    """Whether two spellings mean the same value of `prop` (1 and true, "445" and 445, ...)."""
    if a == b and a.__class__ is b.__class__:
        return True
    if prop is None and _generic_bool_pair(a, b):
        return as_bool(a) == as_bool(b)
    return bool(meaning(prop, a, loose=loose) == meaning(prop, b, loose=loose))


def _generic_bool_pair(a: Any, b: Any) -> bool:
    """Without a prop: a real bool against 0/1 or "0"/"1"/"true"/"false" is read as booleans."""
    return (
        (a.__class__ is bool) != (b.__class__ is bool) and as_bool(a) is not None and as_bool(b) is not None
    )


def _text(value: str, loose: bool) -> str:
    return plain_text(value) if loose else value.strip()


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def typed(prop: Prop, value: Any) -> Any:
    """`value` as `prop`'s own JSON type, the form a local edit writes (what
    `resources.edit_problems` accepts): 0/1 -> false/true, "445" -> 445, "" -> null for a
    non-text property, date parts as integers. A value that reads as nothing of its kind is
    returned as it is (the edit's validation then says why)."""
    kind = prop.kind
    if value is None or (kind is not Kind.STR and value == ""):
        return None
    if kind is Kind.BOOL:
        b = as_bool(value)
        return value if b is None else b
    if kind is Kind.INT or (kind is Kind.REF and not isinstance(value, list)):
        i = as_int(value)
        return value if i is None else i
    if kind is Kind.REF:
        ids = as_ids(value)
        if len(ids) != len(value) or not ids:
            return value or None
        return ids if prop.child_table is not None or len(ids) > 1 else ids[0]
    if kind is Kind.DATE_PARTS and isinstance(value, dict):
        parts = {k: date_part(v) for k, v in value.items()}
        return (
            {k: v for k, v in parts.items() if v is not None}
            if all(v is not None or value[k] in (None, "") for k, v in parts.items())
            else value
        )
    return value
