"""Emulator quirks: the plausible ways a real Clevertim differs from our reading of its docs.

Owns: the quirk registry (name, what it does, and for a transport quirk the fault spec that acts
it out), parsing `--quirks NAME[,NAME...]|all`, the set of active quirks, and the rendering of
what the API serves under the data quirks: every read answer (listing, GET, write echo) passes
through `QuirkSet.render`, and a write's body through `QuirkSet.on_write` (a normalising server).

The stored records never change spelling: the control surface (`/_control/state`, records) shows
them as the web UI would, so a test can tell what was served from what is true.

Data quirks (this module renders them):
  multi_refs          references that may hold several ids (note cust/case/opportunity, task
                      cust/case/opp, comment nid/tid) served as lists: 33 -> [33]
  bool01              booleans served as 1/0
  string_ids          ids and references served as numeric strings: 445 -> "445"
  shuffled_lists      server-computed lists (notes, tasks, users, ...) in a new order on each read
  string_date_parts   task date parts as strings: {"y": "2026", "mo": "9", ...}
  empty_strings       null served as ""
  normalising         a write is stored as such a server would: a note's text wrapped in
                      <p>..</p>, strings trimmed; its answer echoes false as 0
Transport quirks are named faults (`Quirk.fault`): enabling one adds that fault (until cleared).
Each makes every API request fail its own way, so `all` means every data quirk, and a transport
quirk is switched on by its name:
  redirect            301 to the host without www (https://clevertim.com/api)
  login_page          an HTML login page with status 200 where JSON was expected
  lying_encoding      a 200 whose Content-Encoding says gzip over a body that is not gzip
  rate_limited        429 without Retry-After
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from clevertim_sync import resources
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.resources import Kind

Record = dict[str, Any]


@dataclass(frozen=True)
class Quirk:
    name: str
    summary: str
    # A transport quirk is a fault spec (emulator/faults.py) the server adds when it is enabled.
    fault: Mapping[str, Any] | None = None


REGISTRY: dict[str, Quirk] = {
    q.name: q
    for q in (
        Quirk("multi_refs", "references that may hold several ids served as lists"),
        Quirk("bool01", "booleans served as 1/0"),
        Quirk("string_ids", "ids and references served as numeric strings"),
        Quirk("shuffled_lists", "server-computed lists reshuffled on each read"),
        Quirk("string_date_parts", "task date parts served as strings"),
        Quirk("empty_strings", 'null served as ""'),
        Quirk(
            "normalising",
            "writes stored normalised (<p>-wrapped note text, trimmed strings), false echoed as 0",
        ),
        Quirk(
            "redirect",
            "every request redirected (301) to the host without www",
            fault={"kind": "redirect", "status": 301, "location": "https://clevertim.com/api"},
        ),
        Quirk("login_page", "an HTML login page (200) where JSON was expected", fault={"kind": "login_page"}),
        Quirk(
            "lying_encoding", "Content-Encoding: gzip over a body that is not", fault={"kind": "bad_encoding"}
        ),
        Quirk("rate_limited", "429 without Retry-After", fault={"kind": "status", "status": 429}),
    )
}
DATA_QUIRKS: tuple[str, ...] = tuple(n for n, q in REGISTRY.items() if q.fault is None)
TRANSPORT_QUIRKS: tuple[str, ...] = tuple(n for n, q in REGISTRY.items() if q.fault is not None)


class QuirkSpecError(ClevertimSyncError):
    """Unknown quirk names; `problems` lists each."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_quirks(text: str | Iterable[str]) -> list[str]:
    """ "a,b" or ["a", "b"] or "all" -> the quirk names, in registry order; unknown names refused.
    "all" is every data quirk (and the transport quirks named beside it): a transport quirk makes
    every request fail, so it is only ever asked for by name."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if "all" in names:
        names = [*DATA_QUIRKS, *(n for n in names if n != "all")]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        known = ", ".join(REGISTRY)
        raise QuirkSpecError([f"unknown quirk {n!r}; known quirks: {known}, or all" for n in unknown])
    return [n for n in REGISTRY if n in names]


# --- what each resource's properties are, by kind -----------------------------------------------


def _apis(res: resources.Resource, test: Callable[[resources.Prop], bool]) -> tuple[str, ...]:
    return tuple(p.api for p in res.props if test(p))


_MULTI = {
    r.name: _apis(r, lambda p: p.kind is Kind.REF and p.child_table is not None) for r in resources.RESOURCES
}
_REFS = {r.name: _apis(r, lambda p: p.kind is Kind.REF) for r in resources.RESOURCES}
_LISTS = {r.name: _apis(r, lambda p: p.kind is Kind.INT_LIST) for r in resources.RESOURCES}
_DATES = {r.name: _apis(r, lambda p: p.kind is Kind.DATE_PARTS) for r in resources.RESOURCES}
_STRS = {r.name: _apis(r, lambda p: p.kind is Kind.STR) for r in resources.RESOURCES}


def _as_string_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return [_as_string_id(v) for v in value]
    return value


class QuirkSet:
    """The active data quirks (thread-safe); empty: everything is served as stored."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._on: frozenset[str] = frozenset(parse_quirks(list(names)))
        self._random = random.Random(11)

    @property
    def active(self) -> frozenset[str]:
        return self._on

    def set(self, names: Iterable[str]) -> list[str]:
        parsed = parse_quirks(list(names))
        with self._lock:
            self._on = frozenset(parsed)
        return parsed

    def render(self, resource: str, blob: bytes, *, echo: bool = False) -> bytes:
        """A stored record's bytes as the quirky server serves them (a write's echo when `echo`)."""
        on = self._on
        if not on or (on <= {"normalising"} and not echo):
            return blob
        record: Record = orjson.loads(blob)
        self.render_record(resource, record, on, echo=echo)
        return orjson.dumps(record)

    def render_record(self, resource: str, rec: Record, on: frozenset[str], *, echo: bool = False) -> None:
        if "multi_refs" in on:
            for api in _MULTI[resource]:
                value = rec.get(api)
                if value is not None and not isinstance(value, list):
                    rec[api] = [value]
        if "string_ids" in on:
            rec["id"] = _as_string_id(rec.get("id"))
            for api in _REFS[resource]:
                if api in rec:
                    rec[api] = _as_string_id(rec[api])
        if "shuffled_lists" in on:
            for api in _LISTS[resource]:
                value = rec.get(api)
                if isinstance(value, list) and len(value) > 1:
                    value = list(value)
                    with self._lock:
                        self._random.shuffle(value)
                    rec[api] = value
        if "string_date_parts" in on:
            for api in _DATES[resource]:
                value = rec.get(api)
                if isinstance(value, dict):
                    rec[api] = {k: str(v) if isinstance(v, int) else v for k, v in value.items()}
        if "bool01" in on or (echo and "normalising" in on):
            for key, value in rec.items():
                if value.__class__ is bool:
                    rec[key] = int(value)
        if "empty_strings" in on:
            for key, value in rec.items():
                if value is None:
                    rec[key] = ""

    def on_write(self, resource: str, body: Any) -> Any:
        """A write's body as a normalising server stores it (unchanged without that quirk)."""
        if "normalising" not in self._on or not isinstance(body, dict):
            return body
        out = dict(body)
        for api in _STRS.get(resource, ()):
            if isinstance(out.get(api), str):
                out[api] = out[api].strip()
        if resource == "note" and isinstance(out.get("desc"), str) and not out["desc"].startswith("<"):
            out["desc"] = f"<p>{out['desc']}</p>"
        return out
