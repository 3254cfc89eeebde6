"""The diff of one full listing against the mirror: pure, no I/O.

Owns: `record_hash` (the one canonical content hash), `MirrorIndex` (the mirror's {id: (hash,
lm)} of one resource, compact), `ListingDiff` (a listing read in batches + the index -> each
batch's inserts, updates, touches; the deletes once the listing has ended), `compute_changes`
(the same for a whole listing at once), `changed_fields` (the {field: [old, new]} of a history
row) and `mass_delete_refused` (the guard's rule).

Content decides, not `lm`: the hash excludes `lm`, so an `lm` bump with nothing else changed is a
"touch" (the stored raw and modified_at are refreshed, no history, not an update), and an edit
that forgot to bump `lm` is still an update. A record that disappears is a delete; if the same id
comes back later it is an insert again for the same record_id, so its history stays one
continuous line: insert, update..., delete, insert, ...

One entry never refuses the listing (clevertim_sync/entries.py names the reasons): one with no
usable id (missing, a word, a bool, a float), one that is not an object, one the parser could not
read (`entries.LeftOut`) or nested too deep to hash is left out and named in `Changes.skipped`, the
rest applies, and the ids it might have been are not deleted. An id served twice: the first copy
is diffed as usual and every later one goes to `Changes.duplicates`, for the store to keep the
copy `preferred` says (a rule of content, not of position). A numeric-string id ("445") is the
integer 445 (the record's identity; the record itself is kept as served). A resource whose ids are
text (`Resource.id_kind == "text"`: folders, files, linked files) keeps them as text: "f1001" is an
id, and an integer 7 is the id "7".
Server-computed lists (a contact's `notes`, a group's `users`, ...) are hashed sorted: a server
that serves them in another order on each read changes nothing.

Memory: a pull holds the index and one batch, never the listing. The index is 32 bytes per
mirrored record (ids in an array, hash and lm fingerprint in one buffer), the ids a listing has
shown are a byte per indexed record plus 8 bytes per new id while they come in order (a Python set
of the new ids only for a listing that is not in id order). An id is any hashable, sortable key:
integers in arrays; the text ids of the documents in plain lists and sets.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from clevertim_sync import jsontext, resources, shapes
from clevertim_sync.entries import REASONS, LeftOut

Record = dict[str, Any]
# The mirror's index of a resource: id -> (content hash, the stored lm in the form lm_key gives).
# Ids are ints, or strs for a text-id resource.
Index = Mapping[Any, tuple[str, Any]]
LmKey = Callable[[Mapping[str, Any]], Any]

EXCLUDED_FROM_HASH = "lm"
# The server-computed lists of ids (INT_LIST: notes, tasks, opportunities, cases, comments, files,
# lfiles, users): the same names are such lists in every resource that has them, so the hash needs
# no resource to know them.
UNORDERED_LISTS: tuple[str, ...] = tuple(
    sorted({p.api for r in resources.RESOURCES for p in r.props if p.kind is resources.Kind.INT_LIST})
)


def id_reader(resource: str) -> Callable[[Any], tuple[Any, str | None]]:
    """How `resource`'s records give their id by meaning, as the id column holds it ("445" is 445,
    a document's 7 is "7"): (the id, None) or (None, why there is none)."""
    return shapes.record_text_id if resource in resources.TEXT_ID_RESOURCES else shapes.record_id


