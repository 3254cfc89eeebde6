"""`clevertim-sync run [--standby]` (the service) and `clevertim-sync demo` (the README's first command).

Owns: turning options into a daemon.Service or a demo run, and logging set-up for both.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.daemon.demo import DemoOptions, run_demo
from clevertim_sync.daemon.service import Service
from clevertim_sync.daemon.wiring import real_backends
from clevertim_sync.logs import configure_logging


def _prog() -> str:
    """`clevertim-sync` when it is on PATH, else the path it was run by (`make demo`: .venv/bin/...)."""
    found = shutil.which("clevertim-sync")
    here = Path(sys.argv[0]).resolve()
    if found and Path(found).resolve() == here:
        return "clevertim-sync"
    return os.path.relpath(here) if here.name == "clevertim-sync" else "clevertim-sync"


def _echo(line: str) -> None:
    click.echo(line)


@cli.command("run")
@click.option(
    "--standby",
    is_flag=True,
    help="PostgreSQL only: if another daemon holds this mirror, wait and take over when it stops.",
)
@pass_app
def run_command(app: AppContext, standby: bool) -> None:
    """Run the daemon: pull and push on schedule until SIGTERM/Ctrl-C (systemd Type=notify)."""
    settings = app.settings
    configure_logging(settings.log_format, settings.log_level)
    service = Service(
        settings, real_backends(), config_path=app.config_path, standby=standby, configure_logs=True
    )
    code = service.run()
    click.get_current_context().exit(code)


@cli.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo"),
    show_default=True,
    help="Where the demo's mirror and config go.",
)
@click.option(
    "--contacts",
    type=click.IntRange(1, 100_000),
    default=3000,
    show_default=True,
    help="Contacts in the emulator's seeded account.",
)
@click.option(
    "--pull-interval",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="Seconds between pulls.",
)
@click.option(
    "--push-interval",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Seconds between pushes.",
)
@click.option(
    "--remote-edits",
    type=click.FloatRange(min=0),
    default=15.0,
    show_default=True,
    help="Seconds between edits a simulated colleague makes in the emulator (0: none).",
)
def demo_command(
    directory: Path, contacts: int, pull_interval: float, push_interval: float, remote_edits: float
) -> None:
    """The bundled Clevertim emulator plus the daemon against it, into ./demo/, until Ctrl-C."""
    configure_logging("console", "warning", stream=sys.stderr)
    opts = DemoOptions(
        directory=directory,
        contacts=contacts,
        pull_interval=pull_interval,
        push_interval=push_interval,
        remote_edit_every=remote_edits,
        prog=_prog(),
    )
    code = run_demo(opts, echo=_echo)
    click.get_current_context().exit(code)
