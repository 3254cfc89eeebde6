"""Issue 11's data shapes: what a real Clevertim may serve that our first reading did not expect.

Each test names the variant it covers; against the real emulator (with its quirks,
clevertim_sync/emulator/quirks.py) and real SQLite files / the throwaway PostgreSQL, except the
pure ones (shapes, edit validation).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from clevertim_sync import resources, shapes
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.listing import Listing
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.emulator.control import EmulatorControlError
from clevertim_sync.emulator.quirks import DATA_QUIRKS, QuirkSpecError, parse_quirks
from clevertim_sync.mirror import db, schema, store
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import PushSettings, Settings
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.worker import push

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _rows(engine: sa.Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def _truth(value: Any) -> bool | None:
    """A boolean column read through plain SQL: SQLite gives 0/1, PostgreSQL a bool; NULL stays None."""
    return None if value is None else bool(value)


def _state(emulator: EmulatorServer, resource: str) -> list[dict[str, Any]]:
    return sorted(emulator.control.state()[resource], key=lambda r: r["id"])


# --- the pure reading of values ---------------------------------------------------------------


def test_every_spelling_of_a_value_reads_as_its_meaning() -> None:
    assert [shapes.as_bool(v) for v in (True, 1, "1", "true", " TRUE ", False, 0, "0", "false")] == [
        True, True, True, True, True, False, False, False, False,
    ]  # fmt: skip
    assert [shapes.as_bool(v) for v in (2, "yes", "", None, 1.0)] == [None] * 5
    assert [shapes.as_int(v) for v in (445, "445", " 445", "-3", "4.5", 4.5, True, "", "²", "9" * 20)] == [
        445, 445, 445, -3, None, None, None, None, None, None,
    ]  # fmt: skip
    assert shapes.as_ids([33, "43", True, 5.5, None, 53]) == [33, 43, 53]
    assert [shapes.single_ref(v) for v in (33, "33", [33], ["33"], [33, 43], [], "", None)] == [
        33, 33, 33, 33, None, None, None, None,
    ]  # fmt: skip
    # custom values of any JSON type: canonical JSON text, never Python's repr
    assert [shapes.cf_text(v) for v in ("x", 5, 1.5, True, None, {"b": 1, "a": [2]}, ["x"])] == [
        "x", "5", "1.5", "true", None, '{"a":[2],"b":1}', '["x"]',
    ]  # fmt: skip
    assert shapes.plain_text("<p>Call&nbsp;back<br/>  tomorrow</p>") == "Call back tomorrow"
    note = resources.get("note").by_api
    assert shapes.same_meaning(note["cust"], [445], "445")
    assert shapes.same_meaning(note["cust"], [43, 33], ["33", 43])
    assert not shapes.same_meaning(note["cust"], [33, 43], 33)
    assert shapes.same_meaning(note["is_private"], 0, False)
    assert not shapes.same_meaning(note["desc"], "<p>x</p>", "x")
    assert shapes.same_meaning(note["desc"], "<p>x</p>", " x", loose=True)
    assert shapes.same_meaning(None, 1, True) and shapes.same_meaning(None, "445", 445)


def test_edits_accept_a_list_where_the_api_does_and_refuse_is_company() -> None:
    assert resources.edit_problems("note", "create", {"desc": "x", "cust": [1, 2]}) == []
    assert resources.edit_problems("task", "update", {"cust": [1], "opp": [2, 3]}) == []
    assert resources.edit_problems("comment", "create", {"comment": "x", "nid": [4]}) == []
    assert resources.edit_problems("opportunity", "update", {"cust": [1, 2]}) == [
        "cust must be an integer id"
    ]
    assert resources.edit_problems("note", "update", {"cust": []}) == [
        "cust must be an integer id or a non-empty list of integer ids"
    ]
    assert resources.edit_problems("note", "update", {"cust": [1, "x"]}) == [
        "cust must be an integer id or a non-empty list of integer ids"
    ]
    (problem,) = resources.edit_problems("contact", "update", {"is_company": True})
    assert problem.startswith("is_company cannot be written") and "does not change" in problem


# --- typed columns from every spelling ---------------------------------------------------------


def _sync(engine: sa.Engine, resource: str, listing: list[dict[str, Any]]) -> None:
    from clevertim_sync.pull.diff import compute_changes  # noqa: PLC0415 - only here

    with engine.begin() as conn:
        changes = compute_changes(
            resource, listing, store.load_index(conn, resource), lm_key=store.lm_key(conn, resource)
        )
        store.apply_changes(conn, resource, changes, run_id=None, at=T0)


def test_booleans_ids_date_parts_and_empty_strings_are_typed_and_raw_is_kept(
    mirror_engine: sa.Engine,
) -> None:
    tasks = [
        {"id": 1, "name": "a", "is_completed": 1, "is_deleted": "0", "is_private": "true", "gid": "4",
         "startDate": {"y": "2026", "mo": "9", "d": "7", "h": "13", "mi": "5"}, "cust": "445",
         "aUserId": "", "ao": "", "recevery": ""},
        {"id": "2", "name": "b", "is_completed": 0, "is_deleted": False,
         "startDate": {"y": 2026, "mo": 9, "d": 7},
         "endDate": {"y": "2026", "mo": "9", "d": "8", "h": "", "mi": ""}},
    ]  # fmt: skip
    _sync(mirror_engine, "task", tasks)
    rows = _rows(
        mirror_engine,
        "SELECT id, is_completed, is_deleted, is_private, group_mask, customer_id, assigned_user_id,"
        " added_at, recurrence_every, start_at, start_at_all_day, end_at_all_day, raw FROM tasks ORDER BY id",
    )
    one, two = rows
    assert (_truth(one.is_completed), _truth(one.is_deleted), _truth(one.is_private), one.group_mask) == (
        True,
        False,
        True,
        4,
    )
    assert (one.customer_id, one.assigned_user_id, one.added_at, one.recurrence_every) == (
        445,
        None,
        None,
        None,
    )
    assert _truth(one.start_at_all_day) is False and str(one.start_at).startswith("2026-09-07 13:05")
    assert orjson.loads(one.raw) == tasks[0]  # raw keeps what was served
    assert (two.id, _truth(two.is_completed), _truth(two.start_at_all_day), _truth(two.end_at_all_day)) == (
        2,
        False,
        True,
        True,
    )
    assert (
        _rows(mirror_engine, "SELECT COUNT(*) FROM report_open_tasks WHERE task_id = 1")[0][0] == 0
    )  # completed


def test_custom_field_values_of_any_json_type_are_canonical_json_text(mirror_engine: sa.Engine) -> None:
    contact = {"id": 9, "fn": "A", "cf": {"3": 5, "4": [True, "x", None], "5": {"b": 1, "a": 2}, "6": 1.5}}
    _sync(mirror_engine, "contact", [contact])
    got = _rows(
        mirror_engine,
        "SELECT custom_field_id, position, value FROM contact_custom_values"
        " ORDER BY custom_field_id, position",
    )
    assert [tuple(r) for r in got] == [
        (3, 0, "5"), (4, 0, "true"), (4, 1, "x"), (4, 2, None), (5, 0, '{"a":2,"b":1}'), (6, 0, "1.5"),
    ]  # fmt: skip


def test_a_reference_to_several_records_fills_its_child_table_and_the_scalar_only_when_single(
    mirror_engine: sa.Engine,
) -> None:
    notes = [
        {"id": 1, "desc": "several", "cust": [33, "43", 53], "case": [7], "opportunity": None},
        {"id": 2, "desc": "one", "cust": 33, "case": "8", "opportunity": ""},
    ]
    _sync(mirror_engine, "note", notes)
    assert [
        tuple(r) for r in _rows(mirror_engine, "SELECT id, customer_id, case_id FROM notes ORDER BY id")
    ] == [
        (1, None, 7),
        (2, 33, 8),
    ]
    children = _rows(
        mirror_engine, "SELECT owner_id, position, customer_id FROM note_customers ORDER BY 1, 2"
    )
    assert [tuple(r) for r in children] == [(1, 0, 33), (1, 1, 43), (1, 2, 53), (2, 0, 33)]
    assert [
        tuple(r) for r in _rows(mirror_engine, "SELECT owner_id, case_id FROM note_cases ORDER BY 1")
    ] == [
        (1, 7),
        (2, 8),
    ]
    # an update rewrites them; a comment's nid as a list too
    _sync(mirror_engine, "note", [{**notes[0], "cust": [43]}, notes[1]])
    assert [
        tuple(r) for r in _rows(mirror_engine, "SELECT owner_id, customer_id FROM note_customers ORDER BY 1")
    ] == [
        (1, 43),
        (2, 33),
    ]
    assert _rows(mirror_engine, "SELECT customer_id FROM notes WHERE id = 1")[0][0] == 43
    _sync(mirror_engine, "comment", [{"id": 5, "comment": "c", "nid": ["1"], "tid": None}])
    assert _rows(mirror_engine, "SELECT note_id FROM comments")[0][0] == 1
    assert [tuple(r) for r in _rows(mirror_engine, "SELECT owner_id, note_id FROM comment_notes")] == [(5, 1)]
    assert _rows(mirror_engine, "SELECT COUNT(*) FROM comment_tasks")[0][0] == 0


# --- against the emulator, with its quirks ----------------------------------------------------------


def test_a_note_and_a_task_under_several_customers_count_for_each_in_the_activity_report(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    a, b = (c["id"] for c in _state(emulator, "contact")[:2])
    company = _state(emulator, "company")[0]["id"]
    assert pull(mirror_engine, api_client).ok
    before = {
        r.customer_id: (r.notes, r.tasks)
        for r in _rows(mirror_engine, "SELECT customer_id, notes, tasks FROM report_customer_activity")
    }
    control = emulator.control
    note = control.create("note", {"desc": "filed under three", "cust": [a, b, company]})
    task = control.create("task", {"name": "for two", "cust": [a, company], "is_completed": False})
    assert pull(mirror_engine, api_client).ok
    after = {
        r.customer_id: (r.notes, r.tasks)
        for r in _rows(mirror_engine, "SELECT customer_id, notes, tasks FROM report_customer_activity")
    }
    assert after[a] == (before[a][0] + 1, before[a][1] + 1)
    assert after[b] == (before[b][0] + 1, before[b][1])
    assert after[company] == (before[company][0] + 1, before[company][1] + 1)
    assert _rows(mirror_engine, "SELECT customer_id FROM notes WHERE id = :i", i=note["id"])[0][0] is None
    assert (
        _rows(mirror_engine, "SELECT COUNT(*) FROM task_customers WHERE owner_id = :i", i=task["id"])[0][0]
        == 2
    )
    # The open-task report names both, in the list's order, though the scalar column cannot.
    contact = _state(emulator, "contact")[0]
    company_name = _state(emulator, "company")[0]["cn"] or f"#{company}"  # a nameless one by its id
    names = f"{contact['fn']} {contact['ln']}".strip() + "; " + company_name
    row = _rows(mirror_engine, "SELECT * FROM report_open_tasks WHERE task_id = :i", i=task["id"])[0]
    assert (row.customer_id, row.customer_ids, row.customers) == (None, f"{a},{company}", names)


@pytest.mark.parametrize("emulator_quirks", [("bool01",)], indirect=True)
def test_zero_one_booleans_are_booleans_so_a_completed_task_is_not_open(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    task = _state(emulator, "task")[0]
    emulator.control.update("task", task["id"], {"is_completed": True, "is_deleted": False})
    assert api_client.get("task", task["id"])["is_completed"] == 1  # served as 1, not true
    assert pull(mirror_engine, api_client).ok
    assert (
        _truth(_rows(mirror_engine, "SELECT is_completed FROM tasks WHERE id = :i", i=task["id"])[0][0])
        is True
    )
    assert not _rows(mirror_engine, "SELECT task_id FROM report_open_tasks WHERE task_id = :i", i=task["id"])


@pytest.mark.parametrize("emulator_quirks", [("shuffled_lists", "string_ids")], indirect=True)
def test_reshuffled_back_references_and_string_ids_are_no_update_and_no_history(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    assert pull(mirror_engine, api_client).ok
    rows = _rows(mirror_engine, "SELECT COUNT(*) FROM history")[0][0]
    for _ in range(3):
        again = pull(mirror_engine, api_client)
        assert again.totals()["updated"] == again.totals()["inserted"] == 0, again.resources
    assert _rows(mirror_engine, "SELECT COUNT(*) FROM history")[0][0] == rows
    assert all(isinstance(r[0], int) for r in _rows(mirror_engine, "SELECT id FROM contacts"))


class _WithBadEntries:
    """The real client, with entries the diff cannot use added to one resource's listing."""

    def __init__(
        self, client: ClevertimClient, resource: str, bad: list[Any], *, only_bad: bool = False
    ) -> None:
        self.client, self.resource, self.bad, self.only_bad = client, resource, bad, only_bad

    def listing(self, resource: str) -> Listing:
        if resource != self.resource:
            return self.client.listing(resource)
        listing = self.client.list(resource)
        return Listing.of(resource, list(self.bad) if self.only_bad else [*self.bad, *listing])


