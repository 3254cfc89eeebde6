"""`clevertim-sync probe`: a read-only survey of a live account, before the mirror is trusted with it.

Owns: reading every listing twice (the documents' too, when the account has them), the shapes seen per
resource and property, the findings (below), the JSON report (no personal data: a free string
is described by its format and length bucket, never copied; the values of the closed sets the
registry declares (`Prop.closed`) when they look like such (`capture.looks_closed`), and record
ids, are copied), the human summary, and feeding `capture.CaptureWriter`.

Every typed-column verdict comes from the mirror's own converters (`mirror.columns.typed_value`,
`child_rows`), so the probe says what the mirror will really do with a value.

Findings, keyed by a stable name (tests and bug reports rely on these names):

    multi_valued_reference   a reference (cust, case, opp, nid, tid, ...) given as a list
    numeric_string_id        an id, a reference or a back-reference list entry as "445"
    non_integer_id           a record id (or an id in a reference list) that is not an integer
                             nor a numeric string: "f1001", 1.5, null, missing (for the
                             documents, whose ids are text: one that is no text id either)
    bool_as_int              a boolean sent as 0 / 1
    bool_as_string           a boolean sent as "0" / "1" / "true" / "false"
    string_date_parts        task date parts {y, mo, d, h, mi} with string parts
    empty_string             "" where a typed value (reference, number, boolean, date) was meant
    unsorted_server_list     a server-computed list (notes, tasks, comments, files, ...) not
                             in ascending order
    unordered_server_list    a server-computed list whose order differs between the two reads
    typed_null               every non-null value a typed column will hold as NULL (raw keeps it)
    dropped_child_entry      list or custom-field entries a child table cannot hold (skipped)
    unknown_property         a property the registry (resources.py) does not describe (kept in raw)
    html_text                a text property holding HTML markup: the server wraps what it stores
                             (a note's desc as <p>...</p>), so it will not echo a write exactly
    listing_changed          records added, removed or changed between the two reads
    endpoint_error           an endpoint that answered an error, HTML, a redirect, or nothing
    compressed               listings came with a Content-Encoding
    rate_limit_headers       X-RateLimit-* / RateLimit-* / Retry-After headers were seen
    duplicate_id             an id served more than once in one listing (one copy is kept)
    odd_text                 a NUL or a lone surrogate in a string (U+FFFD in typed columns)
    not_utf8                 bytes that are not UTF-8 in an entry (U+FFFD, raw too)
    unreadable               an entry nested too deep or with a number too long to keep (left out)
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

from clevertim_sync import __version__, jsontext, resources
from clevertim_sync.api.client import ClevertimClient, RawListing
from clevertim_sync.api.errors import ApiError
from clevertim_sync.entries import REASONS, LeftOut
from clevertim_sync.mirror.columns import child_rows, has_typed_column, typed_value
from clevertim_sync.pull.diff import record_hash
from clevertim_sync.resources import Kind, Prop, Resource
from clevertim_sync.shapes import as_text_id
from clevertim_sync.survey.capture import (
    DOCUMENT_RESOURCES,
    ID_LIKE,
    NUMBER_LIKE,
    TIMESTAMP_LIKE,
    CaptureWriter,
    closed_props,
    looks_closed,
)

REPORT_VERSION = 1
EXAMPLES = 5  # record ids quoted per finding
ENUM_VALUES_MAX = 50  # distinct enum values kept per property
KEYS_MAX = 50  # distinct object keys kept per property

# The stable finding names, and what each means (also in the module docstring and the README).
VARIANTS: Mapping[str, str] = {
    "multi_valued_reference": "a reference given as a list of ids",
    "numeric_string_id": "an id or reference written as a numeric string",
    "non_integer_id": "an id that is neither an integer nor a numeric string",
    "bool_as_int": "a boolean written as 0/1",
    "bool_as_string": 'a boolean written as a string ("1", "true", ...)',
    "string_date_parts": "date parts written as strings",
    "empty_string": "an empty string where a typed value was meant",
    "unsorted_server_list": "a server-computed list not in ascending order",
    "unordered_server_list": "a server-computed list whose order differs between two reads",
    "typed_null": "a value its typed column will hold as NULL",
    "dropped_child_entry": "list entries a child table cannot hold",
    "unknown_property": "a property the registry does not describe",
    "html_text": "a text stored as HTML markup (a server that wraps what it stores: <p>...</p>)",
    "listing_changed": "the listing changed between the two reads",
    "endpoint_error": "an endpoint did not answer with a listing",
    "compressed": "listings came compressed",
    "rate_limit_headers": "rate-limit headers were seen",
    "duplicate_id": "an id served more than once in one listing",
    "odd_text": "a NUL or a lone surrogate in a string",
    "not_utf8": "bytes that are not UTF-8 in an entry",
    "unreadable": "an entry nested too deep or with a number too long to keep",
}
# Findings that need no action: the summary lists them under "fine".
INFO = frozenset({"compressed", "rate_limit_headers", "listing_changed", "html_text"})

# What the pull does with a record whose id is not an integer: the client's rule (api/client.py
# `_decode`), which the probe cannot ask, so it is said here. Keep in step with the client.
# What the pull does with a record id of each spelling (shapes.py decides; diff.py applies it).
NUMERIC_ID_RULE = "the record is mirrored under the integer it spells (its raw id becomes that integer)"
BAD_ID_RULE = (
    "the entry is left out of the mirror and reported on the run and in `status` (the rest of the "
    "listing applies; the mass-delete guard counts it as present)"
)

_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")

HEADERS_OF_INTEREST = ("content-encoding", "content-type", "server", "retry-after", "via")
_RATE_PREFIXES = ("x-ratelimit", "x-rate-limit", "ratelimit")


@dataclass
class Finding:
    key: str  # one of VARIANTS
    resource: str
    prop: str | None
    count: int
    examples: list[Any]  # record ids (not personal)
    detail: str  # what was seen, in shape terms
    mirror: str  # what the mirror does with it

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "resource": self.resource,
            "property": self.prop,
            "count": self.count,
            "examples": self.examples,
            "detail": self.detail,
            "mirror": self.mirror,
        }


# --- describing values without copying them ---------------------------------------------------


_JSON_TYPES: Mapping[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    list: "list",
    dict: "object",
}


def json_type(value: Any) -> str:
    return _JSON_TYPES.get(value.__class__) or type(value).__name__


def length_bucket(n: int) -> str:
    for limit, name in ((0, "0"), (8, "1-8"), (32, "9-32"), (128, "33-128"), (1024, "129-1024")):
        if n <= limit:
            return name
    return ">1024"


def string_format(s: str) -> str:
    if s == "":
        return "empty"
    if TIMESTAMP_LIKE.match(s):
        return "iso_timestamp" if len(s) > 10 else "date"
    if NUMBER_LIKE.match(s):
        return "numeric"
    if s.startswith(("http://", "https://")):
        return "url"
    if "@" in s and " " not in s.strip():
        return "email"
    if "<" in s and ">" in s:
        return "html"
    return "text"


def describe(value: Any) -> str:
    """A value's shape in a few words, never its content: `list of 3 int`, `string numeric`."""
    t = json_type(value)
    if t == "string":
        return f"string {string_format(value)}"
    if t == "list":
        kinds = sorted({json_type(v) for v in value})
        return f"list of {len(value)} {'/'.join(kinds) or 'nothing'}"
    if t == "object":
        return "object {" + ",".join(sorted(value)[:8]) + "}"
    return t


