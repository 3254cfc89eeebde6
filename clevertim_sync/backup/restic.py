"""Off-site backups through restic: one snapshot per backup, retention by restic, restore from it.

Owns: finding the `restic` binary and the repository's password (`backup.restic_password_file`,
the systemd credential `clevertim-sync-restic-password`, or restic's own RESTIC_PASSWORD_FILE /
RESTIC_PASSWORD / RESTIC_PASSWORD_COMMAND), sending a backup, `forget --prune` by the configured
retention, listing this account's snapshots and fetching one back (`restic dump`).

What restic gets: the plain archive (archive.py's format) with its payload uncompressed, streamed
on restic's stdin as `/clevertim-sync.tar`. Restic compresses, encrypts and deduplicates by itself;
gzip or age before it would change every byte each day and defeat the deduplication. Each snapshot
is tagged `clevertim-sync`, `account:<name>` and `schema:<revision>`; retention and restores look
only at this account's snapshots, so several accounts (or other backups) may share a repository.

Secrets: the password reaches restic as a file name in its environment, never on a command line;
a repository location is shown with any password in it masked (`rest:https://u:***@host/`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy.engine import Engine

from clevertim_sync.backup import archive
from clevertim_sync.errors import BackupError, ConfigError
from clevertim_sync.settings import Settings

log = structlog.get_logger(__name__)

TAG = "clevertim-sync"
FILENAME = "clevertim-sync.tar"  # the name of the stdin file in every snapshot
_PASSWORD_VARS = ("RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND")


def shown(location: str) -> str:
    """A repository location as a message may show it: a password in a URL masked."""
    return re.sub(r"(//[^/:@]+:)[^@/]+@", r"\1***@", location)


def account_tag(account: str) -> str:
    return f"account:{account}"


@dataclass(frozen=True)
class Repository:
    location: str
    binary: str
    password_file: Path | None  # None: restic's own variables in the environment
    cache_dir: Path | None = None  # None: --no-cache (a fresh machine's restore keeps nothing)
    options: tuple[str, ...] = ()  # restic's -o options (sftp.command=..., s3.region=...)

    def run(self, *args: str, stdin: int | None = None, what: str) -> subprocess.CompletedProcess[bytes]:
        """One restic command, its output captured; a failure becomes one BackupError."""
        done = subprocess.run(  # noqa: S603 (the binary found on the PATH, arguments are ours)
            self.argv(*args), env=self.env(), stdin=stdin, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise self.failure(what, done.returncode, done.stderr)
        return done

    def argv(self, *args: str) -> list[str]:
        cache = ["--cache-dir", str(self.cache_dir)] if self.cache_dir is not None else ["--no-cache"]
        options = [arg for option in self.options for arg in ("-o", option)]
        return [self.binary, "--repo", self.location, *cache, *options, *args]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # restic runs inside the daemon's MemoryMax: a tighter Go heap, unless the user chose one.
        # Measured with a 370 MB stream: backup 125 -> 57 MB peak RSS, dump 187 -> 133 MB.
        env.setdefault("GOGC", "25")
        if self.password_file is not None:
            for var in _PASSWORD_VARS:
                env.pop(var, None)
            env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        return env

    def failure(self, what: str, code: int, stderr: bytes) -> BackupError:
        text = " ".join(stderr.decode(errors="replace").split())
        text = text.replace(self.location, shown(self.location))[-600:]
        hint = ""
        if "does not exist" in text or "unable to open config file" in text:
            hint = f"; create it first: restic --repo {shown(self.location)} init"
        elif "wrong password" in text:
            hint = "; check the password file (backup.restic_password_file)"
        return BackupError(f"restic {what} on {shown(self.location)} failed (exit {code}): {text}{hint}")


def find_binary() -> str:
    found = shutil.which("restic")
    if found is None:
        raise BackupError(
            "backup.restic_repository is set but `restic` is not on the PATH: install it "
            "(Debian: apt install restic) or remove restic_repository from [backup]"
        )
    return found


def _password_problem(password_file: Path | None) -> str | None:
    if password_file is None:
        if any(os.environ.get(var) for var in _PASSWORD_VARS):
            return None
        return (
            "restic needs the repository's password: set backup.restic_password_file, the systemd "
            "credential clevertim-sync-restic-password, or RESTIC_PASSWORD_FILE"
        )
    try:
        if not password_file.read_bytes().strip():
            return f"the restic password file {password_file} is empty"
    except OSError as exc:
        return f"the restic password file {password_file} cannot be read: {exc.strerror}"
    return None


def repository(
    location: str,
    password_file: Path | None = None,
    cache_dir: Path | None = None,
    options: tuple[str, ...] = (),
) -> Repository:
    """The repository at `location`, or BackupError when restic or its password is missing."""
    binary = find_binary()
    problem = _password_problem(password_file)
    if problem is not None:
        raise BackupError(problem)
    return Repository(location, binary, password_file, cache_dir, options)


def configured(settings: Settings) -> Repository | None:
    """`backup.restic_repository` as a Repository (None when not configured)."""
    conf = settings.backup
    if conf.restic_repository is None:
        return None
    return repository(
        conf.restic_repository,
        conf.restic_password_file,
        Path(settings.state_dir) / "restic-cache",
        conf.restic_options,
    )


def preflight(settings: Settings) -> None:
    """At start-up (the daemon, `check`): restic configured but missing, or no password, is a
    ConfigError now rather than a failed backup at 3 a.m."""
    try:
        configured(settings)
    except BackupError as exc:
        raise ConfigError([f"backup.restic_repository: {exc}"]) from None


# --- sending, forgetting --------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    snapshot_id: str
    manifest: archive.Manifest
    bytes_sent: int  # the archive's size as restic read it
    data_added: int  # what the repository grew by, before its own compression
    seconds: float
    forgotten: list[str] = field(default_factory=list)


def send(
    engine: Engine,
    repo: Repository,
    account: str,
    *,
    work_dir: Path,
    keep: int | None = None,
    daily: int = 0,
    weekly: int = 0,
) -> Sent:
    """Take a snapshot of the mirror and send it to restic as one snapshot; then forget by policy."""
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".restic-work-") as tmp:
        stream = archive.take_stream(engine, Path(tmp))
        tags = [TAG, account_tag(account), f"schema:{stream.manifest.schema_version or 'none'}"]
        argv = repo.argv(
            "backup", "--stdin", "--stdin-filename", FILENAME, "--json", "--quiet",
            *(a for t in tags for a in ("--tag", t)),
        )  # fmt: skip
        # restic's output goes to files: a pipe it filled while we write its stdin would hang both.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, env=repo.env(), stdin=subprocess.PIPE, stdout=out, stderr=err)  # noqa: S603
            assert proc.stdin is not None
            try:
                stream.write_to(proc.stdin)
            except BrokenPipeError:
                pass  # restic stopped reading: its exit status and stderr say why
            except BaseException:
                proc.kill()  # before stdin closes: half an archive must not become a snapshot
                proc.wait()
                raise
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            code = proc.wait()
            out.seek(0)
            err.seek(0)
            if code != 0:
                raise repo.failure("backup", code, err.read())
            summary = _last_json(out.read())
    forgotten = forget(repo, account, keep, daily=daily, weekly=weekly) if keep is not None else []
    sent = Sent(
        str(summary.get("snapshot_id", "")),
        stream.manifest,
        int(summary.get("total_bytes_processed", 0)),
        int(summary.get("data_added", 0)),
        time.monotonic() - started,
        forgotten,
    )
    log.info(
        "backup.restic_sent",
        repository=shown(repo.location),
        snapshot=sent.snapshot_id,
        bytes=sent.bytes_sent,
        added=sent.data_added,
        seconds=round(sent.seconds, 3),
        forgotten=len(forgotten),
    )
    return sent


def _last_json(out: bytes) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.strip().startswith(b"{"):
            doc = orjson.loads(line)
            if isinstance(doc, dict):
                return doc
    return {}


def forget(repo: Repository, account: str, keep: int, *, daily: int = 0, weekly: int = 0) -> list[str]:
    """restic forget --prune of this account's snapshots: keep as many as `prune` would keep in a
    directory (the newest `keep`, and the newest of each of the last `daily` days / `weekly` weeks).

    One group for all of this account's snapshots (`--group-by ''`): a new schema revision or
    another host must not start a retention of its own. Returns the ids forgotten.
    """
    policy = ["--keep-last", str(keep)]
    if daily:
        policy += ["--keep-daily", str(daily)]
    if weekly:
        policy += ["--keep-weekly", str(weekly)]
    done = repo.run(
        "forget", "--tag", f"{TAG},{account_tag(account)}", "--group-by", "", *policy, "--prune", "--json",
        what="forget",
    )  # fmt: skip
    removed: list[str] = []
    for line in done.stdout.splitlines():  # the JSON line among prune's progress lines ("[0:00] ...")
        try:
            groups = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(groups, list):
            for group in groups:
                removed += [s["short_id"] for s in group.get("remove") or []]
    return removed


# --- listing and fetching -----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    tags: tuple[str, ...]
    hostname: str

    def tag_value(self, prefix: str) -> str | None:
        return next((t.removeprefix(prefix) for t in self.tags if t.startswith(prefix)), None)


def snapshots(repo: Repository, account: str | None = None) -> list[Snapshot]:
    """This tool's snapshots (of `account`, else of every account), oldest first."""
    tags = TAG if account is None else f"{TAG},{account_tag(account)}"
    done = repo.run("snapshots", "--json", "--tag", tags, what="snapshots")
    found = [
        Snapshot(
            s["id"],
            s.get("short_id", s["id"][:8]),
            _parse_time(s["time"]),
            tuple(s.get("tags") or ()),
            s.get("hostname", ""),
        )
        for s in orjson.loads(done.stdout or b"[]")
    ]
    return sorted(found, key=lambda s: s.time)


