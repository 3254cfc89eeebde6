"""Commands of the mirror: `db upgrade`, `sync`, `status`, `export`.

Owns: turning those commands' options into calls of `mirror.db`, `pull.pull`, `mirror.store`,
and their output (progress, summary tables, JSON). Every command migrates the database first.

Must not import: httpx directly (the API client is `ClevertimClient.from_settings`).
"""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine

from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.mirror import db


def open_mirror(app: AppContext) -> Engine:
    """The mirror's engine, migrated to the newest schema (every command starts here)."""
    settings = app.settings
    engine = db.make_engine(settings.database.url, busy_timeout=settings.database.sqlite_busy_timeout)
    db.upgrade(engine)
    return engine


@cli.group("db")
def db_group() -> None:
    """The mirror database's schema."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Create or migrate the mirror's tables to the newest schema (every command also does this)."""
    engine = open_mirror(app)
    try:
        revision = db.current_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision {revision}")
