"""ClevertimClient against httpx.MockTransport: status mapping, envelope checks, retries, secrecy."""

from __future__ import annotations

import base64
import json
import pickle
import re
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from clevertim_sync.api import errors as e
from clevertim_sync.api import listing as listing_module
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.listing import Listing
from clevertim_sync.errors import ClevertimSyncError, ConfigError
from clevertim_sync.health import Action, Where, decide
from clevertim_sync.settings import Settings


def retried(exc: e.ApiError) -> bool:
    """The health table retries this error on a read."""
    return decide(exc, Where.READ).action is Action.RETRY


def stops(exc: e.ApiError) -> bool:
    """The health table stops a pull at this error (a server-level failure)."""
    return decide(exc, Where.LISTING).stop


TOKEN = "sekrit-token-1234567890"
BASE = "https://crm.example.com/api"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Serves scripted responses in order (the last one repeats) and records requests."""

    def __init__(self, *responses: httpx.Response | Exception | Handler) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.responses[min(len(self.requests), len(self.responses)) - 1]
        if isinstance(item, Exception):
            raise item
        if isinstance(item, httpx.Response):
            return item
        return item(request)


def ok(content: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "OK", "content": content})


def err(status: int, message: str = "nope", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"status": "ERROR", "error": message}, headers=headers)


def make(rec: Recorder, **kw: Any) -> tuple[ClevertimClient, list[float]]:
    waits: list[float] = []
    client = ClevertimClient(BASE, TOKEN, http=httpx.MockTransport(rec), sleep=waits.append, **kw)
    return client, waits


# --- requests as sent ---------------------------------------------------------------------------


def test_list_sends_auth_headers_and_returns_content() -> None:
    rec = Recorder(ok([{"id": 1, "fn": "Ann"}, {"id": 2, "fn": "Bob", "extra": {"x": 1}}]))
    client, waits = make(rec)
    assert client.list("contact") == [{"id": 1, "fn": "Ann"}, {"id": 2, "fn": "Bob", "extra": {"x": 1}}]
    req = rec.requests[0]
    assert req.method == "GET" and str(req.url) == f"{BASE}/contact"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(f"{TOKEN}:X".encode()).decode()
    assert req.headers["Accept"] == "application/json"
    assert req.headers["User-Agent"].startswith("clevertim-sync/")
    assert TOKEN not in str(req.url)
    assert waits == []


def test_crud_methods_paths_and_bodies() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(200, json={"status": "OK"})
        if request.method == "GET":
            return ok([{"id": 7, "name": "x"}])
        body = json.loads(request.content)
        assert request.headers["Content-Type"] == "application/json"
        return ok([{"id": 7, **body, "lm": "2024-01-01T00:00:00Z"}])

    rec = Recorder(handler)
    with make(rec)[0] as client:
        assert client.get("case", 7) == {"id": 7, "name": "x"}
        assert client.create("case", {"name": "New"})["name"] == "New"
        assert client.update("case", 7, {"name": "Renamed"}) == {
            "id": 7,
            "name": "Renamed",
            "lm": "2024-01-01T00:00:00Z",
        }
        assert client.delete("case", 7) is None
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("GET", "/api/case/7"),
        ("POST", "/api/case"),
        ("PUT", "/api/case/7"),
        ("DELETE", "/api/case/7"),
    ]
    assert json.loads(rec.requests[2].content) == {"name": "Renamed"}


def test_a_record_a_write_echoes_is_read_exactly() -> None:
    """What a POST or PUT answers is folded into raw: an integer past 64 bits stays an integer (a
    double would round it) and a lone surrogate escape is read, not refused as malformed."""
    echoed = b'{"status": "OK", "content": [{"id": 7, "n": 123456789012345678901234567890, "fn": "\\ud800"}]}'
    rec = Recorder(httpx.Response(200, content=echoed, headers={"Content-Type": "application/json"}))
    with make(rec)[0] as client:
        assert client.update("contact", 7, {"fn": "x"}) == {
            "id": 7,
            "n": 123456789012345678901234567890,
            "fn": "\ud800",
        }
        assert client.create("contact", {"fn": "x"})["n"] == 123456789012345678901234567890


def test_timeout_is_set_on_every_call() -> None:
    rec = Recorder(ok([]))
    client, _ = make(rec, timeout=7.5)
    client.list("task")
    assert rec.requests[0].extensions["timeout"] == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}


def test_bad_resource_name_or_id_is_refused_before_sending() -> None:
    rec = Recorder(ok([]))
    client, _ = make(rec)
    with pytest.raises(ValueError, match="resource name"):
        client.list("../user")
    with pytest.raises(TypeError):
        client.get("contact", "1")  # type: ignore[arg-type]
    assert rec.requests == []


# --- status -> exception ------------------------------------------------------------------------

STATUS_CASES = [
    (400, e.BadRequest, False),
    (401, e.LoginRequired, False),
    (403, e.AuthFailed, False),
    (404, e.NotFound, False),
    (500, e.RequestNotParsed, False),
    (501, e.NotSupported, False),
    (429, e.RateLimited, True),
    (502, e.ServiceUnavailable, True),
    (503, e.ServiceUnavailable, True),
    (504, e.ServiceUnavailable, True),
    (599, e.ServiceUnavailable, True),
    (409, e.BadRequest, False),
]


@pytest.mark.parametrize(("status", "cls", "transient"), STATUS_CASES)
def test_status_maps_to_exception_with_fields(status: int, cls: type[e.ApiError], transient: bool) -> None:
    rec = Recorder(err(status, "Missing property: name"))
    client, _ = make(rec)
    with pytest.raises(cls) as info:
        client.create("opportunity", {"value": "1"})
    exc = info.value
    assert type(exc) is cls and isinstance(exc, ClevertimSyncError)
    assert (exc.method, exc.resource, exc.record_id, exc.status) == ("POST", "opportunity", None, status)
    assert exc.server_message == "Missing property: name"
    assert (decide(exc, Where.READ).action is Action.RETRY) is transient
    # The server's words may echo the request's values: told by their length, never quoted.
    assert f"HTTP {status}" in str(exc) and "message (22 characters)" in str(exc)
    assert "Missing property" not in str(exc)
    assert len(rec.requests) == 1  # a write is never retried


def test_record_id_in_error_and_not_found() -> None:
    client, _ = make(Recorder(err(404, "Entry not found")))
    with pytest.raises(e.NotFound) as info:
        client.get("contact", 42)
    assert info.value.record_id == 42 and "GET contact/42" in str(info.value)


def test_error_page_without_json_still_maps_by_status() -> None:
    page = httpx.Response(
        502, text="<html><body>Bad Gateway</body></html>", headers={"Content-Type": "text/html"}
    )
    client, _ = make(Recorder(page), read_retries=0)
    with pytest.raises(e.ServiceUnavailable) as info:
        client.list("note")
    assert info.value.server_message is None and info.value.status == 502


# --- envelope -----------------------------------------------------------------------------------

ENVELOPES: list[tuple[httpx.Response, str]] = [
    (httpx.Response(200, content=b'{"status": "OK", "content": [{"id": 1}'), "not a JSON object"),
    (httpx.Response(200, content=b""), "empty body"),
    (httpx.Response(200, json=[{"id": 1}]), "not a JSON object"),
    (httpx.Response(200, json={"status": "ERROR", "error": "x"}), "not 'OK'"),
    (httpx.Response(200, json={"content": []}), "not 'OK'"),
    (httpx.Response(200, json={"status": "OK", "content": {"id": 1}}), "not a list"),
    (httpx.Response(200, json={"status": "OK"}), "not a list"),
]

# A body that is not the envelope is told by its size, where the parse failed and its shape; what
# the records hold never goes into the message (it reaches the log, status, last_error, alerts).
SEEDED = '{"id":1021,"fn":"Zebulon-Canary","email":"zebulon@canary.example","phone":"+44 7700 900461"}'
DESCRIBED: list[tuple[httpx.Response, list[str]]] = [
    (
        httpx.Response(200, content=('{"status":"OK","content":[' + SEEDED + ",{").encode()),
        ["body is not a JSON object (", " bytes, invalid JSON at character ", "(line 1, column ",
         "starting as a JSON object"],
    ),
    (
        httpx.Response(200, content=b"not json " + SEEDED.encode()),
        ["invalid JSON at character 0 (line 1, column 1), starting as text"],
    ),
    (httpx.Response(200, json=[{"id": 1, "fn": "Zebulon-Canary"}]), ["JSON array of 1 entries"]),
    (httpx.Response(200, json={"status": "Zebulon-Canary 7", "content": []}), ["envelope status is a str"]),
    (
        httpx.Response(200, json={"status": "Zebulon-Canary", "error": "x"}),
        ["envelope status is 'Zebulon-Canary'"],  # a word the server set, not a record's
    ),
    (
        httpx.Response(200, content=b"\x89PNG\r\n\x1a\n\xff\xfe" + SEEDED.encode()),
        ["binary or not UTF-8 (byte 0 is not UTF-8)"],
    ),
    (
        httpx.Response(
            200,
            content=f"<html><head><title>Sign in &amp; go</title></head><body>{SEEDED}</body>".encode(),
            headers={"Content-Type": "text/html"},
        ),
        ["HTML page (a login page?)", "HTML page titled 'Sign in & go'"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("response", "told"), DESCRIBED)
def test_a_malformed_body_is_described_by_size_offset_and_shape_never_by_its_content(
    response: httpx.Response, told: list[str]
) -> None:
    client, _ = make(Recorder(response), read_retries=0)
    with pytest.raises(e.ApiError) as info:
        client.list("contact")
    message = str(info.value)
    assert [t for t in told if t not in message] == []
    for seed in ("Zebulon", "zebulon@", "7700", "1021"):
        assert seed not in message.replace("Zebulon-Canary'", ""), message


# Entries with no usable id: a listing hands them to the diff (which leaves them out and reports
# them, tests/test_shapes.py); an answer about one record must carry it.
BAD_ENTRIES = [[{"id": 1}, {"name": "x"}], [{"id": "f1"}], [{"id": True}], [3], [{"id": 1.5}]]


@pytest.mark.parametrize(("response", "why"), ENVELOPES)
def test_envelope_violations_are_malformed(response: httpx.Response, why: str) -> None:
    client, _ = make(Recorder(response), read_retries=0)
    with pytest.raises(e.MalformedResponse, match=re.escape(why)) as info:
        client.list("contact")
    assert retried(info.value) and info.value.status == 200


def test_neither_broken_json_nor_a_body_that_is_no_json_is_quoted_into_the_error() -> None:
    broken = httpx.Response(200, content=b'{"status": "OK", "content": [{"id": 1, "fn": "Ann Secret"')
    client, _ = make(Recorder(broken), read_retries=0)
    with pytest.raises(e.MalformedResponse) as info:
        client.list("contact")
    assert "Ann Secret" not in str(info.value)  # records never reach an error, a log or an alert
    client, _ = make(Recorder(httpx.Response(200, content=b"Service temporarily down")), read_retries=0)
    with pytest.raises(e.MalformedResponse, match="24 bytes") as info:
        client.list("contact")
    assert "temporarily" not in str(info.value)  # described by its size and shape, never quoted


@pytest.mark.parametrize("content", BAD_ENTRIES)
def test_a_listing_keeps_entries_without_a_usable_id_and_a_single_answer_refuses_them(content: Any) -> None:
    client, _ = make(Recorder(ok(content)), read_retries=0)
    assert client.list("contact") == content
    client, _ = make(Recorder(ok(content[-1:])), read_retries=0)
    with pytest.raises(e.MalformedResponse, match=r"content\[0\]"):
        client.create("contact", {"fn": "x"})


def test_a_numeric_string_id_is_the_id() -> None:
    client, _ = make(Recorder(ok([{"id": "9", "fn": "A"}])), read_retries=0)
    assert client.get("contact", 9) == {"id": "9", "fn": "A"}  # as served; the mirror stores 9


def test_get_by_id_checks_the_entry() -> None:
    client, _ = make(Recorder(ok([{"id": 8}])), read_retries=0)
    with pytest.raises(e.MalformedResponse, match="entry 8, not 9"):
        client.get("contact", 9)
    client, _ = make(Recorder(ok([])), read_retries=0)
    with pytest.raises(e.MalformedResponse, match="empty"):
        client.get("contact", 9)


def test_malformed_write_answer_may_have_reached_server() -> None:
    client, _ = make(Recorder(httpx.Response(200, content=b"{trunc")))
    with pytest.raises(e.MalformedResponse) as info:
        client.create("note", {"desc": "x"})
    assert info.value.may_have_reached_server


# --- transport failures -------------------------------------------------------------------------

TRANSPORT_CASES = [
    (httpx.ConnectError("refused"), e.TransportError, False),
    (httpx.ConnectTimeout("slow connect"), e.TransportError, False),
    (httpx.ReadTimeout("slow answer"), e.ResponseLost, True),
    (httpx.WriteTimeout("slow send"), e.ResponseLost, True),
    (httpx.ReadError("reset by peer"), e.ResponseLost, True),
    (httpx.RemoteProtocolError("peer closed connection"), e.ResponseLost, True),
]


@pytest.mark.parametrize(("raised", "cls", "reached"), TRANSPORT_CASES)
def test_write_transport_failure_is_typed_and_not_retried(
    raised: Exception, cls: type[e.ApiError], reached: bool
) -> None:
    rec = Recorder(raised)
    client, waits = make(rec)
    with pytest.raises(cls) as info:
        client.create("contact", {"fn": "Ann"})
    assert info.value.may_have_reached_server is reached
    assert retried(info.value) and info.value.status is None
    assert len(rec.requests) == 1 and waits == []


@pytest.mark.parametrize(("raised", "cls", "reached"), TRANSPORT_CASES)
def test_read_transport_failure_is_retried_then_succeeds(
    raised: Exception, cls: type[e.ApiError], reached: bool
) -> None:
    rec = Recorder(raised, raised, ok([{"id": 1}]))
    client, waits = make(rec)
    assert client.list("contact") == [{"id": 1}]
    assert len(rec.requests) == 3 and len(waits) == 2


def test_status_writes_report_whether_outcome_is_unknown() -> None:
    for status, reached in [(502, True), (504, True), (503, False), (429, False), (400, False)]:
        client, _ = make(Recorder(err(status)))
        with pytest.raises(e.ApiError) as info:
            client.update("task", 3, {"name": "x"})
        assert info.value.may_have_reached_server is reached, status


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transient",
    [
        err(429),
        err(502),
        err(503),
        err(504),
        httpx.Response(200, content=b'{"status":"OK","content":[{"id":'),
        httpx.Response(502, text="<html></html>", headers={"Content-Type": "text/html"}),
    ],
)
def test_each_transient_read_failure_is_retried(transient: httpx.Response) -> None:
    rec = Recorder(transient, ok([{"id": 5}]))
    client, waits = make(rec)
    assert client.list("case") == [{"id": 5}]
    assert len(rec.requests) == 2 and len(waits) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 500, 501])
def test_no_retry_on_permanent_read_failures(status: int) -> None:
    rec = Recorder(err(status))
    client, waits = make(rec)
    with pytest.raises(e.ApiError) as info:
        client.list("case")
    assert not retried(info.value)
    assert len(rec.requests) == 1 and waits == []


def test_retries_are_bounded_and_back_off_exponentially() -> None:
    class Top:  # the upper end of the jitter range: waits show the exponential ceiling
        def uniform(self, a: float, b: float) -> float:
            return b

    rec = Recorder(err(503))
    client, waits = make(rec, read_retries=4, rng=Top(), backoff_base=0.5, backoff_cap=3.0)
    with pytest.raises(e.ServiceUnavailable) as info:
        client.list("contact")
    assert len(rec.requests) == 5 and info.value.attempts == 5
    assert waits == [0.5, 1.0, 2.0, 3.0]
    assert "after 5 attempts" in str(info.value)


def test_zero_read_retries_means_one_attempt() -> None:
    rec = Recorder(err(503))
    client, waits = make(rec, read_retries=0)
    with pytest.raises(e.ServiceUnavailable):
        client.list("contact")
    assert len(rec.requests) == 1 and waits == []


def test_a_stop_ends_the_wait_for_a_retry_with_the_last_error() -> None:
    # The daemon's stopping event: a listing waiting out an outage's backoff gives up at once, so
    # SIGTERM is not held up by minutes of retries; no further request goes out.
    stop = threading.Event()
    rec = Recorder(err(503))
    client = ClevertimClient(BASE, TOKEN, http=httpx.MockTransport(rec), stop=stop, backoff_base=60.0)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(e.ServiceUnavailable) as info:
        client.list("contact")
    assert time.monotonic() - started < 10  # not the 30-60 s of the backoff
    assert len(rec.requests) == 1 and info.value.attempts == 1
    with pytest.raises(e.ServiceUnavailable):  # once stopping, the first failure is the last
        client.list("contact")
    assert len(rec.requests) == 2


def test_retry_after_seconds_is_honoured() -> None:
    rec = Recorder(err(429, "slow down", {"Retry-After": "7"}), ok([]))
    client, waits = make(rec)
    assert client.list("contact") == []
    assert waits[0] >= 7.0


def test_retry_after_http_date_is_honoured() -> None:
    when = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    rec = Recorder(when, ok([]))
    client, waits = make(rec, max_retry_wait=10.0)
    # 2099 is far beyond max_retry_wait: give up now rather than block, and say when to come back.
    with pytest.raises(e.ServiceUnavailable) as info:
        client.list("contact")
    assert info.value.retry_after is not None and info.value.retry_after > 1e6
    assert waits == [] and len(rec.requests) == 1


def test_retry_after_on_429_error_fields() -> None:
    rec = Recorder(err(429, "slow", {"Retry-After": "3"}))
    client, waits = make(rec, read_retries=2)
    with pytest.raises(e.RateLimited) as info:
        client.list("contact")
    assert info.value.retry_after == 3.0 and all(w >= 3.0 for w in waits) and len(waits) == 2


def test_retry_events_are_logged_without_secrets() -> None:
    rec = Recorder(httpx.ReadError(f"boom {TOKEN}"), ok([]))
    client, _ = make(rec)
    with capture_logs() as logs:
        client.list("contact")
    retry = [entry for entry in logs if entry["event"] == "api.retry"]
    assert len(retry) == 1
    assert retry[0]["method"] == "GET" and retry[0]["resource"] == "contact" and retry[0]["attempt"] == 1
    assert retry[0]["reason"] == "ResponseLost" and retry[0]["delay"] >= 0
    assert TOKEN not in repr(logs)


# --- secrecy and configuration ------------------------------------------------------------------


def test_token_never_in_messages_even_if_echoed() -> None:
    echo = err(400, f"invalid token {TOKEN}")
    client, _ = make(Recorder(echo))
    with pytest.raises(e.BadRequest) as info:
        client.create("contact", {"fn": "x"})
    assert TOKEN not in str(info.value) and TOKEN not in (info.value.server_message or "")
    assert "[redacted]" in (info.value.server_message or "")  # kept on the queue item, masked
    client, _ = make(Recorder(httpx.ConnectError(f"cannot reach {TOKEN}")), read_retries=0)
    with pytest.raises(e.TransportError) as info2:
        client.list("contact")
    assert TOKEN not in str(info2.value)
    assert TOKEN not in repr(client)


@pytest.mark.parametrize(
    "url",
    [
        "http://crm.example.com/api",
        "ftp://crm.example.com/api",
        "crm.example.com/api",
        "https://crm.example.com/api?x=1",
    ],
)
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        ClevertimClient(url, TOKEN)


def test_credentials_in_url_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        ClevertimClient(f"https://{TOKEN}:X@crm.example.com/api", TOKEN)
    assert TOKEN not in str(info.value)


def test_plain_http_allowed_on_loopback_or_with_flag() -> None:
    for url in ["http://127.0.0.1:8080/api", "http://localhost/api", "http://[::1]:9/api"]:
        ClevertimClient(url, TOKEN).close()
    ClevertimClient("http://crm.internal/api", TOKEN, allow_insecure_http=True).close()


@pytest.mark.parametrize("token", ["", "with space", "a:b", "tök"])
def test_unusable_tokens_are_refused(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClevertimClient(BASE, token)
    if token:
        assert token not in str(info.value)


def test_from_settings_uses_url_token_timeout_and_retries() -> None:
    settings = Settings.model_validate(
        {"clevertim": {"url": BASE + "/", "token": TOKEN, "timeout": 12, "read_retries": 2}}
    )
    client = ClevertimClient.from_settings(settings)
    try:
        assert client.base_url == BASE and client.policy.read_retries == 2
    finally:
        client.close()


def test_injected_http_client_is_used_and_not_closed() -> None:
    rec = Recorder(ok([]))
    http = httpx.Client(transport=httpx.MockTransport(rec))
    with ClevertimClient(BASE, TOKEN, http=http) as client:
        client.list("user")
    assert not http.is_closed and len(rec.requests) == 1
    http.close()


def test_large_listing_is_decoded() -> None:
    records = [{"id": i, "fn": f"n{i}", "email": [f"{i}@x.com"]} for i in range(100_000)]
    body = json.dumps({"status": "OK", "content": records}).encode()
    client, _ = make(Recorder(httpx.Response(200, content=body)))
    got = client.list("contact")
    assert len(got) == 100_000 and got[-1] == records[-1]


def test_errors_pickle_with_their_fields() -> None:
    exc = e.RateLimited(
        "request failed", method="GET", resource="contact", status=429, retry_after=3.0, attempts=2
    )
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is e.RateLimited and str(back) == str(exc)
    assert (back.status, back.retry_after, back.attempts, retried(back)) == (429, 3.0, 2, True)


# --- fail fast and say why (issue 11) -------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_never_followed_nor_retried_and_names_its_location(status: int) -> None:
    rec = Recorder(httpx.Response(status, headers={"Location": "https://evil.example.net/api/contact"}))
    client, waits = make(rec)
    with pytest.raises(e.Redirected) as info:
        client.list("contact")
    assert len(rec.requests) == 1 and waits == []  # not followed, not retried
    exc = info.value
    assert not retried(exc) and stops(exc) and exc.status == status
    assert exc.location == "https://evil.example.net/api/contact"
    assert "https://evil.example.net/api/contact" in str(exc) and "another host" in str(exc)
    assert "clevertim.url" in str(exc)


@pytest.mark.parametrize(
    ("base", "location", "hint"),
    [
        ("https://clevertim.com/api", "https://www.clevertim.com/api/contact", "the host needs www"),
        ("https://www.clevertim.com", "https://www.clevertim.com/login", "should end in /api"),
        ("http://127.0.0.1:9/api", "https://127.0.0.1:9/api/contact", "wants https"),
        ("https://www.clevertim.com/api", "/login?next=/api/contact", "login page"),
    ],
)
def test_a_redirect_hints_at_what_is_wrong_with_the_base_url(base: str, location: str, hint: str) -> None:
    rec = Recorder(httpx.Response(302, headers={"Location": location}))
    client = ClevertimClient(base, TOKEN, http=httpx.MockTransport(rec), sleep=lambda _: None)
    with pytest.raises(e.Redirected, match=re.escape(hint)):
        client.list("contact")


@pytest.mark.parametrize("status", [200, 401, 403])
def test_a_login_page_is_a_typed_error_not_transient_and_not_retried(status: int) -> None:
    page = httpx.Response(
        status, text="<!DOCTYPE html><html><form action=/login>", headers={"Content-Type": "text/html"}
    )
    rec = Recorder(page, ok([]))
    client, waits = make(rec)
    with pytest.raises(e.LoginRequired) as info:
        client.list("contact")
    assert len(rec.requests) == 1 and waits == []
    assert not retried(info.value) and stops(info.value)
    assert "login page" in str(info.value) and "token" in str(info.value)


def test_a_403_with_the_api_s_json_is_a_rights_problem_not_a_login() -> None:
    client, _ = make(Recorder(err(403, "no rights")))
    with pytest.raises(e.AuthFailed) as info:
        client.update("task", 3, {"name": "x"})
    assert type(info.value) is e.AuthFailed and not stops(info.value)


def test_a_refused_token_is_read_again_from_its_source_before_the_next_request() -> None:
    source = {"token": "rotated-token-2"}
    reads: list[str] = []

    def token_source() -> str:
        reads.append(source["token"])
        return source["token"]

    rec = Recorder(err(401, "bad token"), ok([{"id": 1}]))
    client, _ = make(rec, token_source=token_source)
    with pytest.raises(e.LoginRequired):
        client.list("user")
    assert reads == []  # not read while the token works
    assert client.list("user") == [{"id": 1}]
    assert reads == ["rotated-token-2"]
    sent = [r.headers["Authorization"] for r in rec.requests]
    assert sent == [
        "Basic " + base64.b64encode(f"{TOKEN}:X".encode()).decode(),
        "Basic " + base64.b64encode(b"rotated-token-2:X").decode(),
    ]


def test_a_token_file_that_cannot_be_read_keeps_the_old_token() -> None:
    def broken() -> str:
        raise ConfigError(["token file /run/x cannot be read: No such file or directory"])

    rec = Recorder(err(401), ok([]))
    client, _ = make(rec, token_source=broken)
    with pytest.raises(e.LoginRequired):
        client.list("user")
    assert client.list("user") == []
    assert {r.headers["Authorization"] for r in rec.requests} == {
        "Basic " + base64.b64encode(f"{TOKEN}:X".encode()).decode()
    }


class _LyingGzip(httpx.MockTransport):
    """Says gzip, sends plain JSON: httpx raises DecodingError when the body is read."""


def lying_gzip(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        stream=httpx.ByteStream(b'{"status": "OK", "content": [{"id": 1}]}'),
    )


def test_a_lying_content_encoding_is_malformed_on_a_read_and_retried() -> None:
    rec = Recorder(lying_gzip, ok([{"id": 1}]))
    client, waits = make(rec)
    assert client.list("contact") == [{"id": 1}]
    assert len(rec.requests) == 2 and len(waits) == 1


def test_a_lying_content_encoding_on_a_write_may_have_reached_the_server() -> None:
    rec = Recorder(lying_gzip)
    client, waits = make(rec)
    with pytest.raises(e.MalformedResponse) as info:
        client.create("contact", {"fn": "Ann"})
    assert info.value.may_have_reached_server and info.value.status == 200
    assert "could not be decoded" in str(info.value)
    assert len(rec.requests) == 1 and waits == []


def test_any_other_httpx_error_stays_in_the_client_s_error_tree() -> None:
    rec = Recorder(httpx.TooManyRedirects("loop"))
    client, _ = make(rec, read_retries=0)
    with pytest.raises(e.ApiError):
        client.list("contact")


def test_a_429_without_retry_after_waits_at_least_the_floor() -> None:
    rec = Recorder(err(429), err(429), ok([]))
    client, waits = make(rec, rate_limit_floor=30.0, backoff_base=0.5)
    assert client.list("contact") == []
    assert len(waits) == 2 and all(w >= 30.0 for w in waits)  # was ~0.5 s and ~1 s


def test_a_429_whose_floor_is_beyond_the_longest_wait_goes_up_at_once() -> None:
    rec = Recorder(err(429))
    client, waits = make(rec, rate_limit_floor=300.0, max_retry_wait=120.0)
    with pytest.raises(e.RateLimited) as info:
        client.list("contact")
    assert len(rec.requests) == 1 and waits == [] and stops(info.value)
    assert client.policy.asked(info.value) == 300.0


def test_connection_failures_get_a_smaller_retry_budget() -> None:
    rec = Recorder(httpx.ConnectError("Connection refused"))
    client, waits = make(rec, read_retries=5, connect_retries=2)
    with pytest.raises(e.TransportError) as info:
        client.list("contact")
    assert len(rec.requests) == 3 and len(waits) == 2 and stops(info.value)
    # other transient failures keep the full budget
    rec = Recorder(err(503))
    client, _ = make(rec, read_retries=5, connect_retries=2)
    with pytest.raises(e.ServiceUnavailable):
        client.list("contact")
    assert len(rec.requests) == 6


def test_default_settings_give_up_on_a_dead_server_within_seconds() -> None:
    class Top:
        def uniform(self, a: float, b: float) -> float:
            return b

    rec = Recorder(httpx.ConnectError("Connection refused"))
    client = ClevertimClient.from_settings(
        Settings.model_validate({"clevertim": {"url": BASE, "token": TOKEN}}),
        http=httpx.MockTransport(rec),
        sleep=(waits := []).append,
        rng=Top(),
    )
    with pytest.raises(e.TransportError):
        client.list("contact")
    assert len(rec.requests) == 4 and sum(waits) <= 4.0  # at worst 0.5 + 1 + 2 s of waiting


def test_the_client_honours_the_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # HTTPS_PROXY reaches httpx (trust_env): the request goes to the proxy (here a closed port on
    # loopback, refused at once), not to the API's host.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = ClevertimClient(BASE, TOKEN, read_retries=0, timeout=5)
    with pytest.raises(e.TransportError, match="refused") as info:
        client.list("contact")
    client.close()
    assert stops(info.value)


# --- listing(): the body streamed to a file, read back in batches ---------------------------------

TRICKY = [
    {"id": 1, "fn": "A", "x": 1.5, "phones": [{"type": "Work", "no": "1"}, {"type": "Home", "no": "2"}]},
    {"id": "2", "desc": 'a string with },{ and ] and }, {"id": 3} and \\"}, {"'},
    {"fn": "no id", "cf": {"7": [{"a": [1, {"b": "}]"}]}]}},
    7,
    "text",
    [1, {"id": 9}],
    {"id": 4, "t": "Søren 会議 😀"},
    None,
    {"id": 5, "n": {}},
]


def _body(
    content: Any, *, before: bytes = b'"status":"OK",', after: bytes = b"", indent: bool = False
) -> bytes:
    inner = json.dumps(content, indent=2 if indent else None, ensure_ascii=False).encode()
    return b"{" + before + b'"content":' + inner + after + b"}"


_ANSWERS: dict[str, Callable[[], httpx.Response]] = {
    "ok": lambda: ok([{"id": 1, "fn": "A", "x": 1.5}, {"id": "2"}, {"fn": "no id"}, 7]),
    "tricky entries": lambda: ok(TRICKY),
    "pretty-printed": lambda: httpx.Response(200, content=_body(TRICKY, indent=True)),
    "empty": lambda: ok([]),
    "status after content": lambda: httpx.Response(
        200, content=_body(TRICKY, before=b"", after=b',"status":"OK"')
    ),
    "status after content, not OK": lambda: httpx.Response(
        200, content=b'{"content":[{"id":1}],"status":"ERROR","error":"quota"}'
    ),
    "other keys first": lambda: httpx.Response(
        200, content=_body(TRICKY, before=b'"meta":{"content":[1],"a":[1,{"b":2}]},"status":"OK",')
    ),
    "a list after content": lambda: httpx.Response(
        200, content=_body(TRICKY, after=b',"more":[1,[2]],"x":"]"')
    ),
    "status not OK": lambda: err(200, "broken"),
    "status a map": lambda: httpx.Response(200, content=b'{"status":{"x":"OK"},"content":[]}'),
    "content not a list": lambda: httpx.Response(200, json={"status": "OK", "content": {"id": 1}}),
    "no content": lambda: httpx.Response(200, json={"status": "OK"}),
    "not an object": lambda: httpx.Response(200, json=[1, 2]),
    "html login page": lambda: httpx.Response(
        200, text="<html>login</html>", headers={"Content-Type": "text/html"}
    ),
    "not json": lambda: httpx.Response(200, content=b"hello"),
    "empty body": lambda: httpx.Response(200, content=b""),
    "cut short": lambda: httpx.Response(
        200, content=b'{"status":"OK","content":[{"id":1},{"id"', headers={"Content-Length": "99"}
    ),
    "broken inside content": lambda: httpx.Response(
        200, content=b'{"status":"OK","content":[{"id":1},{"id":}]}'
    ),
    "redirect": lambda: httpx.Response(302, headers={"Location": "https://crm.example.com/login"}),
    "401": lambda: err(401, "bad token"),
    "404": lambda: err(404),
    "503": lambda: err(503),
    "429": lambda: err(429),
    "decoding error": lambda: lying_gzip(httpx.Request("GET", BASE)),
}


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except e.ApiError as exc:
        return type(exc).__name__, (str(exc), exc.status, exc.attempts, exc.server_message)


@pytest.fixture(params=["whole", "windows"])
def parsed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every body parsed in one go (as small ones are), or in windows of a few bytes (as big
    ones are: every cut the parser can try is tried somewhere)."""
    if request.param == "windows":
        monkeypatch.setattr(listing_module, "WHOLE", 0)
        monkeypatch.setattr(listing_module, "WINDOW", 7)
    return str(request.param)


