"""A capture: an account's listings with every personal text replaced, kept as a regression fixture.

Owns: the capture directory's format (one `<resource>.json` per listing, the API's envelope as
JSON, plus `manifest.json`), `Anonymiser` (invented text of the same shape in place of every
free string), `CaptureWriter` (written by `clevertim-sync probe --capture DIR`) and
`load_capture` (read by `clevertim-sync emulator --from DIR`).

What a capture keeps exactly: every key and its order, every JSON type, list-ness and length,
numbers, booleans and nulls, record ids and references (numbers, and strings that look like ids
such as "445" or "f1001" where an id or a reference belongs), ISO timestamps and dates outside
custom values, and the values of the small closed sets the registry declares (`Prop.closed`:
ctype, atype, a note's type, status, currency, elemType, rec, a phone's or social id's type,
modelType, permissions, a linked file's sys) when they look like such (`looks_closed`: short, no
digit, no @). Everything else that is a string is invented: every letter becomes another letter
of the same script and case, every digit another digit of the same script (Arabic-Indic,
Devanagari, full-width...), punctuation, spaces and HTML tags stay, so an email stays
email-shaped, a phone phone-shaped, a URL keeps its scheme. A date in a custom value (a
birthday) is moved by a keyed number of days (1 to 730, either way). The invention is driven by
the value's keyed hash (SHAKE-256) with a key drawn afresh for each capture and never written:
within one capture the same original gives the same fake (a select field's value still matches
the field's allowed values), and nobody holding the capture can test guesses of an original
against it. The directory is made 0700 and its files 0600 (survey/private.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from clevertim_sync import __version__, resources
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.resources import Kind
from clevertim_sync.survey.private import open_private, private_dir

FORMAT = "clevertim-sync capture"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# The documents' endpoints (`Resource.optional`: an account or token may lack them): a capture
# records their refusal as it does any failing endpoint, and the probe reports it for information.
DOCUMENT_RESOURCES = tuple(r.name for r in resources.RESOURCES if r.optional)

ENUM_MAX_LEN = 40  # a closed-set value is at most this long
_CLOSED_VALUE = re.compile(r"[^\W\d]+([ ._&/()'-]+[^\W\d]+){0,4}[.)]?")  # words, no digit
DATE_SHIFT_DAYS = 730  # a custom value's date moves by 1 to this many days, either way
# Custom field types whose values are ids written as strings (kept), or a currency code (kept).
_CF_REF_TYPES = frozenset({"user", "contact", "company", "case", "opportunity"})

TIMESTAMP_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
ID_LIKE = re.compile(r"^[A-Za-z]{0,3}\d{1,19}$")
NUMBER_LIKE = re.compile(r"^-?\d+(\.\d+)?$")
_BOOL_SPELLINGS = frozenset({"0", "1", "true", "false", "True", "False", "TRUE", "FALSE", "yes", "no", ""})
# HTML tags and entities stay (their names are not personal); attribute text is invented.
_MARKUP = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)([^<>]*)>|&[A-Za-z]+;|&#\d+;")
_URL_PREFIX = re.compile(r"^(https?://)?(www\.)?", re.IGNORECASE)


def closed_props(resource: str) -> frozenset[str]:
    """The properties of `resource` whose values the registry declares a small closed set."""
    res = resources.BY_NAME.get(resource)
    return frozenset(p.api for p in res.props if p.closed) if res is not None else frozenset()


def looks_closed(value: Any) -> bool:
    """True for a value a closed set holds ("Won", "USD", "Mobile", "view"): a few words, short,
    with no digit and no @; not a phone or an e-mail typed where a label was meant."""
    return isinstance(value, str) and len(value) <= ENUM_MAX_LEN and bool(_CLOSED_VALUE.fullmatch(value))


_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = _LOWER.upper()
_DIGITS = "0123456789"
_LATIN = "àáâãäåæçèéêëìíîïñòóôõöøùúûüýþÿ"
# Scripts whose letters are replaced by letters of the same block: (first, last) code points.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (0x0391, 0x03C9),  # Greek
    (0x0410, 0x044F),  # Cyrillic
    (0x0621, 0x064A),  # Arabic
    (0x05D0, 0x05EA),  # Hebrew
    (0x0905, 0x0939),  # Devanagari
    (0x3041, 0x3096),  # Hiragana
    (0x30A1, 0x30FA),  # Katakana
    (0x4E00, 0x9FFF),  # CJK ideographs
    (0xAC00, 0xD7A3),  # Hangul syllables
)
_EMOTICONS = (0x1F600, 0x1F64F)
_CACHE_LIMIT = 50_000


class CaptureError(ClevertimSyncError):
    """A capture directory that cannot be read or written."""

    exit_code = 2

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"capture {path}: {problem}")


class Anonymiser:
    """Invents text of the same shape for every free string of a record (see the module doc)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        self._cf_types: dict[str, str] = {}  # custom field id -> elemType, from the customfield listing
        self._cache: dict[str, str] = {}

    def learn_custom_fields(self, records: Iterable[Any]) -> None:
        """Remember which custom fields hold ids (their values are kept) before contacts come."""
        for rec in records:
            if isinstance(rec, dict) and isinstance(rec.get("elemType"), str):
                self._cf_types[str(rec.get("id"))] = rec["elemType"]

    def text(self, value: str) -> str:
        """An invented string of `value`'s shape; the same `value` always gives the same one."""
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        prefix = _URL_PREFIX.match(value)
        head = prefix.group(0) if prefix and prefix.group(1) else ""
        rest = value[len(head) :]
        data = value.encode("utf-8", "surrogatepass")
        for attempt in range(8):  # a short string can come out unchanged by chance: draw again
            # A keyed stream of pseudo-random bytes, two per character and some to spare.
            stream = hashlib.shake_256(self._key + bytes([attempt]) + data).digest(2 * len(rest) + 64)
            out = head + _invent(rest, iter(stream))
            if out != value:
                break
        # else: nothing to replace (punctuation, spaces, markup only): not personal
        if len(self._cache) < _CACHE_LIMIT:  # cities, tags, select values repeat
            self._cache[value] = out
        return out

    # --- records ---------------------------------------------------------------------------

    def record(self, resource: str, rec: Any) -> Any:
        """The record with its free strings invented; keys, order, types and ids as they were."""
        if not isinstance(rec, dict):
            return self._free(rec)
        res = resources.BY_NAME.get(resource)
        out: dict[str, Any] = {}
        for key, value in rec.items():
            if key == "id":
                out[key] = value
                continue
            prop = res.by_api.get(key) if res is not None else None
            out[key] = self._by_kind(prop, value) if prop is not None else self._free(value)
        return out

    def envelope(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The envelope's other keys (not content) with their strings invented, status kept."""
        return {k: v if k in ("status", "content") else self._free(v) for k, v in doc.items()}

    def _by_kind(self, prop: resources.Prop, value: Any) -> Any:
        kind = prop.kind
        if kind in (Kind.INT, Kind.REF, Kind.TEXT_REF, Kind.INT_LIST):
            return self._ref(value)
        if kind is Kind.BOOL:
            return _map_strings(value, lambda s: s if s in _BOOL_SPELLINGS else self.text(s))
        if kind is Kind.DECIMAL:
            return _map_strings(value, lambda s: s if NUMBER_LIKE.match(s) else self.text(s))
        if kind is Kind.DATE_PARTS:
            return _map_strings(value, lambda s: s if NUMBER_LIKE.match(s) or s == "" else self.text(s))
        if kind in (Kind.PHONES, Kind.SMIDS):
            return self._labelled(value, closed=prop.closed)
        if kind is Kind.CUSTOM_FIELDS:
            return self._custom_values(value)
        if prop.closed:
            return self._enum(value)
        return self._free(value)

    def _free(self, value: Any) -> Any:
        return _map_strings(value, lambda s: s if s == "" or TIMESTAMP_LIKE.match(s) else self.text(s))

    def _ref(self, value: Any) -> Any:
        return _map_strings(value, lambda s: s if s == "" or ID_LIKE.match(s) else self.text(s))

    def _enum(self, value: Any) -> Any:
        return _map_strings(value, lambda s: s if s == "" or looks_closed(s) else self.text(s))

    def _labelled(self, value: Any, *, closed: bool) -> Any:
        """phones/smids: [{type, no|smid}]: the type label is a closed set, the rest is personal
        (and so is an entry served as a plain string: "+44 ..." is a phone, not a label)."""
        if not isinstance(value, list):
            return self._free(value)
        return [
            {k: self._enum(v) if k == "type" and closed else self._free(v) for k, v in item.items()}
            if isinstance(item, dict)
            else self._free(item)
            for item in value
        ]

    def _custom_values(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return self._free(value)
        out: dict[str, Any] = {}
        for key, v in value.items():
            elem = self._cf_types.get(str(key))
            if elem in _CF_REF_TYPES:
                out[key] = self._ref(v)
            elif elem == "currency":
                out[key] = self._enum(v)
            else:  # a birthday is personal: its date moves, as the rest is invented
                out[key] = _map_strings(
                    v, lambda s: self._moved_date(s) if TIMESTAMP_LIKE.match(s) else self.text(s) if s else s
                )
        return out

    def _moved_date(self, value: str) -> str:
        """`value` (an ISO date or timestamp) a keyed 1 to DATE_SHIFT_DAYS days earlier or later."""
        try:
            day = date.fromisoformat(value[:10])
        except ValueError:
            return self.text(value)
        draw = int.from_bytes(hashlib.shake_256(self._key + b"date" + value.encode()).digest(4), "big")
        days = 1 + draw % DATE_SHIFT_DAYS
        try:
            moved = day + timedelta(days=days if draw & 1 << 31 else -days)
        except OverflowError:
            moved = day - timedelta(days=days)
        return moved.isoformat() + value[10:]


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """`value` with `fn` applied to every string inside it (object keys excepted)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def _invent(text: str, rnd: Iterator[int]) -> str:
    out: list[str] = []
    pos = 0
    for m in _MARKUP.finditer(text):
        out.append(_chars(text[pos : m.start()], rnd))
        if m.group(2) is None:  # an entity
            out.append(m.group(0))
        else:
            out.append(f"<{m.group(1)}{m.group(2)}{_chars(m.group(3), rnd)}>")
        pos = m.end()
    out.append(_chars(text[pos:], rnd))
    return "".join(out)


def _chars(text: str, rnd: Iterator[int]) -> str:
    """Each character replaced by one of its class picked by the next byte(s) of `rnd`."""
    out: list[str] = []
    for c in text:
        if "a" <= c <= "z":
            out.append(_LOWER[next(rnd, 0) % 26])
        elif "A" <= c <= "Z":
            out.append(_UPPER[next(rnd, 0) % 26])
        elif "0" <= c <= "9":
            out.append(_DIGITS[next(rnd, 0) % 10])
        elif c.isascii() or c.isspace():
            out.append(c)  # punctuation and spacing carry the shape (@ . + - newlines)
        elif c.isalpha():
            out.append(_letter_like(c, rnd))
        elif c.isnumeric():  # a phone typed in Arabic-Indic, Devanagari or full-width digits
            out.append(_digit_like(c, rnd))
        elif ord(c) >= 0x2000:
            lo, hi = _EMOTICONS
            out.append(chr(lo + next(rnd, 0) % (hi - lo + 1)))  # symbols and emoji
        else:
            out.append(c)  # combining marks and the like
    return "".join(out)


def _digit_like(c: str, rnd: Iterator[int]) -> str:
    """Another digit of `c`'s script (its block's zero + 0..9), or an ASCII digit for other
    numerals (superscripts, fractions, Roman numerals)."""
    pick = next(rnd, 0) % 10
    if unicodedata.category(c) == "Nd":
        return chr(ord(c) - unicodedata.digit(c) + pick)
    return _DIGITS[pick]


def _letter_like(c: str, rnd: Iterator[int]) -> str:
    code = ord(c)
    for lo, hi in _BLOCKS:
        if lo <= code <= hi:
            for _ in range(4):
                pick = chr(lo + (next(rnd, 0) << 8 | next(rnd, 0)) % (hi - lo + 1))
                if pick.isalpha():
                    return pick.upper() if c.isupper() and len(pick.upper()) == 1 else pick
            break  # a block with gaps, unlucky four times: a Latin letter rather than `c`
    pick = _LATIN[next(rnd, 0) % len(_LATIN)]
    return pick.upper() if c.isupper() and len(pick.upper()) == 1 else pick


# --- the directory ----------------------------------------------------------------------------


class CaptureWriter:
    """Writes a capture directory: `write` each listing as it is read, then `close`."""

    def __init__(self, directory: Path, anonymiser: Anonymiser | None = None) -> None:
        self.directory = directory
        self.anonymiser = anonymiser or Anonymiser()
        self._entries: dict[str, dict[str, Any]] = {}
        try:
            private_dir(directory)
        except OSError as exc:
            raise CaptureError(directory, f"cannot create the directory: {exc.strerror}") from None

    def write(self, resource: str, envelope: Mapping[str, Any]) -> None:
        """One listing's envelope, anonymised, record by record (no second copy of the listing)."""
        anon = self.anonymiser
        if resource == "customfield":
            anon.learn_custom_fields(envelope.get("content") or [])
        content = envelope.get("content")
        records = content if isinstance(content, list) else []
        path = self.directory / f"{resource}.json"
        tmp = path.with_suffix(".json.tmp")
        try:
            with open_private(tmp) as f:
                # The envelope's keys in the served order, `content` written in place, one record at a time.
                f.write(b"{")
                for i, (key, value) in enumerate(anon.envelope(envelope).items()):
                    f.write((b"," if i else b"") + orjson.dumps(key) + b":")
                    if key == "content" and isinstance(value, list):
                        f.write(b"[")
                        for j, rec in enumerate(value):
                            f.write((b"," if j else b"") + orjson.dumps(anon.record(resource, rec)))
                        f.write(b"]")
                    else:
                        f.write(orjson.dumps(value))
                f.write(b"}")
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CaptureError(path, f"cannot write: {exc.strerror}") from None
        self._entries[resource] = {"file": path.name, "records": len(records)}

    def error(self, resource: str, status: int | None, what: str) -> None:
        """An endpoint that did not answer with a listing: the emulator answers it the same way."""
        self._entries[resource] = {"error": {"status": status, "what": what}}

    def close(self) -> Path:
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "written_by": f"clevertim-sync {__version__}",
            "captured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resources": self._entries,
        }
        path = self.directory / MANIFEST
        try:
            with open_private(path) as f:
                f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            raise CaptureError(path, f"cannot write: {exc.strerror}") from None
        return path