def id_respeller(resource: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The record with its id spelled by meaning (a copy only when needed): what its content hash
    is taken of, so that "445" and 445 are one content. `raw` keeps the spelling served."""
    return shapes.with_text_id if resource in resources.TEXT_ID_RESOURCES else shapes.with_int_id


def record_hash(record: Mapping[str, Any]) -> str:
    """Canonical content hash: sorted-key JSON of the record without `lm`, with its server-computed
    lists sorted (UNORDERED_LISTS), blake2b-128 hex. The one hash of the project: the diff, the
    store (for a first load's rows), the writeback's fold and base all call it."""
    return record_digest(record).hex()


def record_digest(record: Mapping[str, Any]) -> bytes:
    """`record_hash` as its 16 bytes (what the diff compares with the index)."""
    content = dict(record)  # a C-level copy: far cheaper than a comprehension on the hot path
    content.pop(EXCLUDED_FROM_HASH, None)
    for key in UNORDERED_LISTS:
        value = content.get(key)
        if value.__class__ is list and len(value) > 1:
            content[key] = _sorted(value)
    try:  # jsontext.canonical's fast path, inlined: one call less a record on the pull's hot path
        text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        text = jsontext.canonical(content)
    return hashlib.blake2b(text, digest_size=16).digest()


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed spellings (445 and "446"): order by their JSON text, still canonical
        return sorted(values, key=jsontext.canonical)


def raw_lm(record: Mapping[str, Any]) -> Any:
    return record.get("lm")


# --- the mirror's index ------------------------------------------------------------------------

_DIGEST = 16  # bytes of a record_digest
_MASK = (1 << 64) - 1


def _digest_bytes(digest: str) -> bytes:
    """A stored content_hash that is not 32 hex digits (none is written so) as 16 bytes that no
    record's digest will equal by chance."""
    return hashlib.blake2b(digest.encode(), digest_size=_DIGEST).digest()


class MirrorIndex:
    """The mirror's {id: (content hash, lm)} of one resource, in 32 bytes per record: ids in an
    array, the 16 bytes of each hash in one buffer, a 64-bit fingerprint of each lm in another
    (equal values give equal fingerprints; different ones differ but for a 2^-64 chance, in which
    case an lm-only touch goes unnoticed: harmless).

    Built from (id, content_hash, lm) rows, best in id order (the store reads them so; a listing
    in id order then finds each id at the next position, without a search). `lm` is in whatever
    form the store's `lm_key` gives a record's `lm` (SQLite: its text; PostgreSQL: a datetime).
    """

    __slots__ = ("_digests", "_hint", "_ids", "_lms")

    def __init__(self, rows: Iterable[tuple[Any, str, Any]]) -> None:
        ids: array[int] | list[Any] = array("q")
        digests = bytearray()
        lms: array[int] = array("Q")
        fromhex = bytes.fromhex
        for rid, digest, lm in rows:
            if rid.__class__ is not int and isinstance(ids, array):
                ids = list(ids)  # a text id (or one beyond 64 bits): plain objects from here on
            ids.append(rid)
            try:
                raw = fromhex(digest)
            except ValueError:
                raw = b""
            digests += raw if len(raw) == _DIGEST else _digest_bytes(digest)
            lms.append(hash(lm) & _MASK)
        if any(a >= b for a, b in itertools.pairwise(ids)):
            order = sorted(range(len(ids)), key=ids.__getitem__)
            if any(ids[a] == ids[b] for a, b in itertools.pairwise(order)):
                raise ValueError("the mirror's index holds an id twice")
            ids = array("q", (ids[i] for i in order)) if isinstance(ids, array) else [ids[i] for i in order]
            digests = bytearray().join(digests[i * _DIGEST : (i + 1) * _DIGEST] for i in order)
            lms = array("Q", (lms[i] for i in order))
        self._ids = ids
        self._digests = bytes(digests)
        self._lms = lms
        self._hint = 0

    @classmethod
    def of(cls, mapping: Mapping[Any, tuple[str, Any]]) -> MirrorIndex:
        """An index from a {id: (hash, lm)} mapping (tests, a fold of a few records)."""
        return cls((rid, digest, lm) for rid, (digest, lm) in mapping.items())

    def __len__(self) -> int:
        return len(self._ids)

    def position(self, rid: Any) -> int:
        """Where `rid` is in the index, or -1."""
        ids, hint = self._ids, self._hint
        if hint < len(ids) and ids[hint] == rid:
            self._hint = hint + 1
            return hint
        try:
            pos = bisect.bisect_left(ids, rid)
        except TypeError:  # an id of another type than the index's: not in it
            return -1
        if pos < len(ids) and ids[pos] == rid:
            self._hint = pos + 1
            return pos
        return -1

    def digest_at(self, pos: int) -> bytes:
        """The content digest the mirror held for the record at `pos` when the index was read."""
        return self._digests[pos * _DIGEST : (pos + 1) * _DIGEST]

    def same(self, pos: int, digest: bytes, lm: Any) -> tuple[bool, bool]:
        """(same content, same lm) of the record at `pos` and a listed version of it (`digest`
        from `record_digest`, `lm` from the store's `lm_key`)."""
        start = pos * _DIGEST
        return self._digests[start : start + _DIGEST] == digest, self._lms[pos] == hash(lm) & _MASK

    def ids_not_in(self, seen: bytearray) -> Iterator[Any]:
        """The ids whose position is 0 in `seen` (one byte per position), in id order."""
        pos = seen.find(0)
        while pos >= 0:
            yield self._ids[pos]
            pos = seen.find(0, pos + 1)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._ids)


# --- the diff ----------------------------------------------------------------------------------


@dataclass
class Changes:
    """What one listing (or one batch of it) changes in one resource. Records are the listing's
    own dicts (no copies)."""

    # (record, hash); against an empty index the hash is None: the store computes it as it
    # builds the rows (a first sync hashes every record once).
    inserts: list[tuple[Record, str | None]] = field(default_factory=list)
    updates: list[tuple[Record, str]] = field(default_factory=list)
    touches: list[tuple[Record, str]] = field(default_factory=list)  # only lm differs
    deletes: list[Any] = field(default_factory=list)  # ints, or strs for a text-id resource
    unchanged: int = 0
    # Entries left out (no usable id, not an object, unreadable): why, one line each (the run and
    # `status` show them).
    skipped: list[str] = field(default_factory=list)
    # Later copies of an id already listed, with that id and their hash: the store keeps the
    # `preferred` copy.
    duplicates: list[tuple[Record, Any, str]] = field(default_factory=list)
    # Entries reported, by reason (entries.REASONS): the skipped ones and the duplicates.
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.inserts or self.updates or self.touches or self.deletes or self.duplicates)

    def report(self, reason: str, line: str | None = None) -> None:
        """Count one entry under `reason`; `line` (an entry left out): why, for `skipped`."""
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if line is not None:
            self.skipped.append(line)