def test_an_entry_with_an_unusable_id_is_left_out_reported_and_the_rest_applies(
    mirror_engine: sa.Engine,
    emulator: EmulatorServer,
    api_client: ClevertimClient,
    cli_runner: Any,
    migrated_database_url: str,
) -> None:
    assert pull(mirror_engine, api_client).ok
    contact = _state(emulator, "contact")[0]
    emulator.control.update("contact", contact["id"], {"title": "changed"})
    bad = [{"id": "f1001", "fn": "folder-like"}, {"id": True}, {"fn": "no id"}]
    report = pull(mirror_engine, _WithBadEntries(api_client, "contact", bad))
    counts = report.resources["contact"]
    assert report.ok and counts.updated == 1 and counts.skipped == 3 and counts.deleted == 0
    assert "'f1001'" in counts.skipped_reasons[0]
    with mirror_engine.connect() as conn:
        status = store.resource_statuses(conn)["contact"]
        run = conn.execute(
            sa.select(schema.runs.c.counts).where(schema.runs.c.id == report.run_id)
        ).scalar_one()
    assert orjson.loads(status["last_counts"])["skipped"] == 3 and status["last_error"] is None
    assert orjson.loads(run)["contact"]["skipped_reasons"] == counts.skipped_reasons
    assert (
        _rows(mirror_engine, "SELECT title FROM contacts WHERE id = :i", i=contact["id"])[0][0] == "changed"
    )
    out = cli_runner(migrated_database_url)("status", code=0).output
    assert "3 entries left out" in out and "f1001" in out
    # A listing of nothing but unusable entries counts them as present: the guard holds it.
    held = pull(mirror_engine, _WithBadEntries(api_client, "contact", bad, only_bad=True))
    assert held.resources["contact"].held and held.resources["contact"].deleted == 0
    assert _rows(mirror_engine, "SELECT COUNT(*) FROM contacts")[0][0] == counts.listed - 3  # all still there


