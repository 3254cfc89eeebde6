"""The project's exceptions: one root, structured fields, messages that say what to do next.

    ClevertimSyncError
    ├── ConfigError            bad configuration: every problem at once (exit status 2)
    ├── EditRejected           a local edit that must not be queued: every problem at once
    ├── QueueItemError         a `queue` command cannot act on this item (unknown, wrong state)
    ├── ApiError               anything the Clevertim API (or the network) did: one class each
    │   ├── TransportError     could not connect: the request never reached the server
    │   ├── ResponseLost       timeout/reset after sending: a write's outcome is unknown
    │   ├── MalformedResponse  truncated, non-JSON, HTML page, bad envelope
    │   ├── BadRequest         400 (and other undocumented 4xx): the server said why
    │   ├── AuthFailed         401/403: the token is wrong, revoked or lacks rights
    │   │   └── LoginRequired  401, or an HTML login page where JSON was expected
    │   ├── Redirected         3xx: never followed (the token must not go elsewhere)
    │   ├── NotFound           404: the entry does not exist (or is hidden from this token)
    │   ├── RequestNotParsed   500: the server could not parse the request body (our bug)
    │   ├── NotSupported       501: operation not supported (e.g. updating a comment)
    │   ├── ForeignHost        a photo's redirect to an address not followed (https -> http)
    │   ├── TooLarge           a photo over pull.photo_max_bytes
    │   │   └── ListingTooLarge a listing over pull.max_listing_bytes
    │   ├── SpoolFailed        a listing could not be written to its temporary file (disk full)
    │   ├── RateLimited        429, with retry_after when the server gave one
    │   └── ServiceUnavailable 502/503/504 and other 5xx
    ├── MirrorError            the local database refused or could not do something
    │   ├── MassDeleteRefused  a listing would delete too much of a resource
    │   └── DatabaseFailure    a full disk, an I/O error, a read-only or damaged database
    ├── InstanceLocked         another daemon already runs against this mirror
    ├── BackupError            a backup is missing, truncated, altered or cannot be restored
    ├── ReportError            an unknown report or search, or an option it does not take (exit 2)
    └── DatasetteError         Datasette cannot serve this mirror (PostgreSQL, which account?) or is missing

Areas keep the errors only they raise beside their code, under the same root:
`capture.CaptureError`, `daemon.runtime.StopRequested`, the emulator's spec and control errors.

The API's errors live here, on the ground floor, so that `health/` (what to do after each:
retry, pause, dead-letter, stop; its decision table) can name them without importing the API
adapter; `api/errors.py` maps an HTTP status to one of them. An error states what happened
(`status`, `retry_after`, `may_have_reached_server`); whether it is retried, pauses the server or
stops a run is `health`'s decision, nowhere else. Their messages never contain the token: the
client never puts it in a URL, and masks it in whatever the server echoes back. Nor do they quote
the server's own message (`server_message`, kept as a field): refusing a write, a server may
echo the record's values ("invalid email 'jane@acme.com'"), and an error's message goes to logs,
`last_error`, `status` and alerts. `told_server_message` says how it is told instead; the full
text stays on the queue item, where its owner looks (`queue show`, `queue list`).

Only the CLI (`cli/__init__.py`) and the daemon (`daemon/service.py`) turn these into text for
people; everything else raises them.
"""

from __future__ import annotations

import re
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
    'no_account', 'not_installed' or 'not_loopback' (`--serve` on another address without
    `--allow-remote`); the message says what to do instead."""

    exit_code = 2

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


# --- the API's errors ------------------------------------------------------------------------------

# An error code a server may answer with ("DUPLICATE", "rate_limited"): a word of a closed set, as
# no record's value looks (no digit, no '@', no space, no mixed case), so it may be shown as it is.
_ERROR_CODE = re.compile(r"[A-Z][A-Z_]{2,39}|[a-z]{2,20}(?:_[a-z]{2,20}){1,3}")


def told_server_message(message: str, *, on_queue: bool = False) -> str:
    """The server's own error text as a message that may go to a log, an alert or `status` may
    tell it: an error code as it is, anything else by its length only (it may quote what the
    request carried). `on_queue`: a write's, whose queue item keeps the text (`queue show`)."""
    if _ERROR_CODE.fullmatch(message):
        return f"server says: {message!r}"
    where = "`clevertim-sync queue show` has it" if on_queue else "it may quote a record"
    return f"the server's message ({len(message)} characters) is not quoted here: {where}"


