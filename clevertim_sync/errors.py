"""The project's exceptions: one root, structured fields, messages that say what to do next.

    ClevertimSyncError
    ├── ConfigError            bad configuration: every problem at once (exit status 2)
    ├── EditRejected           a local edit that must not be queued: every problem at once
    ├── QueueItemError         a `queue` command cannot act on this item (unknown, wrong state)
    ├── ApiError               anything the Clevertim API did (defined in api/errors.py)
    ├── MirrorError            the local database refused or could not do something
    │   ├── MassDeleteRefused  a listing would delete too much of a resource
    │   └── DatabaseFailure    a full disk, an I/O error, a read-only or damaged database
    ├── InstanceLocked         another daemon already runs against this mirror
    ├── BackupError            a backup is missing, truncated, altered or cannot be restored
    ├── ReportError            an unknown report or search, or an option it does not take (exit 2)
    └── DatasetteError         Datasette cannot serve this mirror (PostgreSQL, which account?) or is missing

Areas keep the errors only they raise beside their code, under the same root:
`capture.CaptureError`, `daemon.runtime.StopRequested`, the emulator's spec and control errors.

Only the CLI (`cli/__init__.py`) and the daemon (`daemon/service.py`) turn these into text for
people; everything else raises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class ClevertimSyncError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(ClevertimSyncError):
    """The configuration cannot be used; `problems` lists every reason, not just the first."""

    exit_code = 2

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class EditRejected(ClevertimSyncError):
    """A local edit failed validation against the resource registry; nothing was queued."""

    exit_code = 2

    def __init__(self, resource: str, problems: Sequence[str]) -> None:
        self.resource = resource
        self.problems = list(problems)
        super().__init__(
            f"edit of {resource} refused, nothing was queued:\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )


class MirrorError(ClevertimSyncError):
    """The local mirror database could not do what was asked."""


class MassDeleteRefused(MirrorError):
    """A listing would delete more than the allowed share of a resource's records."""

    def __init__(self, resource: str, would_delete: int, mirrored: int, max_share: float) -> None:
        self.resource = resource
        self.would_delete = would_delete
        self.mirrored = mirrored
        self.max_share = max_share
        super().__init__(
            f"{resource}: the listing would delete {would_delete} of {mirrored} mirrored records, "
            f"more than the allowed {max_share:.0%}; nothing was changed. If the deletes are real, "
            f"run `clevertim-sync sync --resource {resource} --allow-mass-delete` or raise "
            f"mass_delete_threshold"
        )


class DatabaseFailure(MirrorError):
    """The database cannot write or read for a reason outside the program: `kind` is 'full',
    'io', 'read_only', 'corrupt' or 'resources'. The transaction was rolled back."""

    # kind: (what happened, what the user does about it)
    _ADVICE: ClassVar[dict[str, tuple[str, str]]] = {
        "full": ("the disk (or the database's quota) is full", "free space"),
        "io": ("the disk reported an I/O error", "check the disk and the file system"),
        "read_only": (
            "the database is read-only",
            "check the permissions of the file and its directory (under systemd: StateDirectory=)",
        ),
        "corrupt": ("the database file is damaged", "restore the latest backup (`clevertim-sync restore`)"),
        "resources": ("the database server ran out of resources", "check its memory, connections and disk"),
    }

    def __init__(self, kind: str, database: str, detail: str) -> None:
        self.kind = kind
        self.database = database
        self.detail = detail
        problem, action = self._ADVICE.get(kind, ("the database failed", "see the detail"))
        super().__init__(
            f"{problem}: mirror database {database} ({detail}); nothing half-written was kept. "
            f"To go on: {action}, then run the command again (the daemon retries by itself)"
        )


class InstanceLocked(ClevertimSyncError):
    """Another clevertim-sync daemon holds this mirror."""


class BackupError(ClevertimSyncError):
    """A backup cannot be written, verified or restored."""


class QueueItemError(ClevertimSyncError):
    """A writeback queue command cannot act on this item (unknown id, or wrong state for it)."""

    exit_code = 2

    def __init__(self, item_id: int | None, problem: str) -> None:
        self.item_id = item_id
        self.problem = problem
        where = f"queue item {item_id}" if item_id is not None else "writeback queue"
        super().__init__(f"{where}: {problem}")


class ReportError(ClevertimSyncError):
    """An unknown report, or an option the report does not take."""

    exit_code = 2


class DatasetteError(ClevertimSyncError):
    """`clevertim-sync datasette` cannot do what was asked: `reason` is 'postgresql', 'no_file',
    'no_account' or 'not_installed'; the message says what to do instead."""

    exit_code = 2

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
