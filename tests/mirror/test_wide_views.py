"""Reports without a code book (migration 0011, mirror/wide.py): the customer types' words in
report_contacts and in Datasette's facets, and the wide views with one column per custom field,
which follow a field added, renamed or removed in Clevertim at the next pull, on SQLite and
PostgreSQL; the migration upgraded, downgraded and upgraded again on both."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import wide
from clevertim_sync.mirror.db import alembic_config, make_engine, upgrade
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.reporting import datasette_meta

TOKEN = "test-token"


def _pull(engine: sa.Engine, emulator: EmulatorServer) -> None:
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        assert pull(engine, client).ok


def _rows(engine: sa.Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql))]


def _columns(engine: sa.Engine, view: str) -> list[str]:
    return [c["name"] for c in sa.inspect(engine).get_columns(view)]


def _as_list(value: Any) -> Any:
    """A multi-value column: a JSON list (text on SQLite, jsonb -> list on PostgreSQL)."""
    return json.loads(value) if isinstance(value, str) else value


def test_a_custom_field_is_a_column_that_follows_its_field(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    _pull(mirror_engine, emulator)
    contact = emulator.control.record("contact", 1)
    segment_id = next(f["id"] for f in emulator.control.state()["customfield"] if f["name"] == "Segment")
    # Added in Clevertim: a field, and a value of it on contact 1.
    field = emulator.control.create(
        "customfield",
        {"name": "Account no.", "elemType": "input", "modelType": ["customers"], "multiple": False},
    )
    emulator.control.update("contact", 1, {"cf": {**contact["cf"], str(field["id"]): "A-17"}})
    assert "account_no" not in _columns(mirror_engine, "contacts_wide")
    _pull(mirror_engine, emulator)
    (row,) = _rows(mirror_engine, "SELECT name, segment, account_no FROM contacts_wide WHERE id = 1")
    full_name = f"{contact.get('fn') or ''} {contact.get('ln') or ''}".strip()
    assert row == {"name": full_name, "segment": contact["cf"].get(str(segment_id)), "account_no": "A-17"}
    assert "account_no" not in _columns(mirror_engine, "cases_wide")  # it applies to customers only
    with mirror_engine.begin() as conn:  # the fields as they were: no view is dropped and made again
        assert wide.refresh(conn) == []

    # Renamed: the column follows (the old name is gone, the values stay).
    emulator.control.update("customfield", field["id"], {"name": "Customer number"})
    _pull(mirror_engine, emulator)
    columns = _columns(mirror_engine, "contacts_wide")
    assert "customer_number" in columns and "account_no" not in columns
    assert _rows(mirror_engine, "SELECT customer_number FROM contacts_wide WHERE id = 1") == [
        {"customer_number": "A-17"}
    ]

    # Removed: its column goes at the next pull.
    emulator.control.delete("customfield", field["id"])
    _pull(mirror_engine, emulator)
    assert "customer_number" not in _columns(mirror_engine, "contacts_wide")
    assert "segment" in _columns(mirror_engine, "contacts_wide")


def test_a_field_added_replaces_the_view_in_place_on_postgresql(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    """A pg_dump beside the pull reads views by OID: a field added must not drop the view under it."""
    if mirror_engine.dialect.name != "postgresql":
        pytest.skip("SQLite keeps no view OIDs; a backup there is a snapshot of the file")

    def oid() -> int:
        with mirror_engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT 'contacts_wide'::regclass::oid")).scalar_one())

    _pull(mirror_engine, emulator)
    before = oid()
    emulator.control.create(
        "customfield",
        {"name": "Account no.", "elemType": "input", "modelType": ["customers"], "multiple": False},
    )
    _pull(mirror_engine, emulator)
    assert "account_no" in _columns(mirror_engine, "contacts_wide")
    assert oid() == before


def test_names_are_sanitised_unique_and_never_a_record_column(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    for name in ("City", "Segment", "Größe / Maß", "2nd phone"):
        emulator.control.create(
            "customfield", {"name": name, "elemType": "input", "modelType": ["customers"], "multiple": False}
        )
    _pull(mirror_engine, emulator)
    by_id = {f["id"]: f["name"] for f in emulator.control.state()["customfield"]}
    second_segment = max(i for i, n in by_id.items() if n == "Segment")
    columns = _columns(mirror_engine, "contacts_wide")
    assert columns.count("city") == 1  # the contact's own city; the field is cf_city
    assert {"cf_city", "segment", f"segment_{second_segment}", "größe_maß", "cf_2nd_phone"} <= set(columns)
    assert len(columns) == len(set(columns))


def test_a_multi_value_field_is_one_list_in_its_order(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    _pull(mirror_engine, emulator)
    interests = next(f["id"] for f in emulator.control.state()["customfield"] if f["name"] == "Interests")
    contact = emulator.control.record("contact", 1)
    emulator.control.update(
        "contact", 1, {"cf": {**contact["cf"], str(interests): ["Support", "API", "CRM"]}}
    )
    _pull(mirror_engine, emulator)
    (row,) = _rows(mirror_engine, "SELECT interests FROM contacts_wide WHERE id = 1")
    assert _as_list(row["interests"]) == ["Support", "API", "CRM"]
    emulator.control.update(
        "contact", 1, {"cf": {k: v for k, v in contact["cf"].items() if k != str(interests)}}
    )
    _pull(mirror_engine, emulator)
    assert _rows(mirror_engine, "SELECT interests FROM contacts_wide WHERE id = 1") == [{"interests": None}]


def test_every_wide_view_has_the_records_and_the_customer_type_word(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    _pull(mirror_engine, emulator)
    state = emulator.control.state(as_token=TOKEN)  # what this token sees
    for resource, (view, _model) in wide.WIDE.items():
        ids = [r["id"] for r in _rows(mirror_engine, f"SELECT id FROM {view} ORDER BY id")]
        assert ids == sorted(r["id"] for r in state[resource]), view
    words = dict(_rows_pairs(mirror_engine, "SELECT code, name FROM customer_types"))
    assert (
        len(words) == 18
        and words["N"] == "Consultant"
        and words["F"] == "Friend"
        and words["P"] == "Prospect"
    )
    for view in ("report_contacts", "contacts_wide"):
        for row in _rows(mirror_engine, f"SELECT customer_type, customer_type_name FROM {view}"):
            assert row["customer_type_name"] == words.get(row["customer_type"]), (view, row)
    assert any(
        r["customer_type_name"] for r in _rows(mirror_engine, "SELECT customer_type_name FROM companies_wide")
    )


def _rows_pairs(engine: sa.Engine, sql: str) -> list[tuple[Any, Any]]:
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(sa.text(sql))]


def test_the_migration_goes_down_and_up_again(mirror_engine: sa.Engine, emulator: EmulatorServer) -> None:
    _pull(mirror_engine, emulator)  # wide views and data: the downgrade must get past them
    with mirror_engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010_open_task_customers")
    inspector = sa.inspect(mirror_engine)
    assert "customer_types" not in inspector.get_table_names()
    assert not set(wide.VIEWS) & set(inspector.get_view_names())
    assert "customer_type_name" not in _columns(mirror_engine, "report_contacts")
    upgrade(mirror_engine)
    assert set(wide.VIEWS) <= set(sa.inspect(mirror_engine).get_view_names())
    assert "segment" in _columns(mirror_engine, "contacts_wide")  # built from the fields already pulled
    assert _rows(mirror_engine, "SELECT COUNT(*) AS n FROM customer_types") == [{"n": 18}]


def test_a_datasette_facet_on_customer_type_shows_words(tmp_path: Path, emulator: EmulatorServer) -> None:
    datasette = pytest.importorskip("datasette.app")
    path = tmp_path / "mirror.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    _pull(engine, emulator)
    engine.dispose()
    meta = datasette_meta.build_metadata("mirror")
    ds = datasette.Datasette([str(path)], metadata=meta)

    async def facets(table: str) -> dict[str, Any]:
        response = await ds.client.get(f"/mirror/{table}.json?_extra=facet_results")
        assert response.status_code == 200, response.text
        results: dict[str, Any] = response.json()["facet_results"]
        return results.get("results", results)  # 0.65 keys the facets directly

    for table in ("report_contacts", "contacts_wide", "companies_wide"):
        values = {r["value"] for r in asyncio.run(facets(table))["customer_type_name"]["results"]}
        assert values and values <= {"Customer", "Prospect", "Supplier", "Reseller", "Employee", "Competitor",
                                     "Consultant", "Contractor", "Distributor", "Influencer", "Investor",
                                     "Manufacturer", "Retailer", "Vendor", "Wholesaler", "Lead", "Friend",
                                     "Other"}, (table, values)  # fmt: skip