class ApiError(ClevertimSyncError):
    """Base of every API failure. Fields are structured so callers decide without parsing text."""

    unknown_outcome: ClassVar[bool] = False
    advice: ClassVar[str] = "see the server's message"

    def __init__(
        self,
        what: str,
        *,
        method: str,
        resource: str,
        record_id: int | None = None,
        status: int | None = None,
        server_message: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
        location: str | None = None,
    ) -> None:
        self.what = what
        self.location = location
        self.method = method
        self.resource = resource
        self.record_id = record_id
        self.status = status
        self.server_message = server_message
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(self._message())

    @property
    def target(self) -> str:
        """`GET contact/12` style: what was being done, for messages and logs."""
        path = self.resource if self.record_id is None else f"{self.resource}/{self.record_id}"
        return f"{self.method} {path}"

    @property
    def may_have_reached_server(self) -> bool:
        """True when a write may have been applied although no usable answer came back.

        A queue must then not resend blindly (a POST would create a duplicate): it has to check.
        """
        return self.unknown_outcome

    def _message(self) -> str:
        parts = [f"{self.target}: {self.what}"]
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        if self.location is not None:
            parts.append(f"to {self.location!r}")
        if self.server_message:
            parts.append("- " + told_server_message(self.server_message, on_queue=self.method != "GET"))
        if self.retry_after is not None:
            parts.append(f"- retry after {self.retry_after:g}s")
        if self.attempts > 1:
            parts.append(f"- after {self.attempts} attempts")
        return " ".join(parts) + f"; {self.advice}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields: make pickling (e.g. across a process pool) keep them.
        return (_rebuild, (type(self), self.what, self.__dict__.copy()))


def _rebuild(cls: type[ApiError], what: str, state: dict[str, object]) -> ApiError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._message())
    return err


class TransportError(ApiError):
    unknown_outcome = False
    advice = "the request did not reach the server; check the URL and the network, it will be retried"


class ResponseLost(ApiError):
    unknown_outcome = True
    advice = (
        "the request was sent but no complete answer came back; a write may or may not have been "
        "applied, so check the server's state before sending it again"
    )


class MalformedResponse(ApiError):
    advice = "the answer was not the API's JSON envelope (proxy page? truncated?); it will be retried"

    @property
    def may_have_reached_server(self) -> bool:
        # A 2xx with a garbled body means the server most likely did the write.
        return self.status is not None and 200 <= self.status < 300


class BadRequest(ApiError):
    advice = "the server refused this request as sent; fix the data or the permissions, do not resend as is"


class AuthFailed(ApiError):
    advice = "check the API token (CLEVERTIM_TOKEN / token file) and this user's rights in Clevertim"


class LoginRequired(AuthFailed):
    """The server wants a login: a 401, or an HTML (login) page with 200/401/403 where the API's
    JSON was expected. Not transient: the token (or the URL) must change first."""

    advice = (
        "the server did not accept the token: check it (CLEVERTIM_TOKEN, the token file or the "
        "systemd credential, read again before the next attempt) and that clevertim.url is the "
        "API (https://www.clevertim.com/api), not the web app's login"
    )


class Redirected(ApiError):
    """A 3xx: never followed (the token must not be sent to another host), never retried."""

    advice = (
        "redirects are not followed, so that the token never goes to another host; set "
        "clevertim.url to the API's own address (it ends in /api, and the host is www.clevertim.com)"
    )


class NotFound(ApiError):
    advice = "the entry does not exist or is not visible to this token"


class RequestNotParsed(ApiError):
    advice = "the server could not parse the request body; this is a bug in clevertim-sync, please report it"


class NotSupported(ApiError):
    advice = "Clevertim does not support this operation for this resource (e.g. comments cannot be updated)"


class ForeignHost(ApiError):
    """A photo's redirect to an address it is not followed to (not http(s), or https down to
    http). The token is never sent to another host than the API's anyway."""

    advice = "the photo was not fetched from there; it is tried again at the next pull"


class TooLarge(ApiError):
    """An answer larger than the limit set for it (a contact photo over pull.photo_max_bytes)."""

    advice = "raise pull.photo_max_bytes to keep it"


class ListingTooLarge(TooLarge):
    """A listing's body over pull.max_listing_bytes: the download stops there."""

    advice = "the resource's tables are left as they were; raise pull.max_listing_bytes to accept it"


class SpoolFailed(ApiError):
    """A listing could not be written to its temporary file (a full disk, an I/O error)."""

    advice = "free space where temporary files go ($TMPDIR); the resource is pulled again at the next pull"


class RateLimited(ApiError):
    advice = "the server is rate limiting; wait before the next request"


class ServiceUnavailable(ApiError):
    advice = "the service or a proxy in front of it is failing; it will be retried later"

    @property
    def may_have_reached_server(self) -> bool:
        # 502/504 come from a gateway that may have forwarded the request before the upstream
        # failed; 503 (and other 5xx) mean the service turned it away.
        return self.status in (502, 504)
