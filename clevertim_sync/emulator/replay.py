"""Serving a capture (`clevertim-sync emulator --from DIR`): an account's real shapes, replayed.

Owns: the answers of the API under /api when the emulator replays a capture written by
`clevertim-sync probe --capture`: a listing is the captured file's bytes as they are, a GET by
id the captured record's JSON (an id such as "f1001" is served at /folder/f1001), an endpoint
captured as failing answers its captured status again. With `shuffle_lists`, every listing
served reshuffles each record's server-computed lists (the registry's id lists: notes, tasks,
comments, files, ...), as a server that does not sort them would.

Writes are refused with 501 (a capture is a read-only fixture: it has the shapes, not the rules
a store would need to apply a write to them). Faults and the request log work as usual.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping

import orjson

from clevertim_sync import resources
from clevertim_sync.emulator.store import ApiProblem
from clevertim_sync.resources import Kind
from clevertim_sync.survey.capture import CapturedListing


class Replay:
    """The captured listings, and how to answer an API request from them."""

    def __init__(
        self, listings: Mapping[str, CapturedListing], *, shuffle_lists: bool = False, seed: int = 1
    ) -> None:
        self.listings = dict(listings)
        self.shuffle_lists = shuffle_lists
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def answer(self, method: str, segs: list[str]) -> bytes:
        """The 200 body, or ApiProblem with the status to answer."""
        name = segs[0] if segs else ""
        listing = self.listings.get(name)
        if listing is None or len(segs) > 2:
            raise ApiProblem(404, f"unknown resource path /{'/'.join(segs)}")
        if method != "GET":
            raise ApiProblem(501, f"{method} is not supported: this emulator replays a capture (read-only)")
        if listing.body is None:
            raise ApiProblem(listing.status, f"{name} failed when captured: {listing.what}")
        if len(segs) == 1:
            return self._shuffled(listing) if self.shuffle_lists else listing.body
        blob = listing.by_id.get(segs[1])
        if blob is None:
            raise ApiProblem(404, f"{name} {segs[1]!r} not found")
        return b'{"status":"OK","content":[' + blob + b"]}"

    def _shuffled(self, listing: CapturedListing) -> bytes:
        res = resources.BY_NAME.get(listing.name)
        lists = [p.api for p in res.props if p.kind is Kind.INT_LIST] if res is not None else []
        if not lists:
            return listing.body or b""
        content = []
        with self._lock:
            for served in listing.envelope["content"]:
                rec = dict(served) if isinstance(served, dict) else served
                for key in lists if isinstance(rec, dict) else ():
                    value = rec.get(key)
                    if isinstance(value, list) and len(value) > 1:
                        value = list(value)
                        self._rng.shuffle(value)
                        rec[key] = value
                content.append(rec)
        return orjson.dumps({**listing.envelope, "content": content})
