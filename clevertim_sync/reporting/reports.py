"""Reports over the mirror: the reporting views (migrations 0003, 0006, 0009, 0010), and full-text search.

Owns: the list of reports (name -> view, columns' types, order, the column `--since` filters),
running one into (columns, rows), rendering rows as a table, CSV or JSON, and `search()` over
notes, contacts and companies (SQLite FTS5 tables; PostgreSQL GIN-indexed tsvector expressions).

The views themselves live in migrations/versions/0003_reports.py: one SELECT away for anyone
with a SQL client. This module adds only what a view cannot: a parameter, a stable order, and
types that make both databases print the same thing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clevertim_sync.errors import ReportError
from clevertim_sync.mirror.types import ExactDecimal, UtcDateTime


@dataclass(frozen=True)
class Report:
    name: str
    view: str
    description: str
    order_by: str
    since_column: str | None = None  # what --since filters on (None: the report takes no --since)
    types: Mapping[str, Any] = field(default_factory=dict)  # result types, so SQLite reads like PostgreSQL


_TS = UtcDateTime()
REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report(
            "contacts",
            "report_contacts",
            "contacts with their company, primary email and phone",
            "name, contact_id",
            since_column="modified_at",
            types={"modified_at": _TS},
        ),
        Report(
            "pipeline",
            "report_pipeline",
            "opportunities by status and currency: count and total value",
            "status, currency",
            types={"total_value": ExactDecimal()},
        ),
        Report(
            "open-tasks",
            "report_open_tasks",
            "open tasks by assigned user with due date, overdue first",
            "assigned_user, overdue DESC, due_at, task_id",
            types={"due_at": _TS, "overdue": sa.Boolean()},
        ),
        Report(
            "customer-activity",
            "report_customer_activity",
            "per contact and company: notes, tasks, open tasks, last note, last contacted",
            "kind, name, customer_id",
            types={"last_note_at": _TS, "last_contacted_at": _TS},
        ),
        Report(
            "custom-values",
            "report_custom_values",
            "custom field values by field name, one row per record and field",
            "resource, record_id, field_name",
        ),
        Report(
            "documents",
            "report_documents",
            "per contact and company: its files and linked files, on it and on its notes, cases "
            "and opportunities, and those not mirrored",
            "documents DESC, kind, name, customer_id",
        ),
        Report(
            "changes",
            "report_changes",
            "what changed (from history), newest first; --since limits it",
            "at DESC, history_id DESC",
            since_column="at",
            types={"at": _TS},
        ),
    )
}


def get_report(name: str) -> Report:
    report = REPORTS.get(name.replace("_", "-"))
    if report is None:
        raise ReportError(
            f"no report named {name!r}; `clevertim-sync report --list` names them: {', '.join(REPORTS)}"
        )
    return report


def run_report(
    engine: Engine, name: str, *, since: datetime | None = None, limit: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of one report, in the report's order."""
    report = get_report(name)
    sql = f"SELECT * FROM {report.view}"  # noqa: S608 (a fixed view name from REPORTS)
    params: dict[str, Any] = {}
    if since is not None:
        if report.since_column is None:
            raise ReportError(f"report {report.name} takes no --since")
        sql += f" WHERE {report.since_column} >= :since"
        params["since"] = since
    sql += f" ORDER BY {report.order_by}"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    stmt = sa.text(sql).columns(**report.types) if report.types else sa.text(sql)
    if since is not None:
        stmt = stmt.bindparams(sa.bindparam("since", type_=_TS))
    with engine.connect() as conn:
        result = conn.execute(stmt, params)
        return list(result.keys()), [tuple(row) for row in result]


# --- output ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly value: timestamps as ISO-8601 UTC, decimals as exact strings."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    return value


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """Rows as `table` (aligned text), `csv` or `json` (a list of objects)."""
    plain = [[_plain(v) for v in row] for row in rows]
    if fmt == "json":
        return orjson.dumps(
            [dict(zip(columns, r, strict=True)) for r in plain], option=orjson.OPT_INDENT_2
        ).decode()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(plain)
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise ReportError(f"unknown format {fmt!r}: use table, csv or json")
    cells = [list(columns)] + [["" if v is None else _clip(str(v)) for v in r] for r in plain]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- full-text search -----------------------------------------------------------------------

# (kind, table, fts table, title expression, searchable columns) — the columns are the ones
# migration 0003 indexes, in the same order (PostgreSQL needs the identical expression).
SEARCH_DOCUMENTS = (
    ("note", "notes", "notes_fts", "COALESCE(t.headline, '')", ("headline", "body")),
    (
        "contact",
        "contacts",
        "contacts_fts",
        "TRIM(COALESCE(t.first_name, '') || ' ' || COALESCE(t.last_name, ''))",
        ("first_name", "last_name", "title", "description", "city"),
    ),
    ("company", "companies", "companies_fts", "COALESCE(t.name, '')", ("name", "description", "city")),
)


HEADLINE_OPTIONS = "StartSel=[, StopSel=], MaxWords=12, MinWords=4"


@dataclass(frozen=True)
class SearchHit:
    kind: str  # note, contact or company
    record_id: int
    title: str
    snippet: str
    score: float


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def sqlite_search_sql(match: str, limit: str) -> str:
    """SQLite's search over the FTS5 tables, best match first: `match` is the SQL of the FTS5 query
    (a parameter, or Datasette's `escape_fts(:q)` in its canned query), `limit` of the row limit."""
    parts = [
        f"SELECT '{kind}' AS kind, t.id AS record_id, {title} AS title, "  # noqa: S608 (fixed names)
        f"snippet({fts}, -1, '[', ']', '…', 12) AS snippet, -bm25({fts}) AS score "
        f"FROM {fts} JOIN {table} t ON t.id = {fts}.rowid WHERE {fts} MATCH {match}"
        for kind, table, fts, title, _cols in SEARCH_DOCUMENTS
    ]
    return " UNION ALL ".join(parts) + f" ORDER BY score DESC, kind, record_id LIMIT {limit}"


def search(engine: Engine, text: str, *, limit: int = 50) -> list[SearchHit]:
    """Notes, contacts and companies containing every word of `text`, best match first."""
    words = _words(text)
    if not words:
        return []
    if engine.dialect.name == "sqlite":
        # Each word quoted: FTS5 query syntax (AND, NEAR, *, ") in user text is taken literally.
        query = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        sql = sqlite_search_sql(":q", ":limit")
        params: dict[str, Any] = {"q": query, "limit": limit}
    else:
        parts = []
        for kind, table, _fts, title, cols in SEARCH_DOCUMENTS:
            doc = " || ' ' || ".join(f"COALESCE({c}, '')" for c in cols)
            vector = f"to_tsvector('simple', {doc})"
            parts.append(
                f"SELECT '{kind}' AS kind, t.id AS record_id, {title} AS title, "  # noqa: S608 (fixed names)
                f"ts_headline('simple', {doc}, q, '{HEADLINE_OPTIONS}') AS snippet, "
                f"ts_rank({vector}, q) AS score "
                f"FROM {table} t, plainto_tsquery('simple', :q) q WHERE {vector} @@ q"
            )
        params = {"q": " ".join(words), "limit": limit}
        sql = " UNION ALL ".join(parts) + " ORDER BY score DESC, kind, record_id LIMIT :limit"
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params)
        return [
            SearchHit(r.kind, int(r.record_id), r.title or "", r.snippet or "", float(r.score)) for r in rows
        ]
