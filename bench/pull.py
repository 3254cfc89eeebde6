"""Benchmark of a pull against the emulator with 100,000 contacts (~220,000 records), in one run.

    .venv/bin/python bench/pull.py [--contacts 100000] [--workdir /tmp/clevertim-bench]

Phases, each in a fresh child interpreter so that its peak RSS (ru_maxrss) is its own:

  floor-first     bare httpx GET of every listing, orjson parse, executemany (id, raw) into SQLite
  first           the project's first sync: pull() into a fresh, migrated SQLite mirror
  floor-nochange  fetch + parse + record_hash + compare with the mirror's {id: hash} index
  nochange        a sync where nothing changed
  (1% of the records of every resource are then edited through the emulator's control surface)
  floor-1pct      fetch + parse + hash + compare + executemany (id, raw) of the changed records
  1pct            the sync after 1% changed

It prints each phase, the ratios against their floors, and the targets (first <= 2.0x, no-change
<= 1.3x, 1%-changed <= 1.5x, peak RSS <= 1.5x the floor's). The emulator runs in its own process;
its serving time is part of both sides of every ratio, as it is of every real pull.
"""

# ruff: noqa: PLC0415 -- imports are lazy on purpose: a floor phase must not pay for (or carry the
# memory of) SQLAlchemy, alembic and the project it does not use.
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

TOKEN = "bench-token"
ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"first": 2.0, "nochange": 1.3, "1pct": 1.5, "rss": 1.5}


# --- phases (run in a child process) ----------------------------------------------------------


def _fetch_all(url: str) -> Any:
    """Yield (resource, records) with a bare httpx client: the floor's transport."""
    from clevertim_sync.resources import PULL_ORDER

    with httpx.Client(auth=(TOKEN, "X"), timeout=600) as http:
        for name in PULL_ORDER:
            response = http.get(f"{url}/{name}", headers={"Accept": "application/json"})
            response.raise_for_status()
            yield name, orjson.loads(response.content)["content"]


def phase_floor_first(url: str, db_path: str) -> dict[str, Any]:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    count = 0
    for name, records in _fetch_all(url):
        conn.execute(f"CREATE TABLE IF NOT EXISTS t_{name} (id INTEGER PRIMARY KEY, raw TEXT)")
        conn.executemany(
            f"INSERT INTO t_{name} (id, raw) VALUES (?, ?)",
            [(r["id"], orjson.dumps(r).decode()) for r in records],
        )
        conn.commit()
        count += len(records)
    conn.close()
    return {"records": count}


def _mirror_index(db_path: str, name: str) -> dict[int, str]:
    from clevertim_sync.resources import get

    with sqlite3.connect(db_path) as conn:
        return dict(conn.execute(f"SELECT id, content_hash FROM {get(name).table}"))


def phase_floor_compare(url: str, db_path: str, write_to: str | None) -> dict[str, Any]:
    """fetch + parse + hash + compare; with write_to, also store the changed (id, raw) rows."""
    from clevertim_sync.diff import record_hash

    out = sqlite3.connect(write_to) if write_to else None
    changed = count = 0
    for name, records in _fetch_all(url):
        index = _mirror_index(db_path, name)
        dirty = [r for r in records if index.get(r["id"]) != record_hash(r)]
        changed += len(dirty)
        count += len(records)
        if out is not None:
            out.execute(f"CREATE TABLE IF NOT EXISTS t_{name} (id INTEGER PRIMARY KEY, raw TEXT)")
            out.executemany(
                f"INSERT OR REPLACE INTO t_{name} (id, raw) VALUES (?, ?)",
                [(r["id"], orjson.dumps(r).decode()) for r in dirty],
            )
            out.commit()
    if out is not None:
        out.close()
    return {"records": count, "changed": changed}


def phase_sync(url: str, db_path: str, revision: str = "head") -> dict[str, Any]:
    from clevertim_sync.api.client import ClevertimClient
    from clevertim_sync.logs import configure_logging
    from clevertim_sync.mirror import db
    from clevertim_sync.pull import pull

    configure_logging("json", "warning", stream=sys.stderr)
    engine = db.make_engine(f"sqlite:///{db_path}")
    db.upgrade(engine, revision)  # before timing, as every command does it first
    with ClevertimClient(url, TOKEN, timeout=600) as client:
        t0 = time.perf_counter()
        report = pull(engine, client)
        seconds = time.perf_counter() - t0
    engine.dispose()
    return {"seconds_in_pull": seconds, "ok": report.ok, **report.totals()}


def run_phase(args: argparse.Namespace) -> None:
    # Both sides are timed from after their imports: interpreter start-up and importing
    # SQLAlchemy/alembic are a fixed cost per process, not the work being compared.
    import clevertim_sync.diff  # noqa: F401  the floors hash with it too

    children = ChildrenPeak()
    t0, cpu0 = time.perf_counter(), time.process_time()
    if args.phase == "floor-first":
        result = phase_floor_first(args.url, args.db)
    elif args.phase in ("floor-nochange", "floor-1pct"):
        result = phase_floor_compare(args.url, args.db, args.write_to)
    elif args.phase == "first-0001":
        result = phase_sync(args.url, args.db, revision="0001_mirror")
    elif args.profile_to:
        result = profiled(lambda: phase_sync(args.url, args.db), Path(args.profile_to))
    else:
        result = phase_sync(args.url, args.db)
    result["seconds"] = result.pop("seconds_in_pull", None) or time.perf_counter() - t0
    result["cpu_seconds"] = round(time.process_time() - cpu0, 2)  # this process only, all threads
    result["max_rss_mb"] = peak_rss_mb()
    result["children_max_rss_mb"] = children.stop()
    print(json.dumps(result))


