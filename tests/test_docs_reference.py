"""The documentation site's reference is generated from the code (clevertim_sync/reference.py), and
nothing exists without its meaning: a command or option without help, a configuration key without
a Field description, a table, view or column of the live schema without a description, a metric
without help or an alert condition without its words fails here."""

from __future__ import annotations

import click

from clevertim_sync import reference
from clevertim_sync.cli import cli, load_all
from clevertim_sync.settings import ENV_OVERRIDES


def test_every_command_and_option_has_help() -> None:
    assert reference.undocumented_commands() == []


def test_an_option_without_help_is_caught() -> None:
    load_all()
    sync = cli.commands["sync"]
    bare = click.Option(["--no-help-here"], is_flag=True)
    sync.params.append(bare)
    try:
        assert reference.undocumented_commands() == ["clevertim-sync sync --no-help-here"]
    finally:
        sync.params.remove(bare)


def test_every_configuration_key_is_documented_with_its_environment_variable() -> None:
    assert reference.undocumented_config_keys() == []
    keys = {k.key: k for k in reference.config_keys()}
    assert keys["pull.jitter"].default == "30"
    assert keys["pull.jitter"].type == "number, >= 0"
    assert keys["push.conflict_policy"].default == '"manual"'
    assert keys["accounts[].name"].default == "required"
    # Every environment variable is named beside its key.
    for var, (section, key) in ENV_OVERRIDES.items():
        assert keys[".".join(p for p in (section, key) if p)].env == var
    page = reference.config_page()
    assert "| `pull.jitter` |" in page
    assert "`CLEVERTIM_SYNC_DATABASE_URL`" in page


def test_every_table_view_and_column_of_the_live_schema_has_a_meaning() -> None:
    objects = reference.live_schema()
    assert reference.undocumented_schema(objects) == []
    names = {o.name: o for o in objects}
    # The live schema, not a list kept by hand: tables, child tables, views and the FTS5 indexes.
    assert {"contacts", "contact_emails", "note_customers", "history", "writeback_queue"} <= set(names)
    assert {"report_pipeline", "contacts_versions", "notes_fts"} <= set(names)
    assert names["report_pipeline"].kind == "view"
    assert {c.name for c in names["contacts"].columns} >= {"id", "first_name", "company_id", "raw"}


def test_a_column_without_a_meaning_is_caught() -> None:
    objects = reference.live_schema()
    runs = next(o for o in objects if o.name == "runs")
    stripped = reference.SchemaObject(
        runs.name,
        runs.kind,
        runs.description,
        tuple(reference.Column(c.name, c.type, "" if c.name == "error" else c.meaning) for c in runs.columns),
    )
    assert reference.undocumented_schema([stripped]) == ["runs.error"]


def test_every_metric_and_alert_condition_is_documented() -> None:
    assert reference.undocumented_metrics() == []
    metrics = {m.name: m for m in reference.metrics()}
    assert metrics["clevertim_sync_records_changed_total"].labels == ("account", "resource", "op")
    assert metrics["clevertim_sync_queue_depth"].labels == ("account", "state")
    page = reference.metrics_page()
    assert "| `pull_failing` |" in page
