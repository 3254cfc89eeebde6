"""Point in time: the CRM as it was at a moment, rebuilt from history; and loading an export back.

Owns: `records_as_of()` (every record's last version at or before a moment), `export_as_of()`
(the same JSONL files as `export`, for that moment) and `restore_from_export()` (a directory of
`<resource>.jsonl` files loaded into an empty mirror as one pull, with history).

Shares rather than copies: the as-of state is put into a scratch mirror (a temporary SQLite file)
and written by `store.export_jsonl`, so both exports have one format and one writer; the loading
goes through `diff.compute_changes` and `store.apply_changes`, the pull's own path.

Limits, by design of the mirror: an `lm` bump with no content change is not history, so an as-of
record carries the `lm` of its last real change; the state is what this mirror saw, so a change
made and undone between two pulls is not in it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from clevertim_sync import jsontext, resources
from clevertim_sync.backup.archive import prepare_target, target_engine
from clevertim_sync.errors import BackupError, MirrorError
from clevertim_sync.mirror import schema, store
from clevertim_sync.mirror.db import upgrade
from clevertim_sync.pull.diff import compute_changes

log = structlog.get_logger(__name__)
BATCH = 2000


def records_as_of(
    conn: sa.Connection, resource: str, at: datetime
) -> Iterator[tuple[int | str, str, str | None]]:
    """(id, raw, content_hash) of each record of `resource` that existed at `at`, by id.

    A record's state at `at` is its newest history row written at or before `at`; a delete
    there means it did not exist. History ids grow in commit order, so "newest" is max(id).
    A text-id resource's records (documents) are named by `history.record_key`.
    """
    h = schema.history
    text = resource in resources.TEXT_ID_RESOURCES
    key = h.c.record_key if text else h.c.record_id
    last = (
        sa.select(sa.func.max(h.c.id).label("id"))
        .where(h.c.resource == resource, h.c.at <= at)
        .group_by(key)
        .subquery()
    )
    stmt = (
        sa.select(key, h.c.raw, h.c.content_hash)
        .join(last, last.c.id == h.c.id)
        .where(h.c.op != "delete")
        .order_by(store.id_order(conn, key))
    )
    for record_id, raw, digest in conn.execution_options(stream_results=True, yield_per=BATCH).execute(stmt):
        if raw is None:  # an insert or update always stores the version; guard a hand-made row
            raise MirrorError(f"history of {resource} {record_id} has no record text; cannot rebuild it")
        yield (str(record_id) if text else int(record_id)), raw, digest


def export_as_of(engine: Engine, directory: Path | str, at: datetime) -> dict[str, int]:
    """Write `<resource>.jsonl` files into `directory` holding every record as it was at `at`."""
    with tempfile.TemporaryDirectory(prefix="clevertim-sync-asof-") as tmp:
        scratch = sa.create_engine(f"sqlite:///{Path(tmp) / 'asof.sqlite3'}")
        # A throwaway file: no journal fsyncs (the export files themselves are still fsynced).
        sa.event.listen(scratch, "connect", lambda dbapi, _rec: dbapi.execute("PRAGMA synchronous=OFF"))
        try:
            schema.metadata.create_all(scratch, tables=list(schema.CURRENT.values()))
            with engine.connect() as src, scratch.begin() as dst:
                for res in resources.RESOURCES:
                    _copy_state(src, dst, res.name, at)
            with scratch.connect() as conn:
                written = store.export_jsonl(conn, directory)
        finally:
            scratch.dispose()
    log.info("export.as_of", directory=str(directory), at=at.isoformat(), records=sum(written.values()))
    return written


def _copy_state(src: sa.Connection, dst: sa.Connection, resource: str, at: datetime) -> None:
    table = schema.CURRENT[resource]
    batch: list[dict[str, object]] = []
    for record_id, raw, digest in records_as_of(src, resource, at):
        batch.append({"id": record_id, "raw": raw, "content_hash": digest or ""})
        if len(batch) >= BATCH:
            dst.execute(table.insert(), batch)
            batch = []
    if batch:
        dst.execute(table.insert(), batch)


def _read_export(directory: Path, resource: str) -> list[dict[str, object]]:
    path = directory / f"{resource}.jsonl"
    if not path.is_file() and resources.get(resource).optional:
        return []  # an export from before the documents were mirrored: none to load
    if not path.is_file():
        raise BackupError(
            f"{path} is missing: a directory written by `clevertim-sync export` has one file per resource"
        )
    records = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = jsontext.loads(line)  # exact: big integers, lone surrogates
            except (ValueError, RecursionError) as exc:
                raise BackupError(f"{path}:{number} is not JSON ({exc}); nothing was restored") from exc
            if not isinstance(record, dict):
                raise BackupError(f"{path}:{number} is not a JSON object; nothing was restored")
            records.append(record)
    return records


def restore_from_export(directory: Path | str, to_url: str, *, force: bool = False) -> dict[str, int]:
    """Load an export into an empty mirror at `to_url` as one pull (kind 'restore'), with history.

    Every file is read and checked before the target is touched; the load is one transaction.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BackupError(f"there is no export directory at {directory}")
    # Read and check everything before the target is touched: a bad file loses nothing, even with --force.
    planned = {}
    for res in resources.RESOURCES:
        path = directory / f"{res.name}.jsonl"
        planned[res.name] = compute_changes(res.name, _read_export(directory, res.name), {})
        # A pull keeps one copy of an id served twice; an export never holds one twice: damaged.
        for _record, rid, _digest in planned[res.name].duplicates[:1]:
            raise BackupError(f"{path}: id {rid!r} appears more than once; nothing was restored")
    with target_engine(to_url) as engine:
        prepare_target(engine, force, f"export {directory}")
        upgrade(engine)
        at = datetime.now(UTC)
        counts: dict[str, int] = {}
        with engine.begin() as conn:
            run_id = store.start_run(conn, "restore", at=at)
            for name, changes in planned.items():
                store.apply_changes(conn, name, changes, run_id=run_id, at=at)
                counts[name] = len(changes.inserts)
                store.record_outcome(conn, run_id, name, store.ResourceCounts(inserted=counts[name]), at=at)
            store.finish_run(conn, run_id, "ok")
    log.info("restore.from_export", directory=str(directory), records=sum(counts.values()))
    return counts
