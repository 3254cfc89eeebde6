"""Fault injection for the emulator: what can go wrong between a client and Clevertim.

Owns: parsing and validating a fault spec (the dict tests and `--fault` give), the set of active
faults, and deciding which of them a request meets (`FaultSet.take`). It does not touch sockets:
server.py acts on the decision (sleep, answer with a status, reset, drop, truncate).


A spec: {"kind": ..., "method": "GET"|"POST"|...|"*", "path": regex searched in the path after
/api (e.g. "^/contact$"), "times": int or None (None: until cleared), "status": int,
"retry_after": seconds or an HTTP-date string or None, "latency_ms": int, "hide_ids": [ids],
"hide_fraction": 0.0-1.0, "apply": bool, "location": URL (redirect), "message": the envelope's
error text (status)}. With "apply": true a
status, html or reset fault strikes after the request was served: a write is committed although
the client sees a failure (a proxy that timed out on a slow backend).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clevertim_sync.errors import ClevertimSyncError

# latency: sleep, then serve normally. status: an error answer (JSON envelope), e.g. 503 or 429.
# reset: TCP RST before any response (the request is NOT applied). lost_response: the request is
# applied, then the connection closes without an answer. truncate: applied, then the body is cut
# short of its Content-Length. html: a proxy's HTML error page with a 5xx status (not applied).
# empty_listing: a listing answers 200 with no records. hide: listings and GET by id leave out
# some ids, as when the token's user loses rights to them. redirect: a 3xx (301/302/303/307/308,
# default 302) to `location` (default a login page; give another host's URL to test that the token
# is not sent there), not applied. login_page: an HTML login page with status 200 (default), 401
# or 403, not applied. bad_encoding: applied, then answered 200 with `Content-Encoding: gzip` over
# a body that is not gzip. broken_listing: a listing answers 200 with its whole Content-Length,
# its envelope's head and end intact, but the entry half-way through is broken JSON (a server
# that failed while writing it). gzip_bomb: a photo answers 200 as an image with
# `Content-Encoding: gzip` over a small body that inflates to 256 MiB (a decompression bomb; photos
# only). verbatim_listing: a listing answers 200 with `body_base64`'s bytes exactly as given (any
# JSON text: lone surrogate escapes, bytes that are not UTF-8, huge numbers, deep nesting, ids
# twice, garbage entries). A `status` 429 without retry_after has no Retry-After header; a
# `status` fault's `message` is the envelope's error text (a server refusing a write may echo the
# record's values in it), by default a fixed sentence per status.
KINDS = frozenset(
    {
        "latency",
        "status",
        "reset",
        "lost_response",
        "truncate",
        "html",
        "empty_listing",
        "hide",
        "redirect",
        "login_page",
        "bad_encoding",
        "broken_listing",
        "gzip_bomb",
        "verbatim_listing",
    }
)
METHODS = frozenset({"*", "GET", "POST", "PUT", "DELETE", "PATCH"})
DEFAULT_STATUS = {"status": 503, "html": 502, "redirect": 302, "login_page": 200}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
LOGIN_PAGE_STATUSES = frozenset({200, 401, 403})
DEFAULT_LOCATION = "/login?next=/api"

_SPEC_KEYS = frozenset(
    {
        "kind",
        "method",
        "path",
        "times",
        "status",
        "retry_after",
        "latency_ms",
        "hide_ids",
        "hide_fraction",
        "apply",
        "location",
        "body_base64",
        "message",
    }
)


class FaultSpecError(ClevertimSyncError):
    """A fault spec the emulator cannot use; `problems` lists every reason."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid fault spec: " + "; ".join(problems) + f" (kinds: {', '.join(sorted(KINDS))})"
        )


