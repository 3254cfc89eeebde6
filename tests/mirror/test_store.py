"""The mirror store on real SQLite files and a real PostgreSQL: typed columns, child rows,
history, local results, export."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clevertim_sync import jsontext, resources
from clevertim_sync.errors import MirrorError
from clevertim_sync.mirror import columns, schema, store, writes
from clevertim_sync.pull.diff import compute_changes, record_hash
from clevertim_sync.resources import Kind
from clevertim_sync.writeback.fold import Fold, fold_many

AT = datetime(2026, 1, 1, tzinfo=UTC)

CONTACT = {
    "id": 11,
    "fn": "Ada",
    "ln": "Lovelace",
    "companyId": 99999,  # a company this token cannot see: must be storable
    "email": ["ada@example.com", "a@example.org"],
    "phones": [{"type": "Work", "no": "+44 1"}, {"type": "Mobile", "no": "+44 2"}],
    "smids": [{"type": "GitHub", "smid": "ada"}],
    "cf": {"3": "gold", "4": ["a", "b"]},
    "tags": ["vip"],
    "notes": [1, 2],
    "is_company": False,
    "ao": "2017-01-02T05:22:12Z",
    "lm": "2018-01-02T05:22:12Z",
    "unknown_extra": {"kept": True},
}
TASK = {
    "id": 3,
    "name": "Call",
    "startDate": {"y": 2020, "mo": 2, "d": 29},
    "endDate": {"y": 2020, "mo": 3, "d": 1, "h": 9, "mi": 30},
    "cust": [11],
    "lm": "2018-01-02T05:22:12Z",
}
OPP = {"id": 4, "name": "Deal", "value": "4500.25", "cust": 11, "lm": "2018-01-02T05:22:12Z"}


def _sync(engine: sa.Engine, resource: str, listing: list[dict[str, Any]], run_id: int | None = None) -> None:
    with engine.begin() as conn:
        changes = compute_changes(
            resource, listing, store.load_index(conn, resource), lm_key=store.lm_key(conn, resource)
        )
        store.apply_changes(conn, resource, changes, run_id=run_id, at=AT)


def _history(engine: sa.Engine, resource: str) -> list[Any]:
    h = schema.history
    with engine.connect() as conn:
        return list(conn.execute(sa.select(h).where(h.c.resource == resource).order_by(h.c.id)))


# Any code point: NUL (PostgreSQL's text refuses it: U+FFFD in typed columns, raw exact) and
# lone surrogates (valid JSON escapes, which a Python server writes) included; integers past 64 bits.
texts = st.text(st.characters(exclude_categories=()), max_size=8) | st.sampled_from(["\x00", "\ud800"])
json_scalars = st.none() | st.booleans() | st.integers() | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def contacts(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(
        st.dictionaries(st.sampled_from(["fn", "ln", "tags", "cf", "x", "email"]), json_values, max_size=4)
    )
    lm = draw(st.sampled_from(["2017-01-02T05:22:12Z", "2018-03-04T00:00:00Z", "2020-12-31T23:59:59Z"]))
    return {"id": draw(st.integers(1, 30)), **body, "lm": lm}


def _unique(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({r["id"]: r for r in recs}.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.lists(contacts(), max_size=12), new=st.lists(contacts(), max_size=12))
def test_applying_the_diff_to_the_old_mirror_gives_the_new_listing(
    mirror_engine: sa.Engine, old: list[Any], new: list[Any]
) -> None:
    """The pure diff's buckets, written by the store (the pull's own write path, in batches of
    any size), turn a mirror of `old` into exactly `new`: raws, hashes, and a history whose last
    version of each record is the listed one (or a delete)."""
    with mirror_engine.begin() as conn:  # a fresh mirror for each example
        for table in (*schema.CHILDREN.values(), *schema.CURRENT.values(), schema.history):
            conn.execute(table.delete())
    _sync(mirror_engine, "contact", _unique(old))
    listing = _unique(new)
    _sync(mirror_engine, "contact", listing)
    table = schema.CURRENT["contact"]
    with mirror_engine.connect() as conn:
        stored = {r.id: (jsontext.loads(r.raw), r.content_hash) for r in conn.execute(sa.select(table))}
        last: dict[int, Any] = {}
        for row in conn.execute(sa.select(schema.history).order_by(schema.history.c.id)):
            last[row.record_id] = (row.op, jsontext.loads(row.raw))
    assert stored == {r["id"]: (r, record_hash(r)) for r in listing}
    for rid, (op, raw) in last.items():
        if rid in stored:
            assert op != "delete" and record_hash(raw) == record_hash(stored[rid][0])
        else:
            assert op == "delete"


def test_typed_columns_and_child_rows(mirror_engine: sa.Engine) -> None:
    _sync(mirror_engine, "contact", [CONTACT])
    _sync(mirror_engine, "task", [TASK])
    _sync(mirror_engine, "opportunity", [OPP])
    contacts, tasks, opps = schema.CURRENT["contact"], schema.CURRENT["task"], schema.CURRENT["opportunity"]
    with mirror_engine.connect() as conn:
        c = conn.execute(sa.select(contacts)).one()
        assert (c.first_name, c.last_name, c.company_id, c.is_company) == ("Ada", "Lovelace", 99999, False)
        assert c.added_at == datetime(2017, 1, 2, 5, 22, 12, tzinfo=UTC)
        assert orjson.loads(c.raw) == CONTACT and c.content_hash == record_hash(CONTACT)
        emails = conn.execute(
            sa.text("SELECT value FROM contact_emails WHERE owner_id = 11 ORDER BY position")
        )
        assert [r[0] for r in emails] == CONTACT["email"]
        phones = conn.execute(sa.text("SELECT type, number FROM contact_phones ORDER BY position")).all()
        assert [tuple(p) for p in phones] == [("Work", "+44 1"), ("Mobile", "+44 2")]
        social = conn.execute(sa.text("SELECT type, social_id FROM contact_social_ids")).all()
        assert [tuple(s) for s in social] == [("GitHub", "ada")]
        cf = conn.execute(
            sa.text("SELECT custom_field_id, position, value FROM contact_custom_values ORDER BY 1, 2")
        ).all()
        assert [tuple(r) for r in cf] == [(3, 0, "gold"), (4, 0, "a"), (4, 1, "b")]
        t = conn.execute(sa.select(tasks)).one()
        assert t.start_at == datetime(2020, 2, 29, tzinfo=UTC) and t.start_at_all_day is True
        assert t.end_at == datetime(2020, 3, 1, 9, 30, tzinfo=UTC) and t.end_at_all_day is False
        assert t.customer_id == 11  # the one-element-list spelling of cust
        o = conn.execute(sa.select(opps)).one()
        assert o.value == Decimal("4500.25") and o.customer_id == 11


def test_odd_values_become_null_and_stay_in_raw(mirror_engine: sa.Engine) -> None:
    odd = {"id": 5, "name": 7, "value": "12e99", "cust": "nope", "ao": "yesterday", "lm": None}
    _sync(mirror_engine, "opportunity", [odd])
    with mirror_engine.connect() as conn:
        o = conn.execute(sa.select(schema.CURRENT["opportunity"])).one()
    assert (o.name, o.value, o.customer_id, o.added_at, o.modified_at) == (None, None, None, None, None)
    assert orjson.loads(o.raw) == odd


def test_update_delete_and_return_keep_one_history_line(mirror_engine: sa.Engine) -> None:
    _sync(mirror_engine, "contact", [CONTACT])
    edited = {**CONTACT, "fn": "Augusta", "email": ["ada@example.com"], "lm": "2019-01-01T00:00:00Z"}
    _sync(mirror_engine, "contact", [edited])
    _sync(mirror_engine, "contact", [])
    _sync(mirror_engine, "contact", [edited])
    ops = [(r.op, r.record_id) for r in _history(mirror_engine, "contact")]
    assert ops == [("insert", 11), ("update", 11), ("delete", 11), ("insert", 11)]
    update = _history(mirror_engine, "contact")[1]
    assert orjson.loads(update.changed) == {
        "fn": ["Ada", "Augusta"],
        "email": [CONTACT["email"], ["ada@example.com"]],
    }
    delete = _history(mirror_engine, "contact")[2]
    assert orjson.loads(delete.raw) == edited  # the last version seen
    with mirror_engine.connect() as conn:
        emails = conn.execute(sa.text("SELECT value FROM contact_emails")).scalars().all()
        assert emails == ["ada@example.com"]


def test_a_first_load_copies_history_chunk_by_chunk_in_id_order(
    mirror_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing in id order has its history copied by id range, another by id list: either way
    the history rows come in listing order chunk by chunk, each chunk by id."""
    monkeypatch.setattr(writes, "ROWS", 3)
    monkeypatch.setattr(writes, "COPY_ROWS", 3)
    for resource, ids in (("note", [1, 2, 3, 5, 8, 9, 12]), ("task", [5, 3, 9, 1, 2, 8, 7])):
        _sync(mirror_engine, resource, [{"id": i, "desc": f"#{i}"} for i in ids])
        chunks = [sorted(ids[i : i + 3]) for i in range(0, len(ids), 3)]
        assert [r.record_id for r in _history(mirror_engine, resource)] == [i for c in chunks for i in c]
        assert {r.raw for r in _history(mirror_engine, resource)} == {
            f'{{"id":{i},"desc":"#{i}"}}' for i in ids
        }


