"""A pull against the real emulator over loopback, on SQLite and PostgreSQL: the mirror must equal
what the token sees, record for record, after every change and once every fault has cleared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from conftest import Sleeps, as_served, sorted_lists, with_quirks

from clevertim_sync import resources
from clevertim_sync.api import listing as listing_module
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.listing import Listing
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import db, schema, store, writes
from clevertim_sync.pull import pipeline as pull_module
from clevertim_sync.pull.pipeline import PullReport, pull

# the client's own retries are part of a pull
pytestmark = pytest.mark.api_client(read_retries=2)

EMULATOR_TOKEN = "test-token"  # the `emulator` fixture's owner token (tests/conftest.py)


def mirror_state(engine: sa.Engine, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """What `export` writes, read back: {resource: [record, ...]} sorted by id."""
    out = tmp_path / "export"
    with engine.connect() as conn:
        store.export_jsonl(conn, out)
    return {
        r.name: [orjson.loads(line) for line in (out / f"{r.name}.jsonl").read_text().splitlines()]
        for r in resources.RESOURCES
    }


def visible(emulator: EmulatorServer) -> dict[str, list[dict[str, Any]]]:
    state = emulator.control.state(as_token=EMULATOR_TOKEN)
    return {name: sorted(state.get(name, []), key=lambda r: r["id"]) for name in resources.PULL_ORDER}


def history(engine: sa.Engine, **where: Any) -> list[Any]:
    h = schema.history
    query = sa.select(h).order_by(h.c.id)
    for key, value in where.items():
        query = query.where(h.c[key] == value)
    with engine.connect() as conn:
        return list(conn.execute(query))


def assert_exact(engine: sa.Engine, emulator: EmulatorServer, tmp_path: Path) -> None:
    assert sorted_lists(mirror_state(engine, tmp_path)) == as_served(emulator, visible(emulator))


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_first_sync_mirrors_exactly_and_a_quiet_second_sync_changes_nothing(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, tmp_path: Path
) -> None:
    first = pull(mirror_engine, api_client)
    assert first.ok and first.status == "ok"
    assert_exact(mirror_engine, emulator, tmp_path)
    total = sum(len(v) for v in visible(emulator).values())
    assert first.totals()["inserted"] == total > 50
    assert len(history(mirror_engine, op="insert", origin="pull")) == total

    second = pull(mirror_engine, api_client)
    assert second.ok
    assert second.totals() == {"inserted": 0, "updated": 0, "deleted": 0, "touched": 0, "unchanged": total}
    assert len(history(mirror_engine)) == total  # no history written by a quiet pull
    with mirror_engine.connect() as conn:
        run = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == second.run_id)).one()
        assert run.status == "ok" and run.finished_at is not None
        assert orjson.loads(run.counts)["contact"]["unchanged"] == len(visible(emulator)["contact"])
        status = store.resource_statuses(conn)
        assert status["contact"]["held"] is False and status["contact"]["last_run_id"] == second.run_id


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_creates_updates_and_deletes_on_every_resource(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, tmp_path: Path
) -> None:
    control = emulator.control
    for res in resources.RESOURCES:  # at least two of each, so one can be edited and one deleted
        control.create(res.name, _new_record(res.name, visible(emulator)))
    pull(mirror_engine, api_client)
    before = visible(emulator)
    touched: dict[str, tuple[int, int, int]] = {}
    for res in resources.RESOURCES:
        existing = before[res.name]
        assert len(existing) >= 2, res.name
        victim, edited = existing[0]["id"], existing[-1]["id"]
        new = control.create(res.name, _new_record(res.name, before))
        field = _text_field(res)
        control.update(res.name, edited, {field: f"edited {res.name}"})
        control.delete(res.name, victim)
        touched[res.name] = (new["id"], edited, victim)

    report = pull(mirror_engine, api_client)
    assert report.ok, report.failed
    assert_exact(mirror_engine, emulator, tmp_path)
    for name, ids in touched.items():
        # A text-id resource's history names the record in record_key, as text ("f1001", "7").
        text = name in resources.TEXT_ID_RESOURCES
        column = "record_key" if text else "record_id"
        new_id, edited, victim = (str(i) for i in ids) if text else ids
        ops = {
            (r._mapping[column], r.op) for r in history(mirror_engine, resource=name, run_id=report.run_id)
        }
        assert {(new_id, "insert"), (edited, "update"), (victim, "delete")} <= ops, name
        c = report.resources[name]
        assert c.inserted >= 1 and c.updated >= 1 and c.deleted >= 1
        update = next(
            r for r in history(mirror_engine, resource=name, **{column: edited}) if r.run_id == report.run_id
        )
        assert orjson.loads(update.changed)[_text_field(resources.get(name))][1] == f"edited {name}"
        gone = history(mirror_engine, resource=name, **{column: victim})[-1]
        # raw holds the id as served (a quirky server: "445"); it means the victim
        assert gone.op == "delete" and str(orjson.loads(gone.raw)["id"]).strip() == str(victim)


def _text_field(res: resources.Resource) -> str:
    for api in ("name", "cn", "fn", "desc", "comment", "user"):
        if api in res.by_api:
            return api
    raise AssertionError(res.name)


def _new_record(name: str, state: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    res = resources.get(name)
    record: dict[str, Any] = {_text_field(res): f"new {name}"}
    if name == "customfield":
        record["elemType"] = "input"
    if name == "comment":
        record["nid"] = state["note"][0]["id"]
    if name == "group":
        record["gid"] = 64
    return record


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_an_lm_bump_alone_is_a_touch_and_an_edit_without_bump_is_an_update(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, tmp_path: Path
) -> None:
    pull(mirror_engine, api_client)
    contacts = visible(emulator)["contact"]
    bumped, silent = contacts[0]["id"], contacts[1]["id"]
    emulator.control.update("contact", bumped, {"lm": "2031-01-01T00:00:00Z"})
    emulator.control.update("contact", silent, {"title": "Chief"}, bump_lm=False)
    n_history = len(history(mirror_engine))

    report = pull(mirror_engine, api_client)
    c = report.resources["contact"]
    assert (c.touched, c.updated, c.inserted, c.deleted) == (1, 1, 0, 0)
    new_rows = history(mirror_engine)[n_history:]
    assert [(r.record_id, r.op) for r in new_rows] == [(silent, "update")]
    assert_exact(mirror_engine, emulator, tmp_path)  # the touched raw carries the new lm


# Each fault persists until cleared, so the client's own retries cannot hide it.
LISTING_FAULTS = [
    pytest.param({"kind": "status", "status": 503}, "error", id="503"),
    pytest.param({"kind": "status", "status": 500}, "error", id="500"),
    pytest.param({"kind": "status", "status": 429, "retry_after": 1}, "error", id="429-retry-after"),
    pytest.param({"kind": "reset"}, "error", id="reset"),
    pytest.param({"kind": "truncate"}, "error", id="truncated-body"),
    pytest.param({"kind": "html"}, "error", id="html-page"),
    pytest.param({"kind": "empty_listing"}, "held", id="empty-listing"),
    pytest.param({"kind": "hide", "hide_fraction": 0.5}, "held", id="half-hidden"),
]


@with_quirks  # every data quirk on too (emulator/quirks.py)
@pytest.mark.parametrize("batch", [pull_module.BATCH, 4], ids=["one-batch", "batches-of-4"])
@pytest.mark.parametrize(("fault", "outcome"), LISTING_FAULTS)
def test_a_failing_listing_leaves_the_mirror_consistent_and_recovers_exactly(
    mirror_engine: sa.Engine,
    emulator: EmulatorServer,
    api_client: ClevertimClient,
    sleeps: Sleeps,
    tmp_path: Path,
    fault: dict[str, Any],
    outcome: str,
    batch: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With batches of 4, a held listing (half hidden) is refused after its first batches were
    applied in the open transaction: the refusal rolls them back too."""
    monkeypatch.setattr(pull_module, "BATCH", batch)
    pull(mirror_engine, api_client)
    before = mirror_state(mirror_engine, tmp_path)
    tables = _mirror_tables(mirror_engine)
    control = emulator.control
    first = visible(emulator)["contact"][0]["id"]
    control.update("contact", first, {"title": "changed while the listing fails"})
    control.add_fault(method="GET", path="^/contact$", **fault)

    report = pull(mirror_engine, api_client)
    assert not report.ok and report.failed == ["contact"]
    counts = report.resources["contact"]
    assert counts.held is (outcome == "held") and counts.error
    assert all(c.error is None for n, c in report.resources.items() if n != "contact")
    # left exactly as it was: current, child and history rows
    assert sorted_lists(mirror_state(mirror_engine, tmp_path))["contact"] == sorted_lists(before)["contact"]
    assert _mirror_tables(mirror_engine) == tables
    with mirror_engine.connect() as conn:
        run = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == report.run_id)).one()
        status = store.resource_statuses(conn)["contact"]
    assert run.status == "partial" and "contact" in run.error
    assert status["held"] is (outcome == "held") and status["consecutive_failures"] == 1
    if fault.get("retry_after"):
        assert 1 in sleeps  # the client waited as told before giving up

    control.clear_faults()
    recovered = pull(mirror_engine, api_client)
    assert recovered.ok
    assert_exact(mirror_engine, emulator, tmp_path)
    assert recovered.resources["contact"].updated >= 1 and recovered.resources["contact"].deleted == 0
    with mirror_engine.connect() as conn:
        status = store.resource_statuses(conn)["contact"]
    assert status["held"] is False and status["consecutive_failures"] == 0 and status["last_error"] is None


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_a_transient_fault_is_retried_within_the_pull(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, tmp_path: Path
) -> None:
    emulator.control.add_fault(method="GET", path="^/contact$", kind="status", status=503, times=1)
    emulator.control.add_fault(method="GET", path="^/note$", kind="truncate", times=1)
    assert pull(mirror_engine, api_client).ok
    assert_exact(mirror_engine, emulator, tmp_path)


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_a_listing_broken_half_way_through_a_streamed_batch_leaves_the_resource_untouched(
    mirror_engine: sa.Engine,
    emulator: EmulatorServer,
    api_client: ClevertimClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server sends the whole body, its envelope intact, but the contact half-way through is
    broken JSON. The listing is parsed in small windows and written in batches of 4: the batches
    before the break are written inside the resource's transaction, then the break rolls them all
    back: current, child and history rows as before, the failure recorded, the other resources
    pulled. A clean listing afterwards applies exactly."""
    pull(mirror_engine, api_client)
    control = emulator.control
    contacts = visible(emulator)["contact"]
    for rec in contacts[:4]:  # changes in the first batches, which get written then rolled back
        control.update("contact", rec["id"], {"title": "changed before the break"})
    control.delete("contact", contacts[-1]["id"])
    tables = _mirror_tables(mirror_engine)
    monkeypatch.setattr(pull_module, "BATCH", 4)
    monkeypatch.setattr(listing_module, "WHOLE", 0)  # parsed in windows, as a big body is
    monkeypatch.setattr(listing_module, "WINDOW", 1024)
    written: list[int] = []
    apply = store.ResourceWrites.apply

    def counting(mirror: store.ResourceWrites, changes: Any) -> None:
        if mirror.resource == "contact":
            written.append(len(changes.updates))
        apply(mirror, changes)

    monkeypatch.setattr(store.ResourceWrites, "apply", counting)
    control.add_fault(method="GET", path="^/contact$", kind="broken_listing")
    report = pull(mirror_engine, api_client)
    assert report.failed == ["contact"]
    assert "not valid JSON past the envelope" in (report.resources["contact"].error or "")
    assert len(written) >= 2 and sum(written) >= 1  # batches with updates were written before the break
    assert _mirror_tables(mirror_engine) == tables
    assert all(c.error is None for n, c in report.resources.items() if n != "contact")
    with mirror_engine.connect() as conn:
        status = store.resource_statuses(conn)["contact"]
    assert status["consecutive_failures"] == 1 and "not valid JSON" in status["last_error"]

    monkeypatch.undo()
    control.clear_faults()
    assert pull(mirror_engine, api_client).ok
    assert_exact(mirror_engine, emulator, tmp_path)


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_a_hidden_record_is_deleted_then_comes_back_with_one_history(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, tmp_path: Path
) -> None:
    pull(mirror_engine, api_client)
    rid = visible(emulator)["contact"][3]["id"]
    emulator.control.add_fault(method="GET", path="^/contact$", kind="hide", hide_ids=[rid])
    assert pull(mirror_engine, api_client).resources["contact"].deleted == 1  # one of ~30: not a mass delete
    emulator.control.clear_faults()
    assert pull(mirror_engine, api_client).resources["contact"].inserted == 1
    assert_exact(mirror_engine, emulator, tmp_path)
    assert [r.op for r in history(mirror_engine, resource="contact", record_id=rid)] == [
        "insert",
        "delete",
        "insert",
    ]


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_allow_mass_delete_applies_an_empty_listing(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, tmp_path: Path
) -> None:
    pull(mirror_engine, api_client)
    n = len(visible(emulator)["contact"])
    emulator.control.add_fault(method="GET", path="^/contact$", kind="empty_listing")
    held = pull(mirror_engine, api_client, resources=["contact"])
    assert held.resources["contact"].held and not held.ok
    assert len(mirror_state(mirror_engine, tmp_path)["contact"]) == n

    allowed: PullReport = pull(mirror_engine, api_client, resources=["contact"], allow_mass_delete=True)
    assert allowed.ok and allowed.resources["contact"].deleted == n
    assert mirror_state(mirror_engine, tmp_path)["contact"] == []
    emulator.control.clear_faults()
    assert pull(mirror_engine, api_client).ok
    assert_exact(mirror_engine, emulator, tmp_path)


@with_quirks  # every data quirk on too (emulator/quirks.py)
def test_resources_are_pulled_parents_first_and_only_those_asked(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    emulator.control.clear_requests()
    report = pull(mirror_engine, api_client, resources=["note", "company", "contact"])
    assert list(report.resources) == ["company", "contact", "note"]
    paths = [r["path"] for r in emulator.control.requests() if r["method"] == "GET"]
    assert paths == ["/api/company", "/api/contact", "/api/note"]


def _mirror_tables(engine: sa.Engine) -> dict[str, list[Any]]:
    """Every row of the current, child and history tables (history without its `at`); a raw
    with its server-computed lists sorted (a quirky server reshuffles them on each read)."""
    tables = [*schema.CURRENT.values(), *schema.CHILDREN.values()]
    out: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for table in tables:
            rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).mappings()
            out[table.name] = [_sorted_raw(dict(r)) for r in rows]
        h = schema.history
        cols = [c for c in h.columns if c.name != "at"]
        out["history"] = [
            _sorted_raw(dict(r)) for r in conn.execute(sa.select(*cols).order_by(h.c.id)).mappings()
        ]
    return out


def _sorted_raw(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("raw") is not None:
        row["raw"] = sorted_lists({"r": [orjson.loads(row["raw"])]})["r"][0]
    return row


INDEXES = "SELECT name FROM sqlite_master WHERE type = 'index'"


class Reversed:
    """The real client, but `resource`'s listing is served in descending id order."""

    def __init__(self, client: ClevertimClient, resource: str) -> None:
        self.client, self.resource = client, resource

    def listing(self, name: str) -> Listing:
        if name != self.resource:
            return self.client.listing(name)
        return Listing.of(name, self.client.list(name)[::-1])


@with_quirks  # every data quirk on too (emulator/quirks.py)
@pytest.mark.parametrize("order", ["in id order", "contacts reversed"])
def test_a_first_sync_in_small_batches_stores_what_one_batch_stores(
    order: str,
    mirror_engine: sa.Engine,
    empty_database: Any,
    api_client: ClevertimClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first load written in many small batches (indexes dropped at the first, history copied
    by id range while the ids come in order, by id list once they do not) gives the same current,
    child and history rows, and on SQLite an FTS index that passes its integrity check, as one
    written in a single batch."""
    assert pull(mirror_engine, api_client).ok  # ~100 records a resource: one batch each
    other = db.make_engine(empty_database())
    db.upgrade(other)
    monkeypatch.setattr(pull_module, "BATCH", 9)
    monkeypatch.setattr(writes, "ROWS", 4)
    monkeypatch.setattr(writes, "COPY_ROWS", 4)
    monkeypatch.setattr(writes, "BIG_LOAD", 3)  # a first batch of 3 or more: the indexes go
    dropped: list[str] = []
    drop = writes._drop_secondary_indexes

    def spy(conn: sa.Connection, resource: str) -> list[str]:
        dropped.append(resource)
        return drop(conn, resource)

    monkeypatch.setattr(writes, "_drop_secondary_indexes", spy)
    puller = api_client if order == "in id order" else Reversed(api_client, "contact")
    assert pull(other, puller).ok
    assert "contact" in dropped and "customfield" in dropped
    mine, theirs = _mirror_tables(other), _mirror_tables(mirror_engine)
    if order != "in id order":  # the same history rows, in another order

        def unordered(tables: dict[str, list[Any]]) -> list[Any]:
            return sorted(({**r, "id": None} for r in tables.pop("history")), key=repr)

        assert unordered(mine) == unordered(theirs)
    assert mine == theirs
    if other.dialect.name == "sqlite":
        with other.connect() as conn:
            for fts in ("notes_fts", "contacts_fts", "companies_fts"):
                conn.exec_driver_sql(f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)")
            names = {
                r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        with mirror_engine.connect() as conn:
            assert names == {
                r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
    other.dispose()
