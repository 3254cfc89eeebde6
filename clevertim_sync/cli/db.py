"""`db upgrade`: create or migrate the mirror's tables to the newest schema."""

from __future__ import annotations

import click

from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.mirror import db


@cli.group("db")
def db_group() -> None:
    """The mirror database's schema."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Create or migrate the mirror's tables to the newest schema (every command also does this)."""
    with mirror(app) as engine:
        revision = db.current_revision(engine)
        where = engine.url.render_as_string(hide_password=True)
    click.echo(f"database {where} is at revision {revision}")
