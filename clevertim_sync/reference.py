"""The documentation site's reference pages, generated from the code so that they cannot drift.

Owns: turning the settings model (every key's type, default, environment variable and its Field
description), the live schema (a temporary SQLite brought to alembic head, described by the
registry and the Datasette metadata built from it), the Prometheus metrics and the alert
conditions into Markdown pages; and the lists of what exists without a meaning
(tests/test_docs_reference.py fails on any). The command line's page is rendered by mkdocs-click
from click itself (docs/reference/cli.md); `undocumented_commands` checks its help texts.
scripts/mkdocs_hooks.py adds these pages to the site at build time.

Sits at the top of the layers beside cli/: it reads every one of them. The daemon never imports it.
"""

from __future__ import annotations

import tempfile
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
import click
import sqlalchemy as sa
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from clevertim_sync import settings as settings_module
from clevertim_sync.daemon import healthz as health
from clevertim_sync.daemon.metrics import DaemonMetrics
from clevertim_sync.mirror import db, revisions, search
from clevertim_sync.reporting import datasette_meta

# Settings fields that are no key of the file: load() sets them from where it found the file.
NOT_KEYS = frozenset({"config_file"})

# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigKey:
    key: str  # as written in the TOML file: "pull.jitter", "accounts[].name"
    type: str
    default: str
    env: str | None
    meaning: str


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if origin in (types.UnionType, typing.Union):
        kept = [a for a in args if a is not type(None)]
        return " \\| ".join(_type_text(a) for a in kept) + " (optional)"
    if origin is tuple:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"table of {_type_text(args[0])} = {_type_text(args[1])}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation is SecretStr:
        return "string (secret)"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _toml(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_BOUNDS = (
    (annotated_types.Gt, "gt", "> {}"),
    (annotated_types.Ge, "ge", ">= {}"),
    (annotated_types.Lt, "lt", "< {}"),
    (annotated_types.Le, "le", "<= {}"),
)


def _bounds(field: FieldInfo) -> str:
    found = []
    for item in field.metadata:
        for kind, attr, text in _BOUNDS:
            if isinstance(item, kind):
                found.append(text.format(_toml(getattr(item, attr))))
    return ", ".join(found)


def _model_of(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The settings model a field holds, and whether it is a list of them (`[[accounts]]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) is tuple:
        inner = typing.get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, True
    return None


def config_keys() -> list[ConfigKey]:
    """Every key of the configuration file, in the model's order."""
    env_of = {".".join(p for p in where if p): var for var, where in settings_module.ENV_OVERRIDES.items()}
    out: list[ConfigKey] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if name in NOT_KEYS:
                continue
            key = prefix + name
            inner = _model_of(field.annotation)
            if inner is not None and not inner[1]:
                walk(inner[0], key + ".")
                continue
            if inner is not None:  # a list of tables: the key itself, then each table's keys
                out.append(ConfigKey(key, "list of tables", "[]", None, field.description or ""))
                walk(inner[0], key + "[].")
                continue
            default = (
                "required" if field.is_required() else _toml(field.get_default(call_default_factory=True))
            )
            kind = _type_text(field.annotation)
            if bounds := _bounds(field):
                kind += f", {bounds}"
            out.append(ConfigKey(key, kind, default, env_of.get(key), field.description or ""))

    walk(settings_module.Settings, "")
    return out


def undocumented_config_keys() -> list[str]:
    return [k.key for k in config_keys() if not k.meaning.strip()]


def _cell(text: str) -> str:
    """Text for a Markdown table cell: no pipe, no line break, no `<` read as an HTML tag."""
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def config_page() -> str:
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from clevertim_sync/settings.py by clevertim_sync/reference.py: edit the "
        "Field descriptions there, not this page. -->",
        "",
        "A TOML file, found at `--config PATH`, else `$CLEVERTIM_SYNC_CONFIG`, else the first of "
        "`./clevertim-sync.toml`, `$XDG_CONFIG_HOME/clevertim-sync/config.toml` (default "
        "`~/.config/clevertim-sync/config.toml`) and `/etc/clevertim-sync/config.toml`. Environment "
        "variables override the file; the built-in defaults fill in the rest. A bad configuration "
        "gets one message listing every problem, and exit status 2. "
        "The source tree's `deploy/config.example.toml`, [at the end of this page](#example), is "
        "a commented example of every section.",
        "",
        "Under systemd, `$STATE_DIRECTORY` is the state directory (`state_dir`), and the token and "
        "the alert URLs may come as the credentials `clevertim-token` and "
        "`clevertim-sync-alert-urls` in `$CREDENTIALS_DIRECTORY`.",
        "",
    ]
    section = None
    for key in config_keys():
        head = key.key.split(".")[0] if "." in key.key else ""
        if head != section:
            section = head
            title = "[[accounts]]" if head.endswith("[]") else f"[{head}]"
            lines += ["", f"## `{title}`" if head else "## Top level", ""]
            lines += ["| key | type | default | environment | meaning |", "| --- | --- | --- | --- | --- |"]
        env = f"`{key.env}`" if key.env else ""
        lines.append(f"| `{key.key}` | {key.type} | `{_cell(key.default)}` | {env} | {_cell(key.meaning)} |")
    # The example file itself, included at build time (pymdownx.snippets, from the source tree).
    lines += ["", "## Example", "", "```toml", '--8<-- "deploy/config.example.toml"', "```"]
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------------


def _walk_commands(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk_commands(sub, f"{path} {name}")


def undocumented_commands() -> list[str]:
    """Commands without a help text, and options without one ("sync --dry-run")."""
    from clevertim_sync.cli import cli, load_all  # noqa: PLC0415 (the commands' modules: on demand)

    load_all()
    missing = []
    for path, command in _walk_commands(cli, "clevertim-sync"):
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
    return missing


# --- the SQL schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    meaning: str


@dataclass(frozen=True)
class SchemaObject:
    name: str
    kind: str  # "table", "view" or "full-text index"
    description: str
    columns: tuple[Column, ...]


def _fts_shadow(name: str, fts_tables: set[str]) -> bool:
    """FTS5's own storage tables (notes_fts_data, ...): SQLite's, not the mirror's."""
    return any(name.startswith(f"{fts}_") for fts in fts_tables)


def _fts_text(table: str, fts: str, columns: tuple[str, ...]) -> dict[str, Any]:
    """An FTS5 table as the reference describes it (Datasette hides them: not in its metadata)."""
    return {
        "description": f"SQLite's full-text index (FTS5) of {table}, kept by every write to the mirror; "
        f"join {fts}.rowid to {table}.id (`WHERE {fts} MATCH 'renewal AND budget'`). PostgreSQL has "
        "none: GIN indexes on the same columns instead.",
        "columns": {c: f"{table}.{c}, indexed" for c in columns},
    }


def live_schema() -> list[SchemaObject]:
    """Every table and view of a new mirror at alembic head (SQLite), with what each column means."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(f"sqlite:///{Path(tmp) / 'reference.sqlite3'}")
        try:
            db.upgrade(engine)
            inspector = sa.inspect(engine)
            tables = sorted(inspector.get_table_names())
            views = sorted(inspector.get_view_names())
            found = {name: inspector.get_columns(name) for name in [*tables, *views]}
        finally:
            engine.dispose()
    meta = datasette_meta.build_metadata("mirror")["databases"]["mirror"]["tables"]
    meta |= {fts: _fts_text(table, fts, cols) for table, fts, cols in search.FTS.values()}
    fts_tables = {fts for _table, fts, _cols in search.FTS.values()}
    out = []
    for name in [*tables, *views]:
        if name.startswith("sqlite_") or _fts_shadow(name, fts_tables):
            continue
        described = meta.get(name, {})
        texts = described.get("columns", {})
        kind = "full-text index" if name in fts_tables else "view" if name in views else "table"
        columns = tuple(
            Column(str(c["name"]), str(c["type"] or ""), texts.get(str(c["name"]), "")) for c in found[name]
        )
        out.append(SchemaObject(name, kind, described.get("description", ""), columns))
    return out


def undocumented_schema(objects: list[SchemaObject] | None = None) -> list[str]:
    """Tables and views without a description, columns without a meaning ("runs.error")."""
    missing = []
    for obj in live_schema() if objects is None else objects:
        if not obj.description.strip():
            missing.append(obj.name)
        missing += [f"{obj.name}.{c.name}" for c in obj.columns if not c.meaning.strip()]
    return missing


def schema_page() -> str:
    objects = live_schema()
    lines = [
        "# SQL schema",
        "",
        "<!-- Generated by clevertim_sync/reference.py from a new mirror at the newest migration, "
        "described by the resource registry (clevertim_sync/resources.py) and "
        "clevertim_sync/reporting/datasette_meta.py: edit those, not this page. -->",
        "",
        f"Every table and view of a mirror at schema revision `{revisions.head_revision()}`, as SQLite "
        "creates it (column types are SQLite's; on PostgreSQL the same columns are `bigint`, "
        "`timestamptz`, `numeric(18,4)`, `boolean` and `text`). The same descriptions are what "
        "`clevertim-sync datasette` shows. How to read it: [the schema explained](../explanation/schema.md).",
        "",
    ]
    for kind, title in (("table", "Tables"), ("view", "Views"), ("full-text index", "Full-text indexes")):
        lines += [f"## {title}", ""]
        for obj in (o for o in objects if o.kind == kind):
            lines += [f"### `{obj.name}`", "", _cell(obj.description), ""]
            if obj.columns and kind != "full-text index":
                lines += ["| column | type | meaning |", "| --- | --- | --- |"]
                lines += [f"| `{c.name}` | {c.type.lower()} | {_cell(c.meaning)} |" for c in obj.columns]
                lines.append("")
    return "\n".join(lines) + "\n"


# --- metrics and alerts --------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: tuple[str, ...]
    help: str


def metrics() -> list[Metric]:
    """Every metric `/metrics` exports, with its labels (read from the collectors themselves)."""
    registry = DaemonMetrics(list).registry
    # A metric with no sample yet shows no label in the exposition: its collector knows them.
    labels: dict[str, tuple[str, ...]] = {}
    collectors: list[Any] = list(registry._collector_to_names)
    for collector in collectors:
        families: list[Any] = [collector] if hasattr(collector, "_name") else list(collector.collect())
        for family in families:
            name = family._name if hasattr(family, "_name") else family.name
            labels[str(name)] = tuple(family._labelnames)
    out = []
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        out.append(Metric(name, family.type, labels.get(family.name, ()), family.documentation))
    return sorted(out, key=lambda m: m.name)


def metrics_page() -> str:
    lines = [
        "# Metrics and alerts",
        "",
        "<!-- Generated by clevertim_sync/reference.py from clevertim_sync/daemon/metrics.py and "
        "clevertim_sync/daemon/health.py: edit those, not this page. -->",
        "",
        "## Prometheus metrics",
        "",
        "`/metrics` on `daemon.health_listen`, in Prometheus' text format. Every metric carries "
        "the label `account`. The gauges read from the database at scrape time (queue depth, last "
        "success, failures, held, alerts) are true after a restart too. "
        "[Prometheus and Grafana](../how-to/prometheus-grafana.md) shows the shipped rules and dashboard.",
        "",
        "| metric | type | labels | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for m in metrics():
        labels = ", ".join(f"`{label}`" for label in m.labels)
        lines.append(f"| `{m.name}` | {m.type} | {labels} | {_cell(m.help)} |")
    lines += [
        "",
        "## Alert conditions",
        "",
        "What the daemon tells through `[alerts]` ([alerts](../how-to/alerts.md)), and what "
        "`clevertim-sync alerts status` lists. Each is also `clevertim_sync_alert_active{condition=...}`.",
        "",
        "| condition | starts when |",
        "| --- | --- |",
    ]
    for condition in health.ALERT_CONDITIONS:
        lines.append(f"| `{condition}` | {_cell(health.ALERT_CONDITION_TEXT.get(condition, ''))} |")
    return "\n".join(lines) + "\n"


def undocumented_metrics() -> list[str]:
    missing = [m.name for m in metrics() if not m.help.strip()]
    return missing + [
        c for c in health.ALERT_CONDITIONS if not health.ALERT_CONDITION_TEXT.get(c, "").strip()
    ]


# Generated pages, by their path under docs/.
PAGES = {
    "reference/configuration.md": config_page,
    "reference/schema.md": schema_page,
    "reference/metrics.md": metrics_page,
}
