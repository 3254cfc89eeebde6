"""ClevertimClient against the real emulator over loopback: CRUD, API errors, and every fault kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from conftest import Sleeps

from clevertim_sync.api import errors as e
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.health import Action, Where, decide

# the client's retries are what is tested here
pytestmark = pytest.mark.api_client(read_retries=3)


def retried(exc: e.ApiError) -> bool:
    """The health table retries this error on a read."""
    return decide(exc, Where.READ).action is Action.RETRY


TOKEN = "test-token"


def api_requests(emulator: Any, method: str, path: str) -> list[dict[str, Any]]:
    return [r for r in emulator.control.requests() if r["method"] == method and r["path"].endswith(path)]


def test_listing_matches_emulator_state(api_client: ClevertimClient, emulator: Any) -> None:
    state = emulator.control.state(as_token=TOKEN)  # what this token sees, as the API shows it
    for resource in ("contact", "company", "note", "task", "customfield"):
        got = sorted(api_client.list(resource), key=lambda r: r["id"])
        assert got == sorted(state[resource], key=lambda r: r["id"]), resource
    assert state["contact"], "the seeded account has contacts"


def test_crud_round_trip(api_client: ClevertimClient, emulator: Any) -> None:
    created = api_client.create("contact", {"fn": "Ada", "ln": "Lovelace", "email": ["ada@example.com"]})
    rid = created["id"]
    assert isinstance(rid, int) and created["fn"] == "Ada"
    assert api_client.get("contact", rid)["ln"] == "Lovelace"
    updated = api_client.update("contact", rid, {"title": "Countess"})
    assert updated["id"] == rid and updated["title"] == "Countess" and updated["fn"] == "Ada"
    assert any(r["id"] == rid and r["title"] == "Countess" for r in emulator.control.state()["contact"])
    assert api_client.delete("contact", rid) is None
    with pytest.raises(e.NotFound) as info:
        api_client.get("contact", rid)
    assert info.value.record_id == rid and info.value.status == 404
    assert rid not in {r["id"] for r in api_client.list("contact")}


def test_documented_errors(api_client: ClevertimClient, emulator: Any) -> None:
    with pytest.raises(e.BadRequest) as bad:
        api_client.create("case", {"description": "no name"})
    assert bad.value.server_message and bad.value.status == 400
    with pytest.raises(e.NotFound):
        api_client.update("case", 999_999_999, {"name": "x"})
    comments = api_client.list("comment")
    assert comments, "the seeded account has comments"
    with pytest.raises(e.NotSupported) as info:
        api_client.update("comment", comments[0]["id"], {"comment": "edited"})
    assert info.value.status == 501 and not retried(info.value)


def test_wrong_token_is_auth_failed_and_not_retried(emulator: Any, sleeps: Sleeps) -> None:
    emulator.control.clear_requests()
    with ClevertimClient(emulator.base_url, "wrong-token", sleep=sleeps) as c, pytest.raises(e.AuthFailed):
        c.list("contact")
    assert sleeps == [] and len(api_requests(emulator, "GET", "/contact")) == 1


def test_permanent_read_errors_are_not_retried(
    api_client: ClevertimClient, emulator: Any, sleeps: Sleeps
) -> None:
    for status, cls in [
        (400, e.BadRequest),
        (404, e.NotFound),
        (500, e.RequestNotParsed),
        (501, e.NotSupported),
    ]:
        emulator.control.clear_requests()
        emulator.control.add_fault(kind="status", method="GET", path="^/task$", status=status, times=1)
        with pytest.raises(cls):
            api_client.list("task")
        assert len(api_requests(emulator, "GET", "/task")) == 1, status
    assert sleeps == []


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried(
    api_client: ClevertimClient, emulator: Any, sleeps: Sleeps, status: int
) -> None:
    emulator.control.add_fault(kind="status", method="GET", path="^/contact$", status=status, times=2)
    assert api_client.list("contact")
    assert len(sleeps) == 2


def test_429_retry_after_seconds(api_client: ClevertimClient, emulator: Any, sleeps: Sleeps) -> None:
    emulator.control.add_fault(
        kind="status", method="GET", path="^/note$", status=429, retry_after=4, times=1
    )
    api_client.list("note")
    assert len(sleeps) == 1 and sleeps[0] >= 4


def test_429_retry_after_http_date(api_client: ClevertimClient, emulator: Any, sleeps: Sleeps) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    emulator.control.add_fault(
        kind="status", method="GET", path="^/note$", status=429, retry_after=when, times=1
    )
    api_client.list("note")
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 31


def test_retries_are_bounded(api_client: ClevertimClient, emulator: Any, sleeps: Sleeps) -> None:
    emulator.control.clear_requests()
    emulator.control.add_fault(kind="status", method="GET", path="^/case$", status=503)
    with pytest.raises(e.ServiceUnavailable) as info:
        api_client.list("case")
    assert info.value.attempts == 4 and len(sleeps) == 3
    assert len(api_requests(emulator, "GET", "/case")) == 4


@pytest.mark.parametrize("kind", ["reset", "lost_response", "truncate", "html"])
def test_read_faults_are_retried(
    api_client: ClevertimClient, emulator: Any, sleeps: Sleeps, kind: str
) -> None:
    expected = api_client.list("contact")
    emulator.control.add_fault(kind=kind, method="GET", path="^/contact$", times=1)
    assert api_client.list("contact") == expected
    assert len(sleeps) == 1


def test_html_page_that_persists_is_service_unavailable(
    api_client: ClevertimClient, emulator: Any, sleeps: Sleeps
) -> None:
    emulator.control.add_fault(kind="html", method="GET", path="^/contact$")
    with pytest.raises(e.ServiceUnavailable) as info:
        api_client.list("contact")
    assert info.value.status == 502 and len(sleeps) == 3


def test_persistent_truncation_is_a_transient_error(
    api_client: ClevertimClient, emulator: Any, sleeps: Sleeps
) -> None:
    emulator.control.add_fault(kind="truncate", method="GET", path="^/contact$")
    with pytest.raises((e.ResponseLost, e.MalformedResponse)) as info:
        api_client.list("contact")
    assert retried(info.value) and len(sleeps) == 3


def _count(emulator: Any, resource: str) -> int:
    return len(emulator.control.state()[resource])


def test_write_reset_is_not_retried(api_client: ClevertimClient, emulator: Any, sleeps: Sleeps) -> None:
    before = _count(emulator, "contact")
    emulator.control.clear_requests()
    emulator.control.add_fault(kind="reset", method="POST", path="^/contact$", times=1)
    with pytest.raises(e.ApiError) as info:
        api_client.create("contact", {"fn": "Reset"})
    # The client cannot tell a reset before processing from one after: it must say "unknown".
    assert retried(info.value) and info.value.may_have_reached_server
    assert len(api_requests(emulator, "POST", "/contact")) <= 1 and sleeps == []
    assert _count(emulator, "contact") == before  # the emulator did not apply it


@pytest.mark.parametrize("kind", ["lost_response", "truncate"])
def test_write_with_lost_answer_says_outcome_unknown(
    api_client: ClevertimClient, emulator: Any, sleeps: Sleeps, kind: str
) -> None:
    before = _count(emulator, "contact")
    emulator.control.add_fault(kind=kind, method="POST", path="^/contact$", times=1)
    with pytest.raises(e.ApiError) as info:
        api_client.create("contact", {"fn": "Lost"})
    assert info.value.may_have_reached_server and retried(info.value) and sleeps == []
    assert _count(emulator, "contact") == before + 1  # it was applied: a blind resend would duplicate


def test_write_html_page_is_not_retried(api_client: ClevertimClient, emulator: Any, sleeps: Sleeps) -> None:
    emulator.control.clear_requests()
    emulator.control.add_fault(kind="html", method="PUT", path="^/case/", status=503, times=1)
    case = api_client.list("case")[0]
    with pytest.raises(e.ServiceUnavailable) as info:
        api_client.update("case", case["id"], {"name": "x"})
    assert not info.value.may_have_reached_server and sleeps == []
    assert len(api_requests(emulator, "PUT", f"/case/{case['id']}")) == 1


def test_empty_listing_is_returned_as_is(api_client: ClevertimClient, emulator: Any) -> None:
    # The client cannot tell an empty account from a broken one: the pull's mass-delete guard does.
    emulator.control.add_fault(kind="empty_listing", method="GET", path="^/contact$", times=1)
    assert api_client.list("contact") == []
    assert api_client.list("contact")


def test_hidden_records_vanish_from_listing_and_get(api_client: ClevertimClient, emulator: Any) -> None:
    ids = sorted(r["id"] for r in api_client.list("contact"))
    hidden = ids[:2]
    emulator.control.add_fault(kind="hide", method="GET", path="^/contact", hide_ids=hidden)
    assert sorted(r["id"] for r in api_client.list("contact")) == ids[2:]
    with pytest.raises(e.NotFound):
        api_client.get("contact", hidden[0])


def test_read_timeout_is_retried(emulator: Any, sleeps: Sleeps) -> None:
    emulator.control.add_fault(kind="latency", method="GET", path="^/group$", latency_ms=1500, times=1)
    with ClevertimClient(emulator.base_url, TOKEN, sleep=sleeps, timeout=0.5) as c:
        c.list("group")
    assert len(sleeps) == 1


def test_write_timeout_is_response_lost(emulator: Any, sleeps: Sleeps) -> None:
    emulator.control.add_fault(kind="latency", method="POST", path="^/note$", latency_ms=1500, times=1)
    with (
        ClevertimClient(emulator.base_url, TOKEN, sleep=sleeps, timeout=0.5) as c,
        pytest.raises(e.ResponseLost) as info,
    ):
        c.create("note", {"desc": "slow"})
    assert info.value.may_have_reached_server and sleeps == []


def test_unreachable_server_is_transport_error(sleeps: Sleeps) -> None:
    with ClevertimClient("http://127.0.0.1:9/api", TOKEN, sleep=sleeps, read_retries=1) as c:
        with pytest.raises(e.TransportError) as info:
            c.list("contact")
        assert not info.value.may_have_reached_server and len(sleeps) == 1
        with pytest.raises(e.TransportError):
            c.create("contact", {"fn": "x"})
    assert len(sleeps) == 1
