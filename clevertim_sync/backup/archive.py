"""Backups of the mirror: one self-checking archive file, written atomically, verified, restored.

Owns: the archive format, `backup()`, `verify()`, `restore()` and retention (`prune()`).
The database side (SQLite online backup, pg_dump, logical dump, loading rows) is backup/database.py;
the point-in-time export and `restore --from-export` are in backup/asof.py.

The archive is an uncompressed tar (readable with `tar tf`) holding, in this order:

    manifest.json     what, when, from where, schema revision, rows per table, payload checksums
    payload/...       the snapshot, compressed: `mirror.sqlite3.gz` (SQLite), `mirror.pgdump`
                      (pg_dump custom format, compressed by pg_dump), or `tables/<t>.jsonl.gz`
                      (logical dump, PostgreSQL without pg_dump)
    manifest.sha256   sha256 of manifest.json; written last, so its absence means a cut-off file

One format for both databases: verify() needs no database, and a SQLite or logical backup restores
into either database. Files are 0600 in a 0700 directory: a backup holds the whole CRM.

Encrypted with age (`backup.age_recipients`), the archive above is sealed whole inside another tar
(format_version 2) that holds only what finds and checks it without the key:

    manifest.json     when, method, schema revision, tool version, a digest of the source's URL
                      (so retention can tell several mirrors' archives apart), sealed.tar.age's
                      size and checksum; not the URL, not the table counts
    sealed.tar.age    the plain archive, age-encrypted (pyrage, streamed; see backup/seal.py)
    manifest.sha256   as above

A restic snapshot (backup/restic.py) is the plain archive with its payload left uncompressed, so
that restic's deduplication finds the unchanged parts of the mirror.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from clevertim_sync import __version__
from clevertim_sync.backup import database as bdb
from clevertim_sync.backup import seal
from clevertim_sync.errors import BackupError
from clevertim_sync.mirror import search
from clevertim_sync.mirror.db import alembic_config, current_revision, make_engine, sqlite_file, upgrade
from clevertim_sync.settings import Settings

log = structlog.get_logger(__name__)

FORMAT = "clevertim-sync-backup"
FORMAT_VERSION = 1
SEALED_FORMAT_VERSION = 2  # an older clevertim-sync says "use the version that wrote it"
MANIFEST = "manifest.json"
END_MARKER = "manifest.sha256"
SEALED = "sealed.tar.age"
NAME_RE = re.compile(r"^clevertim-sync-\d{8}T\d{6}\.\d{6}Z\.tar$")
_MEMBER_RE = re.compile(r"^payload/(tables/)?[A-Za-z0-9_.-]+$")
_SEALED_RE = re.compile(r"^sealed\.tar\.age$")
Method = Literal["auto", "sqlite", "pg_dump", "logical"]


@dataclass(frozen=True)
class Manifest:
    created_at: str
    method: str  # sqlite, pg_dump or logical
    schema_version: str | None
    tables: dict[str, int]
    files: dict[str, dict[str, Any]]  # member name -> {sha256, size}
    source: str  # the source URL, password hidden
    tool_version: str = __version__

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.__dict__}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls(**_fields_of(cls, _manifest_doc(data, FORMAT_VERSION)))


@dataclass(frozen=True)
class Envelope:
    """The outside of an age-encrypted archive: what finds and checks it without the key."""

    created_at: str
    method: str
    schema_version: str | None
    source_id: str  # source_id(the source URL): tells mirrors apart, does not say which
    files: dict[str, dict[str, Any]]  # {SEALED: {sha256, size}}
    sealed: str = "age"
    tool_version: str = __version__

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "format_version": SEALED_FORMAT_VERSION, **self.__dict__}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        return cls(**_fields_of(cls, _manifest_doc(data, SEALED_FORMAT_VERSION)))


def _manifest_doc(data: bytes, version: int) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BackupError(f"the manifest is not valid JSON ({exc}): the backup is damaged") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError("this is not a clevertim-sync backup (its manifest names another format)")
    if doc.get("format_version") != version:
        raise BackupError(
            f"backup format version {doc.get('format_version')} is not supported by this "
            f"clevertim-sync {__version__}: use the version that wrote it ({doc.get('tool_version')})"
        )
    return doc


def _fields_of(cls: type[Manifest | Envelope], doc: dict[str, Any]) -> dict[str, Any]:
    try:
        return {f.name: doc[f.name] for f in dataclasses.fields(cls)}
    except KeyError as exc:
        raise BackupError(f"the manifest lacks {exc.args[0]!r}: the backup is damaged") from None


def source_id(source: str) -> str:
    """A short digest of a source URL (password hidden): equal for one mirror, says nothing more."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    size: int
    seconds: float
    pruned: list[Path] = field(default_factory=list)
    encrypted: bool = False  # sealed with age: the manifest above is the one inside


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    target: str  # URL, password hidden
    rows: dict[str, int]
    upgraded_to: str | None


