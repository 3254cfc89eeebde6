"""A record's versions, read from the `<table>_versions` views over history (migration 0007).

Owns: which view holds a resource's versions, reading one record's versions oldest first, the
version valid at an instant, and parsing the instant a person types. `history`, `revert --to` and
the reports read versions through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from clevertim_sync import jsontext, resources
from clevertim_sync.errors import ReportError
from clevertim_sync.mirror.types import UtcDateTime

_TS = UtcDateTime()


def parse_timestamp(text: str) -> datetime:
    """An ISO-8601 instant (`2026-11-27T09:00:00Z`, `2026-11-27 09:00`, `2026-11-27`); naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"{text!r} is not a timestamp: use ISO-8601 such as 2026-11-27T09:00:00Z or 2026-11-27"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def versions_view(resource: str) -> str:
    """The view of `resource`'s versions: contacts_versions, opportunities_versions, ..."""
    return f"{resources.get(resource).table}_versions"


@dataclass(frozen=True)
class Version:
    """One version of a record, as its <table>_versions view shows it."""

    number: int  # 1, 2, 3, ... per record
    history_id: int
    valid_from: datetime
    valid_to: datetime | None  # None: the latest version
    op: str  # insert, update or delete
    origin: str  # pull or local
    run_id: int | None
    queue_item_id: int | None
    raw: dict[str, Any] | None
    changed: dict[str, list[Any]] | None  # {field: [old, new]} for an update


def record_versions(conn: sa.Connection, resource: str, record_id: int | str) -> list[Version]:
    """Every version of one record, oldest first (empty when the mirror never held it)."""
    view = versions_view(resource)
    cols = "version, history_id, valid_from, valid_to, op, origin, run_id, queue_item_id, raw, changed"
    stmt = sa.text(
        f"SELECT {cols} FROM {view} WHERE record_id = :rid ORDER BY version"  # noqa: S608 (a registry name)
    ).columns(valid_from=_TS, valid_to=_TS)
    return [
        Version(
            number=int(r.version),
            history_id=int(r.history_id),
            valid_from=r.valid_from,
            valid_to=r.valid_to,
            op=r.op,
            origin=r.origin,
            run_id=r.run_id,
            queue_item_id=r.queue_item_id,
            raw=jsontext.loads(r.raw) if r.raw else None,
            changed=orjson.loads(r.changed) if r.changed else None,
        )
        for r in conn.execute(stmt, {"rid": record_id})
    ]


def version_at(versions: Sequence[Version], at: datetime) -> Version | None:
    """The version valid at `at` (valid_from <= at < valid_to), or None before the first."""
    found = None
    for v in versions:
        if v.valid_from <= at:
            found = v
    return found
