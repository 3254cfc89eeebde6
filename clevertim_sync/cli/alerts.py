"""`clevertim-sync alerts test` and `alerts status`: try the receivers, see what the daemon would tell.

Owns: those two commands' output and exit codes. The conditions, their state and the sending are
daemon/alerts.py's; this module only calls them.
"""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime

import click
import orjson

from clevertim_sync import __version__
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.daemon.alerts import AlertRow, Sender, read_status
from clevertim_sync.errors import ConfigError
from clevertim_sync.logs import configure_logging


@cli.group("alerts")
def alerts_group() -> None:
    """Send a test message to the [alerts] receivers, or list the active alert conditions."""


@alerts_group.command("test")
@pass_app
def alerts_test(app: AppContext) -> None:
    """Send one test message to every [alerts] receiver; exit 1 if one did not take it."""
    settings = app.settings
    configure_logging(settings.log_format, "warning", stream=sys.stderr)
    sender = Sender(settings)
    if not sender.configured:
        raise ConfigError(["no alert receivers: set alerts.urls or alerts.urls_file in the config"])
    title = "clevertim-sync: test message"
    body = (
        f"A test from clevertim-sync {__version__} on {socket.gethostname()} at "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC: alerts reach you here."
    )
    if not sender.send(title, body, "info"):
        click.echo(
            f"clevertim-sync: the test message did not reach every one of the {len(sender.urls)} "
            "receiver(s); the log above says which",
            err=True,
        )
        sys.exit(1)
    click.echo(f"test message sent to {len(sender.urls)} receiver(s)")


@alerts_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of conditions, for scripts.")
@pass_app
def alerts_status(app: AppContext, as_json: bool) -> None:
    """The alert conditions active in the mirror (as the daemon last saw them) and whether they were told."""
    with mirror(app) as engine, engine.connect() as conn:
        rows = read_status(conn)
    if as_json:
        out = [
            {
                "condition": r.condition,
                "active": r.active,
                "since": r.since.isoformat() if r.since else None,
                "told": r.told,
                "sent_at": r.sent_at.isoformat() if r.sent_at else None,
                "cleared_at": r.cleared_at.isoformat() if r.cleared_at else None,
                "lines": r.lines,
            }
            for r in rows
        ]
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("no active alerts")
        return
    for r in rows:
        click.echo(describe(r))
        for line in r.lines:
            click.echo(f"    {line}")


def describe(r: AlertRow) -> str:
    """One line about a condition: what, since when, whether a person has heard."""
    since = f" since {r.since:%Y-%m-%d %H:%M} UTC" if r.since else ""
    state = "active"
    if not r.active:
        state, since = "cleared", f" at {r.cleared_at:%Y-%m-%d %H:%M} UTC" if r.cleared_at else ""
    told = "told" if r.told else "not yet told (no receiver, or it was down: the next evaluation tries again)"
    return f"{r.condition}: {state}{since}, {told}"
