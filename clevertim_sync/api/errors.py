"""Typed errors of the Clevertim API adapter: one class per thing the API (or the network) can do.

Owns: the ApiError tree, which failures are `transient` (worth retrying later) and which leave a
write's outcome unknown (`may_have_reached_server`), and the wording of their messages.

Must not import: httpx (callers catch these without knowing the transport), SQLAlchemy.

    ApiError(ClevertimSyncError)
    ├── TransportError      could not connect: the request never reached the server   (transient, server-wide)
    ├── ResponseLost        timeout/reset after sending: a write's outcome is unknown (transient)
    ├── MalformedResponse   truncated, non-JSON, HTML page, bad envelope             (transient)
    ├── BadRequest          400 (and other undocumented 4xx): the server said why
    ├── AuthFailed          401/403: the token is wrong, revoked or lacks rights
    │   └── LoginRequired   401, or an HTML login page where JSON was expected           (server-wide)
    ├── Redirected          3xx: never followed (the token must not go elsewhere)        (server-wide)
    ├── NotFound            404: the entry does not exist (or is hidden from this token)
    ├── RequestNotParsed    500: the server could not parse the request body (our bug)
    ├── NotSupported        501: operation not supported (e.g. updating a comment)
    ├── ForeignHost         a photo's redirect to an address not followed (https -> http)
    ├── TooLarge            a photo over pull.photo_max_bytes
    │   └── ListingTooLarge a listing over pull.max_listing_bytes
    ├── SpoolFailed         a listing could not be written to its temporary file (disk full)
    ├── RateLimited         429, with retry_after when the server gave one            (transient, server-wide)
    └── ServiceUnavailable  502/503/504 and other 5xx                                 (transient)

`server_wide`: the failure is about the server, the URL or the token, not this request: every
other request would meet it too, so a pull stops at the first one instead of trying each resource.

Messages never contain the token: the client never puts it in a URL, and masks it in whatever the
server echoes back before building the error.
"""

from __future__ import annotations

from typing import ClassVar

from clevertim_sync.errors import ClevertimSyncError


class ApiError(ClevertimSyncError):
    """Base of every API failure. Fields are structured so callers decide without parsing text."""

    transient_kind: ClassVar[bool] = False
    unknown_outcome: ClassVar[bool] = False
    server_wide: ClassVar[bool] = False
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
    def transient(self) -> bool:
        """True when the same request may well succeed later (network, overload, rate limit)."""
        return self.transient_kind

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
            parts.append(f"- server says: {self.server_message!r}")
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
    transient_kind = True
    server_wide = True
    unknown_outcome = False
    advice = "the request did not reach the server; check the URL and the network, it will be retried"


class ResponseLost(ApiError):
    transient_kind = True
    unknown_outcome = True
    advice = (
        "the request was sent but no complete answer came back; a write may or may not have been "
        "applied, so check the server's state before sending it again"
    )


class MalformedResponse(ApiError):
    transient_kind = True
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

    server_wide = True
    advice = (
        "the server did not accept the token: check it (CLEVERTIM_TOKEN, the token file or the "
        "systemd credential, read again before the next attempt) and that clevertim.url is the "
        "API (https://www.clevertim.com/api), not the web app's login"
    )


class Redirected(ApiError):
    """A 3xx: never followed (the token must not be sent to another host), never retried."""

    server_wide = True
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
    transient_kind = True
    server_wide = True
    advice = "the server is rate limiting; wait before the next request"


class ServiceUnavailable(ApiError):
    transient_kind = True
    advice = "the service or a proxy in front of it is failing; it will be retried later"

    @property
    def may_have_reached_server(self) -> bool:
        # 502/504 come from a gateway that may have forwarded the request before the upstream
        # failed; 503 (and other 5xx) mean the service turned it away.
        return self.status in (502, 504)


def error_for_status(status: int) -> type[ApiError]:
    """The exception class for an HTTP status that is not 200."""
    exact: dict[int, type[ApiError]] = {
        400: BadRequest,
        401: LoginRequired,
        403: AuthFailed,
        404: NotFound,
        408: ServiceUnavailable,  # the server timed out waiting for us: worth retrying
        429: RateLimited,
        500: RequestNotParsed,
        501: NotSupported,
    }
    if status in exact:
        return exact[status]
    if 500 <= status < 600:
        return ServiceUnavailable
    if 400 <= status < 500:
        return BadRequest
    if 300 <= status < 400:
        return Redirected
    return MalformedResponse  # 1xx/3xx/other 2xx: not something the API answers
