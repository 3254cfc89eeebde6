"""push() against the real emulator over loopback, on SQLite and PostgreSQL: the reliability
scenarios 2-4 and 6-8 of design.md, the SQL path end to end, revert, and two workers at once.

Time is simulated with push(now=...): pauses and backoff are checked against the emulator's
request log, so no test sleeps.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import with_quirks
from sqlalchemy.engine import Engine

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.mirror.schema import history
from clevertim_sync.mirror.store import load_record
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import PushSettings, Settings
from clevertim_sync.shapes import plain_text
from clevertim_sync.writeback import claims, queue
from clevertim_sync.writeback.revert import revert
from clevertim_sync.writeback.worker import push

# Every test twice: the plain emulator, and every data quirk on (a server that differs as a real
# one may: emulator/quirks.py).
pytestmark = with_quirks

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def settings(**push_options: Any) -> Settings:
    return Settings(push=PushSettings(**{"concurrency": 2, "backoff_base": 10.0, **push_options}))


def writes(emulator: Any) -> list[dict[str, Any]]:
    return [r for r in emulator.control.requests() if r["method"] in ("POST", "PUT", "DELETE")]


def remote(emulator: Any, resource: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in emulator.control.state()[resource]}


def text(value: Any) -> str:
    """A note's text without the <p> a normalising server (the `normalising` quirk) wraps it in."""
    return plain_text(value) if isinstance(value, str) else ""


def a_contact(emulator: Any) -> dict[str, Any]:
    return min(emulator.control.state()["contact"], key=lambda r: r["id"])


# --- scenario 2: a POST committed on the server whose answer is lost -------------------------------


@pytest.mark.parametrize("kind", ["lost_response", "truncate"])
def test_lost_create_answer_is_adopted_not_resent(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient, kind: str
) -> None:
    item = queue.enqueue_create(pulled_engine, "contact", {"fn": "Lost", "ln": "Answer"})
    emulator.control.add_fault(method="POST", path="^/contact$", kind=kind, times=1)
    report = push(pulled_engine, api_client, settings(), now=T0)
    assert report.retry_later == 1
    assert queue.get_item(pulled_engine, item.id).state == "reconcile"
    report = push(pulled_engine, api_client, settings(), now=T0 + timedelta(hours=1))
    assert report.adopted == 1
    made = [r for r in remote(emulator, "contact").values() if r.get("fn") == "Lost"]
    assert len(made) == 1  # exactly one remote record, bound to the item
    done = queue.get_item(pulled_engine, item.id)
    assert (done.state, done.remote_id) == ("done", made[0]["id"])
    assert [r["method"] for r in writes(emulator)] == ["POST"]
    with pulled_engine.connect() as conn:
        assert load_record(conn, "contact", made[0]["id"]) is not None