# --- small file helpers -----------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(final: Path) -> Iterator[Any]:
    """Write `final` through a 0600 temporary file beside it: fsync, rename, fsync the directory.

    Readers see either no file or the whole file; a crash leaves only a hidden `.part` file.
    """
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _gzip(src: Path, dest: Path) -> None:
    with src.open("rb") as fin, gzip.open(dest, "wb", compresslevel=6) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _gunzip(src: Path, dest: Path) -> None:
    try:
        with gzip.open(src, "rb") as fin, dest.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError) as exc:
        raise BackupError(f"the payload {src.name} does not decompress: {exc}") from exc


# --- taking a backup ----------------------------------------------------------------------------


def _choose_method(engine: Engine, method: Method) -> Method:
    dialect = engine.dialect.name
    if method == "auto":
        if dialect == "sqlite":
            return "sqlite"
        return "pg_dump" if bdb.pg_tool("pg_dump", engine) else "logical"
    if (method == "sqlite") != (dialect == "sqlite"):
        raise BackupError(f"backup method {method} does not fit a {dialect} database")
    return method


def _snapshot(
    engine: Engine, method: Method, work: Path, *, compress: bool = True
) -> tuple[str | None, dict[str, int], list[Path]]:
    """Take the consistent snapshot into `work`; returns (revision, counts, payload files).

    `compress=False` (for restic, which compresses and deduplicates itself) leaves the SQLite file
    and the logical dump as they are and asks pg_dump for no compression.
    """
    if method == "sqlite":
        raw = work / "mirror.sqlite3"
        bdb.sqlite_snapshot(bdb.sqlite_path(engine), raw)
        revision, counts = bdb.sqlite_facts(raw)
        if not compress:
            return revision, counts, [raw]
        packed = work / "mirror.sqlite3.gz"
        _gzip(raw, packed)
        raw.unlink()
        return revision, counts, [packed]
    with bdb.pg_snapshot(engine) as (conn, snapshot_id, revision, counts):
        if method == "pg_dump":
            tool = bdb.pg_tool("pg_dump") or "pg_dump"
            dump = work / "mirror.pgdump"
            bdb.pg_dump(engine, snapshot_id, dump, tool, compress=compress)
            return revision, counts, [dump]
        (work / "tables").mkdir()
        files = bdb.logical_dump(conn, sorted(counts), work / "tables", compress=compress)
        return revision, counts, [work / "tables" / name for name in files.values()]


def _member_name(payload_file: Path, work: Path) -> str:
    return f"payload/{payload_file.relative_to(work).as_posix()}"


def _archive_name(now: datetime) -> str:
    return f"clevertim-sync-{now.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}.tar"


def _resolve_dest(dest: Path | str, now: datetime) -> Path:
    dest = Path(dest)
    if dest.suffix == ".tar" and not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return dest
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    return dest / _archive_name(now)


