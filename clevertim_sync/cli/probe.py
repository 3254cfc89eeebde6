"""The `clevertim-sync probe` command: survey a live account read-only, report, optionally capture.

Owns: the command's options, choosing the account, writing the JSON report file and printing
the summary. The survey itself is `clevertim_sync.survey.probe`, the capture `clevertim_sync.survey.capture`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.daemon.accounts import accounts
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.logs import configure_logging
from clevertim_sync.survey.capture import CaptureWriter
from clevertim_sync.survey.private import open_private
from clevertim_sync.survey.probe import probe, summary


@cli.command("probe")
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the JSON report (default: ./clevertim-probe-<date>.json).",
)
@click.option(
    "--capture",
    "capture_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write the listings into this directory, every personal text replaced by invented text.",
)
@click.option("--account", "account_name", default=None, help="The account to probe (default: the first).")
@pass_app
def probe_command(
    app: AppContext, report_path: Path | None, capture_dir: Path | None, account_name: str | None
) -> None:
    """Survey the account read-only: the shapes of its data, what the mirror would do with each, sizes
    and timings; write a JSON report without personal data (and, with --capture, the listings anonymised)."""
    settings = app.settings
    configure_logging(settings.log_format, "warning", stream=sys.stderr)
    known = accounts(settings)
    chosen = next((a for a in known if account_name in (None, a.name)), None)
    if chosen is None:
        names = ", ".join(a.name for a in known)
        raise click.BadParameter(f"no account {account_name!r}; accounts: {names}", param_hint="--account")
    path = report_path or Path(f"clevertim-probe-{datetime.now(UTC):%Y-%m-%d}.json")
    writer = CaptureWriter(capture_dir) if capture_dir is not None else None
    with ClevertimClient.from_settings(chosen.settings) as client:  # list_raw never retries
        result = probe(client, capture=writer, progress=lambda line: click.echo(line, err=True))
    report = result.report()
    try:
        with open_private(path) as f:  # ids, counts and timings of an account: its owner's
            f.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise _ReportNotWritten(path, exc.strerror or str(exc)) from None
    for line in summary(result):
        click.echo(line)
    click.echo(f"report: {path}")
    if writer is not None:
        click.echo(f"capture: {writer.directory} (serve it with `clevertim-sync emulator --from DIR`)")


class _ReportNotWritten(ClevertimSyncError):
    exit_code = 2

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write the report {path}: {reason}")
