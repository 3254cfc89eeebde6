"""The `clevertim-sync` command: the one place errors become messages and exit codes.

Each area's subcommands live in a module beside this one (emulator.py, sync.py, ...) and are
listed in COMMANDS at the bottom of this file. They raise ClevertimSyncError subclasses; `main`
turns them into one message on stderr and the error's exit code (2 for configuration and bad input).

Start-up time: a command's module (and with it SQLAlchemy, httpx, alembic, rich, the emulator) is
imported only when that command runs; `--help` lists the commands from COMMANDS' summaries without
importing any (tests/cli/test_cli_startup.py checks they say what the commands' docstrings say).
Importing settings (pydantic) waits for the first command that reads them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from clevertim_sync import __version__
from clevertim_sync.errors import ClevertimSyncError

if TYPE_CHECKING:
    from clevertim_sync.settings import Settings


class _Group(click.Group):
    """The root group: commands loaded on first use, errors turned into messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in COMMANDS:
                importlib.import_module(f"clevertim_sync.cli.{COMMANDS[cmd_name][0]}")
            else:  # a command not yet in COMMANDS still runs (its summary is missing from --help)
                load_all()
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, with a stand-in carrying the summary for every command not loaded:
        # the same text, without importing the command's module.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            cmd = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClevertimSyncError as exc:
            click.echo(f"clevertim-sync: {exc}", err=True)
            ctx.exit(exc.exit_code)


class AppContext:
    """What every subcommand gets: the config path, and Settings loaded on first use."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from clevertim_sync.settings import load  # noqa: PLC0415 (pydantic: only when needed)

            self._settings = load(self.config_path)
        return self._settings


pass_app = click.make_pass_decorator(AppContext)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--version`: this version and the schema revision it brings a mirror to (the newest
    migration it carries), read from the migration files without SQLAlchemy or alembic."""
    if not value or ctx.resilient_parsing:
        return
    from clevertim_sync.mirror.revisions import head_revision  # noqa: PLC0415 (only for --version)

    click.echo(f"clevertim-sync, version {__version__} (schema {head_revision()})")
    ctx.exit()


def quiet_logs() -> None:
    """Only warnings, on stderr: stdout carries the command's result (a table, CSV, JSON)."""
    from clevertim_sync.logs import configure_logging  # noqa: PLC0415 (structlog: only when needed)

    configure_logging("auto", "warning", stream=sys.stderr)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML config file (default: ./clevertim-sync.toml, then ~/.config/clevertim-sync/config.toml, "
    "then /etc/clevertim-sync/config.toml).",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the database schema revision it expects, and exit.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Mirror a Clevertim CRM account into SQL, push local edits back, back it up."""
    ctx.obj = AppContext(config_path)


def main() -> None:
    cli.main(prog_name="clevertim-sync")
    sys.exit(0)


def load_all() -> None:
    """Import every command module (registering its commands on `cli`)."""
    for module in sorted({module for module, _ in COMMANDS.values()}):
        importlib.import_module(f"clevertim_sync.cli.{module}")


# Every top-level command: (its module in this package, the first paragraph of its docstring).
# A new command goes here too; tests/cli/test_cli_startup.py fails while a summary differs.
COMMANDS: dict[str, tuple[str, str]] = {
    "alerts": (
        "alerts",
        "Send a test message to the [alerts] receivers, or list the active alert conditions.",
    ),
    "backup": (
        "backup",
        "Write a verified, compressed snapshot of the mirror into DEST (a directory, or a .tar path).",
    ),
    "check": (
        "check",
        "Check the install without changing anything: configuration, each account's "
        "database and schema, its API token, fresh pulls and a moving queue. Exit 1 if "
        "any check fails.",
    ),
    "datasette": (
        "datasette",
        "Write Datasette metadata for the SQLite mirror (descriptions, facets, search, every "
        "report as a canned query); --serve also starts Datasette on it, read-only.",
    ),
    "db": (
        "db",
        "The mirror database's schema.",
    ),
    "demo": (
        "daemon",
        "The bundled Clevertim emulator plus the daemon against it, into ./demo/, until Ctrl-C.",
    ),
    "edit": (
        "edit",
        "Queue a local edit (validated now, sent by `push` or the daemon).",
    ),
    "emulator": (
        "emulator",
        "Serve a Clevertim API stand-in with a seeded account until Ctrl-C or SIGTERM.",
    ),
    "export": (
        "export",
        "Write DIRECTORY/<resource>.jsonl: every record exactly as last pulled, sorted by id.",
    ),
    "history": (
        "history",
        "A record's versions, oldest first: number, when, where from, what changed.",
    ),
    "probe": (
        "probe",
        "Survey the account read-only: the shapes of its data, what the mirror would do with each, "
        "sizes and timings; write a JSON report without personal data (and, with --capture, the "
        "listings anonymised).",
    ),
    "push": (
        "push",
        "Send every due queue item once; exit 1 if an item failed or was quarantined.",
    ),
    "queue": (
        "queue",
        "Look at and settle the writeback queue.",
    ),
    "report": (
        "report",
        "Print one of the reporting views (see --list); each is also a SQL view named report_<name>.",
    ),
    "restore": (
        "backup",
        "Restore a backup (verified first) or an export into an empty database, then upgrade its schema.",
    ),
    "revert": (
        "revert",
        "Queue the writes that bring RESOURCE RECORD_ID back to an earlier VERSION from "
        "history (re-creating it, with a new id, if it was deleted).",
    ),
    "run": (
        "daemon",
        "Run the daemon: pull and push on schedule until SIGTERM/Ctrl-C (systemd Type=notify).",
    ),
    "search": (
        "search",
        "Full-text search of notes, contacts and companies: records holding every word.",
    ),
    "status": (
        "status",
        "Per resource: last pull, its age, record count, last counts, error, whether it is held.",
    ),
    "sync": (
        "sync",
        "Pull the account once into the mirror; exit 1 if any resource failed or was held.",
    ),
    "verify": (
        "backup",
        "Check a backup: checksums, row counts, and that its snapshot opens. Exit 1 if it is damaged.",
    ),
}
