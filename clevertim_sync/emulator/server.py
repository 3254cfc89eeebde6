"""The emulator's HTTP transport: the REST API under /api, the control surface under /_control/.

Owns: `EmulatorServer` (bind, serve from a background thread or the foreground, stop), the
request handler (routing, Basic auth, the envelope, status codes), acting out faults on the
socket (sleep, error answers, TCP reset, dropped and truncated responses), serving through the
active quirks (quirks.py renders them; they are set here and at /_control/quirks), and the
request log.


Built on the standard library's ThreadingHTTPServer with HTTP/1.1 keep-alive, because faults
need the raw socket: a reset is SO_LINGER 0 then close, a truncated body is a Content-Length
promise not kept, a lost response is a committed write followed by a close.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from clevertim_sync import resources
from clevertim_sync.emulator import documents
from clevertim_sync.emulator.control import EmulatorControl
from clevertim_sync.emulator.faults import Decision, Fault, FaultSet, FaultSpecError
from clevertim_sync.emulator.quirks import REGISTRY as QUIRKS
from clevertim_sync.emulator.quirks import QuirkSet, QuirkSpecError, parse_quirks
from clevertim_sync.emulator.replay import Replay
from clevertim_sync.emulator.seed import OWNER, READ_ONLY_USER
from clevertim_sync.emulator.store import ApiProblem, Store, TokenUser

PROXY_PAGE = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
# What a web app serves a client that is not logged in (the `login_page` fault).
LOGIN_PAGE = (
    "<!DOCTYPE html>\r\n<html><head><title>Log in - Clevertim CRM</title></head>\r\n<body>\r\n"
    '<form method="post" action="/login"><input name="email"><input name="password" type="password">'
    "<button>Log in</button></form>\r\n</body></html>\r\n"
)
REQUEST_LOG_LIMIT = 100_000
_KNOWN_STATUSES = frozenset(s.value for s in HTTPStatus)


class RequestLog:
    """The API requests received (not control requests): method, path, resource, id, status,
    fault, body, ms, cpu_ms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        # Bumped by every clear: a request that arrived before a clear (a slow answer, a client
        # of an earlier test still reading) is not logged after it.
        self.generation = 0

    def add(self, entry: dict[str, Any], generation: int) -> None:
        with self._lock:
            if generation == self.generation:
                self._entries.append(entry)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.generation += 1


class Chunked:
    """A big JSON body sent in pieces: `head`, the parts joined by commas, `tail`.

    Joining 100,000 records into one 60 MB bytes object (and then copying it again into the
    envelope) cost more than everything else in serving a listing; joining ~500 at a time keeps
    the copies small and cache-warm, and nothing of listing size is ever allocated.
    """

    GROUP = 512

    def __init__(self, head: bytes, parts: list[bytes], tail: bytes) -> None:
        self.head, self.parts, self.tail = head, parts, tail

    def __len__(self) -> int:
        return len(self.head) + sum(map(len, self.parts)) + max(0, len(self.parts) - 1) + len(self.tail)

    def pieces(self) -> Iterator[bytes]:
        yield self.head
        for start in range(0, len(self.parts), self.GROUP):
            if start:
                yield b","
            yield b",".join(self.parts[start : start + self.GROUP])
        yield self.tail


def _logged_body(body: bytes) -> Any:
    """A write's body as the server received it, for tests asserting what a client sent: the
    JSON value, or the first 1000 characters of what was not JSON; None when there was none."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:1000].decode("utf-8", "replace")


def _record_id(name: str, seg: str) -> Any:
    """The id a path segment names: an integer, or (folders, files, linked files: text ids) the
    text itself ("f1001"); 404 for a word where the resource's ids are integers."""
    if seg.isdigit():
        return int(seg)
    if name in resources.TEXT_ID_RESOURCES:
        return unquote(seg)
    raise ApiProblem(404, f"{name} {seg!r} not found")


