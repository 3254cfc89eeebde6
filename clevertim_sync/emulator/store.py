"""The emulated account: records in memory, the API's rules, server-set fields, visibility.

Owns: every record (per resource, by id) as its orjson bytes, which are the only copy: a listing
is a join of bytes, so serving 100,000 contacts costs a join, not 100,000 dumps, and the account
takes about its JSON size in memory; a write loads the one record, changes it and dumps it again
(and its parents, whose back-reference lists change). Also the id sequences
(contacts and companies share one: "customers"), the back-reference lists kept incrementally
(parent -> set of child ids), the tokens and what each token's user may see, and two ways in:
`api_*` (the REST API's rules: validation, read-only properties ignored, `lm` bumped) and
`control_*` (a person in the web UI: no rules, `lm` set or left alone at will).


Choices where the reference is silent (documented so tests can pin them):
- A child write changes its parents' back-reference lists but not their `lm`.
- Back-reference lists hold every child id, including children this token cannot see.
- A REF in a write must be an integer id of an existing record (any visibility), else 400;
  an update that sends a REF unchanged passes even if it dangles (the vendor client PUTs all).
- Visibility: `is_private` -> only `puser` sees it; else a non-zero `gid` -> only members of one
  of those groups; else everyone. No admin bypass.
"""

from __future__ import annotations

import contextlib
import threading
import time
from calendar import timegm
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from clevertim_sync import resources
from clevertim_sync.emulator import documents
from clevertim_sync.emulator import seed as seeding
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.resources import Kind

Record = dict[str, Any]
ISO = "%Y-%m-%dT%H:%M:%SZ"