def preferred(a: Mapping[str, Any], a_hash: str, b: Mapping[str, Any], b_hash: str, lm_key: LmKey) -> bool:
    """Whether copy `b` of a record served twice is kept rather than `a`: the newer `lm` (as the
    store reads it; none, or one it cannot read, is the oldest), then the greater content hash.
    The same copy wins whatever the order the server gave them in."""
    a_lm, b_lm = lm_key(a), lm_key(b)
    if a_lm != b_lm:
        if a_lm is None or b_lm is None:
            return a_lm is None
        return bool(b_lm > a_lm)
    return b_hash > a_hash


def _protected_id(record: Any) -> int | None:
    """The stored id a skipped entry may stand for (5.0, "5.0", " 5x" -> 5), kept from deletion."""
    rid = record.get("id") if isinstance(record, dict) else None
    if isinstance(rid, float) and rid.is_integer():
        return int(rid)
    if isinstance(rid, str):
        digits = "".join(c for c in rid.split(".")[0] if c.isascii() and c.isdigit())
        return shapes.as_int(digits) if digits else None
    return None


class _NewIds:
    """The ids a listing has shown that the index does not hold, to catch one shown twice: an
    array of 8-byte ids while they come in increasing order (then none can repeat), a set of
    them from the first one out of order (or the first that is not an integer)."""

    def __init__(self) -> None:
        self._ordered: array[int] = array("q")
        self._set: set[Any] | None = None

    def add(self, rid: Any) -> bool:
        """Record `rid`; False when it was seen before."""
        if self._set is None:
            ordered = self._ordered
            if rid.__class__ is int and (not ordered or rid > ordered[-1]):
                try:
                    ordered.append(rid)
                    return True
                except OverflowError:  # beyond 64 bits: a set can hold it
                    pass
            self._set = set(ordered)
            self._ordered = array("q")
        if rid in self._set:
            return False
        self._set.add(rid)
        return True


