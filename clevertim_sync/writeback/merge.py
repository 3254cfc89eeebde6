"""Pure three-way field merge of a local edit against the remote record and the edit's base.

Owns: deciding, field by field, what an update sends (`merge`), how several queued updates of
one record coalesce into one (`coalesce`), and when a created record is "the one we sent"
(`matches_sent`). No I/O: the worker feeds it dicts and acts on the answer.


For each field the edit writes, with b = the base value (the mirror's record when the edit was
queued), l = the local value and r = the remote value just read:

    l == r            nothing to send (already so, or our own earlier write landed)
    r == b            changed only locally: send l
    otherwise         changed on both sides: the policy decides
                        manual      send nothing for it; the item goes to `conflict`
                        local-wins  send l
                        remote-wins send nothing
                      and the losing value is kept in the conflict record either way.

Fields the edit does not write are never sent, so a newer remote value of a field we did not
change is never clobbered. Values are compared by meaning (`shapes.same_meaning`: 1 is true,
"445" is 445, "4500" is 4500.0, " a " is "a"), not by their JSON spelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from clevertim_sync import resources, shapes
from clevertim_sync.resources import Prop

Policy = Literal["manual", "local-wins", "remote-wins"]
POLICIES: tuple[Policy, ...] = ("manual", "local-wins", "remote-wins")


def loosely_same(a: Any, b: Any, prop: Prop | None = None) -> bool:
    """The same value by meaning (1 and true, "445" and 445, "4500" and 4500.0), as `prop` reads it."""
    return shapes.same_meaning(prop, a, b)


def _props(resource: str | None) -> Mapping[str, Prop]:
    res = resources.BY_NAME.get(resource) if resource is not None else None
    return res.by_api if res is not None else {}


# What tells a created record apart from others of its kind: a lost create's candidate that
# matches on these (after normalising) is the one it made, if it is the only one.
IDENTIFYING: Mapping[str, tuple[str, ...]] = {
    "contact": ("fn", "ln"),
    "company": ("cn",),
    "note": ("cust", "desc"),
    "task": ("name",),
    "opportunity": ("name",),
    "case": ("name",),
    "comment": ("comment", "nid", "tid"),
    "customfield": ("name",),
}


@dataclass(frozen=True)
class Conflict:
    """One field changed on both sides: the three values, and which side the policy picked."""

    base: Any
    local: Any
    remote: Any
    winner: Literal["none", "local", "remote"]  # "none": manual, waiting for `queue resolve`

    def as_json(self) -> dict[str, Any]:
        return {"base": self.base, "local": self.local, "remote": self.remote, "winner": self.winner}


@dataclass(frozen=True)
class MergeResult:
    send: dict[str, Any]  # what the PUT carries; empty: nothing to send
    conflicts: dict[str, Conflict] = field(default_factory=dict)

    @property
    def needs_resolution(self) -> bool:
        """True when the policy left at least one field for a person to decide (manual)."""
        return any(c.winner == "none" for c in self.conflicts.values())


def merge(
    local: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    remote: Mapping[str, Any],
    policy: Policy = "manual",
    *,
    resource: str | None = None,
) -> MergeResult:
    """Three-way merge of the fields in `local` (see the module docstring).

    `base` None, or a field missing from it, means the version the edit was made against is
    unknown (an edit queued by SQL for a record the mirror does not hold): such a field is taken
    as a local change when it differs. A base record's absent property is passed as None.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown conflict policy {policy!r}: use one of {', '.join(POLICIES)}")
    props = _props(resource)
    send: dict[str, Any] = {}
    conflicts: dict[str, Conflict] = {}
    for key, l_value in local.items():
        r_value = remote.get(key)
        prop = props.get(key)
        if loosely_same(l_value, r_value, prop):
            continue
        if base is None or key not in base or loosely_same(r_value, base[key], prop):
            send[key] = l_value
            continue
        b_value = base[key]
        if policy == "local-wins":
            send[key] = l_value
            conflicts[key] = Conflict(b_value, l_value, r_value, "local")
        elif policy == "remote-wins":
            conflicts[key] = Conflict(b_value, l_value, r_value, "remote")
        else:
            conflicts[key] = Conflict(b_value, l_value, r_value, "none")
    return MergeResult(send, conflicts)


@dataclass(frozen=True)
class Edit:
    """One queued update as the merge sees it: the fields it writes and the base it was made on."""

    fields: Mapping[str, Any]
    base: Mapping[str, Any] | None


def coalesce(edits: Iterable[Edit]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Several updates of one record, oldest first, as one: later values win.

    Each field's base comes from the edit whose value wins: that is the version its author saw.
    (Taking the oldest edit's base instead would call a field conflicting that the author of the
    newer edit had already seen change remotely.) Returns (fields, per-field base or None when no
    edit knew its base).
    """
    fields: dict[str, Any] = {}
    base: dict[str, Any] = {}
    known = False
    for edit in edits:
        for key, value in edit.fields.items():
            fields[key] = value
            if edit.base is not None:
                known = True
                base[key] = edit.base.get(key)
            else:
                base.pop(key, None)
    return fields, (base if known else None)


def _worth_matching(value: Any) -> bool:
    return value not in (None, "", [], {})


def matches_sent(record: Mapping[str, Any], sent: Mapping[str, Any], resource: str | None = None) -> bool:
    """Whether a record found on the server carries every field value a create sent.

    Used to adopt the record a lost POST made. Compared after normalising as a server does
    (booleans, numeric strings, whitespace, a note's HTML against its plain text). Empty values
    are skipped: servers fill or drop them.
    """
    props = _props(resource)
    return all(
        shapes.same_meaning(props.get(key), record.get(key), value, loose=True)
        for key, value in sent.items()
        if _worth_matching(value)
    )


def matches_identity(record: Mapping[str, Any], sent: Mapping[str, Any], resource: str) -> bool:
    """Whether a record matches a create on the fields that identify its kind (IDENTIFYING),
    normalised as in `matches_sent`; False when the create sent none of them."""
    props = _props(resource)
    keys = [k for k in IDENTIFYING.get(resource, ()) if _worth_matching(sent.get(k))]
    return bool(keys) and all(
        shapes.same_meaning(props.get(k), record.get(k), sent[k], loose=True) for k in keys
    )
