"""What can be wrong with one entry of a listing, and what the mirror does about it (pure).

Owns: the reasons an entry is reported (`REASONS`: stable names, used as keys of a run's counts,
`status`, metric labels and the probe's findings) and `LeftOut`, the stand-in the listing's parser
gives for an entry it could not read, so that the diff leaves it out and reports it like any
entry without a usable id.

One entry never fails its resource: it is kept (altered where it must be, and reported) or left
out (and reported); the rest of the listing is mirrored either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# reason -> what happened to such an entry (docs/explanation/bad-data.md says the same).
REASONS: dict[str, str] = {
    "no_id": "left out: no usable id",
    "not_object": "left out: not an object",
    "unreadable": "left out: nested too deep or a number too long to keep",
    "duplicate_id": "served more than once: one copy kept (newest lm, then content hash)",
    "not_utf8": "bytes that are not UTF-8 replaced by U+FFFD, in raw too",
    "odd_text": "NUL or lone surrogate: U+FFFD in typed columns and child rows, raw exact",
}

_ID = re.compile(r'"id"\s*:\s*"?\s*(-?[0-9]{1,18})\s*"?\s*[,}]')


@dataclass(frozen=True)
class LeftOut:
    """An entry the parser could not read (`reason`, one of REASONS), and the integer id its text
    seems to carry (kept from deletion: the record may still exist), if any."""

    reason: str
    maybe_id: int | None

    @classmethod
    def of(cls, reason: str, text: str) -> LeftOut:
        found = _ID.search(text)
        return cls(reason, int(found.group(1)) if found else None)
