"""The daemon's memory with many accounts: RSS idle and peak for 1, 20 and 100 accounts.

One emulator process serves every account (each account is its own token on it; all see the same
seeded account of CONTACTS contacts); `clevertim-sync run` runs as systemd would run it, in its own
process, with N `[[accounts]]`, each into its own SQLite mirror. The daemon's RSS (its children
included) is sampled every 0.1 s from /proc: the peak over its whole life (start-up and every
account's first pull, the heaviest), and idle, the median over a quiet window after every account
has pulled once and before the next pulls are due, with the CPU the daemon used in that window.

    flock /tmp/bench.lock .venv/bin/python bench/accounts.py [--accounts 1,20,100] [--contacts 2000]

Prints one line per size, then the per-account cost: (idle(N) - idle(1)) / (N - 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from clevertim_sync.emulator.control import EmulatorControl

OWNER = 1  # the seeded account's owner: every token sees all of it
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """RSS in bytes of `pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.samples.append((time.monotonic(), tree_rss(self.pid)))

    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    def median_since(self, t0: float) -> int:
        return int(statistics.median(rss for t, rss in self.samples if t >= t0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pulled_once(state: Path) -> int:
    """How many of the mirrors in `state` have a successful pull."""
    done = 0
    for path in state.glob("*.sqlite3"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
                done += bool(
                    db.execute("SELECT 1 FROM runs WHERE kind = 'pull' AND status = 'ok' LIMIT 1").fetchone()
                )
        except sqlite3.Error:  # not created or migrated yet, or busy: not pulled for now
            continue
    return done


def start_emulator(contacts: int) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "clevertim_sync", "emulator", "--port", "0", "--contacts", str(contacts)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=os.environ | {"CLEVERTIM_EMULATOR_TOKEN": "bench-0"},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def config(url: str, n: int, state: Path, pull_interval: float, extra: str) -> str:
    lines = [
        'log_format = "json"',
        'log_level = "info"',
        f'state_dir = "{state}"',
        "[clevertim]",
        "timeout = 60",
        "[pull]",
        f"interval = {pull_interval}",
        "jitter = 0",
        "[push]",
        "interval = 30",
        extra,
    ]
    for i in range(n):
        lines += ["[[accounts]]", f'name = "a{i:03d}"', f'url = "{url}"', f'token = "bench-{i}"']
    return "\n".join(lines) + "\n"


def measure(url: str, n: int, pull_interval: float, extra: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = work / "config.toml"
        cfg.write_text(config(url, n, work, pull_interval, extra))
        log = (work / "daemon.log").open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "clevertim_sync", "--config", str(cfg), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            # Every account pulled once: asked of the mirrors, not the log (with a hundred
            # accounts, lines written by several threads at once can reach the file cut).
            while pulled_once(work) < n:
                if proc.poll() is not None:
                    tail = (work / "daemon.log").read_text()[-3000:]
                    raise SystemExit(f"the daemon exited {proc.returncode}:\n{tail}")
                time.sleep(1)
            first_pulls = time.monotonic() - started
            # Quiet: every account has pulled once; the next pulls are due pull_interval after the
            # first ones. Let the last pull's memory go, then take the median of a window.
            time.sleep(3)
            window, cpu_before = time.monotonic(), cpu_seconds(proc.pid)
            time.sleep(10)
            idle_cpu = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - window)
            idle = sampler.median_since(window)
            peak = sampler.peak()
        finally:
            sampler.done.set()
            proc.terminate()
            proc.wait(60)
            log.close()
    start_rss = sampler.samples[0][1] if sampler.samples else 0
    return {
        "accounts": n,
        "first_pulls_s": first_pulls,
        "idle_mb": idle / 2**20,
        "idle_cpu": idle_cpu,
        "peak_mb": peak / 2**20,
        "first_sample_mb": start_rss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", default="1,20,100", help="comma-separated sizes to measure")
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument(
        "--extra", default="", help="more TOML for the config, e.g. '[daemon]\\nconcurrent_pulls = 2'"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.accounts.split(",")]
    emulator, url = start_emulator(args.contacts)
    try:
        with EmulatorControl(url) as control:
            for i in range(1, max(sizes)):
                control.add_token(f"bench-{i}", OWNER)
        results = []
        for n in sizes:
            # Long enough that no second pull starts before the idle window is taken.
            r = measure(url, n, pull_interval=max(120.0, 10.0 * n), extra=args.extra.replace("\\n", "\n"))
            results.append(r)
            print(
                f"{n:4d} accounts x {args.contacts} contacts: idle {r['idle_mb']:6.1f} MB, "
                f"peak {r['peak_mb']:6.1f} MB, idle CPU {100 * r['idle_cpu']:.1f}% of a core, "
                f"every first pull done after {r['first_pulls_s']:.1f} s",
                flush=True,
            )
    finally:
        emulator.terminate()
        emulator.wait(30)
    base = results[0]
    for r in results[1:]:
        if r["accounts"] > base["accounts"]:
            per = (r["idle_mb"] - base["idle_mb"]) / (r["accounts"] - base["accounts"])
            print(f"per account idle, {base['accounts']} -> {r['accounts']}: {per:.2f} MB")


if __name__ == "__main__":
    main()
