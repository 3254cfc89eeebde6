"""Contact photos (opt-in, `pull.photos = true`): fetched when a contact's `cphoto` is new or changed.

Owns: which contacts' photos are due (a `cphoto` with no stored photo, another stored `cphoto`,
or a last fetch that failed), fetching them through the API client (`ClevertimClient.photo`:
the API's own host only, no redirects, `pull.photo_max_bytes`), and the `contact_photos` rows:
bytes, media type, sha256, when. A photo that fails is recorded (`last_error`, `attempted_at`)
and tried again at the next pull; it never fails the contacts' pull. A contact that is gone, or
has no `cphoto` any more, loses its row (the mirror holds what the account holds).

Called by the pull at one place, after the contacts are committed. Must not import httpx (the
client is passed in and raises the typed `api.errors`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
import structlog

from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.mirror import schema, store
from clevertim_sync.mirror.store import ResourceCounts
from clevertim_sync.settings import PullSettings

log = structlog.get_logger(__name__)

ERRORS_KEPT = 5  # reasons kept in PhotoCounts: enough to see what goes wrong


class FetchedPhoto(Protocol):
    content_type: str
    content: bytes


@runtime_checkable
class PhotoClient(Protocol):
    """What fetching photos needs of the API client (ClevertimClient.photo)."""

    def photo(self, contact_id: int, cphoto: str, *, max_bytes: int) -> FetchedPhoto: ...


@dataclass
class PhotoCounts:
    """What one pull did to the contact photos."""

    due: int = 0
    fetched: int = 0
    failed: int = 0
    removed: int = 0
    errors: list[str] = field(default_factory=list)


def due_photos(conn: sa.Connection) -> list[tuple[int, str]]:
    """(contact id, cphoto) of every contact whose photo is missing, changed or failed last time."""
    c, p = schema.CURRENT["contact"], schema.contact_photos
    stmt = (
        sa.select(c.c.id, c.c.photo)
        .select_from(c.outerjoin(p, p.c.contact_id == c.c.id))
        .where(
            c.c.photo.is_not(None),
            c.c.photo != "",
            sa.or_(
                p.c.contact_id.is_(None),
                p.c.cphoto != c.c.photo,
                p.c.content.is_(None),
                p.c.last_error.is_not(None),
            ),
        )
        .order_by(c.c.id)
    )
    return [(int(cid), str(cphoto)) for cid, cphoto in conn.execute(stmt)]


def _forget_gone(conn: sa.Connection) -> int:
    """Drop the photos of contacts that are gone or have no cphoto any more."""
    c, p = schema.CURRENT["contact"], schema.contact_photos
    kept = sa.select(c.c.id).where(c.c.photo.is_not(None), c.c.photo != "")
    return conn.execute(p.delete().where(p.c.contact_id.not_in(kept))).rowcount or 0


def sync_photos(engine: sa.Engine, client: PhotoClient, policy: PullSettings) -> PhotoCounts:
    """Fetch every due photo and store it (or why it failed). One transaction per photo: a slow
    or failing photo holds nothing else up."""
    counts = PhotoCounts()
    with engine.begin() as conn:
        counts.removed = _forget_gone(conn)
        due = due_photos(conn)
    counts.due = len(due)
    for contact_id, cphoto in due:
        at = store.now()
        try:
            photo = client.photo(contact_id, cphoto, max_bytes=policy.photo_max_bytes)
        except ClevertimSyncError as exc:
            why = str(exc) or type(exc).__name__
            counts.failed += 1
            if len(counts.errors) < ERRORS_KEPT:
                counts.errors.append(f"contact {contact_id}: {why}")
            with engine.begin() as conn:
                _record_failure(conn, contact_id, cphoto, why, at)
            continue
        with engine.begin() as conn:
            _store(conn, contact_id, cphoto, photo, at)
        counts.fetched += 1
    log.info(
        "pull.photos",
        due=counts.due,
        fetched=counts.fetched,
        failed=counts.failed,
        removed=counts.removed,
        errors=counts.errors,
    )
    return counts


def _store(conn: sa.Connection, contact_id: int, cphoto: str, photo: FetchedPhoto, at: datetime) -> None:
    p = schema.contact_photos
    values = {
        "cphoto": cphoto,
        "content_type": photo.content_type or None,
        "content": photo.content,
        "size": len(photo.content),
        "sha256": hashlib.sha256(photo.content).hexdigest(),
        "fetched_at": at,
        "attempted_at": at,
        "last_error": None,
    }
    conn.execute(p.delete().where(p.c.contact_id == contact_id))
    conn.execute(p.insert().values(contact_id=contact_id, **values))


def _record_failure(conn: sa.Connection, contact_id: int, cphoto: str, why: str, at: datetime) -> None:
    """Keep a photo fetched before (of an older cphoto) as it is; say why the new one failed."""
    p = schema.contact_photos
    error = f"{cphoto}: {why}"[:1000]
    updated = conn.execute(
        p.update().where(p.c.contact_id == contact_id).values(attempted_at=at, last_error=error)
    ).rowcount
    if not updated:
        conn.execute(
            p.insert().values(contact_id=contact_id, cphoto=cphoto, attempted_at=at, last_error=error)
        )


def after_pull(
    engine: sa.Engine, client: object, policy: PullSettings, contacts: ResourceCounts | None
) -> PhotoCounts | None:
    """The pull's one call: with `pull.photos` on and the contacts just pulled without error,
    fetch the due photos. Never raises for a photo: the pull's outcome is the listings'."""
    if not policy.photos or contacts is None or contacts.error is not None or contacts.held:
        return None
    if not isinstance(client, PhotoClient):
        return None
    try:
        return sync_photos(engine, client, policy)
    except sa.exc.SQLAlchemyError as exc:  # the photos wait for the next pull; the listings are in
        log.error("pull.photos_failed", error=str(exc))
        return None
