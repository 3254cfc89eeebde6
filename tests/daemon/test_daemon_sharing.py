"""Standby daemons sharing the accounts over PostgreSQL (daemon/sharing.py, daemon/members.py):
three `run --standby` processes with twelve accounts on one server each serve a share; one
SIGKILLed has its accounts pulled by the others, one stopped cleanly hands over at once, and no
account's pulls ever overlap (the mirrors' `runs` say so). Intervals are a second or two."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import PG_URL_ENV, _MigratedTemplates, _pg_database, wait_for
from support import free_port
from support.daemon import Daemon

from clevertim_sync.cli import cli
from clevertim_sync.daemon.members import fair_share, holders
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema

ACCOUNTS = 12


def test_the_fair_share_is_never_more_than_one_above_the_mean_and_covers_every_account() -> None:
    for accounts in range(1, 30):
        for live in range(1, 8):
            share = fair_share(accounts, live)
            assert share * live >= accounts  # together they can hold every account
            assert share <= accounts // live + 1


@pytest.fixture
def account_databases(_migrated_templates: _MigratedTemplates) -> Iterator[list[str]]:
    server = os.environ.get(PG_URL_ENV)
    if not server:
        pytest.skip(f"no PostgreSQL: run through `make test` (or set {PG_URL_ENV})")
    template = _migrated_templates.postgres(server)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(_pg_database(server, template=template)) for _ in range(ACCOUNTS)]


def _config(emulator_url: str, urls: list[str], health_port: int) -> str:
    accounts = "".join(
        f'[[accounts]]\nname = "a{n:02d}"\nurl = "{emulator_url}"\ntoken = "tok-{n}"\n'
        f'database_url = "{url}"\n'
        for n, url in enumerate(urls)
    )
    return f"""
log_format = "json"
[clevertim]
timeout = 5
read_retries = 0
[pull]
interval = 2
jitter = 0
[push]
interval = 5
[daemon]
rebalance_interval = 1
stale_after = 60
health_listen = "127.0.0.1:{health_port}"
{accounts}"""


class Mirrors:
    """What the server says about the twelve mirrors: who serves each, and their pull runs."""

    def __init__(self, urls: list[str]) -> None:
        self.engines = {
            f"a{n:02d}": sa.create_engine(url, poolclass=sa.NullPool) for n, url in enumerate(urls)
        }

    def owners(self) -> dict[str, str]:
        out = {}
        for name, engine in self.engines.items():
            with engine.connect() as conn:
                held = holders(conn)
            assert len(held) <= 1, (name, held)  # never two daemons on one account
            if held:
                out[name] = held[0]
            else:
                out.pop(name, None)
        return out

    def pulls(self, name: str) -> list[sa.Row[tuple[datetime, datetime | None, str]]]:
        runs = schema.runs
        with self.engines[name].connect() as conn:
            return list(
                conn.execute(
                    sa.select(runs.c.started_at, runs.c.finished_at, runs.c.status)
                    .where(runs.c.kind == "pull")
                    .order_by(runs.c.started_at)
                )
            )

    def pulled_since(self, names: set[str], since: datetime) -> bool:
        return all(any(r.started_at > since and r.status == "ok" for r in self.pulls(n)) for n in names)

    def first_pull_after(self, names: set[str], since: datetime) -> float:
        """Seconds from `since` to the last of these accounts' first pull started after it."""
        return max(
            min(r.started_at for r in self.pulls(n) if r.started_at > since) - since for n in names
        ).total_seconds()

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