def test_touch_refreshes_raw_and_modified_at_without_history(mirror_engine: sa.Engine) -> None:
    _sync(mirror_engine, "contact", [CONTACT])
    bumped = {**CONTACT, "lm": "2024-05-06T07:08:09Z"}
    _sync(mirror_engine, "contact", [bumped])
    assert len(_history(mirror_engine, "contact")) == 1
    with mirror_engine.connect() as conn:
        assert store.load_record(conn, "contact", 11) == bumped
        lm = conn.execute(sa.select(schema.CURRENT["contact"].c.modified_at)).scalar_one()
        assert lm == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        assert compute_changes(
            "contact", [bumped], store.load_index(conn, "contact"), lm_key=store.lm_key(conn, "contact")
        ).empty


def test_a_pushed_answer_folded_in_is_history_with_origin_local_and_its_queue_item(
    mirror_engine: sa.Engine,
) -> None:
    with mirror_engine.begin() as conn:
        fold_many(conn, [Fold("company", {"id": 7, "cn": "Acme", "lm": "x"}, "create", 1)])
        fold_many(conn, [Fold("company", {"id": 7, "cn": "Acme Ltd"}, "update", 2)])
        fold_many(conn, [Fold("company", {"id": 7, "cn": "Acme Ltd", "lm": "y"}, "update", 3)])
        assert store.load_record(conn, "company", 7) == {"id": 7, "cn": "Acme Ltd", "lm": "y"}
        # the next pull of the same server version is no news
        idx = store.load_index(conn, "company")
        assert compute_changes("company", [{"id": 7, "cn": "Acme Ltd", "lm": "y"}], idx).updates == []
        fold_many(conn, [Fold("company", {"id": 7}, "delete", 4)])
        assert store.load_record(conn, "company", 7) is None
        with pytest.raises(MirrorError, match="unknown op"):
            fold_many(conn, [Fold("company", {"id": 7}, "merge", 5)])
    rows = _history(mirror_engine, "company")
    assert [(r.op, r.origin, r.queue_item_id, r.run_id) for r in rows] == [
        ("insert", "local", 1, None),
        ("update", "local", 2, None),
        ("delete", "local", 4, None),
    ]
    assert orjson.loads(rows[1].changed) == {"cn": ["Acme", "Acme Ltd"]}


