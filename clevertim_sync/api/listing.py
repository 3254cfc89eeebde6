"""A listing downloaded to a temporary file, read back in batches of records (`Listing`).

Owns: the envelope check of a spooled body (`check_envelope`: status OK, `content` a list,
usually read from the body's first bytes) and the incremental parse of `content` into records
(ijson's C backend), so that a pull holds one batch of records at a time, never a whole listing.

A body that passed the envelope check can still turn out malformed further on (a server that
sends a complete HTTP body of incomplete JSON): the batch that meets it raises MalformedResponse,
like the client does for any other malformed answer, and the pull rolls the resource back.

Must not import: SQLAlchemy, the mirror, the pull (the client builds a Listing; the pull reads it).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import IO, Any, Self

import ijson
import orjson

from clevertim_sync.api import errors as e

# The C backend (yajl2_c) when built, as in every wheel ijson ships; pure Python otherwise.
_ijson: Any = ijson.get_backend("yajl2_c") if "yajl2_c" in ijson.ALL_BACKENDS else ijson
_READ = 1 << 16  # bytes per read from the file: ijson's default is 64 KiB too
_UNSEEN = object()


def _same_shape_error(exc: Exception, resource: str) -> e.MalformedResponse:
    return e.MalformedResponse(
        f"the listing's body is not valid JSON past the envelope: {type(exc).__name__}: {exc}"[:300],
        method="GET",
        resource=resource,
        status=200,
    )


def check_envelope(spool: IO[bytes]) -> bool:
    """True when the spooled body is `{"status": "OK", "content": [...]}` as far as it can tell
    without parsing every record: it ends with `}`; the keys before `content` are read from the
    head; `status` after
    `content` costs one pass of the C parser over the body (no records built). False for anything
    else (not an object, a status other than OK, a `content` that is not a list, broken JSON in
    the head): the caller then decodes the whole body to say exactly what is wrong."""
    if not _ends_an_object(spool):
        return False  # cut off (the commonest breakage): known without parsing, so it is retried
    spool.seek(0)
    status: Any = _UNSEEN
    try:
        events = _ijson.parse(spool, buf_size=_READ)
        first = next(events, None)
        if first is None or first[1] != "start_map":
            return False
        for prefix, event, value in events:
            if prefix == "status" and status is _UNSEEN:
                status = value if event == "string" else None  # a map or list is no status
            elif prefix == "" and event == "end_map":
                return False  # no content at all
            elif prefix == "" and event == "map_key" and value == "content":
                nxt = next(events, None)
                if nxt is None or nxt[1] != "start_array":
                    return False
                break
    except ijson.JSONError:
        return False
    if status is _UNSEEN:
        # `status` after `content` (or none): one C-level pass, only the status value built.
        spool.seek(0)
        try:
            found = list(_ijson.items(spool, "status", buf_size=_READ))
        except ijson.JSONError:
            return False
        status = found[0] if found else None
    return bool(status == "OK")


def _ends_an_object(spool: IO[bytes]) -> bool:
    size = spool.seek(0, 2)
    spool.seek(max(size - 64, 0))
    return spool.read().rstrip().endswith(b"}")


class Listing:
    """One resource's listing, downloaded and envelope-checked; its records are read in batches.

    Owns the temporary file: `close()` (or the with-block) removes it. Iterate `batches()` once.
    """

    def __init__(self, resource: str, spool: IO[bytes], body_bytes: int) -> None:
        self.resource = resource
        self.body_bytes = body_bytes
        self._spool = spool

    @classmethod
    def of(cls, resource: str, entries: Iterable[Any]) -> Listing:
        """A listing of these entries, as a server would have sent them (tests, tools)."""
        spool = tempfile.TemporaryFile(prefix="clevertim-listing-")  # noqa: SIM115 - owned by the Listing
        spool.write(orjson.dumps({"status": "OK", "content": list(entries)}))
        return cls(resource, spool, spool.tell())

    def records(self) -> Iterator[Any]:
        """Each entry of `content`, parsed as it is read (floats as float, as orjson gives)."""
        self._spool.seek(0)
        try:
            yield from _ijson.items(self._spool, "content.item", use_float=True, buf_size=_READ)
        except ijson.JSONError as exc:
            raise _same_shape_error(exc, self.resource) from None

    def batches(self, size: int) -> Iterator[list[Any]]:
        """The entries in lists of at most `size`, in the listing's order."""
        records = self.records()
        while batch := list(itertools.islice(records, size)):
            yield batch

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
