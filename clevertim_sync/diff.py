"""The diff of one full listing against the mirror: pure, no I/O.

Owns: `record_hash` (the one canonical content hash), `compute_changes` (listing + mirror index ->
inserts, updates, deletes, touches), `changed_fields` (the {field: [old, new]} of a history row),
`mass_delete_refused` (the guard's rule) and `apply_changes` (what applying means, for tests).

Content decides, not `lm`: the hash excludes `lm`, so an `lm` bump with nothing else changed is a
"touch" (the stored raw and modified_at are refreshed, no history, not an update), and an edit
that forgot to bump `lm` is still an update. A record that disappears is a delete; if the same id
comes back later it is an insert again for the same record_id, so its history stays one
continuous line: insert, update..., delete, insert, ...

A record with no usable id (missing, a word, a bool, a float) never refuses the listing: it is
left out and named in `Changes.skipped`, the rest applies, and the ids it might have been are not
deleted. A numeric-string id ("445") is the integer 445 (the record is stored under that spelling).
A resource whose ids are text (`Resource.id_kind == "text"`: folders, files, linked files) keeps
them as text: "f1001" is an id, and an integer 7 is the id "7".
Server-computed lists (a contact's `notes`, a group's `users`, ...) are hashed sorted: a server
that serves them in another order on each read changes nothing.

Must not import: httpx, SQLAlchemy, anything that does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from clevertim_sync import resources, shapes
from clevertim_sync.errors import InvalidListing

Record = dict[str, Any]
# The mirror's index of a resource: id -> (content hash, the stored lm in the form lm_key gives).
# Ids are ints, or strs for a text-id resource.
Index = Mapping[Any, tuple[str, Any]]

EXCLUDED_FROM_HASH = "lm"
# The server-computed lists of ids (INT_LIST: notes, tasks, opportunities, cases, comments, files,
# lfiles, users): the same names are such lists in every resource that has them, so the hash needs
# no resource to know them.
UNORDERED_LISTS: tuple[str, ...] = tuple(
    sorted({p.api for r in resources.RESOURCES for p in r.props if p.kind is resources.Kind.INT_LIST})
)


def record_hash(record: Mapping[str, Any]) -> str:
    """Canonical content hash: sorted-key JSON of the record without `lm`, with its server-computed
    lists sorted (UNORDERED_LISTS), blake2b-128 hex. The one hash of the project: the diff, the
    row-building worker of a first load, the writeback's fold and base all call it."""
    content = dict(record)  # a C-level copy: far cheaper than a comprehension on the hot path
    content.pop(EXCLUDED_FROM_HASH, None)
    for key in UNORDERED_LISTS:
        value = content.get(key)
        if value.__class__ is list and len(value) > 1:
            content[key] = _sorted(value)
    return hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed spellings (445 and "446"): order by their JSON text, still canonical
        return sorted(values, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))


def raw_lm(record: Mapping[str, Any]) -> Any:
    return record.get("lm")


@dataclass
class Changes:
    """What one listing changes in one resource. Records are the listing's own dicts (no copies)."""

    # (record, hash); against an empty index the hash is None: the store computes it as it
    # builds the rows (a first sync hashes every record once, in the store's worker process).
    inserts: list[tuple[Record, str | None]] = field(default_factory=list)
    updates: list[tuple[Record, str]] = field(default_factory=list)
    touches: list[tuple[Record, str]] = field(default_factory=list)  # only lm differs
    deletes: list[Any] = field(default_factory=list)  # ints, or strs for a text-id resource
    unchanged: int = 0
    # Entries left out for having no usable id: why, one line each (the run and `status` show them).
    skipped: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.inserts or self.updates or self.touches or self.deletes)


def _protected_id(record: Any) -> int | None:
    """The stored id a skipped entry may stand for (5.0, "5.0", " 5x" -> 5), kept from deletion."""
    rid = record.get("id") if isinstance(record, dict) else None
    if isinstance(rid, float) and rid.is_integer():
        return int(rid)
    if isinstance(rid, str):
        digits = "".join(c for c in rid.split(".")[0] if c.isascii() and c.isdigit())
        return shapes.as_int(digits) if digits else None
    return None


def compute_changes(
    resource: str,
    listing: Iterable[Any],
    index: Index,
    *,
    lm_key: Callable[[Mapping[str, Any]], Any] = raw_lm,
) -> Changes:
    """Compare a full listing with the mirror's index; raise InvalidListing when an id appears
    twice (which record is the real one cannot be told). Entries with no usable id are skipped.

    `lm_key` turns a record's `lm` into the form the index holds (the store gives its stored
    timestamp), so that touches are found without reading every stored raw.
    """
    changes = Changes()
    seen: set[Any] = set()
    protected: set[Any] = set()
    # Ids by meaning: integers ("445" is 445), or for the documents text ("f1001"; 7 is "7").
    text = resource in resources.TEXT_ID_RESOURCES
    read_id, respell = (
        (shapes.record_text_id, shapes.with_text_id) if text else (shapes.record_id, shapes.with_int_id)
    )
    plain = None if text else int  # the id class taken as it is (a text id is always read: trimmed)
    for record in listing:
        # A plain dict with a plain int id (what orjson gives) is checked inline: no call per record.
        rid = record.get("id") if record.__class__ is dict else None
        if rid.__class__ is not plain:
            rid, why = read_id(record)
            if rid is None:
                changes.skipped.append(f"{why}: left out")
                if not text and (maybe := _protected_id(record)) is not None:
                    protected.add(maybe)
                continue
            record = respell(record)  # noqa: PLW2901 - "445" is stored as 445
        if rid in seen:
            raise InvalidListing(resource, f"id {rid!r} appears more than once")
        seen.add(rid)
        if not index:
            changes.inserts.append((record, None))
            continue
        digest = record_hash(record)
        known = index.get(rid)
        if known is None:
            changes.inserts.append((record, digest))
        elif known[0] != digest:
            changes.updates.append((record, digest))
        elif known[1] != lm_key(record):
            changes.touches.append((record, digest))
        else:
            changes.unchanged += 1
    changes.deletes = sorted(rid for rid in index if rid not in seen and rid not in protected)
    return changes


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for every top-level property whose value differs (absent = None), not lm."""
    out: dict[str, list[Any]] = {}
    for key in sorted(old.keys() | new.keys()):
        if key == EXCLUDED_FROM_HASH:
            continue
        before, after = old.get(key), new.get(key)
        if before != after or (key in old) != (key in new):
            out[key] = [before, after]
    return out


def mass_delete_refused(
    *, deletes: int, mirrored: int, listed: int, threshold: float, min_records: int
) -> bool:
    """The guard: refuse a listing that would delete too much of what is mirrored.

    An empty listing of a non-empty mirror is always refused (an outage or a permission change
    looks exactly like that); otherwise, with at least `min_records` mirrored, deleting more than
    `threshold` of them is refused.
    """
    if deletes == 0:
        return False
    if listed == 0:
        return True
    return mirrored >= min_records and deletes > threshold * mirrored


def apply_changes(state: Mapping[Any, Record], changes: Changes) -> dict[Any, Record]:
    """The new {id: record} after `changes`: what the store does to its tables, stated purely."""
    out = dict(state)
    for rid in changes.deletes:
        del out[rid]
    for record, _ in (*changes.inserts, *changes.updates, *changes.touches):
        out[record["id"]] = record
    return out