def test_export_jsonl_is_sorted_exact_and_complete(mirror_engine: sa.Engine, tmp_path: Path) -> None:
    recs = [{**CONTACT, "id": i, "fn": f"n{i}"} for i in (30, 2, 17)]
    _sync(mirror_engine, "contact", recs)
    with mirror_engine.connect() as conn:
        written = store.export_jsonl(conn, tmp_path / "out")
    assert written["contact"] == 3 and written["note"] == 0
    lines = (tmp_path / "out" / "contact.jsonl").read_text().splitlines()
    assert [orjson.loads(line) for line in lines] == sorted(recs, key=lambda r: r["id"])
    assert (tmp_path / "out" / "note.jsonl").read_text() == ""
    assert not list((tmp_path / "out").glob(".*.tmp"))


def _every_table(engine: sa.Engine) -> dict[str, list[Any]]:
    tables = [*schema.CURRENT.values(), *schema.CHILDREN.values()]
    with engine.connect() as conn:
        out = {
            t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in tables
        }
        h = schema.history
        cols = [c for c in h.columns if c.name not in ("id", "at")]
        out["history"] = [tuple(r) for r in conn.execute(sa.select(*cols).order_by(h.c.id))]
    return out


def test_bulk_copy_and_row_by_row_store_the_same_rows(
    mirror_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL writes big batches by binary COPY, small ones by executemany (SQLite always by
    executemany): the same records give the same rows either way, odd values included, for a
    first load, updates and deletes, integer and text ids."""
    rng = random.Random(11)
    odd = [None, 1, -5, 2**62, True, False, "x", "12", "", "2017-01-02T05:22:12Z", "2017-02-30T00:00:00Z",
           "2017-01-02T05:22:12.5+02:00", [3], [3, "4"], {"y": 2020, "mo": 2, "d": 29, "h": 1},
           1.5, "4500.25", "0.00001", {"3": "gold", "4": ["a", 5, {"b": None}]}, ["ünï", "😀"],
           [{"type": "Work", "no": "1"}, {"type": 5}], "Søren 会議 \\ \t tab"]  # fmt: skip

    def listing(resource: str, ids: list[Any]) -> list[dict[str, Any]]:
        props = resources.get(resource).props
        return [{"id": i, **{p.api: rng.choice(odd) for p in props}, "lm": rng.choice(odd)} for i in ids]

    plans = {
        "contact": (listing("contact", list(range(1, 121))), listing("contact", list(range(60, 181)))),
        "task": (listing("task", list(range(1, 81))), listing("task", list(range(1, 61)))),
        "folder": (listing("folder", [f"f{i}" for i in range(100)]),
                   listing("folder", [f"f{i}" for i in range(50, 150)])),
    }  # fmt: skip
    seen = []
    for copy_from in (1, 10**9):  # every batch by COPY on PostgreSQL, then none
        monkeypatch.setattr(writes, "COPY_FROM", copy_from)
        with mirror_engine.begin() as conn:
            for table in (*schema.CHILDREN.values(), *schema.CURRENT.values(), schema.history):
                conn.execute(table.delete())
        for resource, (first, second) in plans.items():
            _sync(mirror_engine, resource, first)
            _sync(mirror_engine, resource, second)
        seen.append(_every_table(mirror_engine))
    assert seen[0] == seen[1]
    assert len(seen[0]["contacts"]) == 121 and len(seen[0]["folders"]) == 100


def test_compiled_row_builder_equals_the_converters() -> None:
    """RowBuilder.current is generated code: it must give exactly what the plain converters give."""
    rng = random.Random(3)
    odd = [None, 1, -5, 2**70, True, False, "x", "12", "2017-01-02T05:22:12Z", "2017-02-30T00:00:00Z",
           "2017-01-02T05:22:12.5+02:00", [3], [3, 4], {"y": 2020, "mo": 2, "d": 29},
           {"y": 2020, "mo": 2, "d": 30, "h": 1}, 1.5, "4500.25", "1e99", "0.00001", {}, [],
           # the real server's other spellings (issue 11): 0/1 and string booleans, numeric
           # strings, "" for null, lists of ids in strings, string date parts
           0, "0", "1", "true", "false", "TRUE", "", " 12", "-3", "²", ["12", 4], ["x"],
           {"y": "2020", "mo": "2", "d": "29", "h": "", "mi": None},
           {"y": "2020", "mo": "x", "d": 1}]  # fmt: skip
    for res in resources.RESOURCES:
        for sqlite in (True, False):
            builder = columns.RowBuilder(res, sqlite=sqlite)
            convert = columns._SQLITE_SCALAR if sqlite else columns._SCALAR
            for _ in range(100):
                # "1": a numeric-string id (the diff lets it through; the row holds 1). A text-id
                # resource's id reaches the builder as the diff spelled it: the str "1".
                rid: Any = "1" if res.text_ids else rng.choice([1, "1"])
                rec = {"id": rid, **{p.api: rng.choice(odd) for p in res.props}}
                expected: list[Any] = ["1" if res.text_ids else 1]
                expected += [convert[p.kind](rec.get(p.api)) for p in res.props if p.kind in convert]
                for p in res.props:
                    if p.kind is Kind.DATE_PARTS:
                        at, all_day = columns.date_parts(rec.get(p.api))
                        expected += [columns.sqlite_datetime(at) if sqlite else at, all_day]
                expected += ["raw", "h"]
                got = builder.current(rec, "raw", "h")
                # compare types too: True == 1 in Python, but not in a BIGINT column
                assert [(type(v), v) for v in got] == [(type(v), v) for v in expected], (res.name, rec)


def test_compiled_child_rows_equal_child_rows() -> None:
    rng = random.Random(5)
    entries = ["a", 3, None, {"type": "Work", "no": "1", "smid": "@x"}, {"type": 5}, ["nested"]]
    shapes = [None, "str", 7, [], {}, {"3": "x", "4": ["a", "b"], "x": "bad", "5": 6},
              {"07": [1.5, None, True], "7": "dup", "²": "x", "99999999999999999999": "big",
               "9223372036854775807": ["max"], " 8": {"a": 1}, "9": [], "10": None},
              "445", [33, "43", True, 5.5, 53], ["7"], ""]  # fmt: skip
    for res in resources.RESOURCES:
        builder = columns.RowBuilder(res, sqlite=True)
        items = []
        for rid in range(1, 60):
            rec: dict[str, Any] = {"id": rid}
            for prop in builder.children:
                rec[prop.api] = rng.choice([rng.choices(entries, k=rng.randint(0, 4)), rng.choice(shapes)])
            items.append((rec, "raw", "h"))
        current, children = builder.rows(items)
        assert current == [builder.current(rec, raw, h) for rec, raw, h in items]
        for prop, got in zip(builder.children, children, strict=True):
            expected = [
                row for rec, _, _ in items for row in columns.child_rows(prop, rec["id"], rec[prop.api])
            ]
            assert got == expected, (res.name, prop.api)
