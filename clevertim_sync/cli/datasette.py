"""The `datasette` command: Datasette metadata for the SQLite mirror, and Datasette started on it.

Owns: choosing the account's database, refusing what Datasette cannot open (PostgreSQL, an
in-memory database), writing the metadata built by clevertim_sync.reporting.datasette_meta, and with
`--serve` replacing this process by `python -m datasette serve` (so Ctrl-C and SIGTERM reach
Datasette itself, and nothing of ours stays behind).

Datasette opens a file it may change (its default, not `-i`/immutable, which would be wrong for a
file the daemon writes) with read-only `mode=ro` connections, and it writes only for canned
queries marked `write`, of which the metadata has none: it reads the live WAL mirror and never
writes to it.

Datasette has no login: whoever reaches its port reads the whole CRM and runs any SQL on it.
`--serve` therefore listens on loopback only, unless `--allow-remote` says that another address
is meant (behind an authenticating proxy, or on a network where everyone may read the CRM).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import sys
from pathlib import Path

import click
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from clevertim_sync.cli import AppContext, cli, pass_app, quiet_logs
from clevertim_sync.errors import DatasetteError
from clevertim_sync.mirror import db
from clevertim_sync.reporting import datasette_meta

DEFAULT_METADATA = Path("datasette-metadata.json")


def _account_database(app: AppContext, account: str | None) -> tuple[str, str]:
    """(account name, database URL) of the mirror to browse."""
    from clevertim_sync.daemon.accounts import DEFAULT_NAME, accounts  # noqa: PLC0415 (pydantic)

    settings = app.settings
    if not settings.accounts:  # the one account of [clevertim]; no token needed to read its mirror
        if account not in (None, DEFAULT_NAME):
            raise DatasetteError("no_account", f"no account named {account!r}: this config has one mirror")
        return DEFAULT_NAME, settings.database.url
    known = {a.name: a.settings.database.url for a in accounts(settings)}
    if account is None and len(known) == 1:
        account = next(iter(known))
    if account not in known:
        raise DatasetteError(
            "no_account",
            f"name the account to browse with --account: one of {', '.join(sorted(known))}",
        )
    return account, known[account]


def sqlite_file(url: str) -> Path:
    """The SQLite file behind `url`, or DatasetteError saying why Datasette cannot open it."""
    parsed = make_url(db.normalise_url(url))
    if parsed.get_backend_name() != "sqlite":
        raise DatasetteError(
            "postgresql",
            f"Datasette reads SQLite files only, and this mirror is on {parsed.get_backend_name()} "
            f"({parsed.render_as_string(hide_password=True)}). To browse a copy: `clevertim-sync "
            "export DIR` then `clevertim-sync restore --from-export DIR --to sqlite:///copy.sqlite3`, "
            "and point this command at that file (CLEVERTIM_SYNC_DATABASE_URL=sqlite:///copy.sqlite3)",
        )
    path = db.sqlite_file(parsed)
    if path is None:
        raise DatasetteError("no_file", "Datasette needs a SQLite file: this mirror is in memory")
    return path


AUTH_HINT = (
    "Datasette has no login: anyone who reaches the port reads every record and runs any SQL. "
    "To share it, keep it on 127.0.0.1 and put a reverse proxy with authentication in front "
    "(nginx or Caddy with basic auth or single sign-on, over HTTPS), or reach it through an SSH "
    "tunnel (ssh -L 8001:127.0.0.1:8001 this-host); --allow-remote listens on another address anyway"
)


def is_loopback(host: str) -> bool:
    """True when `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def datasette_installed() -> bool:
    try:
        return importlib.util.find_spec("datasette") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


@cli.command("datasette")
@click.option(
    "--metadata",
    "metadata_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_METADATA,
    show_default=True,
    help="Where to write the metadata file (`datasette serve FILE --metadata` reads it).",
)
@click.option("--serve", is_flag=True, help="Then start Datasette on the mirror, read-only, until Ctrl-C.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address Datasette listens on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8001,
    show_default=True,
    help="Port Datasette listens on.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Let --serve listen on an address other than loopback (Datasette has no login: "
    "put authentication in front).",
)
@click.option("--account", default=None, help="The account whose mirror to browse (several [[accounts]]).")
@click.option("--title", default="Clevertim mirror", show_default=True, help="Title of Datasette's pages.")
@pass_app
def datasette_command(
    app: AppContext,
    *,
    metadata_path: Path,
    serve: bool,
    host: str,
    port: int,
    allow_remote: bool,
    account: str | None,
    title: str,
) -> None:
    """Write Datasette metadata for the SQLite mirror (descriptions, facets, search, every
    report as a canned query); --serve also starts Datasette on it, read-only.

    Datasette is an optional extra: pip install 'clevertim-sync[datasette]'.
    """
    quiet_logs()
    if serve and not allow_remote and not is_loopback(host):
        raise DatasetteError(
            "not_loopback",
            f"refusing to serve the mirror on {host}, an address other machines may reach. {AUTH_HINT}",
        )
    name, url = _account_database(app, account)
    path = sqlite_file(url)
    if serve and not datasette_installed():
        raise DatasetteError(
            "not_installed",
            f"Datasette is not installed in this environment ({sys.executable}): "
            f"{datasette_meta.INSTALL_HINT}",
        )
    # Migrated like every command, so the views and search tables the metadata names exist.
    engine = db.make_engine(url, busy_timeout=app.settings.database.sqlite_busy_timeout)
    try:
        db.upgrade(engine)
        inspector = sa.inspect(engine)
        existing = set(inspector.get_table_names()) | set(inspector.get_view_names())
    finally:
        engine.dispose()
    db_name = path.stem  # Datasette names a database after its file
    metadata = datasette_meta.build_metadata(db_name, existing, title=title)
    metadata_path.write_bytes(orjson.dumps(metadata, option=orjson.OPT_INDENT_2) + b"\n")
    command = [sys.executable, "-m", "datasette", "serve", str(path), "--metadata", str(metadata_path)]
    command += ["--host", host, "--port", str(port)]
    if not serve:
        click.echo(f"wrote {metadata_path} for {path} (account {name}); browse it with:")
        click.echo(f"  datasette serve {path} --metadata {metadata_path}")
        click.echo(f"or: clevertim-sync datasette --serve   ({datasette_meta.INSTALL_HINT} first)")
        return
    click.echo(f"Datasette on http://{host}:{port}/{db_name} (read-only, account {name}); Ctrl-C stops it")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)  # noqa: S606 (our own interpreter, arguments we built)