@pytest.mark.parametrize("answer", list(_ANSWERS))
def test_a_streamed_listing_reads_and_fails_as_list_does(answer: str, parsed: str) -> None:
    """`listing()` downloads to a file and parses in windows, but every answer gives what `list()`
    gives: the same records, or the same typed error with the same message, status and attempts
    (a body broken inside `content` fails in the batch that meets it, as MalformedResponse)."""
    answers = {}
    for how in ("list", "listing"):
        client, _ = make(Recorder(lambda _r: _ANSWERS[answer]()), read_retries=2)
        if how == "list":
            answers[how] = _outcome(lambda c=client: c.list("contact"))
        else:

            def read(c: ClevertimClient = client) -> list[Any]:
                with c.listing("contact") as listing:
                    return [r for batch in listing.batches(2) for r in batch]

            answers[how] = _outcome(read)
    if answer == "broken inside content" and parsed == "windows":
        assert answers["listing"][0] == answers["list"][0] == "MalformedResponse"
        assert "not valid JSON past the envelope" in answers["listing"][1][0]
        return
    assert answers["listing"] == answers["list"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab{}[],:" \\\n\tø😀'), max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(content=st.lists(json_values, max_size=12), window=st.integers(1, 64), indent=st.booleans())
def test_a_body_parsed_in_windows_gives_every_entry_as_served(
    content: list[Any], window: int, indent: bool
) -> None:
    """Whatever the entries hold (strings full of brackets, commas and quotes, nested objects,
    entries that are no objects) and wherever a window ends, every entry comes back as served."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - the Listing owns it
    option = orjson.OPT_INDENT_2 if indent else 0
    spool.write(orjson.dumps({"status": "OK", "content": content}, option=option))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(listing_module, "WHOLE", 0)
        patch.setattr(listing_module, "WINDOW", window)
        listing = Listing.spooled("note", spool)
        assert listing is not None
        with listing:
            assert [r for batch in listing.batches(3) for r in batch] == content


def test_a_streamed_listing_is_retried_until_whole_and_leaves_no_file(
    tmp_path: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr(listing_module, "WHOLE", 0)
    rec = Recorder(httpx.ReadError("reset mid-body"), ok([{"id": i} for i in range(5)]))
    client, waits = make(rec)
    with client.listing("contact") as listing:
        assert [len(b) for b in listing.batches(2)] == [2, 2, 1]
        assert list(tmp_path.iterdir()) == []  # unlinked at once
    assert len(waits) == 1


def test_a_listing_broken_past_its_envelope_fails_in_the_batch_that_meets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A complete HTTP body broken inside `content` passes the envelope check (its head and its end
    are fine): the batch that meets the break raises MalformedResponse, after the ones before it."""
    monkeypatch.setattr(listing_module, "WHOLE", 0)
    monkeypatch.setattr(listing_module, "WINDOW", 40)
    body = b'{"status":"OK","content":[' + b",".join(b'{"id":%d}' % i for i in range(10)) + b',{"id":}]}'
    client, _ = make(Recorder(httpx.Response(200, content=body)))
    got: list[int] = []
    with client.listing("note") as listing:
        batches = listing.batches(4)
        got += [len(next(batches)), len(next(batches))]
        with pytest.raises(e.MalformedResponse, match="not valid JSON past the envelope"):
            next(batches)
    assert got == [4, 4]


@pytest.mark.parametrize(
    ("said", "told"),
    [
        ("DUPLICATE", "server says: 'DUPLICATE'"),
        ("rate_limited", "server says: 'rate_limited'"),
        ("invalid email 'jane@acme.com'", "the server's message (29 characters) is not quoted here"),
        ("jane@acme.com", "the server's message (13 characters)"),
        ("Jane Smith", "the server's message (10 characters)"),
        ("SMITH 1970", "the server's message (10 characters)"),
        ("+447700900123", "the server's message (13 characters)"),
    ],
)
def test_a_server_message_is_quoted_only_when_it_is_an_error_code(said: str, told: str) -> None:
    rec = Recorder(err(400, said))
    client, _ = make(rec)
    with pytest.raises(e.BadRequest) as info:
        client.update("contact", 7, {"title": "x"})
    assert told in str(info.value) and info.value.server_message == said
    if "quoted here" in told:
        assert said not in str(info.value) and "`clevertim-sync queue show` has it" in str(info.value)