def _parse_time(text: str) -> datetime:
    """restic's RFC 3339 time with nanoseconds, to a datetime (microseconds)."""
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if match is None:
        raise BackupError(f"restic gave a snapshot time this tool cannot read: {text!r}")
    fraction = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + fraction + zone)


def choose(repo: Repository, snapshot: str | None, account: str | None) -> Snapshot:
    """The snapshot named (an id or its prefix), else the newest of `account` (or of any)."""
    found = snapshots(repo, account)
    if snapshot is not None:
        matching = [s for s in found if s.id.startswith(snapshot)]
        if len(matching) != 1:
            raise BackupError(
                f"{'no' if not matching else 'more than one'} clevertim-sync snapshot in "
                f"{shown(repo.location)} has the id {snapshot!r}: see `restic snapshots --tag {TAG}`"
            )
        return matching[0]
    if not found:
        whose = f" of account {account}" if account else ""
        raise BackupError(f"{shown(repo.location)} holds no clevertim-sync snapshot{whose} yet")
    accounts = sorted({str(s.tag_value("account:")) for s in found})
    if account is None and len(accounts) > 1:
        raise BackupError(
            f"{shown(repo.location)} holds snapshots of several accounts ({', '.join(accounts)}): "
            "name one with --account, or a snapshot with --snapshot"
        )
    return found[-1]


def fetch(repo: Repository, snap: Snapshot, dest: Path) -> None:
    """Write the snapshot's archive to `dest` (`restic dump`, streamed to the file)."""
    with dest.open("wb") as out:
        done = subprocess.run(  # noqa: S603
            repo.argv("dump", snap.id, f"/{FILENAME}"),
            env=repo.env(),
            stdout=out,
            stderr=subprocess.PIPE,
            check=False,
        )
    if done.returncode != 0:
        dest.unlink(missing_ok=True)
        raise repo.failure("dump", done.returncode, done.stderr)


def restore_from(
    repo: Repository,
    to_url: str,
    *,
    snapshot: str | None = None,
    account: str | None = None,
    force: bool = False,
) -> tuple[Snapshot, archive.RestoreResult]:
    """Restore a snapshot (the newest by default) into the database at `to_url`."""
    snap = choose(repo, snapshot, account)
    with tempfile.TemporaryDirectory(prefix="clevertim-sync-restic-") as tmp:
        path = Path(tmp) / FILENAME
        fetch(repo, snap, path)
        return snap, archive.restore(path, to_url, force=force)
