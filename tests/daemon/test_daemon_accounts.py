"""An agency's daemon: twenty accounts in one `clevertim-sync run` stay within the memory target
(start-up + at most 2 MB per further account between pulls, the peak within the sizing rule and
the unit's 256M), and
never pull more accounts at once than `daemon.concurrent_pulls` (the mirrors' `runs` say so).
bench/accounts.py measures the same at 2,000 contacts an account; here the accounts are small."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import wait_for
from support.daemon import Daemon

from clevertim_sync.cli import cli
from clevertim_sync.daemon import sizing
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema

ACCOUNTS = 20
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def agency_emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer(token="tok-0", contacts=300, seed=2).start()
    for n in range(1, ACCOUNTS):
        server.control.add_token(f"tok-{n}", 1)
    yield server
    server.stop()


class Rss(threading.Thread):
    """The RSS of one process, every 0.1 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                with open(f"/proc/{self.pid}/statm", encoding="ascii") as f:
                    self.samples.append((time.monotonic(), int(f.read().split()[1]) * PAGE))
            except OSError:
                return

    def median_since(self, t0: float) -> float:
        return statistics.median(rss for t, rss in self.samples if t >= t0) / sizing.MB

    def peak(self) -> float:
        return max(rss for _, rss in self.samples) / sizing.MB


def _config(url: str, n: int, state: Path) -> str:
    accounts = "".join(
        f'[[accounts]]\nname = "a{i:02d}"\nurl = "{url}"\ntoken = "tok-{i}"\n' for i in range(n)
    )
    return (
        f'log_format = "json"\nstate_dir = "{state}"\n[pull]\ninterval = 600\njitter = 0\n'
        f"[daemon]\nconcurrent_pulls = 2\n{accounts}"
    )


def _idle_after_first_pulls(tmp_path: Path, url: str, n: int) -> tuple[float, float, list[Path]]:
    """(idle MB, peak MB, the mirrors) of a daemon serving `n` accounts, once each has pulled."""
    state = tmp_path / f"state-{n}"
    state.mkdir()
    daemon = Daemon(tmp_path, f"daemon-{n}", _config(url, n, state))
    rss = Rss(daemon.proc.pid)
    try:
        daemon.ready()
        wait_for(
            lambda: (
                len(
                    {
                        e["account"]
                        for e in daemon.events()
                        if e["event"] == "job.finished" and e["job"] == "pull"
                    }
                )
                >= n
            ),
            f"{n} first pulls",
            120,
        )
        time.sleep(2)  # the last pull's memory handed back
        window = time.monotonic()
        time.sleep(2)
        return rss.median_since(window), rss.peak(), sorted(state.glob("*.sqlite3"))
    finally:
        rss.done.set()
        daemon.close()


def test_twenty_accounts_fit_the_memory_target_and_pull_two_at_a_time(
    agency_emulator: EmulatorServer, tmp_path: Path
) -> None:
    one, _, _ = _idle_after_first_pulls(tmp_path, agency_emulator.base_url, 1)
    idle, peak, mirrors = _idle_after_first_pulls(tmp_path, agency_emulator.base_url, ACCOUNTS)
    per_account = (idle - one) / (ACCOUNTS - 1)
    print(
        f"1 account idle {one:.1f} MB; {ACCOUNTS}: idle {idle:.1f} MB, peak {peak:.1f} MB, "
        f"{per_account:.2f} MB each"
    )
    assert per_account <= 2.0  # the target: start-up + at most 2 MB an account between pulls
    assert peak * sizing.MB <= sizing.needed_bytes(ACCOUNTS, 2) <= sizing.parse_size("256M")

    # Never more than two pulls at once across the twenty mirrors.
    spans = []
    for path in mirrors:
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            runs = schema.runs
            spans += conn.execute(
                sa.select(runs.c.started_at, runs.c.finished_at).where(runs.c.kind == "pull")
            ).all()
        engine.dispose()
    assert len(spans) >= ACCOUNTS
    events = sorted(itertools.chain(((s, 1) for s, _ in spans), ((f, -1) for _, f in spans if f is not None)))
    running = list(itertools.accumulate(step for _, step in events))
    assert max(running) <= 2


def test_check_warns_when_the_accounts_do_not_fit_the_unit_s_memory(tmp_path: Path) -> None:
    accounts = "".join(
        f'[[accounts]]\nname = "a{i}"\nurl = "http://127.0.0.1:9/api"\ntoken = "t"\n' for i in (1, 2)
    )
    config = tmp_path / "config.toml"

    def memory_finding(memory_max: str) -> dict[str, object]:
        config.write_text(
            f'state_dir = "{tmp_path}"\n[daemon]\nconcurrent_pulls = 2\n'
            f'memory_max = "{memory_max}"\n{accounts}'
        )
        result = CliRunner().invoke(cli, ["--config", str(config), "check", "--json"])
        found = [f for f in json.loads(result.output) if f["check"] == "memory"]
        assert len(found) == 1, result.output
        return dict(found[0])

    tight = memory_finding("128M")  # 95 + 2.5 + 2 x 25 + 32 MB needed
    assert (tight["ok"], tight["warning"]) == (False, True)
    assert "need about 192M, more than MemoryMax=128M" in str(tight["detail"])
    assert memory_finding("256M")["ok"] is True
