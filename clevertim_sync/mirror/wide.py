"""Wide views: one row per contact, company, case or opportunity, one column per custom field.

Owns: the views `contacts_wide`, `companies_wide`, `cases_wide` and `opportunities_wide`, their
column names and SQL on SQLite and PostgreSQL, and rebuilding them (`refresh`) when the custom
fields changed: at the end of a pull (pull/pipeline.py) and after a migration (db.upgrade).

A view holds the record's own columns (not `raw` and `content_hash`), the customer type's word
beside its letter (contacts, companies), a contact's full `name`, then one column per custom
field that applies to the resource (its `modelType`; a field listing none applies everywhere), in
field id order, named after the field's current name: lower case, every run of characters other
than letters and digits one `_` ("Account no." -> account_no). A name that is one of the record's
own columns gets `cf_` in front (a field "City" -> cf_city); the second field of one name gets its
id behind (segment_12). A multi-value field is one JSON list (["CRM","API"]; PostgreSQL: jsonb),
a single value its text; no value is NULL.

Why views rebuilt by the application, not a migration: their columns are the account's data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
import structlog

from clevertim_sync.mirror import schema

log = structlog.get_logger(__name__)

# resource -> (view, the customfield modelType that applies to it)
WIDE: dict[str, tuple[str, str]] = {
    "contact": ("contacts_wide", "customers"),
    "company": ("companies_wide", "companies"),
    "case": ("cases_wide", "cases"),
    "opportunity": ("opportunities_wide", "opportunities"),
}
VIEWS = tuple(view for view, _ in WIDE.values())
LEFT_OUT = frozenset({"raw", "content_hash"})  # a view for reading: the JSON stays in the table
MAX_NAME_BYTES = 63  # PostgreSQL cuts identifiers longer than this
FULL_NAME = "TRIM(COALESCE(r.first_name, '') || ' ' || COALESCE(r.last_name, ''))"


@dataclass(frozen=True)
class Field:
    id: int
    name: str
    multiple: bool
    model_types: tuple[str, ...] | None  # None: not given, so it applies everywhere


@dataclass(frozen=True)
class Column:
    name: str
    sql: str  # the expression over `r` (the record) and `ct` (its customer type)


def sanitise(name: str) -> str:
    """A field's name as a column: `Account no.` -> `account_no`, `Größe` -> `größe`."""
    text = re.sub(r"\W+", "_", name.strip().lower()).strip("_")
    while len(text.encode()) > MAX_NAME_BYTES:
        text = text[:-1]
    return text


def field_columns(fields: Iterable[Field], taken: Iterable[str]) -> dict[int, str]:
    """Field id -> its column: sanitised, not one of `taken` (the record's own), unique."""
    own = set(taken)
    used = set(own)
    out: dict[int, str] = {}
    for f in sorted(fields, key=lambda f: f.id):
        name = sanitise(f.name) or f"field_{f.id}"
        if name[0].isdigit() or name in own:
            name = sanitise(f"cf_{name}")
        if name in used:
            name = sanitise(f"{name}_{f.id}")
        if name in used:  # "segment_12" was a field's own name: the id alone stays unique
            name = f"field_{f.id}"
        used.add(name)
        out[f.id] = name
    return out


def read_fields(conn: sa.Connection) -> list[Field]:
    cf = schema.CURRENT["customfield"]
    out = []
    for row in conn.execute(sa.select(cf.c.id, cf.c.name, cf.c.multiple, cf.c.raw)):
        # modelType is a list: kept only in raw (the mirror has no column for free JSON).
        models = orjson.loads(row.raw).get("modelType") if row.raw else None
        types = tuple(str(m) for m in models) if isinstance(models, list) else None
        out.append(Field(int(row.id), row.name or "", bool(row.multiple), types))
    return out


def _own_columns(resource: str) -> list[Column]:
    table = schema.CURRENT[resource]
    out = [Column("id", "r.id")]
    if resource == "contact":
        out.append(Column("name", FULL_NAME))
    for c in table.columns:
        if c.name in LEFT_OUT or c.name == "id":
            continue
        out.append(Column(str(c.name), f'r."{c.name}"'))
        if c.name == "customer_type":
            out.append(Column("customer_type_name", "ct.name"))
    return out


