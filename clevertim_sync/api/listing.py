"""A listing downloaded to a temporary file, read back in batches of records (`Listing`).

Owns: finding a spooled body's envelope (`{"status": "OK", "content": [...]}`) without parsing
its records, and the parse of `content` a window at a time, so that a pull holds one batch of
records, never a whole listing.

How: the envelope's keys before `content` are read from the body's head, those after it from its
tail. The array between is parsed a window (`WINDOW` bytes) at a time (`jsontext.read`): each window is
cut at the last `}` `,` `{` (whitespace allowed) before its end and the entries before the cut
are parsed as one array. A cut inside a string cannot parse (the string stays open), nor can one
inside a nested object or list (the brackets do not balance): a parse that succeeds proves the
cut fell between two entries, and a failed one tries the cut before it. A C parser in windows is
3x faster than an event parser (orjson against ijson's C backend: 0.8 s against 2.8 s CPU for the
60 MB listing of 100,000 contacts) and its records are a third smaller (it shares the dict keys);
msgspec, the one `jsontext.read` uses, parses as fast as orjson in as little memory.
Bodies up to `WHOLE` bytes are parsed in one go.

A body that passed the envelope check can still turn out broken further on (a server that sends
a complete HTTP body of incomplete JSON): the batch that meets it raises MalformedResponse, like
the client does for any other malformed answer, and the pull rolls the resource back.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Self

from clevertim_sync import jsontext
from clevertim_sync.api import errors as e
from clevertim_sync.entries import LeftOut

WINDOW = 1 << 18  # bytes of content parsed at a time (about 400 contacts; 1 MB was slower)
WHOLE = WINDOW  # a body up to this size is parsed in one go
ENVELOPE = 1 << 16  # bytes of the head and of the tail searched for the envelope's keys
CUTS_TRIED = 32  # cuts tried in a window (from its end) before the window is doubled
_CONTENT = re.compile(rb'"content"\s*:\s*\[')
_NEXT_ENTRY = re.compile(rb"\s*,\s*\{")
_ODD = b"\\u0000"  # a NUL in a string: kept, but reported (entries.REASONS["odd_text"])
_SPACE = re.compile(r"\s*")
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what "surrogateescape" made of bytes not UTF-8
# The end of a value the exact parser could not read: strings skipped whole, brackets counted.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_SCALAR = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^\s,\]}]+', re.DOTALL)


@dataclass
class _Envelope:
    """Where `content` is in a spooled body: its entries lie between `start` and one of `ends`
    (byte offsets of its closing bracket, the likeliest first), or are `records` (a small body)."""

    status: Any
    start: int = 0
    ends: tuple[int, ...] = ()
    records: list[Any] | None = None


def _locate(spool: IO[bytes], size: int) -> _Envelope | None:
    """The envelope of a body whose top level is an object with a `content` list; else None."""
    if size <= WHOLE:
        spool.seek(0)
        body = spool.read()
        try:
            doc = None if _ODD in body else jsontext.read(body)
        except jsontext.REFUSED:
            doc = None  # not JSON, or an entry the fast reader refuses: the windowed path says which
        if isinstance(doc, dict) and isinstance(doc.get("content"), list):
            return _Envelope(doc.get("status"), records=doc["content"])
    head = _read(spool, 0, ENVELOPE)
    before: Any = None
    for found in _CONTENT.finditer(head):
        # Only the top-level key gives back an object when closed right after it.
        before = _loads(head[: found.start()] + b'"content":[]}')
        if isinstance(before, dict):
            start = found.end()
            break
    else:
        return None
    tail_at = max(size - ENVELOPE, start)
    tail = _read(spool, tail_at, size)
    ends: list[tuple[int, Any]] = []
    pos = len(tail)
    while len(ends) < 8 and (pos := tail.rfind(b"]", 0, pos)) >= 0:
        after = _loads(b'{"content":0' + tail[pos + 1 :])
        if isinstance(after, dict):
            ends.append((tail_at + pos, after))
    if not ends:
        return None
    status = before["status"] if "status" in before else ends[0][1].get("status")
    return _Envelope(status, start=start, ends=tuple(at for at, _ in ends))


def _loads(raw: bytes) -> Any:
    try:
        return jsontext.read(raw)
    except jsontext.REFUSED:
        return None


def _read(spool: IO[bytes], start: int, stop: int) -> bytes:
    spool.seek(start)
    return spool.read(stop - start)


class Listing:
    """One resource's listing, downloaded and envelope-checked; its records are read in batches.

    Owns its temporary file: `close()` (or the with-block) removes it. Iterate `batches()` once.
    """

    def __init__(self, resource: str, entries: list[Any]) -> None:
        self.resource = resource
        self._windows: Iterator[list[Any]] = iter([entries])  # the entries, a window at a time
        self._spool: IO[bytes] | None = None
        # Entries kept but altered or worth reporting: (a reason of entries.REASONS, the entry's
        # id), found as the windows are parsed. Entries left out come as `LeftOut` in the batches.
        self.findings: list[tuple[str, Any]] = []

    @classmethod
    def of(cls, resource: str, entries: Iterable[Any]) -> Listing:
        """A listing of these entries, held in memory (a small body, tests, tools)."""
        return cls(resource, list(entries))

    @classmethod
    def spooled(cls, resource: str, spool: IO[bytes]) -> Listing | None:
        """The listing of a downloaded body whose envelope is OK (it owns `spool` from then on),
        or None for any other body (the caller keeps `spool`, to say what is wrong with it)."""
        size = spool.seek(0, 2)
        envelope = _locate(spool, size)
        if envelope is None or envelope.status != "OK":
            return None
        if envelope.records is not None:
            spool.close()
            return cls(resource, envelope.records)
        listing = cls(resource, [])
        if size <= WHOLE:  # read now: a broken small body is refused like any malformed answer
            entries = listing._last(spool, envelope.start, envelope.ends)
            if entries is None:
                return None
            spool.close()
            listing._windows = iter([entries])
            return listing
        listing._windows = listing._parse(spool, envelope)
        listing._spool = spool
        return listing

    def records(self) -> Iterator[Any]:
        """Each entry of `content`, in order."""
        return itertools.chain.from_iterable(self._windows)

    def batches(self, size: int) -> Iterator[list[Any]]:
        """The entries in lists of `size` (the last one shorter), in the listing's order."""
        batch: list[Any] = []
        for window in self._windows:
            batch += window
            while len(batch) >= size:
                yield batch[:size]
                del batch[:size]
        if batch:
            yield batch

    def _parse(self, spool: IO[bytes], envelope: _Envelope) -> Iterator[list[Any]]:
        """The entries of a spooled body, a window at a time."""
        pos, end = envelope.start, envelope.ends[0]
        window = WINDOW
        while end - pos > window:
            chunk = _read(spool, pos, pos + window)
            parsed = self._cut(chunk)
            if parsed is None:  # no cut parses (a huge entry, or a break): a bigger window
                window *= 2
                continue
            entries, used = parsed
            yield entries
            pos, window = pos + used, WINDOW
        if (last := self._last(spool, pos, envelope.ends)) is None:
            raise self._broken()
        yield last

    def _last(self, spool: IO[bytes], start: int, ends: tuple[int, ...]) -> list[Any] | None:
        """The entries from `start` to the closing bracket (one of `ends`), or None."""
        for exact in (False, True):
            for end in ends:
                entries = self._entries(_read(spool, start, end), exact=exact)
                if entries is not None:
                    return entries
        return None

    def _cut(self, chunk: bytes) -> tuple[list[Any], int] | None:
        """The entries before the last cut of `chunk` that parses, and where the next one starts.
        Cuts are proven by the fast reader first (a failed cut costs little); only when none parses
        (an entry it refuses) by the exact reader."""
        for exact in (False, True):
            brace = len(chunk)
            for _ in range(CUTS_TRIED):
                brace = chunk.rfind(b"}", 0, brace)
                if brace < 0:
                    break
                following = _NEXT_ENTRY.match(chunk, brace + 1)
                if following is None:
                    continue
                entries = self._entries(chunk[: brace + 1], exact=exact)
                if entries is not None:
                    return entries, following.end() - 1
        return None

    def _entries(self, inner: bytes, *, exact: bool) -> list[Any] | None:
        """The entries of `inner` (the text between two entries' boundaries), or None when it is
        not a whole number of entries (or, not `exact`, when the fast reader refuses it). The fast
        reader reads it; the exact reader (`_exact_entries`) when asked."""
        if exact:
            return self._exact_entries(inner)
        try:
            entries = jsontext.read(b"[" + inner + b"]")
        except jsontext.REFUSED:
            return None
        if b"\\" in inner and _ODD in inner:  # a backslash first: memchr, ten times faster
            self._note_odd(entries)
        return entries if isinstance(entries, list) else None

    def _exact_entries(self, inner: bytes) -> list[Any] | None:
        """`_entries` by the standard library's exact reader, one entry at a time: bytes that are
        not UTF-8 become U+FFFD (the entry is reported), an entry it cannot read at all (nested too
        deep, a number too long) becomes a `LeftOut`. None: `inner` is not a whole number of
        entries (a cut inside one) or not JSON at all."""
        text = inner.decode("utf-8", "surrogateescape")
        decode = jsontext.decoder().raw_decode
        entries: list[Any] = []
        altered: list[tuple[str, Any]] = []  # reported once the whole of `inner` has parsed
        pos = _SPACE.match(text).end()  # type: ignore[union-attr] # \s* always matches
        while pos < len(text):
            start = pos
            try:
                entry, pos = decode(text, start)
            except json.JSONDecodeError:
                return None
            except (RecursionError, ValueError):  # too deep; a number too long to keep
                if (pos := _value_end(text, start)) < 0:
                    return None
                entry = LeftOut.of("unreadable", text[start:pos])
            else:
                if _BAD_BYTES.search(text, start, pos):
                    entry = decode(_BAD_BYTES.sub(jsontext.REPLACEMENT, text[start:pos]))[0]
                    altered.append(("not_utf8", _id_of(entry)))
            entries.append(entry)
            pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            if pos < len(text):
                if text[pos] != ",":
                    return None
                pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
        self.findings += altered
        self._note_odd(entries)
        return entries

    def _note_odd(self, entries: list[Any]) -> None:
        """Report each entry holding a NUL or a lone surrogate (kept; typed text gets U+FFFD)."""
        for entry in entries:
            if isinstance(entry, dict) and _holds_odd_text(entry):
                self.findings.append(("odd_text", _id_of(entry)))

    def _broken(self) -> e.MalformedResponse:
        return e.MalformedResponse(
            "the listing's body is not valid JSON past the envelope (broken or cut off inside `content`)",
            method="GET",
            resource=self.resource,
            status=200,
        )

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _id_of(entry: Any) -> Any:
    return entry.get("id") if isinstance(entry, dict) else None


def _holds_odd_text(value: Any) -> bool:
    """Whether any string of `value` (keys included) holds what `jsontext.typed_text` replaces."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if jsontext.typed_text(item) != item:
                return True
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def _value_end(text: str, start: int) -> int:
    """Where the JSON value at `start` ends (scanned, not parsed), or -1 when it does not end."""
    if text[start] not in "[{":
        found = _SCALAR.match(text, start)
        return found.end() if found else -1
    depth = 0
    for token in _TOKEN.finditer(text, start):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
        elif mark in ("]", "}"):
            depth -= 1
            if depth == 0:
                return token.end()
    return -1


def spool_file() -> IO[bytes]:
    """A temporary file for a listing's body, unlinked at once (a crash leaves nothing behind).
    In $TMPDIR: on a disk, not in memory (the systemd unit points it at its cache directory)."""
    return tempfile.TemporaryFile(prefix="clevertim-listing-")