@dataclass
class Fault:
    """One active fault. `remaining` counts down each time a request meets it (None: forever)."""

    id: int
    kind: str
    method: str = "*"
    path: re.Pattern[str] = field(default_factory=lambda: re.compile(""))
    remaining: int | None = None
    status: int = 0
    retry_after: int | str | None = None
    latency_ms: int = 0
    hide_ids: frozenset[int | str] = frozenset()  # str: a folder's "f1001"
    hide_fraction: float = 0.0
    apply: bool = False  # status/html/reset: serve the request first, then fail (outcome unknown)
    location: str = DEFAULT_LOCATION  # redirect: where to
    body: bytes = b""  # verbatim_listing: the body served
    message: str = ""  # status: the envelope's error text ("": the default sentence)

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and self.path.search(path) is not None

    def hides(self, record_id: int | str) -> bool:
        """Whether this fault hides `record_id`; stable across requests, so a hidden id stays hidden."""
        if record_id in self.hide_ids:
            return True
        if self.hide_fraction <= 0:
            return False
        # Knuth's multiplicative hash spreads consecutive ids evenly over [0, 1); a text id
        # (a folder's "f1001") is spread by its CRC first.
        number = record_id if isinstance(record_id, int) else zlib.crc32(str(record_id).encode())
        return ((number * 2654435761) % 2**32) / 2**32 < self.hide_fraction

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "path": self.path.pattern,
            "times": self.remaining,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "hide_ids": sorted(self.hide_ids, key=lambda i: (isinstance(i, str), str(i).zfill(20))),
            "hide_fraction": self.hide_fraction,
            "apply": self.apply,
            "location": self.location,
            "body_bytes": len(self.body),
            "message": self.message,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_spec(spec: Mapping[str, Any], fault_id: int) -> Fault:
    """Validate a spec into a Fault, reporting every problem at once."""
    problems: list[str] = []
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        problems.append(f"unknown keys {', '.join(unknown)}")
    kind = spec.get("kind")
    if kind not in KINDS:
        problems.append(f"kind must be one of the kinds listed, not {kind!r}")
    method = str(spec.get("method", "*")).upper()
    if method not in METHODS:
        problems.append(f"method must be one of {', '.join(sorted(METHODS))}, not {method!r}")
    pattern: re.Pattern[str] = re.compile("")
    try:
        pattern = re.compile(str(spec.get("path", "")))
    except re.error as exc:
        problems.append(f"path is not a regular expression: {exc}")
    times = spec.get("times")
    if times is not None and not (_is_int(times) and times >= 1):
        problems.append("times must be a positive integer, or null for until cleared")
    status = spec.get("status", DEFAULT_STATUS.get(str(kind), 0))
    if kind in ("status", "html") and (not _is_int(status) or not 400 <= status <= 599):
        problems.append(f"status must be an HTTP error status 400-599, not {status!r}")
    if kind == "redirect" and status not in REDIRECT_STATUSES:
        problems.append(f"a redirect's status must be one of {sorted(REDIRECT_STATUSES)}, not {status!r}")
    if kind == "login_page" and status not in LOGIN_PAGE_STATUSES:
        problems.append(f"a login page's status must be one of {sorted(LOGIN_PAGE_STATUSES)}, not {status!r}")
    location = spec.get("location", DEFAULT_LOCATION)
    if not isinstance(location, str) or not location or any(c in location for c in "\r\n"):
        problems.append("location must be a URL on one line")
        location = DEFAULT_LOCATION
    retry_after = spec.get("retry_after")
    if retry_after is not None and not (isinstance(retry_after, str) or _is_int(retry_after)):
        problems.append("retry_after must be whole seconds or an HTTP-date string")
    if isinstance(retry_after, int) and retry_after < 0:
        problems.append("retry_after must not be negative")
    latency = spec.get("latency_ms", 0)
    if not _is_int(latency) or latency < 0:
        problems.append("latency_ms must be a non-negative integer")
    hide_ids = spec.get("hide_ids") or []
    if not isinstance(hide_ids, list) or not all(_is_int(i) or isinstance(i, str) for i in hide_ids):
        problems.append("hide_ids must be a list of ids (integers, or text ids such as 'f1001')")
        hide_ids = []
    fraction = spec.get("hide_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
        problems.append("hide_fraction must be a number from 0 to 1")
        fraction = 0.0
    if kind == "latency" and not latency:
        problems.append("a latency fault needs latency_ms > 0")
    if spec.get("apply") not in (None, True, False):
        problems.append("apply must be true or false")
    if spec.get("apply") and kind not in ("status", "html", "reset"):
        problems.append(
            "apply only goes with status, html or reset "
            "(lost_response, truncate and bad_encoding always apply)"
        )
    if kind == "hide" and not hide_ids and not fraction:
        problems.append("a hide fault needs hide_ids or hide_fraction")
    body = b""
    if kind == "verbatim_listing" or "body_base64" in spec:
        try:
            body = base64.b64decode(str(spec.get("body_base64")), validate=True)
        except binascii.Error:
            problems.append("a verbatim_listing fault needs body_base64: the body, base64-encoded")
        if kind != "verbatim_listing":
            problems.append("body_base64 only goes with verbatim_listing")
    message = spec.get("message", "")
    if not isinstance(message, str):
        problems.append("message must be a string")
        message = ""
    if message and kind != "status":
        problems.append("message only goes with status")
    if problems:
        raise FaultSpecError(problems)
    return Fault(
        id=fault_id,
        kind=str(kind),
        method=method,
        path=pattern,
        remaining=times,
        status=int(status) if _is_int(status) else 0,
        retry_after=retry_after,
        latency_ms=int(latency),
        hide_ids=frozenset(i if isinstance(i, str) else int(i) for i in hide_ids),
        hide_fraction=float(fraction),
        apply=bool(spec.get("apply", False)),
        location=location,
        body=body,
        message=message,
    )


@dataclass
class Decision:
    """What a request meets: total added latency, at most one failure, and any hiding faults."""

    latency_ms: int = 0
    fault: Fault | None = None
    hiding: list[Fault] = field(default_factory=list)

    def hidden(self, record_id: int | str) -> bool:
        return any(f.hides(record_id) for f in self.hiding)


class FaultSet:
    """The active faults, in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, spec: Mapping[str, Any]) -> int:
        with self._lock:
            fault = parse_spec(spec, self._next_id)
            self._next_id += 1
            self._faults.append(fault)
            return fault.id

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def remove(self, fault_id: int) -> None:
        """Drop one fault (a transport quirk turned off); gone already is fine."""
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(self, method: str, path: str, *, is_listing: bool) -> Decision:
        """Consume the faults this request meets.

        Every matching latency fault adds up; every matching hide fault applies (GETs only); of
        the rest, the first matching one applies. empty_listing and broken_listing only meet
        collection GETs, so a spec with a loose path is not used up by GETs of single records.
        """
        decision = Decision()
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(method, path):
                    continue
                if fault.kind == "latency":
                    decision.latency_ms += fault.latency_ms
                elif fault.kind == "hide":
                    if method != "GET":
                        continue
                    decision.hiding.append(fault)
                elif decision.fault is None:
                    if fault.kind in ("empty_listing", "broken_listing") and not is_listing:
                        continue
                    decision.fault = fault
                else:
                    continue
                self._use(fault)
        return decision

    def _use(self, fault: Fault) -> None:
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