def _value_sql(values: str, field: Field, sqlite: bool) -> str:
    # Only the schema's names and integer ids go into this SQL (a field's name only as its sanitised
    # column name, word characters alone, quoted): never a value.
    rows = f"FROM {values} v WHERE v.owner_id = r.id AND v.custom_field_id = {int(field.id)}"
    if not field.multiple:
        return f"(SELECT v.value {rows} ORDER BY v.position LIMIT 1)"
    if sqlite:  # json_group_array follows the order of its (ordered) input
        ordered = f"(SELECT v.value {rows} ORDER BY v.position) x"
        return f"(SELECT CASE WHEN COUNT(*) > 0 THEN json_group_array(x.value) END FROM {ordered})"  # noqa: S608
    return f"(SELECT jsonb_agg(v.value ORDER BY v.position) {rows})"


def columns_of(resource: str, fields: Iterable[Field], sqlite: bool) -> list[Column]:
    """Every column of a resource's wide view, in order."""
    _view, model = WIDE[resource]
    own = _own_columns(resource)
    applies = [f for f in fields if f.model_types is None or model in f.model_types]
    names = field_columns(applies, (c.name for c in own))
    values = schema.CHILDREN[(resource, "cf")].name
    by_id = {f.id: f for f in applies}
    return own + [Column(name, _value_sql(values, by_id[fid], sqlite)) for fid, name in names.items()]


def view_sql(resource: str, fields: Iterable[Field], sqlite: bool) -> str:
    view, _model = WIDE[resource]
    table = schema.CURRENT[resource].name
    select = ",\n       ".join(f'{c.sql} AS "{c.name}"' for c in columns_of(resource, fields, sqlite))
    typed = "customer_type" in schema.CURRENT[resource].c
    join = "\nLEFT JOIN customer_types ct ON ct.code = r.customer_type" if typed else ""
    return f"CREATE VIEW {view} AS\nSELECT {select}\nFROM {table} r{join}"


def drop(conn: sa.Connection) -> None:
    """Drop every wide view (a migration may change the tables under them)."""
    for view in VIEWS:
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {view}"))


def after_pull(engine: sa.Engine) -> None:
    """The pull's hook: the views follow the fields. Never fails the pull: a view that could not
    be rebuilt (a database hiccup) is logged and rebuilt by the next pull."""
    try:
        with engine.begin() as conn:
            refresh(conn)
    except sa.exc.DBAPIError as exc:
        log.warning("wide.rebuild_failed", error=str(exc.orig), hint="the next pull tries again")


def _signature(sql: str) -> str:
    return "clevertim-sync wide view " + hashlib.sha256(sql.encode()).hexdigest()[:16]


def _built_from(conn: sa.Connection, view: str) -> str | None:
    """What the view was built from: its SQL on SQLite, its comment (the SQL's signature) on
    PostgreSQL, which keeps a view's text only as it rewrote it; None when there is no view."""
    if conn.dialect.name == "sqlite":
        found = conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = :v"), {"v": view}
        ).scalar()
    else:
        found = conn.execute(
            sa.text(
                "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
                "WHERE c.relname = :v AND c.relkind = 'v' AND pg_table_is_visible(c.oid)"
            ),
            {"v": view},
        ).scalar()
    return None if found is None else str(found)


def _replaced(conn: sa.Connection, sql: str) -> bool:
    """PostgreSQL: the view replaced in place, keeping its OID, when its columns only grew (a field
    added). A pg_dump running beside the pull reads views by OID: a view dropped and created under
    it fails the dump ("could not open relation with OID"). A field renamed or removed changes the
    columns, which only a drop allows: False then, and nothing done."""
    try:
        with conn.begin_nested():
            conn.execute(sa.text(sql.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)))
    except sa.exc.DBAPIError:
        return False
    return True


def refresh(conn: sa.Connection) -> list[str]:
    """Rebuild the wide views not built from the custom fields as they are now; returns those.

    Cheap when nothing changed (the fields and four catalogue rows are read), and no DDL then: a
    backup (pg_dump) running beside a pull is not disturbed by views dropped under it."""
    sqlite = conn.dialect.name == "sqlite"
    fields = read_fields(conn)
    rebuilt = []
    for resource, (view, _model) in WIDE.items():
        sql = view_sql(resource, fields, sqlite)
        if _built_from(conn, view) == (sql if sqlite else _signature(sql)):
            continue
        if sqlite or not _replaced(conn, sql):
            conn.execute(sa.text(f"DROP VIEW IF EXISTS {view}"))
            conn.execute(sa.text(sql))
        if not sqlite:
            conn.execute(sa.text(f"COMMENT ON VIEW {view} IS '{_signature(sql)}'"))
        rebuilt.append(view)
    if rebuilt:
        log.info("wide.rebuilt", views=rebuilt, fields=len(fields))
    return rebuilt