def _served(port: int) -> dict[str, int]:
    """clevertim_sync_account_served from a daemon's /metrics: account -> 1 (its own) or 0."""
    out = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("clevertim_sync_account_served{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('account="', 1)[1].split('"', 1)[0]] = int(float(value))
    return out


def _status(tmp_path: Path, database_url: str) -> str:
    cfg = tmp_path / "status.toml"
    cfg.write_text(f'[clevertim]\ntoken = "t"\n[database]\nurl = "{database_url}"\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "status"])
    assert result.exit_code == 0, result.output
    return result.output


def _by_daemon(owners: dict[str, str], procs: dict[int, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {label: set() for label in procs.values()}
    for account, daemon in owners.items():
        out[procs[int(daemon.rsplit(":", 1)[1])]].add(account)
    return out


@pytest.mark.postgres
def test_three_standby_daemons_share_the_accounts_and_take_over_a_killed_and_a_stopped_one(
    emulator: EmulatorServer, account_databases: list[str], tmp_path: Path
) -> None:
    for n in range(ACCOUNTS):
        emulator.control.add_token(f"tok-{n}", 1)
    ports = {name: free_port() for name in ("one", "two", "three")}
    started: dict[str, Daemon] = {}
    procs: dict[int, str] = {}
    mirrors = Mirrors(account_databases)

    def start(name: str) -> None:
        cfg = _config(emulator.base_url, account_databases, ports[name])
        started[name] = Daemon(tmp_path, name, cfg, args=("--standby",))
        procs[started[name].proc.pid] = name

    def spread() -> list[int]:
        return sorted(len(a) for a in _by_daemon(mirrors.owners(), procs).values())

    try:
        start("one")
        start("two")
        wait_for(lambda: spread() == [6, 6], "six accounts each", 60)
        # A daemon that joins takes its share; the two others give back, nobody restarts.
        start("three")
        wait_for(lambda: spread() == [4, 4, 4], "four accounts each", 60)
        t0 = datetime.now(UTC) - timedelta(seconds=1)
        wait_for(lambda: mirrors.pulled_since(set(mirrors.engines), t0), "every account pulled", 60)
        share = _by_daemon(mirrors.owners(), procs)
        assert all(pid in procs for pid in (d.proc.pid for d in started.values()))
        served = _served(ports["one"])
        assert {a for a, n in served.items() if n == 1} == share["one"]
        assert "clevertim_sync_daemons_live 3.0" in httpx.get(f"http://127.0.0.1:{ports['one']}/metrics").text

        # SIGKILL: the server ends its sessions, the two others take its four accounts and pull.
        killed = share["one"]
        started["one"].proc.kill()
        started["one"].wait()
        t_kill = datetime.now(UTC)
        wait_for(lambda: mirrors.pulled_since(killed, t_kill), "the killed daemon's accounts pulled", 90)
        after_kill = mirrors.first_pull_after(killed, t_kill)
        wait_for(lambda: spread() == [0, 6, 6], "six accounts each again", 30)

        # A clean stop: its accounts go to the last daemon at once.
        stopped = _by_daemon(mirrors.owners(), procs)["two"]
        started["two"].signal(signal.SIGTERM)
        assert started["two"].wait(40) == 0
        t_stop = datetime.now(UTC)
        wait_for(lambda: mirrors.pulled_since(stopped, t_stop), "the stopped daemon's accounts pulled", 30)
        after_stop = mirrors.first_pull_after(stopped, t_stop)
        wait_for(lambda: len(mirrors.owners()) == ACCOUNTS, "every account served", 30)
        assert _by_daemon(mirrors.owners(), procs)["three"] == set(mirrors.engines)
        assert set(_served(ports["three"]).values()) == {1}
        status = _status(tmp_path, account_databases[0])
        assert f"served by: daemon {socket.gethostname()}:{started['three'].proc.pid}" in status
        started["three"].signal(signal.SIGTERM)
        assert started["three"].wait(40) == 0

        print(f"takeover: {after_kill:.1f} s after SIGKILL, {after_stop:.1f} s after a clean stop")
        assert after_kill < 90
        assert after_stop < 15

        # No account's pulls overlap: each ended before the next began; the one the SIGKILL cut
        # short (never finished) ended at the kill.
        for name in mirrors.engines:
            runs = mirrors.pulls(name)
            assert runs, name
            for before, after in itertools.pairwise(runs):
                ended = before.finished_at or t_kill
                assert ended <= after.started_at, (name, before, after)
                if before.finished_at is None:
                    assert name in killed, (name, before)
    finally:
        mirrors.dispose()
        for d in started.values():
            d.close()