class ListingDiff:
    """The diff of one listing read in batches (a pull streams it): `batch()` gives each batch's
    inserts, updates, touches, unchanged, skipped and duplicate entries; `deletes()`, once the
    listing has ended, what the mirror holds that the listing did not. Holds which ids it has
    seen (see the module's docstring), never the records.

    `lm_key` turns a record's `lm` into the form the index holds (the store gives its stored
    timestamp), so that touches are found without reading raws.
    """

    def __init__(self, resource: str, index: MirrorIndex, *, lm_key: LmKey = raw_lm) -> None:
        self.resource = resource
        self.index = index
        self.lm_key = lm_key
        self.listed = 0  # entries read so far, skipped ones included
        self._seen = bytearray(len(index))  # 1 at the index position of each id listed
        self._new = _NewIds()
        self._protected: set[int] = set()  # ids a skipped entry may stand for: never deleted
        # Ids by meaning: integers ("445" is 445), or for the documents text ("f1001"; 7 is "7").
        self._text = resource in resources.TEXT_ID_RESOURCES
        self._read_id = id_reader(resource)
        self._respell = id_respeller(resource)
        # The id class taken as it is, without a call (a text id is always read: trimmed).
        self._plain: type | None = None if self._text else int

    def batch(self, records: Iterable[Any]) -> Changes:
        changes = Changes()
        index, seen, lm_key, plain = self.index, self._seen, self.lm_key, self._plain
        first_load = not index
        for record in records:
            self.listed += 1
            # A plain dict with a plain int id (what the parsers give) is checked inline: no call.
            rid = record.get("id") if record.__class__ is dict else None
            hashed = record  # what the hash is taken of: the record with its id by meaning
            if rid.__class__ is not plain:
                rid = self._usable_id(record, changes)
                if rid is None:
                    continue
                hashed = self._respell(record)  # kept as served: "445" stays "445" in raw
            try:
                digest = record_digest(hashed)
            except RecursionError:
                changes.report("unreadable", f"id {rid!r}: {REASONS['unreadable']}")
                self._protect(rid)
                continue
            pos = -1 if first_load else index.position(rid)
            if (pos >= 0 and seen[pos]) or (pos < 0 and not self._new.add(rid)):
                changes.duplicates.append((record, rid, digest.hex()))
                changes.report("duplicate_id")
                continue
            if pos < 0:
                changes.inserts.append((record, digest.hex()))
                continue
            seen[pos] = 1
            same_content, same_lm = index.same(pos, digest, lm_key(record))
            if not same_content:
                changes.updates.append((record, digest.hex()))
            elif not same_lm:
                changes.touches.append((record, digest.hex()))
            else:
                changes.unchanged += 1
        return changes

    def _usable_id(self, record: Any, changes: Changes) -> Any:
        """The id of an entry off the plain path, or None when it is left out (and reported)."""
        if isinstance(record, LeftOut):
            changes.report(record.reason, REASONS[record.reason])
            self._protect(record.maybe_id)
            return None
        rid, why = self._read_id(record)
        if rid is None:
            changes.report("no_id" if isinstance(record, dict) else "not_object", f"{why}: left out")
            if not self._text:
                self._protect(_protected_id(record))
        return rid

    def _protect(self, rid: Any) -> None:
        """An entry left out may stand for `rid`: it is not deleted (the record may still exist)."""
        if rid is not None:
            self._protected.add(rid)

    def position(self, rid: Any) -> int:
        """Where `rid` is in the index (-1: the mirror did not hold it before this listing)."""
        return self.index.position(rid)

    def deletes(self) -> list[Any]:
        """The mirrored ids the whole listing did not hold (call once it has been read to its end),
        but for those an entry left out may stand for."""
        protected = self._protected
        return [rid for rid in self.index.ids_not_in(self._seen) if rid not in protected]


def compute_changes(
    resource: str,
    listing: Iterable[Any],
    index: MirrorIndex | Mapping[Any, tuple[str, Any]],
    *,
    lm_key: Callable[[Mapping[str, Any]], Any] = raw_lm,
) -> Changes:
    """Compare a whole listing with the mirror's index in one go (`ListingDiff` in one batch)."""
    if not isinstance(index, MirrorIndex):
        index = MirrorIndex.of(index)
    diff = ListingDiff(resource, index, lm_key=lm_key)
    changes = diff.batch(listing)
    changes.deletes = diff.deletes()
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
