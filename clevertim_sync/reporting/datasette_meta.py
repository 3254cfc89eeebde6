"""Datasette metadata for a SQLite mirror: what `clevertim-sync datasette` writes.

Owns: turning the resource registry, the schema's comments, the full-text tables and the reports
into the metadata file Datasette 0.65 reads (`datasette serve FILE --metadata FILE.json`): a
description of every table and column, label columns, facets, sort orders, the FTS5 tables behind
the search box and `?_search=`, and every report as a canned query (`report-<name>`, with a
`since` parameter where the report takes `--since`), plus a `search` query over all three.

Datasette 0.65 (the stable line; 1.0 splits this file into metadata and configuration) keys a
database by its file's stem, so the metadata is written for one file: `db_name` below.

Pure apart from reading these tables of facts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa

from clevertim_sync import resources
from clevertim_sync.mirror import schema, search, versions, wide
from clevertim_sync.mirror.columns import all_day_column, has_typed_column
from clevertim_sync.reporting import reports
from clevertim_sync.resources import Kind, Prop, Resource
from clevertim_sync.writeback import tables as _queue_tables  # noqa: F401 (its tables join schema.metadata)

# Install hint, one place: the CLI prints it when Datasette is missing.
INSTALL_HINT = "pip install 'clevertim-sync[datasette]'"

# What a record is called in a list of them (Datasette's label_column); a table not named here
# uses its `name` column when it has one. Contacts have no single name column: the last name.
LABELS: Mapping[str, str] = {
    "contacts": "last_name",
    "notes": "headline",
    "comments": "body",
    "users": "name",
}

# Facets shown above a table: the small closed sets (status, currency, customer type, activity)
# and who owns or leads a record. Ids, not names: the mirror has no foreign keys to label them
# with (a record may point at one this token cannot see), the report_* views carry the names.
FACETS: Mapping[str, tuple[str, ...]] = {
    "contacts": ("customer_type", "country", "company_id"),
    "companies": ("customer_type", "country"),
    "opportunities": ("status", "currency", "lead_user_id"),
    "cases": ("lead_user_id",),
    "tasks": ("activity_type", "assigned_user_id", "is_completed"),
    "notes": ("note_type", "created_by_user_id"),
    "comments": ("created_by_user_id",),
    "custom_fields": ("element_type",),
    "history": ("resource", "op", "origin"),
    "runs": ("kind", "status"),
    "resource_status": ("held",),
    "writeback_queue": ("state", "resource", "op"),
    # The word (customer_types.name) where a view has it: a facet a person reads without a code book.
    "report_contacts": ("company", "customer_type_name", "country"),
    "contacts_wide": ("customer_type_name", "country", "company_id"),
    "companies_wide": ("customer_type_name", "country"),
    "opportunities_wide": ("status", "currency", "lead_user_id"),
    "cases_wide": ("lead_user_id",),
    "report_pipeline": ("status", "currency"),
    "report_open_tasks": ("assigned_user", "activity_type", "overdue"),
    "report_customer_activity": ("kind",),
    "report_custom_values": ("resource", "field_name"),
    "report_changes": ("resource", "op", "origin"),
    "report_documents": ("kind",),
    "folders": ("parent_id",),
    "files": ("parent_id",),
    "linked_files": ("system",),
    "contact_photos": ("content_type",),
}

FACET_SIZE = 10  # values listed per facet: Datasette's 30 pushes the rows off the first screen

# Newest first where a table has a time or a growing id to sort by.
SORT_DESC: Mapping[str, str] = {
    "history": "id",
    "runs": "id",
    "writeback_queue": "id",
}

# The tables of the mirror that are not a resource's, in words (their columns carry comments).
TABLE_TEXT: Mapping[str, str] = {
    "history": "Every version of every record: one row per insert, update or delete seen by a pull "
    "(origin pull) or made by a push (origin local). `clevertim-sync revert` starts from here.",
    "runs": "One row per pull, push or backup: when, how it ended, and its counts per resource.",
    "resource_status": "Per resource: its last pull, last success, error, and whether the "
    "mass-delete guard holds it.",
    "writeback_queue": "Local edits on their way to Clevertim, their whole life. INSERT a row here "
    "to queue an edit from SQL; `clevertim-sync queue list` shows the same.",
    "writeback_pause": "A server-wide 'do not send before' set by 429/503 answers and outages.",
    "alembic_version": "The schema's migration revision.",
    "customer_types": "The customer types' words: customer_type (contacts, companies) is the letter "
    "in `code`, `name` its word (C Customer, P Prospect, ...), as the API reference lists them.",
}

# Columns of those tables that carry no schema comment (a comment added to schema.py would be a
# schema change needing a migration on PostgreSQL): their meaning, for Datasette and the reference.
COLUMN_TEXT: Mapping[str, Mapping[str, str]] = {
    "runs": {
        "id": "the run's number; history.run_id and resource_status.last_run_id point here",
        "started_at": "when it started (UTC)",
        "finished_at": "when it ended (UTC); NULL while running or if it was killed",
        "error": "why the run as a whole failed or stopped, if it did",
    },
    "history": {
        "id": "the version's number, growing with time: newest last",
        "resource": "API resource name: contact, note, folder, ...",
        "at": "when this version was recorded (UTC): the pull that saw it, or the push's answer",
        "content_hash": "hash of raw without lm: equal hashes, same content",
    },
    "resource_status": {
        "resource": "API resource name: contact, note, folder, ...",
        "last_run_id": "runs.id of its last pull",
        "last_success_at": "when a pull of it last succeeded (UTC); /healthz compares it with stale_after",
        "last_error": "why its last pull failed; NULL after a success",
        "consecutive_failures": "its pulls that failed in a row (0 after a success); alerts.failures alerts",
        "held_reason": "why the mass-delete guard holds it",
        "record_count": "records of it in the mirror after its last pull",
    },
    "alert_state": {"updated_at": "when the condition was last evaluated"},
    "contact_photos": {
        "contact_id": "contacts.id of the contact",
        "content_type": "the image's media type as served (image/png, ...)",
        "size": "the image's size in bytes",
        "sha256": "hex sha256 of content",
    },
    "writeback_queue": {
        "id": "the item's number: `clevertim-sync queue show ID`",
        "state": "pending, waiting, in_flight, reconcile, done, failed, conflict, quarantined or cancelled",
        "attempts": "transient failures so far (push.max_attempts of them: failed)",
        "claimed_by": "the push that holds it (worker id), while in flight",
        "lease_until": "when that claim runs out and another push may take the item over",
        "created_at": "when it was queued (UTC)",
        "updated_at": "when its state last changed (UTC)",
    },
    "writeback_pause": {
        "not_before": "no request to Clevertim before this time (UTC)",
        "reason": "what set the pause (a 429, an outage, a refused token)",
        "updated_at": "when it was last set",
    },
    "alembic_version": {"version_num": "the migration the schema is at: `clevertim-sync check` compares it"},
}

# The columns of every <table>_versions view (migration 0007).
VERSIONS_COLUMNS: Mapping[str, str] = {
    "record_id": "the record's id (text for folders, files and linked files)",
    "version": "1, 2, 3, ... per record, oldest first (as `clevertim-sync history` counts them)",
    "valid_from": "when this version was recorded (UTC)",
    "valid_to": "when the next version was recorded; NULL for the latest",
    "op": "insert, update or delete (a deletion is a version, valid until the record comes back)",
    "origin": "pull, or local for a pushed edit folded back",
    "run_id": "runs.id of the pull that saw it (NULL for local)",
    "queue_item_id": "writeback_queue.id of the pushed edit, for origin local",
    "raw": "the record as it was in this version (JSON; the last one seen, for a delete)",
    "changed": "JSON {api_field: [old, new]} for an update",
    "history_id": "history.id of this version",
}

# The columns of the report views (migrations 0003, 0005, 0006, 0009, 0010), by view.
REPORT_COLUMNS: Mapping[str, Mapping[str, str]] = {
    "report_contacts": {
        "contact_id": "contacts.id",
        "name": "first and last name",
        "title": "job title",
        "company_id": "companies.id of the contact's company",
        "company": "the company's name (NULL if it is not mirrored)",
        "email": "the first email (contact_emails position 0)",
        "phone": "the first phone number",
        "city": "city",
        "country": "country",
        "customer_type": "the contact's customer type letter (API ctype)",
        "customer_type_name": "the customer type's word (customer_types.name: Prospect, Friend, ...)",
        "modified_at": "when Clevertim last changed it (UTC); --since filters on it",
    },
    "report_pipeline": {
        "status": "the opportunities' status",
        "currency": "their currency",
        "opportunities": "how many",
        "total_value": "the sum of their values (exact)",
    },
    "report_open_tasks": {
        "assigned_user_id": "users.id of the assignee",
        "assigned_user": "the assignee's name",
        "task_id": "tasks.id",
        "task": "the task's name",
        "activity_type": "the task's activity type (API atype)",
        "due_at": "its end, else its start (UTC)",
        "overdue": "1 when due_at is in the past",
        "customer_id": "the task's customer when it has exactly one, else NULL",
        "customer_ids": "every customer's id, comma-separated (33,43), in its list's order",
        "customers": "their names (Ann Lee; Acme Ltd)",
    },
    "report_customer_activity": {
        "customer_id": "contacts.id or companies.id",
        "kind": "contact or company",
        "name": "the contact's full name or the company's name",
        "notes": "notes filed under it",
        "last_note_at": "when the newest of them was added (UTC)",
        "tasks": "tasks filed under it, not deleted",
        "open_tasks": "of which neither completed nor deleted",
        "last_contacted_at": "the customer's last-contacted time (UTC)",
    },
    "report_custom_values": {
        "resource": "contact, company, opportunity or case",
        "record_id": "the record's id",
        "record_name": "the record's name",
        "custom_field_id": "custom_fields.id",
        "field_name": "the custom field's name",
        "value": "its value; a multi-value field's values joined with ', '",
    },
    "report_documents": {
        "customer_id": "contacts.id or companies.id",
        "kind": "contact or company",
        "name": "its name",
        "files": "files attached to it",
        "linked_files": "linked files attached to it",
        "on_records": "files and linked files on its notes, cases and opportunities",
        "documents": "all of them, each counted once",
        "not_mirrored": "how many of those the mirror holds no record of (hidden, or no endpoint)",
    },
    "report_changes": {
        "at": "when the change was recorded (UTC); --since filters on it",
        "resource": "API resource name",
        "record_id": "the record's id (NULL for a document: record_key)",
        "op": "insert, update or delete",
        "origin": "pull or local",
        "changed": "JSON {api_field: [old, new]} for an update",
        "run_id": "runs.id of the pull (NULL for local)",
        "history_id": "history.id",
        "record_key": "a document's text id",
    },
}

_KIND_TEXT: Mapping[Kind, str] = {
    Kind.STR: "text",
    Kind.INT: "integer",
    Kind.BOOL: "true (1) or false (0)",
    Kind.DECIMAL: "exact decimal number, kept as text (CAST(... AS REAL) to sort by it)",
    Kind.TIMESTAMP: "UTC time, ISO text (2017-01-02 05:22:12.000000)",
    Kind.DATE_PARTS: "UTC time, ISO text, from the API's {y, mo, d, h, mi}",
    Kind.TEXT_REF: "text id",
}

_COMMON_COLUMNS: Mapping[str, str] = {
    "id": "the record's id in Clevertim",
    "raw": "the record exactly as the API sent it (JSON): every property, including the lists",
    "content_hash": "hash of raw: a pull rewrites the row only when it changes",
}


def _ref_text(prop: Prop) -> str:
    if prop.target == "customer":
        where = "contacts.id or companies.id (they share one id space)"
    elif prop.target is not None:
        where = f"{resources.get(prop.target).table}.id"
    else:
        where = "another record's id"
    return f"{where}; no foreign key: it may point at a record this token cannot see"


def _prop_text(prop: Prop) -> str:
    if prop.kind in (Kind.REF, Kind.TEXT_REF):
        text = _ref_text(prop)
    else:
        text = _KIND_TEXT.get(prop.kind, prop.kind.value)
    if prop.kind is Kind.REF and prop.child_table is not None:
        text += f"; the id when the reference holds exactly one, else NULL (every id: {prop.child_table})"
    if prop.choices is not None:
        text += "; one of " + ", ".join(sorted(prop.choices))
    if prop.read_only:
        text += "; set by Clevertim (read-only)"
    return f"API `{prop.api}`: {text}"


def _resource_table(res: Resource) -> dict[str, Any]:
    columns = dict(_COMMON_COLUMNS)
    for prop in res.props:
        if prop.kind in schema.RAW_ONLY_KINDS or not has_typed_column(prop):
            continue  # free JSON and lists stay in raw or in a child table of their own
        columns[prop.column] = _prop_text(prop)
        if prop.kind is Kind.DATE_PARTS:
            columns[all_day_column(prop)] = f"API `{prop.api}` without h and mi: an all-day time"
    lists = [f"{p.child_table} ({p.api})" for p in res.child_props]
    description = f"Current state of every {res.name} this token can see (/{res.name} in the API)."
    if lists:
        description += " Its lists are child tables keyed by owner_id: " + ", ".join(lists) + "."
    if not res.writable:
        description += " Read-only in the API."
    if res.text_ids:
        description += " Its ids are text (a folder's f1001; an integer id 7 is '7')."
    if res.optional:
        description += (
            " An account or token may lack this endpoint (404, 400, 501): resource_status.unavailable"
            " says so, and the table keeps what it held."
        )
    table: dict[str, Any] = {"description": description, "columns": columns}
    label = LABELS.get(res.table) or ("name" if "name" in columns else None)
    if label is not None:
        table["label_column"] = label
    if "modified_at" in columns:
        table["sort_desc"] = "modified_at"
    return table


def _child_table(res: Resource, prop: Prop) -> dict[str, Any]:
    columns = {
        "owner_id": f"{res.table}.id of the record this belongs to",
        "position": f"place in the API's `{prop.api}` list, from 0",
    }
    if prop.kind is Kind.STR_LIST:
        columns["value"] = "the value"
    elif prop.kind is Kind.PHONES:
        columns |= {"type": "phone type as the API names it", "number": "the number as written"}
    elif prop.kind is Kind.SMIDS:
        columns |= {"type": "social network", "social_id": "the id or handle on it"}
    elif prop.kind is Kind.REF:  # a reference that may hold several ids: every one, in order
        columns[prop.column] = f"one id the API's `{prop.api}` holds (a {prop.target}; may dangle)"
    elif prop.kind is Kind.INT_LIST:  # a record's files or linked files: ids of documents
        target = resources.get(prop.target or "")
        columns[prop.column] = (
            f"{target.table}.id (text) of one entry of the API's `{prop.api}`; no foreign key: the "
            "document may be hidden from this token, or its endpoint missing (report_documents counts them)"
        )
    else:
        columns |= {
            "custom_field_id": "custom_fields.id of the field",
            "value": "one value (a multi-value field has one row per value)",
        }
    order = "in the API's order"
    if prop.kind is Kind.INT_LIST:
        order = "in id order (the server's order of such a list means nothing)"
    return {
        "description": f"{res.table}.{prop.column} (API `{prop.api}`): one row per value, {order}.",
        "columns": columns,
    }


def _other_table(table: sa.Table) -> dict[str, Any]:
    out: dict[str, Any] = {}
    text = TABLE_TEXT.get(table.name) or table.comment
    if text:
        out["description"] = text
    texts = COLUMN_TEXT.get(str(table.name), {})
    columns = {  # plain str for JSON
        str(c.name): str(c.comment or texts.get(str(c.name), ""))
        for c in table.columns
        if c.comment or c.name in texts
    }
    if columns:
        out["columns"] = columns
    return out


def _report_view(report: reports.Report) -> dict[str, Any]:
    return {
        "description": f"Report {report.name}: {report.description}. The same as "
        f"`clevertim-sync report {report.name}`; the canned query report-{report.name} keeps its order.",
        "columns": dict(REPORT_COLUMNS.get(report.view, {})),
    }


def _versions_view(res: resources.Resource) -> dict[str, Any]:
    return {
        "description": f"Every version of every {res.name} from history, one row each: valid_from "
        "and valid_to (NULL for the latest) make 'as it was at t' a plain WHERE; a delete is its "
        "own version (op = 'delete').",
        "columns": dict(VERSIONS_COLUMNS),
        "facets": ["op", "origin"],
        "facet_size": FACET_SIZE,
        "sort_desc": "valid_from",
    }


# The wide views' own columns beyond the record's (whose meanings are its table's).
WIDE_COLUMNS: Mapping[str, str] = {
    "name": "the record's name (a contact's first and last name)",
    "customer_type_name": "the customer type's word (customer_types.name: Prospect, Friend, ...)",
}


def _wide_view(res: resources.Resource, record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "columns": {
            **{k: v for k, v in record.get("columns", {}).items() if k not in wide.LEFT_OUT},
            "name": WIDE_COLUMNS["name"],
            **(
                {"customer_type_name": WIDE_COLUMNS["customer_type_name"]}
                if "customer_type" in record.get("columns", {})
                else {}
            ),
        },
        "description": f"Every {res.name} with one column per custom field that applies to it, named "
        "after the field's current name (lower case, `_` between words; `cf_` before a name one of "
        f"the {res.table} columns has; a multi-value field is a JSON list). Rebuilt when a pull "
        "brings a field added, renamed or removed, so a column follows its field.",
        "label_column": "name",
    }


def since_sql(report: reports.Report) -> str:
    """The canned query of one report: its view in its order, with an optional `since` parameter
    (ISO-8601 such as 2026-11-27T09:00:00Z or 2026-11-27; empty: every row) when it takes one."""
    sql = f"SELECT * FROM {report.view}"  # noqa: S608 (fixed names from reports.REPORTS)
    if report.since_column is not None:
        # The mirror's timestamps are ISO text; strftime reads the parameter's T, Z and offsets
        # (to the millisecond: SQLite's date functions keep no finer time).
        sql += f"\nWHERE :since = '' OR {report.since_column} >= strftime('%Y-%m-%d %H:%M:%f', :since)"
    return f"{sql}\nORDER BY {report.order_by}"


def _queries() -> dict[str, Any]:
    queries: dict[str, Any] = {}
    for report in reports.REPORTS.values():
        query: dict[str, Any] = {
            "title": f"Report: {report.name}",
            "description": report.description,
            "sql": since_sql(report),
        }
        if report.since_column is not None:
            query["params"] = ["since"]
        # Not "<name>": a canned query shadows the table of the same name (report contacts).
        queries[f"report-{report.name}"] = query
    queries["search"] = {
        "title": "Search notes, contacts and companies",
        "description": "Records holding every word of q, best match first: the same as "
        "`clevertim-sync search`.",
        # An empty q would be an FTS5 syntax error: '""' matches nothing instead.
        "sql": reports.sqlite_search_sql("COALESCE(NULLIF(escape_fts(:q), ''), '\"\"')", "200"),
        "params": ["q"],
    }
    return queries


def build_metadata(
    db_name: str, existing: Collection[str] | None = None, *, title: str = "Clevertim mirror"
) -> dict[str, Any]:
    """Datasette 0.65 metadata for the SQLite mirror served under `db_name` (the file's stem).

    `existing` names the tables and views in the database; others are left out (a database at an
    older schema). None: describe everything this version of the schema has.
    """
    tables: dict[str, dict[str, Any]] = {}
    for res in resources.RESOURCES:
        tables[res.table] = _resource_table(res)
        for prop in res.child_props:
            assert prop.child_table is not None
            tables[prop.child_table] = _child_table(res, prop)
    for table in schema.metadata.sorted_tables:
        if table.name not in tables:
            tables[str(table.name)] = _other_table(table)
    tables["alembic_version"] = {
        "description": TABLE_TEXT["alembic_version"],
        "columns": dict(COLUMN_TEXT["alembic_version"]),
        "hidden": True,
    }
    for report in reports.REPORTS.values():
        tables[report.view] = _report_view(report)
    for res in resources.RESOURCES:
        tables[versions.versions_view(res.name)] = _versions_view(res)
    for name, (view, _model) in wide.WIDE.items():
        res = resources.get(name)
        tables[view] = _wide_view(res, tables[res.table])

    for name, facets in FACETS.items():
        tables[name] |= {"facets": list(facets), "facet_size": FACET_SIZE}
    for name, column in SORT_DESC.items():
        tables[name]["sort_desc"] = column
    # The search box and ?_search=: FTS5 tables with content=..., which Datasette does not find by
    # itself. Escaped: every word is quoted, as in `clevertim-sync search` (?_searchmode=raw for
    # FTS5 syntax such as prefix*).
    searchable = [(table, fts, "id") for table, fts, _cols in search.FTS.values()]
    for table_name, fts, pk in [*searchable, ("report_contacts", "contacts_fts", "contact_id")]:
        tables[table_name] |= {"fts_table": fts, "fts_pk": pk, "searchmode": "escaped"}

    if existing is not None:
        present = set(existing)
        tables = {name: t for name, t in tables.items() if name in present}
        for t in tables.values():
            if t.get("fts_table", "") not in present:  # no FTS5 table: no search box
                for key in ("fts_table", "fts_pk", "searchmode"):
                    t.pop(key, None)
    return {
        "title": title,
        "description": "A local mirror of a Clevertim CRM account, kept by clevertim-sync: each "
        "resource's current state, its lists as child tables, every version in history, and the "
        "reports (report_* views; report-* canned queries). Read-only here: edits go through "
        "`clevertim-sync edit` or the writeback_queue table.",
        "source": "Clevertim CRM API",
        "about": "clevertim-sync",
        "databases": {db_name: {"tables": tables, "queries": _queries()}},
    }