# --- lost creates on a server that normalises -------------------------------------------------------


def _settings() -> Settings:
    return Settings(push=PushSettings(concurrency=1, backoff_base=10.0))


def _notes_with_text(emulator: EmulatorServer, text: str) -> list[dict[str, Any]]:
    return [n for n in _state(emulator, "note") if shapes.plain_text(str(n.get("desc") or "")) == text]


@pytest.mark.parametrize("emulator_quirks", [("normalising",), DATA_QUIRKS], indirect=True)
def test_a_lost_create_on_a_normalising_server_is_adopted_not_sent_twice(
    pulled_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    customer = _state(emulator, "contact")[0]["id"]
    item = queue.enqueue_create(
        pulled_engine, "note", {"desc": "Call back  tomorrow ", "cust": customer, "is_private": False}
    )
    emulator.control.add_fault(method="POST", path="^/note$", kind="lost_response", times=1)
    push(pulled_engine, api_client, _settings(), now=T0)
    push(pulled_engine, api_client, _settings(), now=T0 + timedelta(hours=1))
    made = _notes_with_text(emulator, "Call back tomorrow")
    assert len(made) == 1 and made[0]["desc"].startswith("<p>")  # stored normalised, once
    done = queue.get_item(pulled_engine, item.id)
    assert done.state == "done" and done.remote_id == made[0]["id"]


def test_a_lost_create_matched_on_its_identifying_fields_is_adopted_and_two_are_quarantined(
    pulled_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    # the server (or a person) changed a non-identifying field before the reconcile read it
    item = queue.enqueue_create(
        pulled_engine, "contact", {"fn": "Ada", "ln": "Lovelace", "title": "Countess"}
    )
    emulator.control.add_fault(method="POST", path="^/contact$", kind="lost_response", times=1)
    push(pulled_engine, api_client, _settings(), now=T0)
    (made,) = [c for c in _state(emulator, "contact") if c.get("ln") == "Lovelace"]
    emulator.control.update("contact", made["id"], {"title": "Mathematician"})
    push(pulled_engine, api_client, _settings(), now=T0 + timedelta(hours=1))
    assert len([c for c in _state(emulator, "contact") if c.get("ln") == "Lovelace"]) == 1
    assert queue.get_item(pulled_engine, item.id).state == "done"
    assert queue.get_item(pulled_engine, item.id).remote_id == made["id"]

    # two candidates that match on the names only: cannot tell, quarantined, never resent
    second = queue.enqueue_create(pulled_engine, "contact", {"fn": "Grace", "ln": "Hopper", "title": "RADM"})
    emulator.control.add_fault(method="POST", path="^/contact$", kind="lost_response", times=1)
    push(pulled_engine, api_client, _settings(), now=T0 + timedelta(hours=2))
    for c in [c for c in _state(emulator, "contact") if c.get("ln") == "Hopper"]:
        emulator.control.update("contact", c["id"], {"title": "Admiral"})
    emulator.control.create("contact", {"fn": "Grace", "ln": "Hopper", "title": "Other"})
    push(pulled_engine, api_client, _settings(), now=T0 + timedelta(hours=3))
    assert queue.get_item(pulled_engine, second.id).state == "quarantined"
    assert len([c for c in _state(emulator, "contact") if c.get("ln") == "Hopper"]) == 2


# --- the emulator's quirk switches ---------------------------------------------------------------


def test_quirks_are_toggled_one_by_one_and_unknown_names_are_refused(
    emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    control = emulator.control
    task = _state(emulator, "task")[0]["id"]
    assert control.quirks() == []
    assert isinstance(api_client.get("task", task)["is_completed"], bool)
    assert control.set_quirk("bool01", True) == ["bool01"]
    assert api_client.get("task", task)["is_completed"] in (0, 1)
    assert control.set_quirk("string_ids", True) == ["bool01", "string_ids"]
    assert api_client.get("task", task)["id"] == str(task)
    assert control.set_quirk("bool01", False) == ["string_ids"]
    assert control.set_quirks(["all"]) == list(DATA_QUIRKS)
    assert control.set_quirks([]) == []
    with pytest.raises(EmulatorControlError, match="unknown quirk 'nope'"):
        control.set_quirk("nope", True)
    assert parse_quirks("bool01, multi_refs") == ["multi_refs", "bool01"]
    with pytest.raises(QuirkSpecError, match="known quirks"):
        parse_quirks("bool01,nope")


def test_emulator_command_refuses_an_unknown_quirk(cli_runner: Callable[..., Any], database_url: str) -> None:
    result = cli_runner(database_url)("emulator", "--token", "t", "--quirks", "bool01,nope", code=2)
    assert "unknown quirk 'nope'" in result.output


def test_the_migration_fills_the_new_child_tables_and_types_booleans_from_what_is_mirrored(
    database_url: str,
) -> None:
    eng = db.make_engine(database_url)
    db.upgrade(eng, "0005_pipeline_total")
    notes = schema.CURRENT["note"]
    with eng.begin() as conn:
        for rid, cust, scalar in ((1, [33, "43", True], None), (2, 44, 44), (3, None, None), (4, [45], 45)):
            raw = orjson.dumps({"id": rid, "desc": "x", "cust": cust}).decode()
            conn.execute(
                sa.text("INSERT INTO notes (id, customer_id, raw, content_hash) VALUES (:i, :c, :r, 'h')"),
                {"i": rid, "c": scalar, "r": raw},
            )
        # tasks stored by a version that read 0/1 as NULL
        for rid, done in ((1, 1), (2, "0"), (3, "true"), (4, None), (5, "maybe")):
            raw = orjson.dumps({"id": rid, "name": "t", "is_completed": done}).decode()
            conn.execute(
                sa.text("INSERT INTO tasks (id, raw, content_hash) VALUES (:i, :r, 'h')"),
                {"i": rid, "r": raw},
            )
    db.upgrade(eng)
    got = _rows(eng, "SELECT owner_id, position, customer_id FROM note_customers ORDER BY 1, 2")
    assert [tuple(r) for r in got] == [(1, 0, 33), (1, 1, 43), (2, 0, 44), (4, 0, 45)]
    done = [_truth(r[0]) for r in _rows(eng, "SELECT is_completed FROM tasks ORDER BY id")]
    assert done == [True, False, True, None, None]
    assert notes.name == "notes"
    eng.dispose()


@pytest.mark.parametrize("emulator_quirks", [(), DATA_QUIRKS], indirect=True)
def test_an_edit_files_a_note_under_several_customers(
    pulled_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    a, b = (c["id"] for c in _state(emulator, "contact")[:2])
    note = _state(emulator, "note")[0]["id"]
    item = queue.enqueue_update(pulled_engine, "note", note, {"cust": [a, b]})
    push(pulled_engine, api_client, _settings(), now=T0)
    assert queue.get_item(pulled_engine, item.id).state == "done"
    assert emulator.control.record("note", note)["cust"] == [a, b]
    assert [
        r[0]
        for r in _rows(pulled_engine, "SELECT customer_id FROM note_customers WHERE owner_id = :i", i=note)
    ] == [
        a,
        b,
    ]
    # the same edit again is already applied, spelled as the server spells it: nothing is sent
    emulator.control.clear_requests()
    again = queue.enqueue_update(pulled_engine, "note", note, {"cust": [b, a]})
    push(pulled_engine, api_client, _settings(), now=T0 + timedelta(hours=1))
    assert queue.get_item(pulled_engine, again.id).state == "done"
    assert [r for r in emulator.control.requests() if r["method"] == "PUT"] == []
