"""Contact photos (opt-in, `pull.photos = true`): fetched when a contact's `cphoto` is new or changed.

Owns: which contacts' photos are due (a `cphoto` with no stored photo, another stored `cphoto`, or
a last fetch that failed), fetching them through the API client (`ClevertimClient.photo`: the
token only to the API's own host, `pull.photo_max_bytes`), at most `pull.photos_per_pull` per pull
(a first pull of a big account spreads its photos over several pulls), and the `contact_photos`
rows: bytes, media type, sha256, when. A photo that fails is recorded (`last_error`,
`attempted_at`) and tried again at the next pull; it never fails the contacts' pull. What a
failure means is `health`'s table (column `photo`), asked through the pull's `ServerHealth`: a
failure of the whole server (cannot connect, a refused token, a rate limit) ends this round at
once, the rest wait for the next pull, and a rate limit pauses every request. A contact that is
gone, or has no `cphoto` any more, loses its row (the mirror holds what the account holds).

Called by the pull at one place, after the contacts are committed. Must not import httpx (the
client is passed in and raises the typed `api.errors`).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
import structlog

from clevertim_sync.errors import ApiError, ClevertimSyncError, told_server_message
from clevertim_sync.health import ServerHealth, Where
from clevertim_sync.mirror import schema, store
from clevertim_sync.mirror.failures import error_text
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
    left: int = 0  # due, but left for the next pull (the per-pull limit, a stop, a server-wide failure)
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


def sync_photos(
    engine: sa.Engine,
    client: PhotoClient,
    policy: PullSettings,
    health: ServerHealth,
    stop: threading.Event | None = None,
) -> PhotoCounts:
    """Fetch the due photos (at most `policy.photos_per_pull`) and store each, or why it failed.
    One transaction per photo: a slow or failing photo holds nothing else up."""
    counts = PhotoCounts()
    with engine.begin() as conn:
        counts.removed = _forget_gone(conn)
        due = due_photos(conn)
    counts.due = len(due)
    for done, (contact_id, cphoto) in enumerate(due):
        if done >= policy.photos_per_pull or (stop is not None and stop.is_set()):
            counts.left = len(due) - done
            break
        at = store.now()
        try:
            photo = client.photo(contact_id, cphoto, max_bytes=policy.photo_max_bytes)
        except ClevertimSyncError as exc:
            why = _reason(exc)
            counts.failed += 1
            if len(counts.errors) < ERRORS_KEPT:
                counts.errors.append(f"contact {contact_id}: {why}")
            with engine.begin() as conn:
                _record_failure(conn, contact_id, cphoto, why, at)
            if isinstance(exc, ApiError) and health.after_error(exc, Where.PHOTO).decision.stop:
                counts.left = len(due) - done - 1  # every other photo would meet it
                break
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
        left=counts.left,
        errors=counts.errors,
    )
    return counts


def _reason(exc: ClevertimSyncError) -> str:
    """Why a photo failed, without the API error's advice (written for listings and writes)."""
    if not isinstance(exc, ApiError):
        return error_text(exc)
    why = f"{type(exc).__name__}: {exc.what}"
    if exc.status is not None:
        why += f" (HTTP {exc.status})"
    if exc.server_message:
        why += " - " + told_server_message(exc.server_message)
    return why


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
    error = why[:1000]  # not the cphoto (a file name can be a person's): its own column keeps it
    updated = conn.execute(
        p.update().where(p.c.contact_id == contact_id).values(attempted_at=at, last_error=error)
    ).rowcount
    if not updated:
        conn.execute(
            p.insert().values(contact_id=contact_id, cphoto=cphoto, attempted_at=at, last_error=error)
        )


def after_pull(
    engine: sa.Engine,
    client: object,
    policy: PullSettings,
    contacts: ResourceCounts | None,
    *,
    health: ServerHealth,
    stop: threading.Event | None = None,
) -> PhotoCounts | None:
    """The pull's one call: with `pull.photos` on and the contacts just pulled without error,
    fetch the due photos. Never raises for a photo: the pull's outcome is the listings'."""
    if not policy.photos or contacts is None or contacts.error is not None or contacts.held:
        return None
    if not isinstance(client, PhotoClient):
        return None
    try:
        return sync_photos(engine, client, policy, health, stop)
    except sa.exc.SQLAlchemyError as exc:  # the photos wait for the next pull; the listings are in
        log.error("pull.photos_failed", error=error_text(exc))
        return None


def summary_line(counts: PhotoCounts) -> str:
    """One line for `sync`: what this pull did to the photos."""
    line = f"contact photos: {counts.fetched} fetched, {counts.failed} failed, {counts.removed} removed"
    if counts.left:
        line += f", {counts.left} left for the next pull"
    if counts.errors:
        line += f" (first failure: {counts.errors[0]})"
    return line


def status_line(conn: sa.Connection, *, enabled: bool) -> str | None:
    """One line for `status`: photos kept and failing, or None when photos are off and none is kept."""
    p = schema.contact_photos
    kept, failing = conn.execute(
        sa.select(
            sa.func.count(p.c.content),
            sa.func.count(p.c.last_error),
        )
    ).one()
    if not enabled and not kept and not failing:
        return None
    line = f"contact photos: {kept} kept, {failing} failing (retried at the next pull)"
    if failing:
        newest = conn.execute(
            sa.select(p.c.contact_id, p.c.last_error)
            .where(p.c.last_error.is_not(None))
            .order_by(p.c.attempted_at.desc(), p.c.contact_id)
            .limit(1)
        ).one()
        line += f"; latest: contact {newest.contact_id}: {newest.last_error[:200]}"
    if not enabled:
        line += "; pull.photos is off: they are no longer fetched"
    return line
