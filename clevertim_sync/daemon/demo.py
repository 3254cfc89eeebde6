"""Demo mode, the README's first command: the bundled emulator plus the daemon, into ./demo/.

Owns: starting an EmulatorServer with a few thousand contacts, writing a config for it, running
the real Service against it with short intervals, a remote "colleague" who edits a record now and
then (so every pull has news), and the terminal: progress, a summary, and how to query the mirror
and queue an edit. It runs until Ctrl-C.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from clevertim_sync.daemon.jobs import JobOutcome
from clevertim_sync.daemon.service import Service, describe
from clevertim_sync.daemon.wiring import real_backends, summarize
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import lock as instance_lock
from clevertim_sync.mirror import schema
from clevertim_sync.settings import ENV_OVERRIDES, Settings, load

DEMO_TOKEN = "demo-token"  # noqa: S105 - the emulator's, not a secret: it opens nothing but this demo
DB_FILE = "clevertim-sync.sqlite3"
TITLES = ("CEO", "CTO", "Head of Sales", "Buyer", "Office Manager", "Founder", "Consultant")


@dataclass(frozen=True)
class DemoOptions:
    directory: Path = Path("demo")
    contacts: int = 3000
    seed: int = 7
    pull_interval: float = 20.0
    push_interval: float = 5.0
    remote_edit_every: float = 15.0  # seconds between the "colleague"'s edits; 0: none
    prog: str = "clevertim-sync"  # how the user runs this program, for the printed commands


def _clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment without the variables that would point the demo at a real account."""
    drop = set(ENV_OVERRIDES) | {"CLEVERTIM_SYNC_CONFIG", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"}
    return {k: v for k, v in env.items() if k not in drop and not k.startswith("WATCHDOG_")}


def _fresh_database(db_path: Path) -> None:
    """The demo mirrors a brand-new emulator: start its mirror afresh, unless a demo is running."""
    url = f"sqlite:///{db_path.resolve()}"
    instance_lock.acquire(url).release()  # InstanceLocked: another demo runs on this directory
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def _write_config(opts: DemoOptions, base_url: str, db_path: Path) -> Path:
    path = opts.directory / "clevertim-sync.toml"
    text = f"""# Written by `clevertim-sync demo` for its emulator at {base_url}; rewritten on every run.
state_dir = "{opts.directory.resolve()}"
log_level = "warning"

[clevertim]
url = "{base_url}"
token = "{DEMO_TOKEN}"

[database]
url = "sqlite:///{db_path.resolve()}"

[pull]
interval = {opts.pull_interval}
jitter = 0

[push]
interval = {opts.push_interval}

[daemon]
health_listen = "127.0.0.1:0"
stale_after = {max(opts.pull_interval * 6, 120)}
"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def mirror_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            for name, table in schema.CURRENT.items()
        }


class _Colleague:
    """Someone editing the CRM in the browser: a remote change every few seconds."""

    def __init__(
        self, emulator: EmulatorServer, every: float, echo: Callable[[str], None], engine_url: str
    ) -> None:
        self.emulator = emulator
        self.every = every
        self.engine_url = engine_url
        self.echo = echo
        self.stop = threading.Event()
        self._rng = random.Random(1)
        self._thread = threading.Thread(target=self._run, name="demo-colleague", daemon=True)

    def start(self) -> None:
        if self.every > 0:
            self._thread.start()

    def _pick_contact(self) -> int | None:
        # From the mirror: the emulator's records are its own business.
        engine = sa.create_engine(self.engine_url)
        try:
            with engine.connect() as conn:
                ids = conn.execute(sa.select(schema.CURRENT["contact"].c.id).limit(500)).scalars().all()
        finally:
            engine.dispose()
        return self._rng.choice(ids) if ids else None

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                record_id = self._pick_contact()
                if record_id is None:
                    continue
                title = self._rng.choice(TITLES)
                self.emulator.control.update("contact", record_id, {"title": title})
                self.echo(f"  remote: a colleague set contact {record_id}'s title to {title!r} in Clevertim")
            except Exception as exc:  # the demo's decoration must never stop the demo
                self.echo(f"  remote: edit failed: {exc}")


def _instructions(opts: DemoOptions, base_url: str, db_path: Path, health_url: str | None) -> list[str]:
    rel_db = os.path.relpath(db_path)
    query = "select id, first_name, last_name, title from contacts order by id limit 5"
    if shutil.which("sqlite3"):
        query_cmd = f"sqlite3 {shlex.quote(rel_db)} {shlex.quote(query)}"
    else:
        script = f"import sqlite3; print(*sqlite3.connect('{rel_db}').execute('{query}'), sep=chr(10))"
        query_cmd = f"python3 -c {shlex.quote(script)}"
    env = (
        f"CLEVERTIM_URL={base_url} CLEVERTIM_TOKEN={DEMO_TOKEN} "
        f"CLEVERTIM_SYNC_DATABASE_URL=sqlite:///{rel_db}"
    )
    config = os.path.relpath(opts.directory / "clevertim-sync.toml")
    lines = [
        "",
        "The mirror is live. In another terminal:",
        "  query it:",
        f"    {query_cmd}",
        "  queue an edit (pushed within seconds; the next pull shows it was not news):",
        f"    {env} {opts.prog} edit update contact ID --set title=CEO",
        "  or with the demo's config file:",
        f"    {opts.prog} --config {config} queue list",
        "  browse it in Datasette (pip install 'clevertim-sync[datasette]'):",
        f"    {opts.prog} --config {config} datasette --serve",
    ]
    if health_url:
        lines.append(f"  health and metrics: curl {health_url}/healthz ; curl {health_url}/metrics")
    lines += ["Ctrl-C stops the demo (the mirror stays in " + rel_db + ").", ""]
    return lines


def run_demo(opts: DemoOptions, echo: Callable[[str], None], env: Mapping[str, str] | None = None) -> int:
    """Run the demo until Ctrl-C (or a signal); returns the exit status."""
    opts.directory.mkdir(parents=True, exist_ok=True)
    db_path = opts.directory / DB_FILE
    _fresh_database(db_path)
    echo(f"Starting the Clevertim emulator with {opts.contacts} contacts ...")
    emulator = EmulatorServer(token=DEMO_TOKEN, contacts=opts.contacts, seed=opts.seed).start()
    colleague = _Colleague(emulator, opts.remote_edit_every, echo, f"sqlite:///{db_path.resolve()}")
    try:
        config = _write_config(opts, emulator.base_url, db_path)
        clean_env = _clean_env(os.environ if env is None else env)
        settings: Settings = load(config, env=clean_env)
        echo(f"Emulator at {emulator.base_url}; mirroring into {os.path.relpath(db_path)}")
        echo(f"Pull every {opts.pull_interval:g} s, push every {opts.push_interval:g} s. First pull ...")
        state = {"pulls": 0}

        def on_outcome(outcome: JobOutcome) -> None:
            kind = outcome.job.split(":")[0]
            if kind == "push" and outcome.ok and summarize(outcome.result) == "queue empty":
                return  # an idle push every few seconds is not news
            echo("  " + describe(outcome, summarize).removeprefix("default: "))
            if kind == "pull" and outcome.ok:
                state["pulls"] += 1
                if state["pulls"] == 1:
                    engine = service.runtimes[0].engine
                    assert engine is not None
                    counts = mirror_counts(engine)
                    shown = ", ".join(f"{n} {schema.CURRENT[name].name}" for name, n in counts.items() if n)
                    echo(f"  mirror: {shown}")
                    health = service.health_server.url if service.health_server else None
                    for line in _instructions(opts, emulator.base_url, db_path, health):
                        echo(line)
                    colleague.start()

        service = Service(
            settings,
            real_backends(),
            config_path=config,
            env={},
            config_env=clean_env,
            on_outcome=[on_outcome],
        )
        code = service.run()
        final = sa.create_engine(colleague.engine_url)
        try:
            counts = mirror_counts(final)
        finally:
            final.dispose()
        echo(
            f"Demo stopped after {state['pulls']} pull(s). The mirror stays in {os.path.relpath(db_path)}: "
            f"{sum(counts.values())} records."
        )
        return code
    finally:
        colleague.stop.set()
        emulator.stop()
