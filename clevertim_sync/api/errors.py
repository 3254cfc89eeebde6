"""The HTTP face of the API's errors: which class an answer's status is.

Owns: the mapping of a status to its class (`error_for_status`). The classes themselves live in
`clevertim_sync.errors` (the ground floor, so that `health/` can name them without the adapter)
and are re-exported here: `from clevertim_sync.api import errors as e; e.NotFound`. What happens
after each (retried, a pause, a dead letter, a stopped run) is `clevertim_sync.health`'s table.
"""

from __future__ import annotations

from clevertim_sync.errors import (
    ApiError,
    AuthFailed,
    BadRequest,
    ForeignHost,
    ListingTooLarge,
    LoginRequired,
    MalformedResponse,
    NotFound,
    NotSupported,
    RateLimited,
    Redirected,
    RequestNotParsed,
    ResponseLost,
    ServiceUnavailable,
    SpoolFailed,
    TooLarge,
    TransportError,
)

__all__ = [
    "ApiError",
    "AuthFailed",
    "BadRequest",
    "ForeignHost",
    "ListingTooLarge",
    "LoginRequired",
    "MalformedResponse",
    "NotFound",
    "NotSupported",
    "RateLimited",
    "Redirected",
    "RequestNotParsed",
    "ResponseLost",
    "ServiceUnavailable",
    "SpoolFailed",
    "TooLarge",
    "TransportError",
    "error_for_status",
]


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