def _error(message: str) -> bytes:
    return orjson.dumps({"status": "ERROR", "error": message})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server_version = "ClevertimEmulator/1.0"
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read the request log instead, and a token must never reach stderr."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # --- plumbing -----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: bytes | Chunked,
        *,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
        truncate: bool = False,
    ) -> None:
        """Answer with Content-Length; `truncate` sends only half the promised body, then closes."""
        self._publish_entry(status)
        length = len(body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in headers:
            self.send_header(key, value)
        if truncate:
            self.close_connection = True
        self.end_headers()
        budget = length // 2 if truncate else length
        for piece in body.pieces() if isinstance(body, Chunked) else (body,):
            if budget <= 0:
                break
            self.wfile.write(piece if len(piece) <= budget else piece[:budget])
            budget -= len(piece)

    def _reset_connection(self) -> None:
        """Abort the connection with a TCP RST: SO_LINGER 0 makes close() discard and reset."""
        self._publish_entry(0)
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    # The log entry of the API request being answered, until it is in the log, and the log's
    # generation when the request arrived.
    _pending_entry: dict[str, Any] | None = None
    _arrived_in = 0

    def _publish_entry(self, status: int) -> None:
        """Put the API request's log entry in the log before its answer leaves (or the connection
        is reset): a client that has the answer and then reads the log finds it. Its ms and cpu_ms
        become final a moment later, once the last byte is handed to the socket."""
        entry, self._pending_entry = self._pending_entry, None
        if entry is not None:
            entry["status"] = status
            self.server.emulator.requests.add(entry, self._arrived_in)

    def _handle(self, method: str) -> None:
        started = time.perf_counter(), time.thread_time()
        self._arrived_in = self.server.emulator.requests.generation  # the log it belongs to
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path.startswith("/_control/"):
            self._control(method, url.path, parse_qs(url.query), body)
        elif url.path == "/api" or url.path.startswith("/api/"):
            self._api(method, url.path, body, started)
        elif url.path.startswith("/getcphoto/"):
            self._photo(method, url.path)
        else:
            self._send(404, _error(f"nothing at {url.path}: the API lives under /api"))

    # --- the API ------------------------------------------------------------------------------

    def _api(self, method: str, path: str, body: bytes, started: tuple[float, float]) -> None:
        emu = self.server.emulator
        sub = path[len("/api") :] or "/"
        segs = [s for s in sub.split("/") if s]
        decision = emu.faults.take(method, sub, is_listing=method == "GET" and len(segs) == 1)
        if decision.latency_ms:
            time.sleep(decision.latency_ms / 1000)
        fault = decision.fault
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "resource": segs[0] if segs else None,
            "id": (int(segs[1]) if segs[1].isdigit() else segs[1]) if len(segs) > 1 else None,
            "status": 0,
            "fault": fault.kind if fault else None,
            "body": _logged_body(body),
            "ms": None,
            "cpu_ms": None,
        }
        self._pending_entry = entry
        try:
            if fault is not None and fault.kind in ("reset", "status", "html", "redirect", "login_page"):
                if fault.apply:  # the service did the work; the failure is on the way back
                    with contextlib.suppress(ApiProblem):
                        self._answer(method, segs, body, decision)
                entry["status"] = self._pre_fault(fault)
                return
            try:
                status, payload = 200, self._answer(method, segs, body, decision)
            except ApiProblem as problem:
                status, payload = problem.status, _error(problem.message)
            entry["status"] = status
            headers = [("WWW-Authenticate", 'Basic realm="Clevertim API"')] if status == 401 else []
            if fault is not None and fault.kind == "lost_response":
                self.close_connection = True  # the work is done; the answer never leaves
            elif fault is not None and fault.kind == "truncate":
                self._send(status, payload, headers=headers, truncate=True)
            elif fault is not None and fault.kind == "bad_encoding":
                # The work is done; the answer says gzip but is the plain JSON.
                self._send(status, payload, headers=[*headers, ("Content-Encoding", "gzip")])
            else:
                self._send(status, payload, headers=headers)
        finally:
            # Server time: from the request line read to the last byte handed to the socket.
            # cpu_ms: this handler thread's CPU time, which a loaded machine does not inflate.
            self._publish_entry(entry["status"])  # a lost response: nothing was sent
            entry["ms"] = round((time.perf_counter() - started[0]) * 1000, 3)
            entry["cpu_ms"] = round((time.thread_time() - started[1]) * 1000, 3)

    def _photo(self, method: str, path: str) -> None:
        """A contact's photo, `/getcphoto/{contact id}/{cphoto}` beside /api (not under it): the
        same authentication, the same faults (a spec's `path` matches "/getcphoto/..."; `truncate`
        cuts the image short), a small real PNG, and an entry in the request log (resource
        `getcphoto`, `auth`: whether credentials came with it). 404 when the contact is hidden or
        has no such photo."""
        decision = self.server.emulator.faults.take(method, path, is_listing=False)
        if decision.latency_ms:
            time.sleep(decision.latency_ms / 1000)
        fault = decision.fault
        segs = [s for s in path.split("/") if s]
        self._pending_entry = {
            "method": method,
            "path": path,
            "resource": "getcphoto",
            "id": int(segs[1]) if len(segs) > 1 and segs[1].isdigit() else None,
            "status": 0,
            "fault": fault.kind if fault else None,
            "body": None,
            "auth": bool(self.headers.get("Authorization")),
            "ms": None,
            "cpu_ms": None,
        }
        if fault is not None and fault.kind in ("reset", "status", "html", "redirect", "login_page"):
            self._pre_fault(fault)
            return
        try:
            tok = self._token()
            if method != "GET":
                raise ApiProblem(501, f"{method} is not supported")
            if len(segs) != 3 or not segs[1].isdigit():
                raise ApiProblem(404, f"nothing at {path}")
            contact = orjson.loads(self.server.emulator.store.blob("contact", int(segs[1]), tok.user_id))
            if not contact.get("cphoto") or contact["cphoto"] != unquote(segs[2]):
                raise ApiProblem(404, f"contact {segs[1]} has no photo {segs[2]!r}")
        except ApiProblem as problem:
            self._send(problem.status, _error(problem.message))
            return
        if fault is not None and fault.kind == "gzip_bomb":
            bomb = documents.gzip_bomb()
            self._send(200, bomb, content_type="image/png", headers=[("Content-Encoding", "gzip")])
            return
        truncate = fault is not None and fault.kind == "truncate"
        self._send(200, documents.png(int(segs[1])), content_type="image/png", truncate=truncate)

    def _pre_fault(self, fault: Fault) -> int:
        """Answer with a fault's failure instead of the service's answer (nothing is applied,
        unless the fault says `apply`)."""
        if fault.kind == "reset":
            self._reset_connection()
            return 0
        headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        if fault.kind == "redirect":
            page = f'<html><body>Moved to <a href="{fault.location}">here</a></body></html>'.encode()
            self._send(fault.status, page, content_type="text/html", headers=[("Location", fault.location)])
        elif fault.kind == "login_page":
            headers = [("WWW-Authenticate", 'Basic realm="Clevertim"')] if fault.status == 401 else []
            self._send(
                fault.status, LOGIN_PAGE.encode(), content_type="text/html; charset=utf-8", headers=headers
            )
        elif fault.kind == "html":
            phrase = HTTPStatus(fault.status).phrase if fault.status in _KNOWN_STATUSES else "Error"
            page = PROXY_PAGE.format(status=fault.status, phrase=phrase).encode()
            self._send(fault.status, page, content_type="text/html", headers=headers)
        else:
            default = "rate limit exceeded" if fault.status == 429 else "service temporarily unavailable"
            message = fault.message or default
            self._send(fault.status, _error(message), headers=headers)
        return fault.status

    def _token(self) -> TokenUser:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            token, sep, password = decoded.partition(":")
            # The API's password is the literal "X" (`curl -u TOKEN:X`); the token is the secret.
            ok = sep and password == "X"  # noqa: S105
            user = self.server.emulator.store.token_user(token) if ok else None
            if user is not None:
                return user
        raise ApiProblem(401, "authentication required: use HTTP Basic with your API token and password X")

    def _answer(self, method: str, segs: list[str], body: bytes, decision: Decision) -> bytes | Chunked:
        """The 200 body of an API request, or ApiProblem with the status to answer."""
        store = self.server.emulator.store
        quirks = self.server.emulator.quirks
        tok = self._token()
        if self.server.emulator.replay is not None:  # emulator --from: a capture, read-only
            return self.server.emulator.replay.answer(method, segs)
        name = segs[0] if segs else ""
        if name not in resources.BY_NAME or len(segs) > 2:
            raise ApiProblem(404, f"unknown resource path /{'/'.join(segs)}")
        rid: Any = None
        if len(segs) == 2:
            rid = _record_id(name, segs[1])
        if method == "GET":
            if rid is None:
                if decision.fault is not None and decision.fault.kind == "empty_listing":
                    return b'{"status":"OK","content":[]}'
                if decision.fault is not None and decision.fault.kind == "verbatim_listing":
                    return decision.fault.body
                hide = decision.hidden if decision.hiding else None
                parts = store.listing_parts(name, tok.user_id, hide)
                if quirks.active:
                    parts = [quirks.render(name, p) for p in parts]
                if decision.fault is not None and decision.fault.kind == "broken_listing" and parts:
                    parts = [*parts[: len(parts) // 2], b'{"id":}', *parts[len(parts) // 2 + 1 :]]
                return Chunked(b'{"status":"OK","content":[', parts, b"]}")
            if decision.hidden(rid):
                raise ApiProblem(404, f"{name} {rid} not found")
            blob = quirks.render(name, store.blob(name, rid, tok.user_id))
            return b'{"status":"OK","content":[' + blob + b"]}"
        if method not in ("POST", "PUT", "DELETE"):
            raise ApiProblem(501, f"{method} is not supported")
        store.check_writable(name, tok)
        if method == "DELETE":
            if rid is None:
                raise ApiProblem(400, f"DELETE needs an id: /{name}/<id>")
            store.api_delete(name, rid, tok)
            return b'{"status":"OK"}'
        if method == "PUT" and not resources.BY_NAME[name].updatable:
            raise ApiProblem(501, f"a {name} cannot be updated: delete it and create a new one")
        if method == "PUT" and rid is None:
            raise ApiProblem(400, f"PUT needs an id: /{name}/<id>")
        if method == "POST" and rid is not None:
            raise ApiProblem(400, f"POST creates: send it to /{name} without an id")
        try:
            fields = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiProblem(500, "the request's JSON could not be parsed") from None
        fields = quirks.on_write(name, fields)
        if rid is None:
            blob = store.api_create(name, fields, tok)
        else:
            blob = store.api_update(name, rid, fields, tok)
        return b'{"status":"OK","content":[' + quirks.render(name, blob, echo=True) + b"]}"

    # --- the control surface ------------------------------------------------------------------

    def _control(self, method: str, path: str, query: Mapping[str, list[str]], body: bytes) -> None:
        if not ipaddress.ip_address(self.client_address[0].split("%")[0]).is_loopback:
            self._send(403, orjson.dumps({"error": "the control surface answers loopback clients only"}))
            return
        try:
            payload = orjson.loads(body) if body else {}
            status, answer = 200, self._control_answer(method, path.split("/")[2:], query, payload)
        except orjson.JSONDecodeError:
            status, answer = 400, orjson.dumps({"error": "the control request's body is not JSON"})
        except ApiProblem as problem:
            status, answer = problem.status, orjson.dumps({"error": problem.message})
        except resources.UnknownResource as exc:
            status, answer = 404, orjson.dumps({"error": str(exc.args[0])})
        except (FaultSpecError, QuirkSpecError) as exc:
            status, answer = 400, orjson.dumps({"error": str(exc), "problems": exc.problems})
        self._send(status, answer)

    def _control_answer(
        self, method: str, parts: list[str], query: Mapping[str, list[str]], payload: Any
    ) -> bytes:
        emu = self.server.emulator
        store = emu.store
        route = (method, parts[0] if parts else "")
        ok = b'{"ok":true}'
        if route == ("GET", "state"):
            token = self.headers.get("X-As-Token")
            user = None
            if token is not None:
                tok = store.token_user(token)
                if tok is None:
                    raise ApiProblem(400, "X-As-Token is not a token of this emulator")
                user = tok.user_id
            return store.state(user)
        if parts and parts[0] == "records" and len(parts) in (2, 3):
            return self._control_record(method, parts[1:], query, payload)
        if route == ("GET", "faults"):
            return orjson.dumps(emu.faults.list())
        if route == ("POST", "faults"):
            return orjson.dumps({"id": emu.faults.add(_object(payload))})
        if route == ("DELETE", "faults"):
            emu.faults.clear()
            return ok
        if parts and parts[0] == "quirks":
            return self._control_quirks(method, parts[1:], payload)
        if route == ("GET", "requests"):
            return orjson.dumps(emu.requests.list())
        if route == ("DELETE", "requests"):
            emu.requests.clear()
            return ok
        if route == ("POST", "reset"):
            spec = _object(payload)
            contacts, seed = spec.get("contacts"), spec.get("seed")
            if not (contacts is None or (isinstance(contacts, int) and contacts >= 0)) or not (
                seed is None or isinstance(seed, int)
            ):
                raise ApiProblem(400, "reset takes contacts (an integer >= 0) and seed (an integer)")
            emu.reset(contacts=contacts, seed=seed)
            return ok
        if route == ("POST", "tokens"):
            spec = _object(payload)
            if not isinstance(spec.get("token"), str) or not isinstance(spec.get("user_id"), int):
                raise ApiProblem(400, "a token needs token (string) and user_id (integer)")
            store.add_token(spec["token"], spec["user_id"], read_only=bool(spec.get("read_only")))
            return ok
        raise ApiProblem(404, f"no control route {method} /_control/{'/'.join(parts)}")

    def _control_quirks(self, method: str, parts: list[str], payload: Any) -> bytes:
        """GET /_control/quirks: {"active": [...], "known": {name: summary}}; PUT {"quirks": [...]}
        sets them all ("all" allowed); PUT /_control/quirks/<name> {"on": bool} toggles one."""
        emu = self.server.emulator
        if method == "PUT" and not parts:
            names = _object(payload).get("quirks")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ApiProblem(400, 'set quirks with {"quirks": ["name", ...]}')
            emu.set_quirks(names)
        elif method == "PUT" and len(parts) == 1:
            on = _object(payload).get("on")
            if not isinstance(on, bool):
                raise ApiProblem(400, 'toggle a quirk with {"on": true} or {"on": false}')
            emu.set_quirks([*(n for n in emu.quirks.active if n != parts[0]), *([parts[0]] if on else [])])
        elif method != "GET" or parts:
            raise ApiProblem(404, f"no control route {method} /_control/quirks/{'/'.join(parts)}")
        active = [n for n in QUIRKS if n in emu.quirks.active or n in emu.fault_quirks]
        return orjson.dumps({"active": active, "known": {n: q.summary for n, q in QUIRKS.items()}})

    def _control_record(
        self, method: str, parts: list[str], query: Mapping[str, list[str]], payload: Any
    ) -> bytes:
        store = self.server.emulator.store
        name = resources.get(parts[0]).name
        if len(parts) == 1:
            if method != "POST":
                raise ApiProblem(404, "use POST /_control/records/<resource> to create")
            return store.control_create(name, _object(payload))
        # A folder's id is text ("f1001"): the store answers 404 for an id it does not hold.
        rid: Any = int(parts[1]) if parts[1].isdigit() else parts[1]
        if method == "GET":
            return store.blob(name, rid, None)
        if method == "PUT":
            bump = query.get("bump_lm", ["1"])[-1].lower() not in ("0", "false", "no")
            unset = [k for v in query.get("unset", []) for k in v.split(",") if k]
            return store.control_update(name, rid, _object(payload), bump_lm=bump, unset=unset)
        if method == "DELETE":
            store.control_delete(name, rid)
            return b'{"ok":true}'
        raise ApiProblem(404, f"no control route {method} for a record")


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ApiProblem(400, "the control request's body must be a JSON object")
    return payload


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is normal (timeouts, tests of faults): no traceback.
        Anything else is an emulator bug and is printed as the standard library does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Close the kept-alive connections too, so stop() leaves no handler thread waiting."""
        with self._connections_lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class EmulatorServer:
    """A Clevertim stand-in over real HTTP: `start()` it, point a client at `base_url`."""

    def __init__(
        self,
        token: str = "t",  # noqa: S107 (a test double's default, not a credential)
        *,
        read_only_token: str | None = None,
        contacts: int = 50,
        seed: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Iterable[Mapping[str, Any]] = (),
        replay: Replay | None = None,
        quirks: Iterable[str] = (),
    ) -> None:
        # With `replay` (emulator --from), the API answers from a capture; the store holds the tokens.
        self.replay = replay
        tokens = {token: TokenUser(OWNER)}
        if read_only_token is not None:
            tokens[read_only_token] = TokenUser(READ_ONLY_USER, read_only=True)
        self.store = Store(contacts=contacts, seed=seed, tokens=tokens)
        self.faults = FaultSet()
        self._initial_faults = list(faults)
        for spec in self._initial_faults:
            self.faults.add(spec)
        self.requests = RequestLog()
        self.quirks = QuirkSet()
        self.fault_quirks: dict[str, int] = {}  # enabled transport quirk -> its fault's id
        self.set_quirks(quirks)
        self.host, self._port = host, port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._control: EmulatorControl | None = None

    def __repr__(self) -> str:  # no token in it
        return f"EmulatorServer({self.root_url if self._httpd else 'not started'})"

    def _bind(self) -> _HTTPServer:
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self._port), self)
        return self._httpd

    def start(self) -> EmulatorServer:
        """Bind and serve from a background (daemon) thread; returns self."""
        httpd = self._bind()
        if self._thread is None:
            self._thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="emulator", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind and serve in the calling thread until stop() (the CLI's foreground mode)."""
        self._bind().serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._httpd is not None:
            if self._thread is not None:
                self._httpd.shutdown()
                self._thread.join(timeout=5)
                self._thread = None
            self._httpd.close_connections()
            self._httpd.server_close()
            self._httpd = None

    def set_quirks(self, names: Iterable[str]) -> list[str]:
        """Serve with exactly these quirks (emulator/quirks.py; "all": every one); returns them.
        A transport quirk adds its fault (kept until the quirk is turned off or faults cleared)."""
        parsed = parse_quirks(list(names))
        wanted = self.quirks.set([n for n in parsed if QUIRKS[n].fault is None])
        faulty = [n for n in parsed if QUIRKS[n].fault is not None]
        for name in list(self.fault_quirks):
            if name not in faulty:
                self.faults.remove(self.fault_quirks.pop(name))
        for name in faulty:
            if name not in self.fault_quirks:
                spec = QUIRKS[name].fault
                assert spec is not None
                self.fault_quirks[name] = self.faults.add(spec)
        return [*wanted, *faulty]

    def reset(self, *, contacts: int | None = None, seed: int | None = None) -> None:
        """A fresh seeded account (same size and seed unless given); faults and request log cleared.
        Quirks stay: they are how this server behaves (a transport quirk's fault is added again)."""
        self.faults.clear()
        for name in list(self.fault_quirks):
            spec = QUIRKS[name].fault
            assert spec is not None
            self.fault_quirks[name] = self.faults.add(spec)
        self.requests.clear()
        self.store.reset(contacts=contacts, seed=seed)

    @property
    def port(self) -> int:
        return int(self._bind().server_address[1])

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL a client takes, e.g. http://127.0.0.1:PORT/api."""
        return self.root_url + "/api"

    @property
    def control(self) -> EmulatorControl:
        if self._control is None:
            self._control = EmulatorControl(self.root_url)
        return self._control

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