def _numeric_string(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if resources.is_int(value) else (1, str(value))


# --- per property ---------------------------------------------------------------------------


@dataclass
class PropStats:
    """The shapes one property took across a listing."""

    present: int = 0
    types: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    lengths: Counter[str] = field(default_factory=Counter)
    list_lengths: Counter[str] = field(default_factory=Counter)
    item_types: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    values: Counter[str] | None = None  # enum properties only

    def add(self, value: Any, enum: bool) -> None:
        self.present += 1
        t = json_type(value)
        self.types[t] += 1
        if t == "string":
            self.formats[string_format(value)] += 1
            self.lengths[length_bucket(len(value))] += 1
            if enum:
                self._enum(value)
        elif t == "list":
            self.list_lengths[length_bucket(len(value))] += 1
            for item in value:
                self.item_types[json_type(item)] += 1
                if enum and isinstance(item, str):
                    self._enum(item)
                elif enum and isinstance(item, dict) and "type" in item:  # phones, smids
                    self._enum(item["type"])
        elif t == "object":
            for key, item in value.items():
                if key in self.keys or len(self.keys) < KEYS_MAX:
                    self.keys[key] += 1
                self.item_types[json_type(item)] += 1  # e.g. date parts as int or string

    def _enum(self, value: Any) -> None:
        if self.values is None:
            self.values = Counter()
        label = value if looks_closed(value) else f"<{describe(value)}>"
        if label in self.values or len(self.values) < ENUM_VALUES_MAX:
            self.values[label] += 1

    def as_json(self, records: int) -> dict[str, Any]:
        out: dict[str, Any] = {"present": self.present, "missing": records - self.present}
        for name in ("types", "formats", "lengths", "list_lengths", "item_types", "keys"):
            counter: Counter[str] = getattr(self, name)
            if counter:
                out[name] = dict(counter.most_common())
        if self.values is not None:
            out["values"] = dict(self.values.most_common())
        return out


class _Tally:
    """Findings under construction: count and example ids per (key, property), plus shapes."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str | None]] = Counter()
        self.examples: dict[tuple[str, str | None], list[Any]] = {}
        self.shapes: dict[tuple[str, str | None], Counter[str]] = {}
        self.nulled: Counter[tuple[str, str | None]] = Counter()  # of those, typed NULL

    def add(
        self, key: str, prop: str | None, rid: Any, shape: str | None = None, *, nulled: bool = False
    ) -> None:
        k = (key, prop)
        self.counts[k] += 1
        self.nulled[k] += nulled
        ex = self.examples.setdefault(k, [])
        # Ids are not personal; a string is quoted only when it looks like an id ("445", "f1001").
        if len(ex) < EXAMPLES and (resources.is_int(rid) or (isinstance(rid, str) and ID_LIKE.match(rid))):
            ex.append(rid)
        if shape is not None:
            self.shapes.setdefault(k, Counter())[shape] += 1


# --- one resource ---------------------------------------------------------------------------


@dataclass
class ReadFacts:
    status: int | None
    records: int
    body_bytes: int
    wire_bytes: int
    seconds: float
    error: str | None = None
    error_class: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "records": self.records,
            "bytes": self.body_bytes,
            "bytes_on_wire": self.wire_bytes,
            "seconds": round(self.seconds, 3),
        }
        if self.error is not None:
            out["error"] = self.error
            out["error_class"] = self.error_class
        return out


class ResourceSurvey:
    """Everything learnt about one resource's listing; records are looked at once and let go."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.res: Resource | None = resources.BY_NAME.get(name)
        self.records = 0
        self.not_objects = 0
        self.props: dict[str, PropStats] = {}
        self.tally = _Tally()
        self.reads: list[ReadFacts] = []
        self.headers: dict[str, str] = {}
        # For the second read: record id -> {list property: (hash as served, hash sorted)}.
        self._orders: dict[Any, dict[str, tuple[int, int]]] = {}
        self._content: dict[Any, int] = {}  # record id -> hash of its JSON, to see changes
        self.documents: dict[str, set[Any]] = {"files": set(), "lfiles": set()}
        self.photos = 0  # contacts with a cphoto (the photos `pull.photos` would fetch)

    # -- first read --

    def survey(self, records: Iterable[Any], hasher: Callable[[Any], int]) -> None:
        res = self.res
        by_api = res.by_api if res is not None else {}
        enums = closed_props(self.name)  # the registry's closed sets; nothing else is copied
        for rec in records:
            self.records += 1
            if isinstance(rec, LeftOut):
                self.tally.add(rec.reason, "id", rec.maybe_id)
                continue
            if isinstance(rec, dict) and _hashable(rec.get("id")) in self._content:
                self.tally.add("duplicate_id", "id", rec.get("id"))
            if not isinstance(rec, dict):
                self.not_objects += 1
                self.tally.add("non_integer_id", "id", None, describe(rec))
                continue
            rid = rec.get("id")
            self._check_id(rid)
            if isinstance(rec.get("cphoto"), str) and rec["cphoto"]:
                self.photos += 1
            self._content[_hashable(rid)] = hasher(rec)
            lists: dict[str, tuple[int, int]] = {}
            for key, value in rec.items():
                stats = self.props.get(key)
                if stats is None:
                    stats = self.props[key] = PropStats()
                stats.add(value, key in enums)
                if key == "id":
                    continue
                prop = by_api.get(key)
                if prop is None:
                    if res is not None:
                        self.tally.add("unknown_property", key, rid, describe(value))
                    continue
                kind, cls = prop.kind, value.__class__
                if kind is Kind.STR and cls is str:
                    if "<" in value and _HTML_TAG.search(value):
                        self.tally.add("html_text", key, rid, "string html")
                    continue  # otherwise the common, fine case: nothing to check
                if value is None or (kind is Kind.BOOL and cls is bool):
                    continue
                self._check_value(prop, value, rid)
                if kind is Kind.INT_LIST and cls is list and len(value) > 1:
                    if any(_sort_key(a) > _sort_key(b) for a, b in pairwise(value)):
                        self.tally.add("unsorted_server_list", key, rid)
                    lists[key] = _order_hashes(value)
                if key in self.documents and isinstance(value, list):
                    self.documents[key].update(_hashable(v) for v in value)
            if lists:
                self._orders[_hashable(rid)] = lists

    def note(self, findings: Iterable[tuple[str, Any]]) -> None:
        """Entries the listing's parser kept but reported (entries.REASONS: odd_text, not_utf8)."""
        for reason, rid in findings:
            self.tally.add(reason, None, rid)

    def _check_id(self, rid: Any) -> None:
        if resources.is_int(rid):
            return
        if self.res is not None and self.res.text_ids:  # "f1001" is an id; null, 1.5 are none
            if as_text_id(rid) is None:
                self.tally.add("non_integer_id", "id", rid, "missing" if rid is None else describe(rid))
            return
        if _numeric_string(rid):
            self.tally.add("numeric_string_id", "id", rid, describe(rid))
        else:
            self.tally.add("non_integer_id", "id", rid, "missing" if rid is None else describe(rid))

    def _check_value(self, prop: Prop, value: Any, rid: Any) -> None:
        kind, key = prop.kind, prop.api
        if value is None:
            return
        # The typed column's verdict, from the mirror's own converters.
        nulled = has_typed_column(prop) and typed_value(prop, value) is None

        def add(finding: str, shape: str | None = None) -> None:
            self.tally.add(finding, key, rid, shape, nulled=nulled)

        if value == "" and kind not in (Kind.STR, Kind.JSON):
            add("empty_string")
        if kind is Kind.REF:
            if isinstance(value, list):
                n = len(value)
                add("multi_valued_reference", f"list of {n if n <= 9 else '10+'}")
            self._check_ids_in(value if isinstance(value, list) else [value], add)
        elif kind is Kind.INT_LIST and isinstance(value, list) and not _text_target(prop):
            self._check_ids_in(value, add)  # a record's files hold text ids: the child table says
        elif kind is Kind.BOOL and not isinstance(value, bool):
            if resources.is_int(value):
                add("bool_as_int", str(value) if value in (0, 1) else "int")
            elif isinstance(value, str):
                add(
                    "bool_as_string",
                    repr(value if value.lower() in ("0", "1", "true", "false", "") else "other"),
                )
        elif kind is Kind.DATE_PARTS and isinstance(value, dict) and _has_string(value.values()):
            add("string_date_parts")
        if prop.child_table is not None:
            self._check_child(prop, value, rid)
        elif nulled:
            add("typed_null", describe(value))

    @staticmethod
    def _check_ids_in(items: list[Any], add: Callable[[str, str], None]) -> None:
        """Ids inside a reference or an id list; each kind of odd id counted once per record."""
        kinds: dict[str, str] = {}
        for item in items:
            if item is None or item == "" or resources.is_int(item):  # "" is reported as empty_string
                continue
            if _numeric_string(item):
                kinds.setdefault("numeric_string_id", "string numeric")
            else:
                kinds.setdefault("non_integer_id", describe(item))
        for finding, shape in kinds.items():
            add(finding, shape)

    def _check_child(self, prop: Prop, value: Any, rid: Any) -> None:
        rows = child_rows(prop, 0, value)
        if prop.kind is Kind.CUSTOM_FIELDS:
            expected = len(value) if isinstance(value, dict) else 1
            kept = len({row[1] for row in rows})
            dropped = expected - kept
        elif isinstance(value, list):
            dropped = len(value) - len(rows)
            if prop.kind in (Kind.PHONES, Kind.SMIDS):
                dropped += sum(1 for row in rows if row[3] is None)
        else:  # a single value: a reference's one id, or something no child row can hold
            dropped = 1 - len(rows)
        if dropped > 0:
            self.tally.add("dropped_child_entry", prop.api, rid, describe(value))

    # -- second read --

    def compare(self, records: Iterable[Any], hasher: Callable[[Any], int]) -> None:
        """The second read against the first: order-only differences, and real changes."""
        res = self.res
        by_api = res.by_api if res is not None else {}
        seen = 0
        changed: list[Any] = []
        for rec in records:
            if not isinstance(rec, dict):
                continue
            rid = _hashable(rec.get("id"))
            first = self._content.pop(rid, None)
            if first is None:
                changed.append(rid)
                continue
            seen += 1
            before = self._orders.pop(rid, {})
            order_only = False
            for key, value in rec.items():
                prop = by_api.get(key)
                if prop is None or prop.kind is not Kind.INT_LIST or not isinstance(value, list):
                    continue
                served, canonical = _order_hashes(value)
                old = before.get(key)
                if old is not None and old[1] == canonical and old[0] != served:
                    self.tally.add("unordered_server_list", key, rid)
                    order_only = True
            if hasher(rec) != first and not order_only:
                changed.append(rid)
        gone = list(self._content)
        self._content.clear()
        self._orders.clear()
        if changed or gone:
            for rid in (changed + gone)[:EXAMPLES]:
                self.tally.examples.setdefault(("listing_changed", None), []).append(rid)
            self.tally.counts[("listing_changed", None)] = len(changed) + len(gone)

    def release(self) -> None:
        self._content.clear()
        self._orders.clear()

    # -- output --

    def findings(self) -> list[Finding]:
        out = []
        ordered = sorted(self.tally.counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        for (key, prop), count in ordered:
            shapes = self.tally.shapes.get((key, prop), Counter())
            common = sorted(shapes.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
            detail = ", ".join(f"{s}: {n}" for s, n in common)
            out.append(
                Finding(
                    key=key,
                    resource=self.name,
                    prop=prop,
                    count=count,
                    examples=list(self.tally.examples.get((key, prop), [])),
                    detail=detail,
                    mirror=mirror_action(key, self.res, prop, self),
                )
            )
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "mirrored": self.res is not None,
            "records": self.records,
            "entries_not_objects": self.not_objects,
            "reads": [r.as_json() for r in self.reads],
            "headers": self.headers,
            "properties": {k: v.as_json(self.records) for k, v in sorted(self.props.items())},
            "unknown_properties": sorted(
                prop for (key, prop) in self.tally.counts if key == "unknown_property" and prop
            ),
        }


def _hash_ignores_order(prop: str) -> bool:
    """Whether the mirror's content hash (diff.record_hash) sees an order-only change as none:
    asked of the hash itself, so this says what the mirror really does."""
    return bool(record_hash({"id": 1, prop: [1, 2]}) == record_hash({"id": 1, prop: [2, 1]}))


def _text_target(prop: Prop) -> bool:
    """Whether `prop` holds ids of a text-id resource (a record's `files`: documents)."""
    target = resources.BY_NAME.get(prop.target or "")
    return target is not None and target.text_ids


def _has_string(values: Iterable[Any]) -> bool:
    return any(isinstance(v, str) for v in values)


def _order_hashes(value: list[Any]) -> tuple[int, int]:
    """(hash of the list as served, hash of it sorted): equal second, different first = order only."""
    if all(v.__class__ is int for v in value):  # the usual list of ids: no conversion
        return hash(tuple(value)), hash(tuple(sorted(value)))
    items = [_hashable(v) for v in value]
    return hash(tuple(items)), hash(tuple(sorted(items, key=_sort_key)))


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value


def mirror_action(key: str, res: Resource | None, prop_name: str | None, survey: ResourceSurvey) -> str:
    """What the mirror does with a finding, in a sentence (from the registry and converters)."""
    if res is None:
        return "not mirrored: for information"
    prop = res.by_api.get(prop_name) if prop_name else None
    column = prop.column if prop is not None else None
    nulls = survey.tally.nulled.get((key, prop_name), 0)
    count = survey.tally.counts.get((key, prop_name), 0)
    null_note = (
        ""
        if prop is None or not has_typed_column(prop)
        else f"{res.table}.{column} is NULL, raw keeps the value"
        if nulls == count
        else f"{res.table}.{column} is NULL in {nulls} of them, raw keeps the value"
        if nulls
        else f"{res.table}.{column} holds the typed value"
    )
    if key == "multi_valued_reference":
        kept = f"kept in {prop.child_table}; " if prop is not None and prop.child_table else ""
        return f"{kept}{null_note}" or "kept in raw"
    if key in ("bool_as_int", "bool_as_string", "string_date_parts", "empty_string"):
        return null_note or "kept in raw"
    if key == "numeric_string_id":
        if prop_name == "id":
            return NUMERIC_ID_RULE
        return null_note or "kept in raw"
    if key == "non_integer_id":
        if prop_name == "id":
            return BAD_ID_RULE
        if prop is not None and prop.kind is Kind.TEXT_REF:
            return null_note or "kept in raw"
        return "kept in raw; the id cannot be a typed reference"
    if key == "typed_null":
        return f"{res.table}.{column} NULL, raw keeps the value" if column else "kept in raw"
    if key == "dropped_child_entry":
        table = prop.child_table if prop is not None else None
        return f"those entries are not in {table}; raw keeps them" if table else "kept in raw"
    if key == "unsorted_server_list":
        return "kept in the order served (raw and the id lists)"
    if key == "unordered_server_list":
        if prop_name and _hash_ignores_order(prop_name):
            return (
                "the mirror's hash ignores the order: no update, no history row; raw keeps the order served"
            )
        return "each pull records a false update and a history row for these records (issue 11)"
    if key == "unknown_property":
        return "kept in raw (not in a typed column)"
    if key == "html_text":
        return (
            "kept as served; a lost create is matched on the text without its markup and spacing, "
            "so such a server causes no duplicate"
        )
    if key in REASONS:
        return REASONS[key]
    if key == "listing_changed":
        return "the account changed while it was read (someone at work?): for information"
    return ""


# --- the whole account -------------------------------------------------------------------------


@dataclass
class ProbeResult:
    base_url: str
    started_at: datetime
    seconds: float = 0.0
    surveys: dict[str, ResourceSurvey] = field(default_factory=dict)
    extra_findings: list[Finding] = field(default_factory=list)

    def findings(self) -> list[Finding]:
        out = list(self.extra_findings)
        for survey in self.surveys.values():
            out.extend(survey.findings())
        return out

    def keys(self) -> set[str]:
        return {f.key for f in self.findings()}

    def documents(self) -> dict[str, Any]:
        """How many documents the account has: listed by the documents' endpoints (when they
        answer), referenced by the records' `files` and `lfiles` lists, and contact photos."""
        files: set[Any] = set()
        lfiles: set[Any] = set()
        for survey in self.surveys.values():
            files |= survey.documents["files"]
            lfiles |= survey.documents["lfiles"]
        contacts = self.surveys.get("contact")
        endpoints = {}
        for name in DOCUMENT_RESOURCES:
            doc_survey = self.surveys.get(name)
            if doc_survey is not None and doc_survey.reads:
                read = doc_survey.reads[0]
                endpoints[name] = (
                    {"records": read.records}
                    if read.error is None
                    else {"status": read.status, "error": read.error_class}
                )
        return {
            "files_referenced": len(files),
            "linked_files_referenced": len(lfiles),
            "contact_photos": contacts.photos if contacts is not None else 0,
            "endpoints": endpoints,
        }

    @property
    def server(self) -> str:
        """The API base URL without anything but scheme, host, port and path."""
        url = urlsplit(self.base_url)
        return f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path}"

    def report(self) -> dict[str, Any]:
        """The JSON report: shapes, findings, sizes and timings; no personal text."""
        return {
            "report": "clevertim-sync probe",
            "version": REPORT_VERSION,
            "clevertim_sync": __version__,
            "started_at": self.started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(self.seconds, 3),
            "server": self.server,
            "variants": dict(VARIANTS),
            "findings": [f.as_json() for f in self.findings()],
            "documents": self.documents(),
            "resources": {name: s.as_json() for name, s in self.surveys.items()},
        }


def probe(
    client: ClevertimClient,
    *,
    capture: CaptureWriter | None = None,
    names: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Read every listing (`names`, default all, the documents' included) twice;
    survey each, capture it; never raises for anything the server does. `progress` hears a line
    before each read."""
    result = ProbeResult(client.base_url, datetime.now(UTC))
    started = time.monotonic()
    order = list(names) if names is not None else list(resources.PULL_ORDER)
    seen_headers: dict[str, set[str]] = {}
    for name in order:
        survey = result.surveys[name] = ResourceSurvey(name)
        reads = 2
        for n in range(reads):
            if progress is not None:
                progress(f"{name}: read {n + 1} of {reads}")
            listing = _read(client, name, survey)
            if listing is None:
                if n == 0 and capture is not None:
                    read = survey.reads[-1]
                    capture.error(name, read.status, read.error_class or "error")
                break
            for key, value in survey.headers.items():
                seen_headers.setdefault(key, set()).add(value)
            if n == 0:
                survey.survey(listing.content, _record_hash)
                survey.note(listing.findings)
                if capture is not None:
                    kept = [r for r in listing.content if not isinstance(r, LeftOut)]  # unreadable: none
                    capture.write(name, {**listing.envelope, "content": kept})
            else:
                survey.compare(listing.content, _record_hash)
            del listing  # one copy of a listing at a time
        survey.release()
    result.seconds = time.monotonic() - started
    if capture is not None:
        capture.close()
    result.extra_findings.extend(_header_findings(seen_headers))
    return result


def _record_hash(rec: Any) -> int:
    try:
        return hash(jsontext.dumps(rec))  # C speed (orjson's) for clean entries; key order counts
    except (TypeError, RecursionError):  # a LeftOut, or nested too deep: all alike
        return 0


def _read(client: ClevertimClient, name: str, survey: ResourceSurvey) -> RawListing | None:
    """One read, its facts noted; None (and an endpoint_error) when it failed in any way."""
    started = time.monotonic()
    try:
        listing = client.list_raw(name)
    except ApiError as exc:
        _failed(survey, exc.status, type(exc).__name__, str(exc), started)
        return None
    except Exception as exc:  # the probe reports anything and goes on
        # Its class only: an unexpected error's text may quote what it met in a record.
        _failed(survey, None, type(exc).__name__, f"{type(exc).__name__} (unexpected)", started)
        return None
    content = listing.content
    survey.reads.append(
        ReadFacts(listing.status, len(content), listing.body_bytes, listing.wire_bytes, listing.seconds)
    )
    survey.headers = {
        k: v for k, v in listing.headers.items() if k in HEADERS_OF_INTEREST or k.startswith(_RATE_PREFIXES)
    }
    return listing


def _failed(survey: ResourceSurvey, status: int | None, cls: str, message: str, started: float) -> None:
    survey.reads.append(
        ReadFacts(status, 0, 0, 0, time.monotonic() - started, error=message, error_class=cls)
    )
    shape = f"{cls}" + (f" HTTP {status}" if status is not None else "")
    survey.tally.add("endpoint_error", None, None, shape)


def _header_findings(seen: Mapping[str, set[str]]) -> list[Finding]:
    out = []
    encodings = seen.get("content-encoding")
    if encodings:
        out.append(
            Finding("compressed", "*", None, len(encodings), [], ", ".join(sorted(encodings)), "decoded")
        )
    rate = sorted(k for k in seen if k.startswith(_RATE_PREFIXES) or k == "retry-after")
    if rate:
        out.append(
            Finding(
                "rate_limit_headers",
                "*",
                None,
                len(rate),
                [],
                ", ".join(rate),
                "the client waits out Retry-After; the other headers are for information",
            )
        )
    return out


# --- the human summary ---------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def summary(result: ProbeResult) -> list[str]:
    """A few lines for a person: per resource sizes and times, then each finding and what it means."""
    when = f"{result.started_at:%Y-%m-%d %H:%M} UTC, {result.seconds:.1f} s"
    lines = [f"probe of {result.server} ({when})"]
    lines.append(f"{'resource':<12} {'records':>9} {'bytes':>10} {'read 1':>8} {'read 2':>8}")
    for name, survey in result.surveys.items():
        reads = survey.reads
        if not reads:
            continue
        first = reads[0]
        if first.error is not None:
            lines.append(f"{name:<12} {'-':>9} {'-':>10}  {first.error_class} (HTTP {first.status or '-'})")
            continue
        second = f"{reads[1].seconds:.2f}s" if len(reads) > 1 and reads[1].error is None else "-"
        enc = survey.headers.get("content-encoding")
        lines.append(
            f"{name:<12} {first.records:>9} {_size(first.body_bytes):>10} {first.seconds:>7.2f}s {second:>8}"
            + (f"  ({enc})" if enc else "")
        )
    docs = result.documents()
    lines.append(
        f"documents: {docs['files_referenced']} file(s) and {docs['linked_files_referenced']} linked "
        f"file(s) referenced by records, {docs['contact_photos']} contact photo(s)"
        + "".join(
            f"; /{n}: "
            + (f"{e['records']} entries" if "records" in e else f"{e['error']} (HTTP {e['status']})")
            for n, e in docs["endpoints"].items()
        )
    )
    findings = result.findings()
    # The documents' endpoints are optional (issue 13): their errors are for information.
    worth = [
        f
        for f in findings
        if f.key not in INFO and not (f.key == "endpoint_error" and f.resource in DOCUMENT_RESOURCES)
    ]
    fine = [f for f in findings if f not in worth]
    if not worth:
        lines.append("no findings: the account looks as the mirror expects")
    # A NULL already explained by a variant of the same property is not said twice.
    explained = {(f.resource, f.prop) for f in worth if f.key != "typed_null"}
    worth = [f for f in worth if f.key != "typed_null" or (f.resource, f.prop) not in explained]
    for f in worth:
        where = f"{f.resource}.{f.prop}" if f.prop else f.resource
        what = VARIANTS.get(f.key, f.key)
        shapes = f" ({f.detail})" if f.detail else ""
        lines.append(f"  {f.key}: {where}: {what} in {f.count} record(s){shapes}: {f.mirror}")
    for f in fine:
        where = f"{f.resource}.{f.prop}" if f.prop else f.resource
        lines.append(f"  fine: {f.key}: {where}: {f.detail or VARIANTS.get(f.key, '')}")
    return lines