class ApiProblem(ClevertimSyncError):
    """A request the emulator answers with an error status; server.py turns it into the envelope."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


@dataclass(frozen=True)
class TokenUser:
    user_id: int
    read_only: bool = False


# Back-reference links, deduplicated: (parent family, list property, child resource, pointer).
# Contacts and companies form one family "customer" since they share an id space.
def _family(resource_name: str) -> str:
    return "customer" if resource_name in resources.CUSTOMER_RESOURCES else resource_name


_LINKS: tuple[tuple[str, str, str, str], ...] = tuple(
    dict.fromkeys((_family(p), prop, child, ptr) for p, prop, child, ptr in resources.BACK_REFERENCES)
)
_LINKS_BY_CHILD: dict[str, tuple[tuple[str, str, str], ...]] = {
    child: tuple((fam, prop, ptr) for fam, prop, c, ptr in _LINKS if c == child) for _, _, child, _ in _LINKS
}
# The back-reference and other server-computed lists every record of a parent resource carries.
_COMPUTED_LISTS: dict[str, tuple[str, ...]] = {
    r.name: tuple(p.api for p in r.props if p.kind is Kind.INT_LIST and p.read_only)
    for r in resources.RESOURCES
}
_READ_ONLY: dict[str, frozenset[str]] = {
    r.name: frozenset({"id", "is_company"} | {p.api for p in r.props if p.read_only})
    for r in resources.RESOURCES
}
_HAS_USER_ID = frozenset(r.name for r in resources.RESOURCES if "userId" in r.by_api)
_SEQUENCE = {r.name: _family(r.name) for r in resources.RESOURCES}


def _pointer_ids(value: Any) -> list[int]:
    """The ids a pointer holds: an int, or a list of ints (the vendor client sends note.cust as one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _sees(entry: tuple[bool, Any, int], user_id: int, group_mask: int) -> bool:
    """The visibility rule for a restricted record's (is_private, puser, gid): private records
    are their puser's alone; otherwise a group mask admits members of any of those groups."""
    private, puser, gid = entry
    if private:
        return bool(puser == user_id)
    return not (isinstance(gid, int) and gid and not gid & group_mask)


def serialize(rec: Record) -> bytes:
    """A record's JSON bytes, exactly sized: orjson returns bytes with a buffer of 4 KiB or more,
    which for 220,000 kept records would be a gigabyte of slack."""
    return bytes(bytearray(orjson.dumps(rec)))  # measured faster than memoryview(...).tobytes()


def now_iso(after: str | None = None) -> str:
    """The current UTC time, strictly after `after`: `lm` must move on every write."""
    now = int(time.time())
    if after:
        with contextlib.suppress(ValueError):  # an odd lm set through the control surface
            now = max(now, timegm(time.strptime(after, ISO)) + 1)
    return time.strftime(ISO, time.gmtime(now))


class Store:
    """The account. Every public method takes the lock: the HTTP server is multi-threaded."""

    def __init__(self, *, contacts: int, seed: int, tokens: Mapping[str, TokenUser]) -> None:
        self.lock = threading.RLock()
        self._default_tokens = dict(tokens)
        self.tokens: dict[str, TokenUser] = dict(tokens)
        self.blobs: dict[str, dict[int, bytes]] = {}
        self._restricted: dict[str, dict[int, tuple[bool, Any, int]]] = {}
        self._children: dict[tuple[str, str], dict[int, set[int]]] = {}
        self._next_id: dict[str, int] = {}
        self._group_mask: dict[int, int] = {}
        self.contacts, self.seed = contacts, seed
        self.reset(contacts=contacts, seed=seed)

    # --- loading ------------------------------------------------------------------------------

    def reset(self, *, contacts: int | None = None, seed: int | None = None) -> None:
        """Replace the account with a freshly seeded one; tokens go back to the defaults."""
        contacts = self.contacts if contacts is None else contacts
        seed = self.seed if seed is None else seed
        with self.lock:
            self.contacts, self.seed = contacts, seed
            self.tokens = dict(self._default_tokens)
            self._load(seeding.iter_records(contacts, seed))

    def _load(self, records: Iterable[tuple[str, Record]]) -> None:
        """Take records children first (seed.iter_records' order): each parent's back-reference
        lists are complete when it arrives, so it is serialized once and its dict dropped."""
        self.blobs = {r.name: {} for r in resources.RESOURCES}
        self._restricted = {r.name: {} for r in resources.RESOURCES}
        self._children = {(fam, prop): {} for fam, prop, _, _ in _LINKS}
        self._next_id = {}
        # Resolved once per resource rather than per record: this loop runs 220,000 times.
        computed = {
            name: [(prop, self._children.get((_family(name), prop))) for prop in props]
            for name, props in _COMPUTED_LISTS.items()
        }
        links = {
            name: [(self._children[(fam, prop)], ptr) for fam, prop, ptr in child_links]
            for name, child_links in _LINKS_BY_CHILD.items()
        }
        dumps, empty = serialize, ()
        for name, rec in records:
            rid = rec["id"]
            for prop, kids in computed[name]:
                if kids is not None:
                    rec[prop] = sorted(kids.get(rid, empty))
                elif name != "group":
                    rec.setdefault(prop, [])
            for kids, ptr in links.get(name, empty):
                value = rec.get(ptr)
                if type(value) is int:
                    kids.setdefault(value, set()).add(rid)
                elif value is not None:
                    for pid in _pointer_ids(value):
                        kids.setdefault(pid, set()).add(rid)
            if rec.get("is_private") or (rec.get("gid") and name != "group"):
                self._index_visibility(name, rid, rec)
            self.blobs[name][rid] = dumps(rec)
        for name, table in self.blobs.items():
            numbers = [k for k in table if isinstance(k, int)]  # a folder's "f1001": no sequence
            if numbers:
                self._note_id(name, max(numbers))
        self._rebuild_group_masks()

    def _note_id(self, name: str, rid: int) -> None:
        seq = _SEQUENCE[name]
        self._next_id[seq] = max(self._next_id.get(seq, 1), rid + 1)

    def _fill_computed(self, name: str, rec: Record) -> None:
        """Set the server-computed lists of `rec` from the children index."""
        fam = _family(name)
        for prop in _COMPUTED_LISTS[name]:
            kids = self._children.get((fam, prop))
            if kids is not None:
                rec[prop] = sorted(kids.get(rec["id"], ()))
            elif name != "group":  # files, lfiles: as seeded (emulator/documents.py), else empty
                rec.setdefault(prop, [])

    def _index_visibility(self, name: str, rid: int, rec: Record) -> None:
        gid = 0 if name == "group" else rec.get("gid") or 0  # a group's gid is its own bit
        if rec.get("is_private") or gid:
            self._restricted[name][rid] = (bool(rec.get("is_private")), rec.get("puser"), gid)
        else:
            self._restricted[name].pop(rid, None)

    def _rebuild_group_masks(self) -> None:
        masks: dict[int, int] = {}
        for group in map(orjson.loads, self.blobs["group"].values()):
            bit = group.get("gid") or 0
            for uid in _pointer_ids(group.get("users")):
                masks[uid] = masks.get(uid, 0) | (bit if isinstance(bit, int) else 0)
        self._group_mask = masks

    # --- visibility ---------------------------------------------------------------------------

    def token_user(self, token: str) -> TokenUser | None:
        with self.lock:
            return self.tokens.get(token)

    def add_token(self, token: str, user_id: int, *, read_only: bool = False) -> None:
        with self.lock:
            self.tokens[token] = TokenUser(user_id, read_only)

    def _hidden_ids(self, name: str, user_id: int | None) -> set[int]:
        """Ids of `name` the user may not see (None: the web UI sees all)."""
        if user_id is None:
            return set()
        mask = self._group_mask.get(user_id, 0)
        return {rid for rid, entry in self._restricted[name].items() if not _sees(entry, user_id, mask)}

    def _visible(self, name: str, rid: int, user_id: int | None) -> bool:
        """Whether the record exists and `user_id` may see it (None: the web UI sees all)."""
        if rid not in self.blobs[name]:
            return False
        entry = self._restricted[name].get(rid)
        return entry is None or user_id is None or _sees(entry, user_id, self._group_mask.get(user_id, 0))

    # --- reading ------------------------------------------------------------------------------

    def listing_parts(
        self, name: str, user_id: int | None, hide: Callable[[Any], bool] | None = None
    ) -> list[bytes]:
        """The JSON of every record `user_id` sees, one bytes object each, in id order of creation.

        A snapshot taken under the lock: the bytes are immutable, so the caller can join and send
        them after the lock is released while writes go on.
        """
        with self.lock:
            blobs = self.blobs[name]
            hidden = self._hidden_ids(name, user_id)
            if not hidden and hide is None:
                return list(blobs.values())
            return [b for rid, b in blobs.items() if rid not in hidden and not (hide and hide(rid))]

    def listing(
        self, name: str, user_id: int | None, hide: Callable[[Any], bool] | None = None
    ) -> tuple[bytes, int]:
        """The JSON array of every record `user_id` sees (bytes), and how many records it holds."""
        parts = self.listing_parts(name, user_id, hide)
        return b"[" + b",".join(parts) + b"]", len(parts)

    def state(self, user_id: int | None) -> bytes:
        """Every resource's listing as one JSON object {resource: [records]}."""
        with self.lock:
            parts = [b'"' + name.encode() + b'":' + self.listing(name, user_id)[0] for name in self.blobs]
        return b"{" + b",".join(parts) + b"}"

    def blob(self, name: str, rid: int, user_id: int | None) -> bytes:
        """One record's bytes, or ApiProblem 404 when it does not exist or is hidden from the user."""
        with self.lock:
            if not self._visible(name, rid, user_id):
                raise ApiProblem(404, f"{name} {rid} not found")
            return self.blobs[name][rid]

    def record(self, name: str, rid: int) -> Record:
        """A copy of one record (control surface and tests)."""
        return dict(orjson.loads(self.blob(name, rid, None)))

    def count(self, name: str) -> int:
        with self.lock:
            return len(self.blobs[name])

    # --- the API's rules ----------------------------------------------------------------------

    def check_writable(self, name: str, tok: TokenUser) -> resources.Resource:
        res = resources.get(name)
        if not res.writable:
            raise ApiProblem(400, f"{name} is read-only in the API: it cannot be created, updated or deleted")
        if tok.read_only:
            raise ApiProblem(400, "permission denied: this user has read-only access and cannot write")
        return res

    def _check_refs(
        self, res: resources.Resource, body: Mapping[str, Any], old: Mapping[str, Any] | None = None
    ) -> None:
        """400 for a reference that is not an id of an existing record. An update that sends a
        reference unchanged (a whole entry PUT back as read) passes even if it dangles now."""
        for key, value in body.items():
            prop = res.by_api.get(key)
            if prop is None or prop.kind is not Kind.REF or prop.read_only or value is None:
                continue
            if old is not None and old.get(key) == value:
                continue
            ids = _pointer_ids(value)
            list_ok = res.name == "note" and key == "cust" and isinstance(value, list)
            if (not ids and not list_ok) or (not list_ok and isinstance(value, list)):
                raise ApiProblem(400, f"{key} must be an integer id or null, not {value!r}")
            if len(ids) != (len(value) if isinstance(value, list) else 1):
                raise ApiProblem(400, f"{key} must hold integer ids, not {value!r}")
            target = prop.target or ""
            tables = resources.CUSTOMER_RESOURCES if target == "customer" else (target,)
            for rid in ids:
                if not any(rid in self.blobs.get(t, {}) for t in tables):
                    raise ApiProblem(400, f"{key} points at {target} {rid}, which does not exist")

    def api_create(self, name: str, body: Any, tok: TokenUser) -> bytes:
        with self.lock:
            res = self.check_writable(name, tok)
            if not isinstance(body, dict):
                raise ApiProblem(400, f"the body of a {name} create must be a JSON object")
            for alternatives in res.required_on_create:
                if not any(body.get(a) not in (None, "") for a in alternatives):
                    raise ApiProblem(400, f"missing required property: {' or '.join(alternatives)}")
            if name == "comment" and (body.get("nid") is None) == (body.get("tid") is None):
                raise ApiProblem(400, "a comment must be on exactly one of a note (nid) or a task (tid)")
            self._check_refs(res, body)
            fields = {k: v for k, v in body.items() if k not in _READ_ONLY[name]}
            stamp = now_iso()
            fields["ao"] = fields["lm"] = stamp
            if name in _HAS_USER_ID:
                fields["userId"] = tok.user_id
            fields.setdefault("is_private", False)
            if name == "note":
                fields.setdefault("type", "N")
            if fields["is_private"] and fields.get("puser") is None:
                fields["puser"] = tok.user_id
            return self._insert(name, None, fields)

    def api_update(self, name: str, rid: int, body: Any, tok: TokenUser) -> bytes:
        with self.lock:
            res = self.check_writable(name, tok)
            if not self._visible(name, rid, tok.user_id):
                raise ApiProblem(404, f"{name} {rid} not found")
            if not isinstance(body, dict):
                raise ApiProblem(400, f"the body of a {name} update must be a JSON object")
            old = self._load_one(name, rid)
            self._check_refs(res, body, old)
            fields = {k: v for k, v in body.items() if k not in _READ_ONLY[name]}
            if fields.get("is_private") and fields.get("puser", old.get("puser")) is None:
                fields["puser"] = tok.user_id
            fields["lm"] = now_iso(after=old.get("lm"))
            return self._modify(name, rid, fields)

    def api_delete(self, name: str, rid: int, tok: TokenUser) -> None:
        with self.lock:
            self.check_writable(name, tok)
            if not self._visible(name, rid, tok.user_id):
                raise ApiProblem(404, f"{name} {rid} not found")
            self._remove(name, rid)

    # --- the web UI: no rules -----------------------------------------------------------------

    def control_create(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Create as a person would in the web UI: any fields, `id`, `ao`, `lm`, `userId` may be given."""
        with self.lock:
            resources.get(name)
            rid = record.get("id")
            family = resources.CUSTOMER_RESOURCES if _family(name) == "customer" else (name,)
            kind = (str, int) if name in resources.TEXT_ID_RESOURCES else int
            if rid is not None and (not isinstance(rid, kind) or any(rid in self.blobs[f] for f in family)):
                raise ApiProblem(400, f"id must be an id not yet used by {name}, not {rid!r}")
            fields = {k: v for k, v in record.items() if k not in ("id", *_COMPUTED_LISTS[name])}
            stamp = now_iso()
            fields.setdefault("ao", stamp)
            fields.setdefault("lm", stamp)
            if name in _HAS_USER_ID:
                fields.setdefault("userId", seeding.OWNER)
            return self._insert(name, rid, fields)

    def control_update(
        self, name: str, rid: int, fields: Mapping[str, Any], *, bump_lm: bool, unset: Iterable[str] = ()
    ) -> bytes:
        """Update as the web UI would; `lm` as given, else bumped unless bump_lm is false; the
        properties in `unset` are removed altogether (missing, not null)."""
        with self.lock:
            resources.get(name)
            if rid not in self.blobs[name]:
                raise ApiProblem(404, f"{name} {rid} not found")
            changes = {k: v for k, v in fields.items() if k not in ("id", *_COMPUTED_LISTS[name])}
            if "lm" not in changes and bump_lm:
                changes["lm"] = now_iso(after=self._load_one(name, rid).get("lm"))
            return self._modify(name, rid, changes, unset=[k for k in unset if k not in ("id", "lm", "ao")])

    def control_delete(self, name: str, rid: int) -> None:
        with self.lock:
            resources.get(name)
            if rid not in self.blobs[name]:
                raise ApiProblem(404, f"{name} {rid} not found")
            self._remove(name, rid)

    # --- the one write path under both --------------------------------------------------------

    def _insert(self, name: str, rid: Any, fields: Mapping[str, Any]) -> bytes:
        if rid is None and name == "folder":  # folder ids are text: f1001, f1002, ...
            rid = documents.next_folder_id(self.blobs[name])
        elif rid is None:
            seq = _SEQUENCE[name]
            rid = self._next_id.get(seq, 1)
        if isinstance(rid, int):
            self._note_id(name, rid)
        rec: Record = {"id": rid, **fields}
        if name in resources.CUSTOMER_RESOURCES:
            rec["is_company"] = name == "company"
            rec.setdefault("lc", None)  # never contacted yet, no photo: as the seeded records say
            rec.setdefault("cphoto", None)
        if name == "note" and "hl" not in fields:
            rec["hl"] = seeding.headline(str(rec.get("desc") or ""))
        self._fill_computed(name, rec)
        self._link(name, rid, {}, rec)
        return self._commit(name, rid, rec)

    def _modify(self, name: str, rid: int, changes: Mapping[str, Any], unset: Iterable[str] = ()) -> bytes:
        old = self._load_one(name, rid)
        rec = {**old, **changes}
        for key in unset:
            rec.pop(key, None)
        if name == "note" and "desc" in changes and "hl" not in changes:
            rec["hl"] = seeding.headline(str(rec.get("desc") or ""))
        self._link(name, rid, old, rec)
        return self._commit(name, rid, rec)

    def _remove(self, name: str, rid: int) -> None:
        rec = self._load_one(name, rid)
        del self.blobs[name][rid]
        self._restricted[name].pop(rid, None)
        self._link(name, rid, rec, {})
        if name == "group":
            self._rebuild_group_masks()

    def _load_one(self, name: str, rid: int) -> Record:
        rec: Record = orjson.loads(self.blobs[name][rid])
        return rec

    def _commit(self, name: str, rid: int, rec: Record) -> bytes:
        blob = self.blobs[name][rid] = serialize(rec)
        self._index_visibility(name, rid, rec)
        if name == "group":
            self._rebuild_group_masks()
        return blob

    def _link(self, name: str, rid: int, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """Move `rid` between its parents' back-reference sets; re-serialize only the parents touched."""
        for fam, prop, ptr in _LINKS_BY_CHILD.get(name, ()):
            before, after = set(_pointer_ids(old.get(ptr))), set(_pointer_ids(new.get(ptr)))
            if before == after:
                continue
            kids = self._children[(fam, prop)]
            for pid in before - after:
                kids.get(pid, set()).discard(rid)
            for pid in after - before:
                kids.setdefault(pid, set()).add(rid)
            self._refresh_parents(fam, prop, before ^ after)

    def _refresh_parents(self, fam: str, prop: str, parent_ids: Iterable[int]) -> None:
        names = resources.CUSTOMER_RESOURCES if fam == "customer" else (fam,)
        kids = self._children[(fam, prop)]
        for pid in parent_ids:
            for pname in names:
                if pid in self.blobs[pname]:
                    parent = self._load_one(pname, pid)
                    parent[prop] = sorted(kids.get(pid, ()))
                    self.blobs[pname][pid] = serialize(parent)
