"""`clevertim-sync check`: is this install ready and well? One line per check, exit 1 if not.

Owns: the checks an operator runs after installing or when something looks wrong: the
configuration loads, each account's database is reachable and at the newest schema, its API
token is accepted, its pulls are fresh and its queue moves (the very verdict of /healthz, read
from the database). It changes nothing: no migration, no lock taken, no write to the API.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import click
import orjson
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import restic
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.daemon import alerts, healthz, sizing
from clevertim_sync.daemon.accounts import Account, accounts
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror import db
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import outbox


@dataclass(frozen=True)
class Finding:
    account: str
    check: str  # config, database, schema, api, pulls, queue, alerts, restic
    ok: bool
    detail: str
    warning: bool = False  # told, but not a failure: `check` still exits 0 for it


def check_account(account: Account, now: datetime) -> list[Finding]:
    """Every check of one account; a failed check never hides the next independent one."""
    found: list[Finding] = []

    def add(check: str, ok: bool, detail: str) -> None:
        found.append(Finding(account.name, check, ok, detail))

    settings = account.settings
    engine = db.make_engine(settings.database.url, busy_timeout=settings.database.sqlite_busy_timeout)
    where = engine.url.render_as_string(hide_password=True)
    try:
        revision = db.current_revision(engine)
        add("database", True, f"{where} is reachable")
        head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
        if revision == head:
            add("schema", True, f"at the newest revision {head}")
            _check_mirror(engine, settings, account.name, now, add)
        elif revision is None:
            add("schema", False, "empty: run `clevertim-sync sync` (or `db upgrade`) to create the mirror")
        else:
            add("schema", False, f"at {revision}, the newest is {head}: run `clevertim-sync db upgrade`")
    except (ClevertimSyncError, sa.exc.SQLAlchemyError) as exc:
        add("database", False, f"{where}: {getattr(exc, 'orig', None) or exc}")
    finally:
        engine.dispose()
    add(*_check_api(settings))
    if settings.backup.restic_repository is not None:
        add(*_check_restic(settings))
    return found


def _check_mirror(
    engine: sa.Engine, settings: Settings, account: str, now: datetime, add: Callable[[str, bool, str], None]
) -> None:
    with engine.connect() as conn:
        facts = healthz.read_facts(conn, account, now, healthz.stuck_limit(settings))
    reasons = healthz.judge(facts, now, lambda name: healthz.stale_limit(settings, name))
    queue_reasons = [r for r in reasons if "writeback queue" in r]
    pull_reasons = [r for r in reasons if r not in queue_reasons]
    add("pulls", not pull_reasons, "; ".join(pull_reasons) or "every resource pulled recently and well")
    depth = ", ".join(f"{n} {state}" for state, n in sorted(facts.queue.depth.items())) or "empty"
    dead = {s: facts.queue.depth.get(s, 0) for s in outbox.NEEDS_A_PERSON}
    attention = ", ".join(f"{n} {s}" for s, n in dead.items() if n)
    note = f" ({attention} need a person: `clevertim-sync queue list`)" if attention else ""
    if dead[outbox.CONFLICT]:
        note += f"; open conflicts: {dead[outbox.CONFLICT]}, settle each with `clevertim-sync queue show ID`"
    add("queue", not queue_reasons, ("; ".join(queue_reasons) or f"moving: {depth}") + note)
    # Informational: what the conditions above already fail on, as far as a person was told of it.
    with engine.connect() as conn:
        active = alerts.read_status(conn)
    receivers = len(settings.alerts.urls)
    told = ", ".join(f"{r.condition}{'' if r.told else ' (not yet told)'}" for r in active) or "none active"
    add("alerts", True, f"{told}; {receivers or 'no'} receiver(s) in [alerts]")


def _check_api(settings: Settings) -> tuple[str, bool, str]:
    url = settings.clevertim.url
    once = settings.model_copy(
        update={"clevertim": settings.clevertim.model_copy(update={"read_retries": 0})}
    )
    try:
        with ClevertimClient.from_settings(once) as client:  # one try: an answer now, not in a minute
            users = client.list("user")
    except ClevertimSyncError as exc:
        return "api", False, f"{url}: {exc}"
    return "api", True, f"{url} accepts the token ({len(users)} user(s) visible)"


def _check_restic(settings: Settings) -> tuple[str, bool, str]:
    """restic on the PATH and a password for it; the repository itself is not opened (it may be a
    remote one, slow or down for a while: the backup job's alert tells that)."""
    try:
        repo = restic.configured(settings)
    except ClevertimSyncError as exc:
        return "restic", False, str(exc)
    assert repo is not None
    return "restic", True, f"{repo.binary} for {restic.shown(repo.location)}, with a password"


@cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of findings, for scripts.")
@pass_app
def check_command(app: AppContext, as_json: bool) -> None:
    """Check the install without changing anything: configuration, each account's database and
    schema, its API token, fresh pulls and a moving queue. Exit 1 if any check fails."""
    settings = app.settings  # a bad configuration stops here with every problem, exit 2
    configure_logging(settings.log_format, "warning", stream=sys.stderr)  # stdout is the findings
    now = datetime.now(UTC)
    configured = accounts(settings)
    findings = [f for account in configured for f in check_account(account, now)]
    findings.append(_check_memory(settings, len(configured)))
    if as_json:
        click.echo(orjson.dumps([asdict(f) for f in findings], option=orjson.OPT_INDENT_2).decode())
    else:
        source = settings.config_file or "no file (defaults and the environment)"
        click.echo(f"ok    config: {source}")
        several = len({f.account for f in findings}) > 1
        for f in findings:
            label = f"{f.account}: {f.check}" if several else f.check
            click.echo(f"{'ok  ' if f.ok else 'WARN' if f.warning else 'FAIL'}  {label}: {f.detail}")
    if not all(f.ok or f.warning for f in findings):
        sys.exit(1)


def _check_memory(settings: Settings, n_accounts: int) -> Finding:
    """Do the configured accounts fit the unit's MemoryMax= (daemon.memory_max)? The sizing rule."""
    limit = sizing.parse_size(settings.daemon.memory_max)
    pulls = settings.daemon.concurrent_pulls
    need = sizing.needed_bytes(n_accounts, pulls)
    what = f"{n_accounts} account(s) with {pulls} pull(s) at once need about {sizing.as_systemd(need)}"
    where = "all" if settings.accounts else "default"
    if need <= limit:
        return Finding(where, "memory", True, f"{what}, within MemoryMax={settings.daemon.memory_max}")
    return Finding(
        where,
        "memory",
        False,
        f"{what}, more than MemoryMax={settings.daemon.memory_max}: the kernel would kill the daemon at "
        f"its peak. Raise MemoryMax= in the unit (and daemon.memory_max) to {sizing.as_systemd(need)}, "
        "lower daemon.concurrent_pulls, or share the accounts between daemons (run --standby, "
        "docs/how-to/agency.md)",
        warning=True,
    )