def test_lost_create_with_several_matches_is_quarantined(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    item = queue.enqueue_create(pulled_engine, "contact", {"fn": "Twin"})
    emulator.control.add_fault(method="POST", path="^/contact$", kind="lost_response", times=1)
    push(pulled_engine, api_client, settings(), now=T0)
    emulator.control.create("contact", {"fn": "Twin"})  # someone made the same in the web UI
    report = push(pulled_engine, api_client, settings(), now=T0 + timedelta(hours=1))
    assert report.quarantined == 1 and not report.ok
    got = queue.get_item(pulled_engine, item.id)
    assert got.state == "quarantined" and "match" in (got.last_error or "")
    assert len([r for r in writes(emulator) if r["method"] == "POST"]) == 1  # never resent


def test_create_reset_before_the_server_saw_it_is_sent_again(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    item = queue.enqueue_create(pulled_engine, "note", {"desc": "once"})
    emulator.control.add_fault(method="POST", path="^/note$", kind="reset", times=1)
    push(pulled_engine, api_client, settings(), now=T0)
    push(pulled_engine, api_client, settings(), now=T0 + timedelta(hours=1))
    # text(): a normalising server (quirks) stores "<p>once</p>"
    assert len([r for r in remote(emulator, "note").values() if text(r.get("desc")) == "once"]) == 1
    assert queue.get_item(pulled_engine, item.id).state == "done"


# --- scenario 3: PUT / DELETE answers lost, with a remote edit in between ---------------------------


def test_lost_put_answer_then_remote_edit_is_not_clobbered(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    c = a_contact(emulator)
    item = queue.enqueue_update(pulled_engine, "contact", c["id"], {"title": "Local title"})
    emulator.control.add_fault(method="PUT", path=f"^/contact/{c['id']}$", kind="lost_response", times=1)
    push(pulled_engine, api_client, settings(), now=T0)
    emulator.control.update("contact", c["id"], {"ln": "Web-edited"})
    push(pulled_engine, api_client, settings(), now=T0 + timedelta(hours=1))
    now = remote(emulator, "contact")[c["id"]]
    assert (now["title"], now["ln"]) == ("Local title", "Web-edited")
    assert len(writes(emulator)) == 1  # the re-read showed the PUT had landed: not sent again
    assert queue.get_item(pulled_engine, item.id).state == "done"


def test_lost_delete_answer_then_404_is_done(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    c = a_contact(emulator)
    item = queue.enqueue_delete(pulled_engine, "contact", c["id"])
    emulator.control.add_fault(method="DELETE", path="^/contact/", kind="lost_response", times=1)
    push(pulled_engine, api_client, settings(), now=T0)
    push(pulled_engine, api_client, settings(), now=T0 + timedelta(hours=1))
    assert c["id"] not in remote(emulator, "contact")
    assert queue.get_item(pulled_engine, item.id).state == "done"
    with pulled_engine.connect() as conn:
        assert load_record(conn, "contact", c["id"]) is None


# --- scenario 4: both sides edited ----------------------------------------------------------------


def test_different_fields_merge(emulator: Any, pulled_engine: Engine, api_client: ClevertimClient) -> None:
    c = a_contact(emulator)
    queue.enqueue_update(pulled_engine, "contact", c["id"], {"title": "Local"})
    emulator.control.update("contact", c["id"], {"ln": "Remote"})
    assert push(pulled_engine, api_client, settings(), now=T0).done == 1
    now = remote(emulator, "contact")[c["id"]]
    assert (now["title"], now["ln"]) == ("Local", "Remote")
    (put,) = writes(emulator)
    assert put["method"] == "PUT"


@pytest.mark.parametrize(
    ("policy", "final", "state"),
    [("manual", "Remote", "conflict"), ("local-wins", "Local", "done"), ("remote-wins", "Remote", "done")],
)
def test_same_field_follows_policy_and_keeps_the_losing_value(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient, policy: str, final: str, state: str
) -> None:
    c = a_contact(emulator)
    item = queue.enqueue_update(pulled_engine, "contact", c["id"], {"title": "Local", "description": "mine"})
    emulator.control.update("contact", c["id"], {"title": "Remote"})
    push(pulled_engine, api_client, settings(conflict_policy=policy), now=T0)
    now = remote(emulator, "contact")[c["id"]]
    assert now["title"] == final and now["description"] == "mine"  # the other field went out
    got = queue.get_item(pulled_engine, item.id)
    assert got.state == state
    assert got.conflict is not None
    assert (got.conflict["title"]["local"], got.conflict["title"]["remote"]) == ("Local", "Remote")


def test_resolving_a_conflict_keep_local_sends_it(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    c = a_contact(emulator)
    item = queue.enqueue_update(pulled_engine, "contact", c["id"], {"title": "Local"})
    emulator.control.update("contact", c["id"], {"title": "Remote"})
    push(pulled_engine, api_client, settings(), now=T0)
    queue.resolve(pulled_engine, item.id, "local")
    push(pulled_engine, api_client, settings(), now=T0 + timedelta(minutes=1))
    assert remote(emulator, "contact")[c["id"]]["title"] == "Local"
    assert queue.get_item(pulled_engine, item.id).state == "done"


# --- scenario 6: 429 with Retry-After, a long 503 outage, a poison record ---------------------------


def test_429_retry_after_is_honoured_and_spends_no_attempt(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    c = a_contact(emulator)
    item = queue.enqueue_update(pulled_engine, "contact", c["id"], {"title": "Later"})
    emulator.control.add_fault(
        method="*", path="^/contact", kind="status", status=429, retry_after=120, times=1
    )
    report = push(pulled_engine, api_client, settings(), now=T0)
    assert report.paused_until is not None and report.paused_until >= T0 + timedelta(seconds=120)
    emulator.control.clear_requests()
    assert push(pulled_engine, api_client, settings(), now=T0 + timedelta(seconds=119)).stopped
    assert emulator.control.requests() == []  # no request before Retry-After
    assert push(pulled_engine, api_client, settings(), now=T0 + timedelta(seconds=3600)).done == 1
    got = queue.get_item(pulled_engine, item.id)
    assert (got.state, got.attempts) == ("done", 0)


def test_ten_minute_503_outage_loses_nothing(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    ids = [r["id"] for r in sorted(emulator.control.state()["contact"], key=lambda r: r["id"])[:3]]
    for rid in ids:
        queue.enqueue_update(pulled_engine, "contact", rid, {"title": "after outage"})
    emulator.control.add_fault(method="*", path=".*", kind="status", status=503, times=None)
    emulator.control.clear_requests()
    for minute in range(11):
        push(
            pulled_engine,
            api_client,
            settings(max_attempts=3, backoff_max=120.0),
            now=T0 + timedelta(minutes=minute),
        )
    during = len(emulator.control.requests())
    assert during <= 2 + 10  # the first push, then at most one probe per push, none while paused
    emulator.control.clear_faults()
    for minute in range(12, 20):
        push(
            pulled_engine,
            api_client,
            settings(max_attempts=3, backoff_max=120.0),
            now=T0 + timedelta(minutes=minute),
        )
    items = queue.list_items(pulled_engine)
    assert {i.state for i in items} == {"done"}
    assert all(i.attempts == 0 for i in items)
    assert all(remote(emulator, "contact")[rid]["title"] == "after outage" for rid in ids)


def test_poison_record_is_dead_lettered_while_the_rest_flows(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    first, second, third = sorted(emulator.control.state()["contact"], key=lambda r: r["id"])[:3]
    poison = queue.enqueue_update(pulled_engine, "contact", second["id"], {"title": "poison"})
    others = [
        queue.enqueue_update(pulled_engine, "contact", r["id"], {"title": "fine"}) for r in (first, third)
    ]
    emulator.control.add_fault(
        method="PUT", path=f"^/contact/{second['id']}$", kind="status", status=400, times=None
    )
    report = push(pulled_engine, api_client, settings(), now=T0)
    assert report.failed == 1 and report.done == 2
    got = queue.get_item(pulled_engine, poison.id)
    assert got.state == "failed" and got.error_status == 400 and got.server_message
    assert all(queue.get_item(pulled_engine, o.id).state == "done" for o in others)
    # After the cause is fixed, the person retries it.
    emulator.control.clear_faults()
    assert queue.retry(pulled_engine, poison.id) == 1
    assert push(pulled_engine, api_client, settings(), now=T0 + timedelta(minutes=1)).done == 1


# --- scenario 7: dependent creates while the parent's POST fails for a while -----------------------


def test_children_wait_for_the_parent_and_go_out_with_its_real_id(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    company = queue.enqueue_create(pulled_engine, "company", {"cn": "Parent Co"})
    person = queue.enqueue_create(pulled_engine, "contact", {"fn": "Kid", "companyId": company.local_ref})
    note = queue.enqueue_create(pulled_engine, "note", {"desc": "grandkid", "cust": person.local_ref})
    emulator.control.add_fault(method="POST", path="^/company$", kind="status", status=503, times=2)
    for minute in range(0, 60, 5):
        push(pulled_engine, api_client, settings(), now=T0 + timedelta(minutes=minute))
        if queue.get_item(pulled_engine, company.id).state != "done":
            assert queue.get_item(pulled_engine, person.id).state in ("pending", "waiting")
            assert all(r["path"] != "/api/contact" for r in writes(emulator))  # never dangling
        if queue.get_item(pulled_engine, note.id).state == "done":
            break
    sent = [(r["path"], r["status"]) for r in writes(emulator)]
    assert sent == [
        ("/api/company", 503),
        ("/api/company", 503),
        ("/api/company", 200),
        ("/api/contact", 200),
        ("/api/note", 200),
    ]
    items = {i.id: i for i in queue.list_items(pulled_engine)}
    assert {i.state for i in items.values()} == {"done"}
    company_id, person_id = items[company.id].remote_id, items[person.id].remote_id
    assert remote(emulator, "contact")[person_id]["companyId"] == company_id
    assert remote(emulator, "note")[items[note.id].remote_id]["cust"] == person_id


# --- scenario 8: quiet after activity ---------------------------------------------------------------


def test_two_quiet_cycles_make_no_writes(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    c = a_contact(emulator)
    queue.enqueue_update(pulled_engine, "contact", c["id"], {"title": "Once"})
    queue.enqueue_create(pulled_engine, "company", {"cn": "Quiet Co"})
    push(pulled_engine, api_client, settings(), now=T0)
    assert pull(pulled_engine, api_client).ok
    emulator.control.clear_requests()
    with pulled_engine.connect() as conn:
        versions = conn.execute(sa.select(sa.func.count()).select_from(history)).scalar_one()
    for minute in (1, 2):
        report = push(pulled_engine, api_client, settings(), now=T0 + timedelta(minutes=minute))
        assert report.claimed == 0
        assert pull(pulled_engine, api_client).ok
    assert writes(emulator) == []
    with pulled_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(history)).scalar_one() == versions


# --- the SQL path, revert, two workers -----------------------------------------------------------


def test_sql_insert_goes_out_and_a_bad_one_is_dead_lettered(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    c = a_contact(emulator)
    with pulled_engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO writeback_queue (resource, op, target_id, fields) "
            f"VALUES ('contact', 'update', {c['id']}, '{{\"title\": \"From SQL\"}}')"
        )
        conn.exec_driver_sql(
            "INSERT INTO writeback_queue (resource, op, fields) "
            "VALUES ('user', 'create', '{\"user\": \"x\"}')"
        )
    report = push(pulled_engine, api_client, settings(), now=T0)
    assert report.done == 1
    assert remote(emulator, "contact")[c["id"]]["title"] == "From SQL"
    (bad,) = queue.list_items(pulled_engine, state="failed")
    assert "read-only" in (bad.last_error or "")
    assert len(writes(emulator)) == 1  # nothing invalid was sent


def test_revert_undoes_a_web_edit_and_recreates_a_deleted_record(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    c = a_contact(emulator)
    with pulled_engine.connect() as conn:
        (before,) = conn.execute(
            sa.select(history.c.id).where(history.c.resource == "contact", history.c.record_id == c["id"])
        ).first() or (None,)
    assert before is not None
    emulator.control.update("contact", c["id"], {"title": "Vandalised"})
    assert pull(pulled_engine, api_client).ok
    assert revert(pulled_engine, "contact", c["id"], before) is not None
    push(pulled_engine, api_client, settings(), now=T0)
    assert remote(emulator, "contact")[c["id"]].get("title") == c.get("title")

    emulator.control.delete("contact", c["id"])
    assert pull(pulled_engine, api_client).ok
    item = revert(pulled_engine, "contact", c["id"], before)
    assert item is not None and item.op == "create"
    push(pulled_engine, api_client, settings(), now=T0 + timedelta(minutes=1))
    again = remote(emulator, "contact")[queue.get_item(pulled_engine, item.id).remote_id or 0]
    assert (again.get("fn"), again.get("ln")) == (c.get("fn"), c.get("ln"))


def test_two_workers_never_send_one_item(
    emulator: Any, migrated_database_url: str, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    for i in range(24):
        queue.enqueue_create(pulled_engine, "note", {"desc": f"parallel {i}"})
    engines = [make_engine(migrated_database_url) for _ in range(2)]
    threads = [
        threading.Thread(
            target=push, args=(e, api_client, settings()), kwargs={"now": T0, "worker_id": f"w{n}"}
        )
        for n, e in enumerate(engines)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    made = [r for r in remote(emulator, "note").values() if text(r.get("desc")).startswith("parallel ")]
    assert len(made) == 24 and len({text(r["desc"]) for r in made}) == 24
    assert len(writes(emulator)) == 24
    assert {i.state for i in queue.list_items(pulled_engine)} == {"done"}


def test_worker_killed_after_sending_is_reconciled_when_its_lease_ends(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    """Scenario 1 for the push: a worker claimed a create, its POST landed, and it died before
    recording anything. Another push waits for the lease to run out, then adopts the record."""
    item = queue.enqueue_create(pulled_engine, "contact", {"fn": "Orphan", "ln": "Post"})
    (unit,) = claims.claim(pulled_engine, worker="dead", now=T0, lease=300, limit=10)
    api_client.create("contact", unit.fields)  # what the dead worker sent
    assert push(pulled_engine, api_client, settings(), now=T0 + timedelta(seconds=10)).claimed == 0  # leased
    report = push(pulled_engine, api_client, settings(), now=T0 + timedelta(seconds=301))
    assert report.adopted == 1
    made = [r for r in remote(emulator, "contact").values() if r.get("fn") == "Orphan"]
    assert len(made) == 1
    assert queue.get_item(pulled_engine, item.id).remote_id == made[0]["id"]
    assert len([r for r in writes(emulator) if r["method"] == "POST"]) == 1


def test_a_lease_running_out_inside_the_push_does_not_resend(
    emulator: Any, pulled_engine: Engine, api_client: ClevertimClient
) -> None:
    # Units wait in the push's own queue longer than their lease (0.3 s): the push must not claim
    # them again (a second claim would reconcile against its own recorded answer, then resend).
    emulator.control.add_fault(method="POST", path="^/contact$", kind="latency", latency_ms=200)
    made = [
        queue.enqueue_create(pulled_engine, "contact", {"fn": f"Lease{i}", "ln": "Short"}) for i in range(12)
    ]
    report = push(pulled_engine, api_client, settings(lease=0.3))
    assert report.done == len(made) and report.failed == 0
    posts = [r for r in writes(emulator) if r["method"] == "POST"]
    assert len(posts) == len(made)
    names = sorted(r["fn"] for r in remote(emulator, "contact").values() if r.get("ln") == "Short")
    assert names == sorted(f"Lease{i}" for i in range(12))