def profiled(run: Any, out: Path) -> dict[str, Any]:
    """Run under cProfile (the calling thread only: the listing fetched ahead on the pull's other
    thread is the floor's work too) and write the top functions by own time and by cumulative time."""
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile()
    result: dict[str, Any] = profile.runcall(run)
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    out.write_text(text.getvalue())
    return result


class ChildrenPeak:
    """The largest peak RSS (VmHWM) of this process's child processes (the pull's row-building
    worker), sampled every 50 ms on a thread: they have exited by the time the phase reports."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            for tid in os.listdir("/proc/self/task"):
                try:
                    pids = Path(f"/proc/self/task/{tid}/children").read_text().split()
                    for pid in pids:
                        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                            if line.startswith("VmHWM:"):
                                self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    continue

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return round(self.peak_kb / 1024, 1)


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a
    child would report its parent's peak (the driver holds a 220k-record state at times)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the driver ---------------------------------------------------------------------------------


def child(
    phase: str, url: str, db_path: Path, write_to: Path | None = None, profile: Path | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--url", url, "--db", str(db_path)]
    if write_to is not None:
        cmd += ["--write-to", str(write_to)]
    if profile is not None:
        cmd += ["--profile-to", str(profile)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {phase:15s} {result['seconds']:8.2f} s wall {result['cpu_seconds']:7.2f} s cpu"
        f"  peak RSS {result['max_rss_mb']:7.1f} MB (+ {result['children_max_rss_mb']:.0f} MB in a child)"
        f"  {result}",
        flush=True,
    )
    return result


def change_one_percent(control: Any, seed: int) -> int:
    """Edit 1% of each resource's records as a person in the web UI would (lm bumped)."""
    from clevertim_sync.resources import RESOURCES

    rng = random.Random(seed)
    state = control.state()
    edited = 0
    for res in RESOURCES:
        records = state.get(res.name, [])
        field = next(f for f in ("name", "cn", "fn", "desc", "comment", "user") if f in res.by_api)
        for rec in rng.sample(records, max(1, len(records) // 100) if records else 0):
            control.update(res.name, rec["id"], {field: f"bench edit {rng.random():.6f}"})
            edited += 1
    return edited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/clevertim-bench"))
    parser.add_argument("--phase")
    parser.add_argument("--url")
    parser.add_argument("--db")
    parser.add_argument("--write-to")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the first sync once more under cProfile (untimed); top functions: WORKDIR/first.prof.txt",
    )
    parser.add_argument("--profile-to")
    parser.add_argument("--only-first", action="store_true", help="stop after the first syncs (quick look)")
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return

    from clevertim_sync.emulator.control import EmulatorControl

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    exe = ROOT / ".venv" / "bin" / "clevertim-sync"
    print(f"starting the emulator with {args.contacts} contacts ...", flush=True)
    t0 = time.perf_counter()
    emulator = subprocess.Popen(
        [str(exe), "emulator", "--port", "0", "--token", TOKEN, "--contacts", str(args.contacts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().strip()
        print(f"emulator at {url} (ready in {time.perf_counter() - t0:.1f} s)")
        control = EmulatorControl(url)
        counts = {k: len(v) for k, v in control.state().items()}
        print(f"account: {sum(counts.values())} records {counts}")

        mirror = args.workdir / "mirror.sqlite3"
        r: dict[str, dict[str, Any]] = {}
        r["floor-first"] = child("floor-first", url, args.workdir / "floor.sqlite3")
        r["first"] = child("first", url, mirror)
        # The same first sync into the pull's own tables only (migration 0001: without the
        # full-text triggers and views later migrations add), to show where the time goes.
        r["first-0001"] = child("first-0001", url, args.workdir / "mirror-0001.sqlite3")
        if args.profile:
            prof = args.workdir / "first.prof.txt"
            child("first", url, args.workdir / "mirror-profiled.sqlite3", profile=prof)
            print(f"  profile of a first sync: {prof}")
        if args.only_first:
            ratio = r["first"]["seconds"] / r["floor-first"]["seconds"]
            print(f"\nfirst {ratio:.2f}x, load average {os.getloadavg()[0]:.2f}")
            return
        r["floor-nochange"] = child("floor-nochange", url, mirror)
        r["nochange"] = child("nochange", url, mirror)
        t1 = time.perf_counter()
        edited = change_one_percent(control, seed=7)
        print(f"edited {edited} records through the control surface in {time.perf_counter() - t1:.1f} s")
        r["floor-1pct"] = child("floor-1pct", url, mirror, write_to=args.workdir / "floor-1pct.sqlite3")
        r["1pct"] = child("1pct", url, mirror)
        control.close()
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)

    ratios = {
        "first": r["first"]["seconds"] / r["floor-first"]["seconds"],
        "nochange": r["nochange"]["seconds"] / r["floor-nochange"]["seconds"],
        "1pct": r["1pct"]["seconds"] / r["floor-1pct"]["seconds"],
        # the pull's process and its row-building worker, as if both peaked at once
        "rss": (r["first"]["max_rss_mb"] + r["first"]["children_max_rss_mb"])
        / r["floor-first"]["max_rss_mb"],
    }
    print("\nratio vs floor (target):")
    for key, value in ratios.items():
        verdict = "ok" if value <= TARGETS[key] else "MISSED"
        print(f"  {key:9s} {value:5.2f}x  (<= {TARGETS[key]}x)  {verdict}")
    only_0001 = r["first-0001"]["seconds"] / r["floor-first"]["seconds"]
    print(f"  first sync into migration 0001 only (no full-text triggers): {only_0001:.2f}x")
    print(f"\nmachine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