@dataclass
class CapturedListing:
    """One resource of a capture as the emulator serves it."""

    name: str
    body: bytes | None = None  # the listing's envelope exactly as in the file
    status: int = 200  # an endpoint captured as failing answers this status
    what: str = ""
    envelope: dict[str, Any] = field(default_factory=dict)
    by_id: dict[str, bytes] = field(default_factory=dict)  # str(id) -> the record's JSON


def load_capture(directory: Path) -> dict[str, CapturedListing]:
    """Every resource of a capture directory, checked: a clear CaptureError, never a traceback."""
    manifest_path = directory / MANIFEST
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
    except OSError as exc:
        raise CaptureError(directory, f"no readable {MANIFEST}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise CaptureError(manifest_path, "not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CaptureError(manifest_path, f"not a capture manifest (format is not {FORMAT!r})")
    entries = manifest.get("resources")
    if not isinstance(entries, dict):
        raise CaptureError(manifest_path, "has no resources object")
    out: dict[str, CapturedListing] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise CaptureError(manifest_path, f"resource {name!r} is not an object")
        if isinstance(entry.get("error"), dict):
            status = entry["error"].get("status")
            out[name] = CapturedListing(
                name,
                status=status if isinstance(status, int) and 400 <= status < 600 else 503,
                what=str(entry["error"].get("what") or "failed when captured"),
            )
            continue
        path = directory / str(entry.get("file") or f"{name}.json")
        if path.parent != directory:
            raise CaptureError(manifest_path, f"resource {name!r} names a file outside the capture")
        try:
            body = path.read_bytes()
            doc = orjson.loads(body)
        except OSError as exc:
            raise CaptureError(path, f"cannot read: {exc.strerror}") from None
        except orjson.JSONDecodeError:
            raise CaptureError(path, "not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
            raise CaptureError(path, "not an API envelope with a content list")
        by_id = {
            _id_key(rec["id"]): orjson.dumps(rec)
            for rec in doc["content"]
            if isinstance(rec, dict) and "id" in rec
        }
        out[name] = CapturedListing(name, body=body, envelope=doc, by_id=by_id)
    return out


def _id_key(value: Any) -> str:
    """How an id appears in a URL path: 12 and "12" are both /12."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()
