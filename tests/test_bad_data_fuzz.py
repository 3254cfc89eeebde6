"""Differential fuzz test: arbitrary listings served byte for byte, pulled into SQLite and PostgreSQL.

Listings of arbitrary JSON records (any code point, NUL, lone surrogates, huge and tiny numbers,
deep nesting, ids served twice, bytes that are not UTF-8, garbage entries) go through the emulator
(`verbatim_listing`) into both databases. Then: every record that can be kept is, with `raw` equal
to what was served (the copy of an id served twice that the content rule picks), nothing else is
mirrored, and the two databases hold the same typed rows and child rows.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clevertim_sync import jsontext, resources, shapes
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.diff import preferred, raw_lm, record_hash
from clevertim_sync.pull.pipeline import pull

pytestmark = pytest.mark.postgres

TOKEN = "test-token"
ODD = ["\x00", "\ud800", "a\udfffb", "\udc80\x00", "\ufffd", "\U0001f600"]
texts = st.text(st.characters(exclude_categories=()), max_size=6) | st.sampled_from(ODD)
numbers = (
    st.integers()
    | st.integers(min_value=2**63, max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
)
scalars = st.none() | st.booleans() | numbers | texts
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
LMS = [None, "2017-01-02T05:22:12Z", "2018-03-04T00:00:00Z"]


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    rid: Any = draw(st.integers(1, 8))
    if draw(st.booleans()) and rid % 2:
        rid = str(rid)  # a numeric-string id: the same record as the integer
    rec: dict[str, Any] = {"id": rid}
    for key in draw(
        st.lists(st.sampled_from(["fn", "ln", "email", "tags", "cf", "phones", "x"]), unique=True)
    ):
        if key in ("fn", "ln"):
            rec[key] = draw(texts)
        elif key in ("email", "tags"):
            rec[key] = draw(st.lists(texts, max_size=3))
        elif key == "cf":
            rec[key] = draw(st.dictionaries(st.sampled_from(["3", "4", "x"]), values, max_size=2))
        elif key == "phones":
            rec[key] = [{"type": draw(texts), "no": draw(texts)}]
        else:
            rec[key] = draw(values)
    if (lm := draw(st.sampled_from(LMS))) is not None:
        rec["lm"] = lm
    return rec


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def listings(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]], set[int]]:
    """(the body served, the records that can be kept as their values, ids left out)."""
    parts: list[bytes] = []
    kept: list[dict[str, Any]] = []
    left_out: set[int] = set()
    for kind in draw(
        st.lists(st.sampled_from(["record"] * 6 + ["garbage", "deep", "too_deep", "latin1"]), max_size=8)
    ):
        if kind == "garbage":
            parts.append(json.dumps(draw(scalars | st.lists(scalars, max_size=2))).encode())
            continue
        rec = draw(records())
        if kind == "deep":
            rec["x"] = _nested(300)  # past orjson's writing limit, within the mirror's
        if kind == "too_deep":
            left_out.add(int(rec["id"]))
            parts.append(
                b'{"id": ' + json.dumps(rec["id"]).encode() + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"
            )
            continue
        text = json.dumps(rec).encode()  # as a Python server writes it: escapes for NUL, surrogates
        if kind == "latin1":  # one byte that is not UTF-8: U+FFFD, in raw too
            text = text[:-1] + b', "bin": "caf\xe9"}'
            rec = {**rec, "bin": "caf\ufffd"}
        parts.append(text)
        kept.append(rec)
    return b'{"status": "OK", "content": [' + b", ".join(parts) + b"]}", kept, left_out


def expected(kept: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per id, the copy the content rule keeps (newest lm, then the greater content hash)."""
    out: dict[int, dict[str, Any]] = {}
    for rec in kept:
        rid = shapes.record_id(rec)[0]
        assert rid is not None
        held = out.get(rid)
        digest = record_hash(shapes.with_int_id(rec))
        if held is None or preferred(held, record_hash(shapes.with_int_id(held)), rec, digest, raw_lm):
            out[rid] = rec
    return out


def _plain(value: Any) -> Any:
    """A column value as both databases can be compared: naive datetimes, Decimal, bool."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, Decimal):
        return str(value.normalize())
    return value


def typed_rows(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    res = resources.get("contact")
    tables = [schema.CURRENT["contact"], *(schema.CHILDREN[("contact", p.api)] for p in res.child_props)]
    with engine.connect() as conn:
        return {
            t.name: sorted((tuple(_plain(v) for v in row) for row in conn.execute(sa.select(t))), key=repr)
            for t in tables
        }


@pytest.fixture
def engines(sqlite_url: str, postgres_url: str) -> Iterator[list[sa.Engine]]:
    made = [make_engine(sqlite_url), make_engine(postgres_url)]
    for engine in made:
        upgrade(engine)
    yield made
    for engine in made:
        engine.dispose()


def _empty(engine: sa.Engine) -> None:
    res = resources.get("contact")
    with engine.begin() as conn:
        for table in (
            *(schema.CHILDREN[("contact", p.api)] for p in res.child_props),
            schema.CURRENT["contact"],
        ):
            conn.execute(table.delete())
        conn.execute(schema.history.delete())


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(listing=listings())
def test_any_listing_is_mirrored_exactly_and_alike_on_both_databases(
    engines: list[sa.Engine], emulator: EmulatorServer, listing: tuple[bytes, list[dict[str, Any]], set[int]]
) -> None:
    body, kept, left_out = listing
    emulator.control.clear_faults()
    emulator.control.add_fault(
        kind="verbatim_listing", method="GET", path="^/contact$", body_base64=base64.b64encode(body).decode()
    )
    want = expected(kept)
    rows = []
    for engine in engines:
        _empty(engine)
        with ClevertimClient(emulator.base_url, TOKEN) as client:
            report = pull(engine, client, resources=["contact"])
        assert report.ok, report.resources["contact"].error
        table = schema.CURRENT["contact"]
        with engine.connect() as conn:
            stored = {r.id: jsontext.loads(r.raw) for r in conn.execute(sa.select(table.c.id, table.c.raw))}
        assert stored == want  # export is raw, line by line
        assert not (left_out - set(want)) & set(stored)
        rows.append(typed_rows(engine))
    assert rows[0] == rows[1]
