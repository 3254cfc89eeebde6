"""The `clevertim-sync` command: the one place errors become messages and exit codes.

Each area's subcommands live in a module beside this one (emulator.py, sync.py, ...) and are
registered at the bottom of this file. They raise ClevertimSyncError subclasses; `main` turns
them into one message on stderr and the error's exit code (2 for configuration and bad input).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from clevertim_sync import __version__
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.settings import Settings, load


class _Group(click.Group):
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
            self._settings = load(self.config_path)
        return self._settings


pass_app = click.make_pass_decorator(AppContext)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML config file (default: ./clevertim-sync.toml, then ~/.config/clevertim-sync/config.toml, "
    "then /etc/clevertim-sync/config.toml).",
)
@click.version_option(__version__, prog_name="clevertim-sync")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Mirror a Clevertim CRM account into SQL, push local edits back, back it up."""
    ctx.obj = AppContext(config_path)


def main() -> None:
    cli.main(prog_name="clevertim-sync")
    sys.exit(0)


from clevertim_sync.cli import edit as _edit  # noqa: E402,F401
from clevertim_sync.cli import sync as _sync  # noqa: E402,F401
from clevertim_sync.cli import emulator as _emulator  # noqa: E402,F401
from clevertim_sync.cli import daemon as _daemon  # noqa: E402,F401
from clevertim_sync.cli import backup as _backup  # noqa: E402,F401
from clevertim_sync.cli import check as _check  # noqa: E402,F401