def _add_file(tar: tarfile.TarFile, name: str, path: Path, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o600
    info.mtime = int(mtime)
    with path.open("rb") as f:
        tar.addfile(info, f)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(mtime)
    tar.addfile(info, io.BytesIO(data))


def _take(
    engine: Engine, method: Method, work: Path, now: datetime, *, compress: bool = True
) -> tuple[Manifest, list[Path]]:
    """The snapshot in `work` and the manifest describing it."""
    revision, counts, payload = _snapshot(engine, method, work, compress=compress)
    files = {_member_name(p, work): {"sha256": _sha256_file(p), "size": p.stat().st_size} for p in payload}
    manifest = Manifest(
        created_at=now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        method=method,
        schema_version=revision,
        tables=counts,
        files=files,
        source=bdb.safe_url(engine),
    )
    return manifest, payload


def _write_tar(f: Any, head: bytes, members: list[tuple[str, Path]], mtime: float, mode: str = "w") -> None:
    """manifest.json (`head`), the members, and the closing checksum, as one tar into `f`.

    `mode="w|"` writes a stream (a pipe into restic): nothing is sought back to.
    """
    with tarfile.open(fileobj=f, mode=mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        _add_bytes(tar, MANIFEST, head, mtime)
        for name, path in members:
            _add_file(tar, name, path, mtime)
        _add_bytes(tar, END_MARKER, hashlib.sha256(head).hexdigest().encode() + b"\n", mtime)


def _write_sealed(
    f: Any, manifest: Manifest, payload: list[Path], work: Path, *, mtime: float, recipients: list[Any]
) -> None:
    """The plain archive, sealed with age, inside an outer archive that shows only its envelope."""
    inner, sealed = work / "inner.tar", work / SEALED
    with inner.open("wb") as out:
        _write_tar(out, manifest.to_json(), [(_member_name(p, work), p) for p in payload], mtime)
    for p in payload:  # the plaintext goes as soon as it is sealed: one copy on disk at a time
        p.unlink()
    with inner.open("rb") as src, sealed.open("wb") as out:
        seal.seal(src, out, recipients)
    inner.unlink()
    envelope = Envelope(
        created_at=manifest.created_at,
        method=manifest.method,
        schema_version=manifest.schema_version,
        source_id=source_id(manifest.source),
        files={SEALED: {"sha256": _sha256_file(sealed), "size": sealed.stat().st_size}},
    )
    _write_tar(f, envelope.to_json(), [(SEALED, sealed)], mtime)


def backup(
    engine_or_url: Engine | str,
    dest: Path | str,
    keep: int | None = None,
    *,
    daily: int = 0,
    weekly: int = 0,
    method: Method = "auto",
    now: datetime | None = None,
    recipients: Sequence[str] = (),
) -> BackupResult:
    """Write one backup archive of the mirror into directory `dest` (or to the `.tar` path `dest`).

    Safe while the daemon writes: the snapshot is one committed state. With `keep`, older
    backups of the same database in that directory are pruned (see `prune` for daily/weekly).
    With `recipients` (age public keys) the archive is encrypted to them: this process then
    holds nothing that reads it back.
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    keys = seal.recipients(recipients)
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        method = _choose_method(engine, method)
        final = _resolve_dest(dest, now)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".backup-work-") as tmp:
            work = Path(tmp)
            manifest, payload = _take(engine, method, work, now)
            mtime = now.timestamp()
            with atomic_file(final) as f:
                if keys:
                    _write_sealed(f, manifest, payload, work, mtime=mtime, recipients=keys)
                else:
                    _write_tar(f, manifest.to_json(), [(_member_name(p, work), p) for p in payload], mtime)
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(
            f"cannot back up {bdb.safe_url(engine)}: {getattr(exc, 'orig', None) or exc}; "
            "check that the database is reachable"
        ) from exc
    except OSError as exc:
        raise BackupError(f"the backup into {dest} failed, nothing was written: {exc}") from exc
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
    pruned = (
        prune(final.parent, keep, source=manifest.source, daily=daily, weekly=weekly)
        if keep is not None
        else []
    )
    result = BackupResult(
        final, manifest, final.stat().st_size, time.monotonic() - started, pruned, encrypted=bool(keys)
    )
    log.info(
        "backup.written",
        path=str(final),
        method=method,
        encrypted=result.encrypted,
        bytes=result.size,
        seconds=round(result.seconds, 3),
        rows=sum(manifest.tables.values()),
        pruned=len(pruned),
    )
    return result


@dataclass(frozen=True)
class Stream:
    """A snapshot taken, its payload uncompressed, ready to be streamed as an archive (to restic)."""

    manifest: Manifest
    members: list[tuple[str, Path]]

    def write_to(self, out: Any) -> None:
        _write_tar(out, self.manifest.to_json(), self.members, time.time(), mode="w|")


def take_stream(engine: Engine, work: Path, *, method: Method = "auto") -> Stream:
    """Take the snapshot into `work` for a stream: restic compresses and deduplicates it itself."""
    try:
        method = _choose_method(engine, method)
        manifest, payload = _take(engine, method, work, datetime.now(UTC), compress=False)
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(
            f"cannot back up {bdb.safe_url(engine)}: {getattr(exc, 'orig', None) or exc}; "
            "check that the database is reachable"
        ) from exc
    return Stream(manifest, [(_member_name(p, work), p) for p in payload])


def _source_of(path: Path) -> str | None:
    """The `source_id` of an archive's source (plain or sealed), or None when it cannot be read."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            f = tar.extractfile(MANIFEST)
            if f is None:
                return None
            data = f.read()
            if orjson.loads(data).get("format_version") == SEALED_FORMAT_VERSION:
                return Envelope.from_json(data).source_id
            return source_id(Manifest.from_json(data).source)
    except (tarfile.TarError, OSError, KeyError, BackupError, orjson.JSONDecodeError, AttributeError):
        return None


def _taken_at(path: Path) -> datetime:
    return datetime.strptime(path.name, "clevertim-sync-%Y%m%dT%H%M%S.%fZ.tar").replace(tzinfo=UTC)


def default_dir(settings: Settings) -> Path:
    """backup.dir, else <state dir>/backups."""
    return settings.backup.dir if settings.backup.dir is not None else Path(settings.state_dir) / "backups"


def backup_with_settings(engine: Engine, settings: Settings, dest: Path | str | None = None) -> BackupResult:
    """One backup as configured: into backup.dir, pruned by backup.keep / keep_daily / keep_weekly.

    The daemon's scheduled backup and `clevertim-sync backup` both come here.
    """
    conf = settings.backup
    return backup(
        engine,
        dest if dest is not None else default_dir(settings),
        keep=conf.keep,
        daily=conf.keep_daily,
        weekly=conf.keep_weekly,
        recipients=conf.age_recipients,
    )


def newest(directory: Path) -> Path:
    """The newest backup archive in `directory` (by its name's time), or BackupError."""
    found = sorted(p for p in directory.glob("clevertim-sync-*.tar") if NAME_RE.match(p.name))
    if not found:
        raise BackupError(f"there is no backup in {directory} yet: take one with `clevertim-sync backup`")
    return found[-1]


def prune(
    directory: Path | str, keep: int, *, source: str | None = None, daily: int = 0, weekly: int = 0
) -> list[Path]:
    """Delete old backups in `directory`; files not named like a backup are never touched.

    Kept: the newest `keep`, plus the newest of each of the last `daily` days and of each of the
    last `weekly` ISO weeks that have a backup. With `source`, only backups of that database
    count: several accounts (or mirrors) may share one backup directory.
    """
    if keep < 1:
        raise BackupError(f"keep must be at least 1, not {keep}: a retention of nothing deletes every backup")
    ours = sorted(
        (
            p
            for p in Path(directory).iterdir()
            if NAME_RE.match(p.name) and (source is None or _source_of(p) == source_id(source))
        ),
        reverse=True,
    )
    kept = set(ours[:keep])
    for count, by_week in ((daily, False), (weekly, True)):
        seen: set[object] = set()
        for path in ours:  # newest first: the first of each day/week is its newest
            taken = _taken_at(path)
            key: object = taken.isocalendar()[:2] if by_week else taken.date()
            if key not in seen and len(seen) < count:
                seen.add(key)
                kept.add(path)
    doomed = [p for p in ours if p not in kept]
    for path in doomed:
        path.unlink(missing_ok=True)
        log.info("backup.pruned", path=str(path))
    return doomed


# --- reading and verifying ------------------------------------------------------------------


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, out: Callable[[bytes], object]) -> None:
    f = tar.extractfile(member)
    if f is None:
        raise BackupError(f"{member.name} in the backup is not a regular file: the backup is damaged")
    for chunk in iter(lambda: f.read(1 << 20), b""):
        out(chunk)


def _open_checked(path: Path, work: Path, identity: Path | None = None) -> Manifest:
    """Check the archive against its manifest and extract the payload into `work`.

    A sealed archive is checked outside, opened with `identity` into `work`, and checked inside.
    """
    head = _open_tar(path, work)
    if isinstance(head, Manifest):
        return head
    if identity is None:
        raise BackupError(
            f"{path} is encrypted with age: give --identity FILE, the age identity whose public key "
            "is in backup.age_recipients (without it `verify` checks only that the file is whole)"
        )
    keys = seal.identities(identity)
    inner = work / "inner.tar"
    with (work / SEALED).open("rb") as src, inner.open("wb") as out:
        seal.open_sealed(src, out, keys, identity)
    (work / SEALED).unlink()
    manifest = _open_tar(inner, work, shown=path)
    inner.unlink()
    if not isinstance(manifest, Manifest):
        raise BackupError(f"{path} was altered: it holds a sealed archive inside a sealed archive")
    return manifest


def _open_tar(path: Path, work: Path | None, shown: Path | None = None) -> Manifest | Envelope:
    """Check one tar (manifest checksum, every listed member's size and sha256); the members are
    extracted into `work`, or only hashed when `work` is None. `shown` names the file in messages."""
    shown = shown or path
    if not path.is_file():
        raise BackupError(f"there is no backup file at {path}")
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if MANIFEST not in members:
                raise BackupError(f"{shown} has no {MANIFEST}: it is not a clevertim-sync backup")
            buf = io.BytesIO()
            _read_member(tar, members[MANIFEST], buf.write)
            data = buf.getvalue()
            if END_MARKER not in members:
                raise BackupError(f"{shown} is truncated: its closing checksum ({END_MARKER}) is missing")
            marker = io.BytesIO()
            _read_member(tar, members[END_MARKER], marker.write)
            if marker.getvalue().strip().decode(errors="replace") != hashlib.sha256(data).hexdigest():
                raise BackupError(f"{shown} was altered: {MANIFEST} does not match its checksum")
            head = _parse_head(data)
            unexpected = set(members) - set(head.files) - {MANIFEST, END_MARKER}
            if unexpected:
                raise BackupError(f"{shown} was altered: it holds files its manifest does not list: "
                                  f"{', '.join(sorted(unexpected))}")  # fmt: skip
            allowed = _SEALED_RE if isinstance(head, Envelope) else _MEMBER_RE
            for name, expected in head.files.items():
                if not allowed.match(name):
                    raise BackupError(f"{shown} was altered: the manifest names an unsafe path {name!r}")
                _extract_checked(tar, members, name, expected, path=shown, work=work)
    except tarfile.TarError as exc:
        raise BackupError(f"{shown} is truncated or not a tar archive ({exc}); use another backup") from exc
    except EOFError as exc:
        raise BackupError(f"{shown} is truncated: {exc}; use another backup") from exc
    return head


def _parse_head(data: bytes) -> Manifest | Envelope:
    try:
        sealed = orjson.loads(data).get("format_version") == SEALED_FORMAT_VERSION
    except (orjson.JSONDecodeError, AttributeError):
        sealed = False  # Manifest.from_json says what is wrong with it
    return Envelope.from_json(data) if sealed else Manifest.from_json(data)


def _extract_checked(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    name: str,
    expected: dict[str, Any],
    *,
    path: Path,
    work: Path | None,
) -> None:
    member = members.get(name)
    if member is None:
        raise BackupError(f"{path} is truncated or altered: payload {name} is missing")
    if member.size != expected["size"]:
        raise BackupError(
            f"{path} was altered: {name} is {member.size} bytes, the manifest says {expected['size']}"
        )
    h = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        out = None
        if work is not None:
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(target.open("wb"))

        def write(chunk: bytes) -> None:
            h.update(chunk)
            if out is not None:
                out.write(chunk)

        _read_member(tar, member, write)
    if h.hexdigest() != expected["sha256"]:
        raise BackupError(
            f"{path} was altered or damaged: the checksum of {name} does not match its manifest"
        )


def check_envelope(path: Path | str) -> Envelope | None:
    """The envelope of an age-encrypted archive, checked without the key (whole, checksums, an
    age file inside), or None for a plain archive (which `verify` checks completely)."""
    head = _open_tar(Path(path), None)
    if isinstance(head, Manifest):
        return None
    with tarfile.open(path, mode="r:") as tar:
        f = tar.extractfile(SEALED)
        if f is None or f.read(len(seal.MAGIC)) != seal.MAGIC:
            raise BackupError(f"{path} was altered: {SEALED} is not an age file")
    log.info("backup.envelope_verified", path=str(path), method=head.method)
    return head


def _check_payload(manifest: Manifest, work: Path) -> Path | None:
    """Open the payload and compare it with the manifest's counts; returns the SQLite file if any."""
    if manifest.method == "sqlite":
        db = work / "mirror.sqlite3"
        if "payload/mirror.sqlite3" in manifest.files:  # a restic snapshot's, left uncompressed
            (work / "payload" / "mirror.sqlite3").replace(db)
        else:
            _gunzip(work / "payload" / "mirror.sqlite3.gz", db)
        revision, counts = bdb.sqlite_facts(db)
        if revision != manifest.schema_version:
            raise BackupError(
                f"the snapshot is at schema {revision}, the manifest says {manifest.schema_version}"
            )
        _compare_counts(manifest.tables, counts, "the snapshot")
        return db
    if manifest.method == "pg_dump":
        bdb.pg_restore_list(work / "payload" / "mirror.pgdump")
        return None
    if manifest.method == "logical":
        counts = {}
        for table in manifest.tables:
            try:
                counts[table] = sum(1 for _ in bdb.iter_jsonl(_table_file(manifest, work, table)))
            except (OSError, EOFError, orjson.JSONDecodeError) as exc:
                raise BackupError(f"the rows of {table} do not read back: {exc}") from exc
        _compare_counts(manifest.tables, counts, "the logical dump")
        return None
    raise BackupError(f"unknown backup method {manifest.method!r} in the manifest")


def _compare_counts(expected: dict[str, int], actual: dict[str, int], where: str) -> None:
    wrong = [
        f"{t}: {actual.get(t, 'missing')} rows, the manifest says {n}"
        for t, n in sorted(expected.items())
        if actual.get(t) != n
    ]
    if wrong:
        raise BackupError(f"{where} does not match the manifest: " + "; ".join(wrong))


def verify(path: Path | str, identity: Path | None = None) -> Manifest:
    """Check a backup completely (checksums, row counts, that the snapshot opens), or raise BackupError.

    An age-encrypted one needs its `identity` (see `check_envelope` for what is checked without).
    """
    with tempfile.TemporaryDirectory(prefix="clevertim-sync-verify-") as tmp:
        manifest = _open_checked(Path(path), Path(tmp), identity)
        _check_payload(manifest, Path(tmp))
    log.info("backup.verified", path=str(path), method=manifest.method, tables=len(manifest.tables))
    return manifest


# --- restoring ------------------------------------------------------------------------------


def _check_revision_known(revision: str | None) -> None:
    if revision is None:
        return
    from alembic.script import ScriptDirectory  # noqa: PLC0415 (alembic loads slowly; only restore needs it)

    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except Exception as exc:  # alembic raises several kinds for an unknown revision
        raise BackupError(
            f"the backup's schema {revision!r} is newer than this clevertim-sync {__version__} knows: "
            "restore it with the version that wrote it, or upgrade clevertim-sync"
        ) from exc


def _replace_sqlite_file(snapshot: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A stale -wal beside the new file would be replayed into it: remove the old journal first.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with atomic_file(target) as f, snapshot.open("rb") as src:
        shutil.copyfileobj(src, f, 1 << 20)


def _table_counts(engine: Engine, tables: list[str]) -> dict[str, int]:
    existing = set(sa.inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {bdb.q(t)}")).scalar_one())  # noqa: S608
            for t in tables
            if t in existing
        }


def prepare_target(engine: Engine, force: bool, what: str) -> None:
    """Refuse a target with rows in it unless `force`; then clear it so a restore starts from nothing."""
    if not bdb.is_empty(engine):
        if not force:
            raise BackupError(
                f"{bdb.safe_url(engine)} already holds data; restoring {what} would overwrite it. "
                "Restore into an empty database, or pass --force to replace its contents"
            )
        log.warning("restore.replacing", target=bdb.safe_url(engine))
    if engine.dialect.name == "postgresql":
        if sa.inspect(engine).get_table_names():
            bdb.wipe_postgres(engine)
    else:
        engine.dispose()
        path = bdb.sqlite_path(engine)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def target_engine(to_url: str) -> Iterator[Engine]:
    """The engine of a restore target; database errors become a BackupError naming the target."""
    if (path := sqlite_file(to_url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(to_url)
    try:
        yield engine
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(
            f"restoring into {bdb.safe_url(engine)} failed: {getattr(exc, 'orig', None) or exc}; "
            "check the --to URL, that the database exists and that this user may create tables in it"
        ) from exc
    finally:
        engine.dispose()


def restore(
    path: Path | str, to_url: str, force: bool = False, *, identity: Path | None = None
) -> RestoreResult:
    """Verify the backup, then restore it into the database at `to_url` and upgrade its schema.

    An age-encrypted backup is opened with `identity` first: without it, or with another one,
    nothing is written to the target.
    """
    with tempfile.TemporaryDirectory(prefix="clevertim-sync-restore-") as tmp:
        work = Path(tmp)
        manifest = _open_checked(Path(path), work, identity)
        snapshot = _check_payload(manifest, work)
        _check_revision_known(manifest.schema_version)
        with target_engine(to_url) as engine:
            if manifest.method == "pg_dump" and engine.dialect.name != "postgresql":
                raise BackupError(
                    "a pg_dump backup restores only into PostgreSQL; restore it there, or take a "
                    "backup with --method logical to move the mirror into SQLite"
                )
            prepare_target(engine, force, f"backup {Path(path).name}")
            _load(manifest, work, snapshot, engine)
            counts = _table_counts(engine, list(manifest.tables))
            _compare_counts(manifest.tables, counts, "the restored database")
            upgrade(engine)
            result = RestoreResult(manifest, bdb.safe_url(engine), counts, current_revision(engine))
    log.info("restore.finished", target=result.target, method=manifest.method, rows=sum(counts.values()))
    return result


def _load(manifest: Manifest, work: Path, snapshot: Path | None, engine: Engine) -> None:
    dialect = engine.dialect.name
    if manifest.method == "sqlite" and snapshot is not None and dialect == "sqlite":
        _replace_sqlite_file(snapshot, bdb.sqlite_path(engine))
        return
    if manifest.method == "pg_dump":
        bdb.pg_restore(work / "payload" / "mirror.pgdump", engine)
        return
    # Across databases (SQLite snapshot into PostgreSQL) or from a logical dump: build the schema
    # the backup was taken at, then copy the rows in; the final upgrade() takes it to head.
    if manifest.schema_version is not None:
        upgrade(engine, manifest.schema_version)
    sources: dict[str, Callable[[], Iterator[dict[str, Any]]]] = {}
    for table in manifest.tables:
        if snapshot is not None:
            sources[table] = bdb.sqlite_rows(snapshot, table)
        else:
            sources[table] = _jsonl_source(_table_file(manifest, work, table))
    bdb.load_rows(engine, sources)
    with engine.begin() as conn:  # since 0004 no trigger fills SQLite's full-text index: build it
        search.rebuild_all(conn)


def _jsonl_source(path: Path) -> Callable[[], Iterator[dict[str, Any]]]:
    return lambda: bdb.iter_jsonl(path)


def _table_file(manifest: Manifest, work: Path, table: str) -> Path:
    """A logical dump's file of `table`: gzip'd in an archive, plain in a restic snapshot."""
    plain = f"payload/tables/{table}.jsonl"
    return work / (plain if plain in manifest.files else f"{plain}.gz")
