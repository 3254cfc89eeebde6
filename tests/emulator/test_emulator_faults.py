"""Each fault kind of the emulator, seen from a plain httpx client over loopback; and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import wait_for

from clevertim_sync.cli import cli
from clevertim_sync.emulator import EmulatorServer, FaultSpecError
from clevertim_sync.emulator.faults import FaultSet

TOKEN = "test-token"  # the `emulator` fixture's owner token


def ids(response: httpx.Response) -> set[int]:
    assert response.status_code == 200, response.text
    return {r["id"] for r in response.json()["content"]}


def contact_count(emulator: EmulatorServer) -> int:
    return len(emulator.control.state()["contact"])


def test_latency_delays_the_answer(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    emulator.control.add_fault(kind="latency", latency_ms=300, path="^/contact$", times=1)
    started = time.perf_counter()
    assert emulator_http.get("/contact").status_code == 200
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    assert emulator_http.get("/contact").status_code == 200
    assert time.perf_counter() - started < 0.3  # used up after one request


def test_a_request_that_arrived_before_a_reset_is_not_logged_after_it(
    emulator: EmulatorServer, emulator_http: httpx.Client
) -> None:
    """A slow answer still being served when the next test resets the emulator stays out of that
    test's request log (it made the request-log tests fail beside the client's)."""
    emulator.control.add_fault(kind="latency", latency_ms=500, path="^/case$", times=1)
    slow = threading.Thread(target=lambda: emulator_http.get("/case"))
    slow.start()
    wait_for(lambda: emulator.faults.list() == [], "the slow request to arrive", 10)  # it sleeps there
    emulator.reset()
    slow.join()
    assert emulator.control.requests() == []
    assert emulator_http.get("/case").status_code == 200
    assert [r["path"] for r in emulator.control.requests()] == ["/api/case"]


@pytest.mark.parametrize(("status", "retry_after"), [(503, 30), (503, None), (429, 5), (500, None), (504, 1)])
def test_status_fault_answers_with_error_and_retry_after(
    emulator: EmulatorServer, emulator_http: httpx.Client, status: int, retry_after: int | None
) -> None:
    emulator.control.add_fault(kind="status", status=status, retry_after=retry_after, path="^/case$", times=2)
    for _ in range(2):
        response = emulator_http.get("/case")
        assert response.status_code == status
        assert response.json()["status"] == "ERROR"
        assert response.headers.get("Retry-After") == (str(retry_after) if retry_after is not None else None)
    assert emulator_http.get("/case").status_code == 200  # times=2: the third request gets through
    assert [r["status"] for r in emulator.control.requests()] == [status, status, 200]
    assert [r["fault"] for r in emulator.control.requests()] == ["status", "status", None]


def test_status_fault_on_a_write_applies_nothing(
    emulator: EmulatorServer, emulator_http: httpx.Client
) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(kind="status", status=503, method="POST", path="^/contact$")
    assert emulator_http.get("/contact").status_code == 200  # method filter: GETs pass
    for _ in range(3):  # times omitted: until cleared
        assert emulator_http.post("/contact", json={"fn": "x"}).status_code == 503
    assert contact_count(emulator) == before
    emulator.control.clear_faults()
    assert emulator_http.post("/contact", json={"fn": "x"}).status_code == 200
    assert contact_count(emulator) == before + 1


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"kind": "status", "status": 504}, None),
        ({"kind": "html", "status": 502}, None),
        ({"kind": "reset"}, httpx.ReadError),
    ],
)
def test_applied_faults_commit_the_write_then_fail(
    emulator: EmulatorServer, emulator_http: httpx.Client, spec: dict[str, Any], error: type[Exception] | None
) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(method="POST", path="^/contact$", times=1, apply=True, **spec)
    if error is None:
        assert emulator_http.post("/contact", json={"fn": "committed"}).status_code == spec["status"]
    else:
        with pytest.raises(error):
            emulator_http.post("/contact", json={"fn": "committed"})
    assert contact_count(emulator) == before + 1


def test_reset_aborts_the_connection_before_applying(
    emulator: EmulatorServer, emulator_http: httpx.Client
) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(kind="reset", method="POST", path="^/contact$", times=1)
    with pytest.raises(httpx.ReadError):  # ECONNRESET, not a clean close
        emulator_http.post("/contact", json={"fn": "never"})
    assert contact_count(emulator) == before
    assert emulator_http.post("/contact", json={"fn": "now"}).status_code == 200
    assert emulator.control.requests()[0]["fault"] == "reset"


def test_lost_response_commits_the_write_then_drops(
    emulator: EmulatorServer, emulator_http: httpx.Client
) -> None:
    before = {c["id"] for c in emulator.control.state()["contact"]}
    emulator.control.add_fault(kind="lost_response", method="POST", path="^/contact$", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        emulator_http.post("/contact", json={"fn": "Ghost"})
    after = emulator.control.state()["contact"]
    created = [c for c in after if c["id"] not in before]
    assert [c["fn"] for c in created] == ["Ghost"]  # exactly one record, created although unanswered
    logged = emulator.control.requests()[0]
    assert (logged["fault"], logged["status"]) == ("lost_response", 200)


def test_lost_response_on_delete_and_put(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    contact = emulator_http.get("/contact").json()["content"][0]
    emulator.control.add_fault(kind="lost_response", method="PUT", times=1)
    emulator.control.add_fault(kind="lost_response", method="DELETE", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        emulator_http.put(f"/contact/{contact['id']}", json={"title": "changed"})
    assert emulator.control.record("contact", contact["id"])["title"] == "changed"
    with pytest.raises(httpx.RemoteProtocolError):
        emulator_http.delete(f"/contact/{contact['id']}")
    assert emulator_http.get(f"/contact/{contact['id']}").status_code == 404


def test_truncate_cuts_the_body_short(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    emulator.control.add_fault(kind="truncate", path="^/contact$", times=1)
    with pytest.raises(httpx.RemoteProtocolError):  # fewer bytes than Content-Length, then close
        emulator_http.get("/contact")
    assert emulator_http.get("/contact").status_code == 200


def test_truncated_write_answer_still_commits(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(kind="truncate", method="POST", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        emulator_http.post("/contact", json={"fn": "half"})
    assert contact_count(emulator) == before + 1


def test_truncated_body_seen_raw(emulator: EmulatorServer) -> None:
    """Below httpx: the header promises more bytes than arrive."""
    emulator.control.add_fault(kind="truncate", path="^/contact$", times=1)
    with (
        httpx.Client(base_url=emulator.base_url, auth=(TOKEN, "X"), verify=False) as client,
        client.stream("GET", "/contact") as response,
    ):
        promised = int(response.headers["Content-Length"])
        received = bytearray()

        def drain() -> None:
            for chunk in response.iter_raw():
                received.extend(chunk)

        with pytest.raises(httpx.RemoteProtocolError):
            drain()
    assert 0 < len(received) < promised


def test_html_proxy_page(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(kind="html", status=502, path="^/contact", times=2)
    response = emulator_http.get("/contact")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.lstrip().startswith("<html>") and "502 Bad Gateway" in response.text
    assert emulator_http.post("/contact", json={"fn": "x"}).status_code == 502
    assert contact_count(emulator) == before


@pytest.mark.parametrize("status", [301, 302, 307])
def test_redirect_sends_a_location_and_applies_nothing(
    emulator: EmulatorServer, emulator_http: httpx.Client, status: int
) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(
        kind="redirect", status=status, location="https://elsewhere.example/api/contact", path="^/contact"
    )
    response = emulator_http.post("/contact", json={"fn": "Moved"})
    assert response.status_code == status and not response.is_success
    assert response.headers["Location"] == "https://elsewhere.example/api/contact"
    assert contact_count(emulator) == before
    emulator.control.clear_faults()
    emulator.control.add_fault(kind="redirect", path="^/case$", times=1)
    response = emulator_http.get("/case")
    assert (response.status_code, response.headers["Location"]) == (302, "/login?next=/api")


@pytest.mark.parametrize("status", [200, 401, 403])
def test_login_page_is_html_with_the_status_asked(
    emulator: EmulatorServer, emulator_http: httpx.Client, status: int
) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(kind="login_page", status=status, path="^/contact", times=2)
    response = emulator_http.get("/contact")
    assert response.status_code == status and response.headers["Content-Type"].startswith("text/html")
    assert "<form" in response.text and "Log in" in response.text
    assert emulator_http.post("/contact", json={"fn": "x"}).status_code == status
    assert contact_count(emulator) == before
    assert [r["fault"] for r in emulator.control.requests()] == ["login_page", "login_page"]


def test_bad_encoding_applies_the_write_and_says_gzip_over_plain_json(
    emulator: EmulatorServer, emulator_http: httpx.Client
) -> None:
    before = contact_count(emulator)
    emulator.control.add_fault(kind="bad_encoding", path="^/contact$", method="POST", times=1)
    with pytest.raises(httpx.DecodingError):
        emulator_http.post("/contact", json={"fn": "Liar"})
    assert contact_count(emulator) == before + 1  # the service did the work
    raw = httpx.post(emulator.base_url + "/contact", auth=(TOKEN, "X"), json={"fn": "x"})
    assert raw.status_code == 200  # used up: the next answer is honest


def test_a_429_fault_without_retry_after_sends_no_retry_after(
    emulator: EmulatorServer, emulator_http: httpx.Client
) -> None:
    emulator.control.add_fault(kind="status", status=429, path="^/user$", times=1)
    response = emulator_http.get("/user")
    assert response.status_code == 429 and "Retry-After" not in response.headers


def test_empty_listing_only_hits_listings(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    first = next(iter(ids(emulator_http.get("/contact"))))
    emulator.control.add_fault(kind="empty_listing", path="^/contact", times=1)
    assert emulator_http.get(f"/contact/{first}").status_code == 200  # not a listing: the fault waits
    response = emulator_http.get("/contact")
    assert response.status_code == 200 and response.json() == {"status": "OK", "content": []}
    assert ids(emulator_http.get("/contact"))


def test_hide_ids_hides_from_listing_and_get(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    everything = ids(emulator_http.get("/contact"))
    hidden = sorted(everything)[:3]
    emulator.control.add_fault(kind="hide", path="^/contact", hide_ids=hidden)
    assert ids(emulator_http.get("/contact")) == everything - set(hidden)
    assert emulator_http.get(f"/contact/{hidden[0]}").status_code == 404
    assert emulator.control.record("contact", hidden[0])["id"] == hidden[0]  # not deleted
    emulator.control.clear_faults()
    assert ids(emulator_http.get("/contact")) == everything


def test_hide_fraction_is_stable(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    emulator.control.reset(contacts=400)
    everything = ids(emulator_http.get("/contact"))
    emulator.control.add_fault(kind="hide", path="^/contact$", hide_fraction=0.5)
    first, second = ids(emulator_http.get("/contact")), ids(emulator_http.get("/contact"))
    assert first == second
    assert 0.35 * len(everything) < len(first) < 0.65 * len(everything)


def test_faults_match_by_method_and_path_regex(emulator: EmulatorServer, emulator_http: httpx.Client) -> None:
    emulator.control.add_fault(kind="status", status=503, method="GET", path=r"^/note/\d+$")
    note = next(iter(ids(emulator_http.get("/note"))))
    assert emulator_http.get(f"/note/{note}").status_code == 503
    assert emulator_http.put(f"/note/{note}", json={"desc": "x"}).status_code == 200


def test_control_requests_are_never_faulted(emulator: EmulatorServer) -> None:
    emulator.control.add_fault(kind="reset", path="")
    assert emulator.control.faults()[0]["kind"] == "reset"
    emulator.control.clear_faults()


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "boom"},
        {"kind": "status", "status": 200},
        {"kind": "latency"},
        {"kind": "hide"},
        {"kind": "status", "times": 0},
        {"kind": "status", "path": "("},
        {"kind": "status", "method": "FETCH"},
        {"kind": "status", "colour": "red"},
        {"kind": "hide", "hide_fraction": 2},
        {"kind": "latency", "latency_ms": 5, "apply": True},
        {"kind": "status", "apply": "yes"},
        {"kind": "redirect", "status": 200},
        {"kind": "redirect", "location": ""},
        {"kind": "redirect", "location": "/x\r\nSet-Cookie: a=b"},
        {"kind": "login_page", "status": 500},
        {"kind": "bad_encoding", "apply": True},
    ],
)
def test_bad_fault_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(FaultSpecError):
        FaultSet().add(spec)


def test_cli_serves_with_faults() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    fault = '{"kind":"status","status":503,"path":"^/contact$","times":1}'
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clevertim_sync",
            "emulator",
            "--port",
            "0",
            "--token",
            "cli-token",
            "--contacts",
            "20",
            "--fault",
            fault,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api")
        with httpx.Client(base_url=base_url, auth=("cli-token", "X"), verify=False) as client:
            assert client.get("/contact").status_code == 503
            assert len(client.get("/contact").json()["content"]) > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "cli-token" not in stderr


@pytest.mark.parametrize("fault", ['{"kind": "nope"}', "{not json", "[1]"])
def test_cli_rejects_a_bad_fault(fault: str) -> None:
    result = CliRunner().invoke(cli, ["emulator", "--token", "t", "--port", "0", "--fault", fault])
    assert result.exit_code == 2
    assert "--fault" in result.output
