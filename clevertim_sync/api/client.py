"""The Clevertim REST API adapter: one httpx client, the envelope validated, typed errors, read retries.

Owns: URLs, auth (HTTP basic `TOKEN:X`), headers, timeouts, decoding and validating the envelope,
mapping every failure to an `api.errors` class, and retrying reads (never writes) as
`clevertim_sync.health` decides: after each failed attempt it asks the policy whether and when to
try again (`Policy.read_retry`), and does what it says.

Nothing above this module sees httpx.

Why writes are never retried here: the API has no idempotency keys, so a POST whose answer was lost
may have created the entry; only the queue (which can look at the server's state) may decide.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import ssl
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson
import structlog

from clevertim_sync import __version__, jsontext, resources, shapes
from clevertim_sync.api import bodies
from clevertim_sync.api import errors as e
from clevertim_sync.api.inflate import UnknownEncoding, inflate
from clevertim_sync.api.listing import Listing, spool_file
from clevertim_sync.errors import ConfigError
from clevertim_sync.health import Policy
from clevertim_sync.health.delays import Rng, parse_retry_after
from clevertim_sync.logs import REDACTED, register_secret
from clevertim_sync.settings import Settings, api_url_problems

log = structlog.get_logger(__name__)

# A module-level alias: inside the class, `list` is the method.
Records = list[dict[str, Any]]
_T = TypeVar("_T")

_RESOURCE_NAME = re.compile(r"^[a-z][a-z_]{0,40}$")
_TOKEN_OK = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII without spaces: fits a header
# Redirects a photo request follows (to a CDN, without the token); the API's never are.
PHOTO_REDIRECTS = 3
PHOTO_ENCODINGS = "gzip, deflate"  # what inflate() decodes (an image gains little from more)


@dataclass
class RawListing:
    """A listing as the server answered it (`list_raw`): the envelope parsed, nothing checked
    inside `content`."""

    status: int
    headers: dict[str, str]  # names lower-cased
    body_bytes: int  # the body after any Content-Encoding was undone
    wire_bytes: int  # as it came over the network
    seconds: float
    envelope: dict[str, Any]
    # Entries the listing's parser kept but reported: (entries.REASONS key, the entry's id).
    findings: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> list[Any]:
        content: list[Any] = self.envelope["content"]
        return content


@dataclass(frozen=True)
class Photo:
    """A contact photo as served: its media type and bytes."""

    content_type: str
    content: bytes


class ClevertimClient:
    """Synchronous client of one Clevertim account. Thread-safe (httpx.Client is); close() it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        read_retries: int | None = None,
        http: httpx.Client | httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Rng | None = None,
        allow_insecure_http: bool = False,
        user_agent: str = "clevertim-sync",
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        max_retry_wait: float | None = None,
        stop: threading.Event | None = None,
        connect_retries: int | None = None,
        rate_limit_floor: float | None = None,
        token_source: Callable[[], str] | None = None,
        ca_bundle: str | None = None,
        policy: Policy | None = None,
        max_listing_bytes: int = 2_000_000_000,
    ) -> None:
        if problems := api_url_problems(base_url, allow_insecure_http=allow_insecure_http):
            raise ConfigError(problems)
        self.base_url = base_url.rstrip("/")
        _check_token(token)
        register_secret(token)
        self._token = token
        self._auth = httpx.BasicAuth(token, "X")
        # Where the token comes from (its file or systemd credential): read again before the next
        # request once the server refused it, so a rotated token is picked up without SIGHUP.
        self._token_source = token_source
        self._token_refused = False
        self._token_lock = threading.Lock()
        # Whether and when a read is tried again: the health policy's (the keywords above
        # override its numbers, for a client made by hand).
        self.policy = _with_overrides(
            policy,
            read_retries=read_retries,
            connect_retries=connect_retries,
            read_backoff_base=backoff_base,
            read_backoff_cap=backoff_cap,
            max_read_wait=max_retry_wait,
            rate_limit_floor=rate_limit_floor,
        )
        self.read_retries = self.policy.read_retries
        # A listing's body beyond this fails its resource (a runaway server cannot fill the disk).
        self._max_listing_bytes = max_listing_bytes
        self._sleep = sleep
        self._rng: Rng = rng or random.Random()
        # Set when the daemon is stopping: a read waiting to retry gives up at once with its last
        # error (a stop during an outage is not held up by minutes of backoff). Waited on instead
        # of `sleep`.
        self._stop = stop
        self._timeout = httpx.Timeout(timeout)
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"{user_agent}/{__version__}",
        }
        if isinstance(http, httpx.Client):
            self._http, self._owns_http = http, False
        else:
            # trust_env: HTTPS_PROXY / NO_PROXY / SSL_CERT_FILE are honoured; `ca_bundle` (a PEM
            # file, for a TLS-inspecting proxy) replaces the default trust store when given.
            self._http = httpx.Client(
                transport=http,
                timeout=self._timeout,
                follow_redirects=False,
                trust_env=True,
                verify=_trust(ca_bundle),
            )
            self._owns_http = True

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ClevertimClient:
        c = settings.clevertim
        kwargs.setdefault("policy", Policy.from_settings(settings))
        return cls(
            c.url,
            settings.token_value(),
            timeout=c.timeout,
            allow_insecure_http=c.allow_insecure_http,
            user_agent=c.user_agent,
            token_source=settings.fresh_token if c.token_file is not None else None,
            ca_bundle=str(c.ca_bundle) if c.ca_bundle is not None else None,
            max_listing_bytes=settings.pull.max_listing_bytes,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"ClevertimClient({self.base_url!r})"  # never the token

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the API ---------------------------------------------------------------------------

    def list(self, resource: str) -> Records:
        """Every entry of `resource` visible to this token (one GET, no paging in this API)."""
        return self._read("GET", resource, None)

    def listing(self, resource: str) -> Listing:
        """Every entry of `resource`, as `list` gives them, but downloaded to a temporary file and
        read back in batches (`Listing.batches`): memory holds a batch, not the listing. Retried
        like `list` until the whole body is in and its envelope checked; the same typed errors."""
        return self._retried("GET", resource, None, lambda: self._listing_once(resource))

    def get(self, resource: str, record_id: int) -> dict[str, Any]:
        """One entry; NotFound if it does not exist or this token cannot see it."""
        content = self._read("GET", resource, record_id)
        return self._single(content, "GET", resource, record_id)

    def create(self, resource: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new entry; returns it as the server stored it (with its id). Never retried."""
        content = self._write("POST", resource, None, fields)
        return self._single(content, "POST", resource, None)

    def update(self, resource: str, record_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the given fields only; returns the updated entry. Never retried."""
        content = self._write("PUT", resource, record_id, fields)
        return self._single(content, "PUT", resource, record_id)

    def delete(self, resource: str, record_id: int) -> None:
        """DELETE one entry. Never retried."""
        self._write("DELETE", resource, record_id, None)

    def list_raw(self, resource: str) -> RawListing:
        """One GET of a listing for the probe: not retried, the envelope checked but not its
        entries (an odd id is what the probe looks for), with the answer's headers, sizes and time.
        A failure raises the same ApiError as `list` would."""
        started = time.monotonic()
        response = self._send("GET", resource, None, None)
        seconds = time.monotonic() - started
        raw = response.content
        doc: Any = None
        findings: list[tuple[str, Any]] = []
        if response.status_code == 200:
            try:
                doc = None if b"\\u0000" in raw else jsontext.read(raw)
            except jsontext.REFUSED:
                doc = None
            if doc is None and (read := Listing.spooled(resource, io.BytesIO(raw))) is not None:
                # Entries the fast reader refuses, or a NUL: read as a pull reads them (the probe names them).
                with read:
                    doc = {"status": "OK", "content": list(read.records())}
                    findings = read.findings
        if not (isinstance(doc, dict) and doc.get("status") == "OK" and isinstance(doc.get("content"), list)):
            self._decode(
                response.status_code, response.headers, raw, method="GET", resource=resource, record_id=None
            )  # raises
            raise e.MalformedResponse(
                "unexpected answer", method="GET", resource=resource, status=response.status_code
            )
        return RawListing(
            status=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            body_bytes=len(raw),
            wire_bytes=response.num_bytes_downloaded,
            seconds=seconds,
            envelope=doc,
            findings=findings,
        )

    def photo_url(self, contact_id: int, cphoto: str) -> str:
        """The vendor client's photo address: the API base without `/api`, then
        `/getcphoto/{contact id}/{cphoto}` (cphoto quoted whole: it cannot leave that path)."""
        root = self.base_url.removesuffix("/api")
        return f"{root}/getcphoto/{int(contact_id)}/{quote(cphoto, safe='')}"

    def photo(self, contact_id: int, cphoto: str, *, max_bytes: int) -> Photo:
        """One contact photo's bytes. Not retried: the next pull tries a failed photo again.

        The token goes only to the API's own scheme and host. A redirect elsewhere (a CDN) is
        followed without it, at most `PHOTO_REDIRECTS` times, never from https down to http. A
        body over `max_bytes` is not kept (TooLarge); an answer that is not an image (a login
        page, an error envelope) raises the typed error an API call would."""
        where: dict[str, Any] = {"method": "GET", "resource": "getcphoto", "record_id": contact_id}
        url = self.photo_url(contact_id, cphoto)
        for _hop in range(PHOTO_REDIRECTS + 1):
            found = self._image(url, max_bytes, where)
            if isinstance(found, Photo):
                return found
            url = found
        raise e.Redirected(f"more than {PHOTO_REDIRECTS} redirects", status=302, **where)

    def _image(self, url: str, max_bytes: int, where: dict[str, Any]) -> Photo | str:
        """One GET of an image: the Photo, or the URL a redirect points to."""
        mine, there = urlsplit(self.base_url), urlsplit(url)
        own_host = (there.scheme, there.netloc) == (mine.scheme, mine.netloc)
        if there.scheme not in ("http", "https") or (there.scheme, mine.scheme) == ("http", "https"):
            raise e.ForeignHost(f"not followed to {there.scheme}://{there.netloc}", **where)
        auth = self._current_auth() if own_host else None
        try:
            with self._http.stream(
                "GET",
                url,
                headers={**self._headers, "Accept": "image/*", "Accept-Encoding": PHOTO_ENCODINGS},
                auth=auth,
                timeout=self._timeout,
            ) as response:
                status, content_type = response.status_code, response.headers.get("Content-Type", "")
                location = response.headers.get("Location")
                if status in (301, 302, 303, 307, 308) and location:
                    return str(urljoin(url, location))
                if status != 200 or not content_type.lower().startswith("image/"):
                    response.read()
                    try:
                        self._decode(  # the typed error
                            status,
                            response.headers,
                            response.content,
                            method="GET",
                            resource="getcphoto",
                            record_id=where["record_id"],
                        )
                    except e.LoginRequired:
                        if own_host:
                            with self._token_lock:
                                self._token_refused = True
                        raise
                    raise e.MalformedResponse("the answer is not an image", status=status, **where)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise e.TooLarge(f"{declared} bytes, over the limit of {max_bytes}", status=200, **where)
                chunks, size = [], 0
                # Decoded here, a bounded piece at a time: httpx would inflate a whole network
                # chunk of a gzip bomb before the limit could be checked.
                for chunk in inflate(response.iter_raw(), response.headers.get("Content-Encoding", "")):
                    size += len(chunk)
                    if size > max_bytes:
                        raise e.TooLarge(f"over the limit of {max_bytes} bytes", status=200, **where)
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise self._photo_failure(exc, where) from None
        except UnknownEncoding as exc:
            raise e.MalformedResponse(f"an encoding not asked for: {exc}", status=200, **where) from None
        except zlib.error:
            raise e.MalformedResponse(
                "the body could not be decoded (not what its Content-Encoding says)", status=200, **where
            ) from None
        return Photo(content_type=content_type.split(";")[0].strip(), content=b"".join(chunks))

    def _photo_failure(self, exc: httpx.HTTPError, where: dict[str, Any]) -> e.ApiError:
        text = self._describe(exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return e.TransportError(f"could not connect: {text}", **where)
        if isinstance(exc, httpx.DecodingError):
            return e.MalformedResponse(f"the body could not be decoded: {text}", status=200, **where)
        return e.ResponseLost(f"the photo did not arrive whole: {text}", **where)

    # --- internals ---------------------------------------------------------------------------

    def _read(self, method: str, resource: str, record_id: int | None) -> Records:
        return self._retried(
            method, resource, record_id, lambda: self._once(method, resource, record_id, None)
        )

    def _retried(self, method: str, resource: str, record_id: int | None, once: Callable[[], _T]) -> _T:
        """`once()` retried as the health policy says for a read (never used for writes)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return once()
            except e.ApiError as err:
                err.attempts = attempt
                delay = self.policy.read_retry(err, attempt, self._rng)
                if delay is None:
                    raise _with_message(err) from None
                log.warning(
                    "api.retry",
                    method=method,
                    resource=resource,
                    record_id=record_id,
                    attempt=attempt,
                    delay=round(delay, 3),
                    reason=type(err).__name__,
                    status=err.status,
                    retry_after=err.retry_after,
                )
                if not self._wait(delay):
                    raise _with_message(err) from None

    def _wait(self, delay: float) -> bool:
        """Wait before a retry; False if the daemon began to stop meanwhile (do not retry)."""
        if self._stop is None:
            self._sleep(delay)
            return True
        return not self._stop.wait(delay)

    def _write(
        self, method: str, resource: str, record_id: int | None, fields: Mapping[str, Any] | None
    ) -> Records:
        try:
            return self._once(method, resource, record_id, fields)
        except e.ApiError as err:
            log.warning(
                "api.write_failed",
                method=method,
                resource=resource,
                record_id=record_id,
                reason=type(err).__name__,
                status=err.status,
                may_have_reached_server=err.may_have_reached_server,
            )
            raise

    def _url(self, resource: str, record_id: int | None) -> str:
        if not _RESOURCE_NAME.match(resource):
            raise ValueError(f"not a resource name: {resource!r}")
        if record_id is None:
            return f"{self.base_url}/{resource}"
        if (problem := resources.id_problem(resource, record_id)) is not None:
            raise TypeError(f"record id: {problem}")
        return f"{self.base_url}/{resource}/{record_id}"

    def _once(
        self, method: str, resource: str, record_id: int | None, fields: Mapping[str, Any] | None
    ) -> Records:
        response = self._send(method, resource, record_id, fields)
        with self._noting_refusal():
            return self._decode(
                response.status_code,
                response.headers,
                response.content,
                method=method,
                resource=resource,
                record_id=record_id,
            )

    @contextlib.contextmanager
    def _noting_refusal(self) -> Iterator[None]:
        try:
            yield
        except e.LoginRequired:
            with self._token_lock:
                self._token_refused = True  # read the token again before the next request
            raise

    def _send(
        self, method: str, resource: str, record_id: int | None, fields: Mapping[str, Any] | None
    ) -> httpx.Response:
        """One request; every transport failure mapped into the ApiError tree. No decoding."""
        url = self._url(resource, record_id)
        where: dict[str, Any] = {"method": method, "resource": resource, "record_id": record_id}
        headers = self._headers
        body = None
        if fields is not None:
            body = orjson.dumps(dict(fields))
            headers = {**headers, "Content-Type": "application/json"}
        auth = self._current_auth()
        started = time.monotonic()
        with self._mapped(where):
            response = self._http.request(
                method, url, content=body, headers=headers, auth=auth, timeout=self._timeout
            )
        log.debug(
            "api.response",
            **where,
            status=response.status_code,
            size=len(response.content),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response

    @contextlib.contextmanager
    def _mapped(self, where: dict[str, Any]) -> Iterator[None]:
        """Every httpx failure inside the block raised as its ApiError (the token masked)."""
        try:
            yield
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.UnsupportedProtocol,
        ) as exc:
            raise e.TransportError(f"could not connect: {self._describe(exc)}", **where) from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.TimeoutException) as exc:
            raise e.ResponseLost(
                f"timed out waiting for the answer: {self._describe(exc)}", **where
            ) from None
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            raise e.ResponseLost(f"connection broke: {self._describe(exc)}", **where) from None
        except httpx.DecodingError as exc:
            # The body's Content-Encoding lied: the server answered (a write most likely landed).
            raise e.MalformedResponse(
                f"the body could not be decoded: {self._describe(exc)}", status=200, **where
            ) from None
        except httpx.TransportError as exc:  # proxy errors, local protocol errors: nothing was sent
            raise e.TransportError(f"transport failed: {self._describe(exc)}", **where) from None
        except httpx.HTTPError as exc:  # anything else httpx may raise stays in our tree
            raise e.ResponseLost(f"request failed: {self._describe(exc)}", **where) from None

    def _listing_once(self, resource: str) -> Listing:
        """One streamed GET of a listing into a temporary file. Anything but an OK envelope is
        decoded whole for its typed error (as `list` does)."""
        where: dict[str, Any] = {"method": "GET", "resource": resource, "record_id": None}
        url = self._url(resource, None)
        with _spool_errors(where):  # a disk already full fails at the file's creation
            spool = spool_file()
        listing: Listing | None = None
        try:
            auth = self._current_auth()
            started = time.monotonic()
            with (
                self._mapped(where),
                self._http.stream(
                    "GET", url, headers=self._headers, auth=auth, timeout=self._timeout
                ) as response,
            ):
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > self._max_listing_bytes:
                        raise e.ListingTooLarge(
                            f"the listing is over pull.max_listing_bytes ({self._max_listing_bytes} bytes)",
                            **where,
                            status=response.status_code,
                        )
                    with _spool_errors(where):
                        spool.write(chunk)
                with _spool_errors(where):
                    spool.flush()
                status, headers = response.status_code, response.headers
            size = spool.tell()
            log.debug(
                "api.response",
                **where,
                status=status,
                size=size,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
            declared = headers.get("Content-Length")
            whole = "Content-Encoding" in headers or declared is None or declared == str(size)
            listing = Listing.spooled(resource, spool) if status == 200 and whole else None
            if listing is not None:
                return listing
            spool.seek(0)
            with self._noting_refusal():
                records = self._decode(
                    status, headers, spool.read(), method="GET", resource=resource, record_id=None
                )
            return Listing.of(resource, records)  # an odd envelope, but readable: decoded whole
        finally:
            if listing is None:
                # A disk that filled leaves bytes the close tries to flush again: it would raise an
                # OSError over the SpoolFailed being told. The file is dropped either way.
                with contextlib.suppress(OSError):
                    spool.close()

    def _current_auth(self) -> httpx.BasicAuth:
        """The auth to send: after a refusal, the token is read again from its source first."""
        with self._token_lock:
            if not (self._token_refused and self._token_source is not None):
                return self._auth
            self._token_refused = False
            try:
                token = self._token_source()
                _check_token(token)
            except ConfigError as exc:
                log.warning("api.token_reread_failed", error=str(exc))
                return self._auth
            if token != self._token:
                register_secret(token)
                self._token = token
                self._auth = httpx.BasicAuth(token, "X")
                log.info("api.token_reread", changed=True)
            return self._auth

    def _describe(self, exc: Exception) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return self._mask(text)

    def _mask(self, text: str) -> str:
        return text.replace(self._token, REDACTED)

    def _decode(
        self,
        status: int,
        headers: httpx.Headers,
        raw: bytes,
        *,
        method: str,
        resource: str,
        record_id: int | None,
    ) -> Records:
        where: dict[str, Any] = {
            "method": method,
            "resource": resource,
            "record_id": record_id,
            "status": status,
        }
        content_type = headers.get("Content-Type", "")
        try:
            doc = jsontext.loads(raw)  # exact: a record a write echoes is folded into raw
        except (ValueError, RecursionError):
            doc = None
        if 300 <= status < 400:
            location = self._mask(headers.get("Location", ""))[:300] or None
            raise e.Redirected(_redirect_hint(self.base_url, location), location=location, **where)
        if status in (200, 401, 403) and doc is None and bodies.looks_like_html(content_type, raw):
            shape = self._mask(bodies.describe(raw, content_type))
            raise e.LoginRequired(
                f"got an HTML page (a login page?) where the API's JSON was expected: {shape}", **where
            )
        if status != 200:
            server_message = None
            if isinstance(doc, dict) and isinstance(doc.get("error"), str):
                server_message = self._mask(doc["error"])[:500]
            retry_after = parse_retry_after(headers.get("Retry-After"))
            cls = e.error_for_status(status)
            what = "unexpected answer" if cls is e.MalformedResponse else "request failed"
            raise cls(what, server_message=server_message, retry_after=retry_after, **where)
        if not isinstance(doc, dict):
            raise e.MalformedResponse(self._not_json(headers, raw), **where)
        if doc.get("status") != "OK":
            msg = doc.get("error")
            raise e.MalformedResponse(
                f"envelope status is {bodies.word(doc.get('status'))}, not 'OK'",
                server_message=self._mask(msg)[:500] if isinstance(msg, str) else None,
                **where,
            )
        content = doc.get("content")
        if content is None and method == "DELETE":
            return []
        if not isinstance(content, list):
            raise e.MalformedResponse(f"envelope 'content' is {type(content).__name__}, not a list", **where)
        # Cheap check that stays fast on 100,000 entries: type() identity, no per-record models.
        if not all(type(item) is dict and type(item.get("id")) is int for item in content):
            # Other id spellings: a numeric string is an id (shapes); in a listing, an entry with
            # no usable id (or no object) is the diff's to leave out and report, not a reason to
            # refuse them all.
            if method == "GET" and record_id is None:
                return content
            for i, item in enumerate(content):
                if shapes.record_id(item)[0] is None:
                    raise e.MalformedResponse(f"content[{i}] is not an object with an integer id", **where)
        return content

    def _not_json(self, headers: httpx.Headers, raw: bytes) -> str:
        """What is wrong with a body that is not a JSON object, never quoting it (bodies.py)."""
        declared = headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != len(raw):
            return f"body truncated: {len(raw)} of {declared} bytes"
        shape = self._mask(bodies.describe(raw, headers.get("Content-Type", "")))
        if bodies.looks_like_html(headers.get("Content-Type", ""), raw):
            return f"got an HTML page instead of JSON (a proxy or login page?): {shape}"
        if not raw:
            return shape
        return f"body is not a JSON object ({shape})"

    @staticmethod
    def _single(content: Records, method: str, resource: str, record_id: int | None) -> dict[str, Any]:
        where: dict[str, Any] = {
            "method": method,
            "resource": resource,
            "record_id": record_id,
            "status": 200,
        }
        if not content:
            raise e.MalformedResponse("the answer's content is empty, expected the entry", **where)
        entry = content[0]
        found = shapes.record_id(entry)[0]  # "445" is 445; an id of another shape is not quoted
        if record_id is not None and found != record_id:
            raise e.MalformedResponse(f"the answer is entry {found}, not {record_id}", **where)
        return entry


@contextlib.contextmanager
def _spool_errors(where: dict[str, Any]) -> Iterator[None]:
    """Writing a listing to its temporary file: a full disk (or any I/O error there) fails this
    resource with a sentence that says where, not the pull with a traceback."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        raise e.SpoolFailed(
            f"could not write the listing to a temporary file in {tempfile.gettempdir()} ({reason})", **where
        ) from None


def _trust(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """The TLS trust to use: the default (True: certifi, or SSL_CERT_FILE), or `ca_bundle`'s CAs."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"clevertim.ca_bundle {ca_bundle}: not usable as CA certificates: {exc}"]
        ) from None


def _redirect_hint(base_url: str, location: str | None) -> str:
    """What the redirect most likely says about clevertim.url."""
    if not location:
        return "redirected (not followed), without a Location"
    base, to = urlsplit(base_url), urlsplit(location)
    host = to.hostname or base.hostname
    if host and base.hostname and host != base.hostname:
        if host == f"www.{base.hostname}":
            return f"redirected (not followed): the host needs www, try clevertim.url = {to.scheme or base.scheme}://{host}{base.path}"
        return f"redirected (not followed) to another host {host}"
    if to.scheme == "https" and base.scheme == "http":
        return "redirected (not followed): the server wants https in clevertim.url"
    if not base.path.rstrip("/").endswith("/api"):
        return "redirected (not followed): clevertim.url should end in /api"
    if "login" in to.path.lower() or "signin" in to.path.lower():
        return "redirected (not followed) to a login page: a refused token, or the web app's URL"
    return "redirected (not followed)"


def _with_overrides(policy: Policy | None, **numbers: Any) -> Policy:
    """`policy` with the numbers given (not None), connect_retries never above read_retries. A
    client made by hand without a policy retries a connect failure as often as any other read."""
    given = {k: v for k, v in numbers.items() if v is not None}
    if policy is None:
        policy = Policy()
        given.setdefault("connect_retries", given.get("read_retries", policy.read_retries))
    policy = replace(policy, **given)
    return replace(policy, connect_retries=min(policy.connect_retries, policy.read_retries))


def _with_message(err: e.ApiError) -> e.ApiError:
    """Rebuild the message after `attempts` changed, so it says how many were made."""
    err.args = (err._message(),)
    return err


def _check_token(token: str) -> None:
    if not isinstance(token, str) or not token:
        raise ConfigError(["the API token is empty: set CLEVERTIM_TOKEN or CLEVERTIM_TOKEN_FILE"])
    if not _TOKEN_OK.match(token) or ":" in token:
        raise ConfigError(["the API token has spaces, a colon or non-ASCII characters; check the token file"])
