"""Benchmark of a pull against the emulator with 100,000 contacts (~220,000 records), in one run.

    scripts/with-postgres .venv/bin/python bench/pull.py [--contacts 100000] [--scale 500000]
        [--small 2000] [--workdir /tmp/clevertim-bench]

Phases, each in a fresh child interpreter so that its peak RSS (VmHWM) is its own; the peak RSS
of the phase's own child processes (a row-building worker, a `sync` subprocess) is sampled too:

  floor-first     bare httpx GET of every listing, orjson parse, executemany (id, raw) into SQLite
  first           the project's first sync: pull() into a fresh, migrated SQLite mirror
  floor-nochange  fetch + parse + record_hash + compare with the mirror's {id: hash} index
  nochange        a sync where nothing changed
  (1% of the records of every resource are then edited through the emulator's control surface)
  floor-1pct      fetch + parse + hash + compare + executemany (id, raw) of the changed records
  1pct            the sync after 1% changed
  pg-floor-first  (under scripts/with-postgres) fetch + parse + COPY (id, raw jsonb) into PostgreSQL
  pg-first        the project's first sync into a fresh, migrated PostgreSQL database
  daemon          two pulls in one process (first, no-change) as the daemon runs them, each
                  followed by its memory release: RSS at start-up, after each pull, and idle
  --small N       an account of N contacts (its own emulator): `clevertim-sync sync` as a
                  subprocess, start-up included, against a floor script doing the same fetch+store
  --scale N       floor-first and first again at N contacts (its own emulator): time and peak RSS
                  against the 100k figures of the same run

It prints each phase (with the load average), the ratios against their floors, and the targets.
The emulator runs in its own process; its serving time is part of both sides of every ratio.
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
# Ratios against the floor of the same run, except the *_mb ones (absolute MB).
TARGETS = {
    "first": 1.6,
    "nochange": 1.0,
    "1pct": 1.0,
    "pg-first": 1.5,
    "small": 2.0,
    "scale-time": 5.5,
    "scale-rss": 1.3,
    "first-rss_mb": 200.0,
    "daemon-idle_mb": 120.0,
}


# --- phases (run in a child process) ----------------------------------------------------------


def _fetch_all(url: str, names: list[str] | None = None) -> Any:
    """Yield (resource, records) with a bare httpx client: the floor's transport."""
    if names is None:
        from clevertim_sync.resources import PULL_ORDER

        names = list(PULL_ORDER)
    with httpx.Client(auth=(TOKEN, "X"), timeout=600) as http:
        for name in names:
            response = http.get(f"{url}/{name}", headers={"Accept": "application/json"})
            response.raise_for_status()
            yield name, orjson.loads(response.content)["content"]


def phase_floor_first(url: str, db_path: str, names: list[str] | None = None) -> dict[str, Any]:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    count = 0
    for name, records in _fetch_all(url, names):
        conn.execute(f"CREATE TABLE IF NOT EXISTS t_{name} (id INTEGER PRIMARY KEY, raw TEXT)")
        conn.executemany(
            f"INSERT INTO t_{name} (id, raw) VALUES (?, ?)",
            [(r["id"], orjson.dumps(r).decode()) for r in records],
        )
        conn.commit()
        count += len(records)
    conn.close()
    return {"records": count}


def phase_pg_floor_first(url: str, db_url: str) -> dict[str, Any]:
    """fetch + parse + COPY (id, raw jsonb) rows, one table per resource, one commit each."""
    import psycopg

    count = 0
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for name, records in _fetch_all(url):
            conn.execute(f"CREATE TABLE t_{name} (id bigint PRIMARY KEY, raw jsonb NOT NULL)")
            with conn.cursor() as cur, cur.copy(f"COPY t_{name} (id, raw) FROM STDIN") as copy:
                for r in records:
                    copy.write_row((r["id"], orjson.dumps(r).decode()))
            conn.commit()
            count += len(records)
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


def _database_url(db: str) -> str:
    return db if "://" in db else f"sqlite:///{db}"


def phase_sync(url: str, db_path: str, revision: str = "head") -> dict[str, Any]:
    from clevertim_sync.api.client import ClevertimClient
    from clevertim_sync.logs import configure_logging
    from clevertim_sync.mirror import db
    from clevertim_sync.pull import pull

    configure_logging("json", "warning", stream=sys.stderr)
    engine = db.make_engine(_database_url(db_path))
    db.upgrade(engine, revision)  # before timing, as every command does it first
    with ClevertimClient(url, TOKEN, timeout=600) as client:
        t0 = time.perf_counter()
        report = pull(engine, client)
        seconds = time.perf_counter() - t0
    engine.dispose()
    return {"seconds_in_pull": seconds, "ok": report.ok, **report.totals()}


def phase_daemon(url: str, db_path: str) -> dict[str, Any]:
    """Two pulls as the daemon's pull job runs them (daemon/runtime.py: pull, then
    memory.release()), in one process: RSS after start-up, after each pull, and idle after."""
    from clevertim_sync.api.client import ClevertimClient
    from clevertim_sync.daemon import memory
    from clevertim_sync.logs import configure_logging
    from clevertim_sync.mirror import db
    from clevertim_sync.pull import pull

    def mb() -> float:
        return round((memory.rss_bytes() or 0) / 2**20, 1)

    configure_logging("json", "warning", stream=sys.stderr)
    engine = db.make_engine(_database_url(db_path))
    db.upgrade(engine)
    out: dict[str, Any] = {"rss_start_mb": mb()}
    with ClevertimClient(url, TOKEN, timeout=600) as client:
        for which in ("first", "nochange"):
            assert pull(engine, client).ok
            out[f"rss_after_{which}_mb"] = mb()  # freed by Python, maybe still held by malloc
            memory.release()
            out[f"rss_idle_after_{which}_mb"] = mb()
    time.sleep(1)
    out["rss_idle_mb"] = mb()
    engine.dispose()
    return out


def phase_small_sync(url: str, db_path: str) -> dict[str, Any]:
    """`clevertim-sync sync` as its own process, start-up and migrations included."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
    env |= {
        "CLEVERTIM_URL": url,
        "CLEVERTIM_TOKEN": TOKEN,
        "CLEVERTIM_SYNC_DATABASE_URL": _database_url(db_path),
        "CLEVERTIM_SYNC_LOG_LEVEL": "warning",
        "CLEVERTIM_SYNC_CONFIG": "",
    }
    exe = ROOT / ".venv" / "bin" / "clevertim-sync"
    t0 = time.perf_counter()
    subprocess.run([str(exe), "sync"], check=True, env=env, capture_output=True, timeout=600)
    return {"seconds_in_pull": time.perf_counter() - t0}


def phase_small_floor(url: str, db_path: str, names: list[str]) -> dict[str, Any]:
    """A floor script as its own process: interpreter start-up, httpx + orjson + sqlite3 imports,
    fetch + parse + store (id, raw)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import pull as bench; "
        "bench.phase_floor_first(sys.argv[2], sys.argv[3], sys.argv[4].split(','))"
    )
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "bench"), url, db_path, ",".join(names)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return {"seconds_in_pull": time.perf_counter() - t0}


def run_phase(args: argparse.Namespace) -> None:
    # Both sides are timed from after their imports: interpreter start-up and importing
    # SQLAlchemy/alembic are a fixed cost per process, not the work being compared.
    import clevertim_sync.diff  # noqa: F401  the floors hash with it too

    children = ChildrenPeak()
    t0, cpu0 = time.perf_counter(), time.process_time()
    if args.phase == "floor-first":
        result = phase_floor_first(args.url, args.db)
    elif args.phase == "pg-floor-first":
        result = phase_pg_floor_first(args.url, args.db)
    elif args.phase == "daemon":
        result = phase_daemon(args.url, args.db)
    elif args.phase == "small-sync":
        result = phase_small_sync(args.url, args.db)
    elif args.phase == "small-floor":
        from clevertim_sync.resources import PULL_ORDER

        result = phase_small_floor(args.url, args.db, list(PULL_ORDER))
    elif args.phase in ("floor-nochange", "floor-1pct"):
        result = phase_floor_compare(args.url, args.db, args.write_to)
    elif args.profile_to:
        result = profiled(lambda: phase_sync(args.url, args.db), Path(args.profile_to))
    else:
        result = phase_sync(args.url, args.db)
    result["seconds"] = result.pop("seconds_in_pull", None) or time.perf_counter() - t0
    result["cpu_seconds"] = round(time.process_time() - cpu0, 2)  # this process only, all threads
    result["max_rss_mb"] = peak_rss_mb()
    result["children_max_rss_mb"] = children.stop()
    result["load"] = round(os.getloadavg()[0], 2)
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
    worker, a `sync` subprocess), sampled every 50 ms on a thread: they have exited by the time
    the phase reports."""

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
    phase: str, url: str, db_path: Path | str, write_to: Path | None = None, profile: Path | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--url", url, "--db", str(db_path)]
    if write_to is not None:
        cmd += ["--write-to", str(write_to)]
    if profile is not None:
        cmd += ["--profile-to", str(profile)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_mb"] = round(result["max_rss_mb"] + result["children_max_rss_mb"], 1)
    print(
        f"  {phase:15s} {result['seconds']:8.2f} s wall {result['cpu_seconds']:7.2f} s cpu"
        f"  peak RSS {result['max_rss_mb']:7.1f} MB (+ {result['children_max_rss_mb']:.0f} MB in a child)"
        f"  load {result['load']:.2f}  {result}",
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


class Emulator:
    """The emulator with `contacts` contacts, in its own process."""

    def __init__(self, contacts: int) -> None:
        exe = ROOT / ".venv" / "bin" / "clevertim-sync"
        print(f"starting the emulator with {contacts} contacts ...", flush=True)
        t0 = time.perf_counter()
        self.process = subprocess.Popen(
            [str(exe), "emulator", "--port", "0", "--token", TOKEN, "--contacts", str(contacts)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        print(f"emulator at {self.url} (ready in {time.perf_counter() - t0:.1f} s)")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _pg_database(base_url: str, name: str) -> str:
    """A fresh database `name` on the PostgreSQL of scripts/with-postgres; its URL."""
    import psycopg

    plain = base_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--scale", type=int, default=0, help="also a first sync at this many contacts")
    parser.add_argument("--small", type=int, default=0, help="also a CLI sync of an account this small")
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
    pg_url = os.environ.get("CLEVERTIM_SYNC_TEST_PG_URL")
    r: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float] = {}
    emulator = Emulator(args.contacts)
    url = emulator.url
    try:
        control = EmulatorControl(url)
        counts = {k: len(v) for k, v in control.state().items()}
        print(f"account: {sum(counts.values())} records {counts}")
        mirror = args.workdir / "mirror.sqlite3"
        r["floor-first"] = child("floor-first", url, args.workdir / "floor.sqlite3")
        r["first"] = child("first", url, mirror)
        ratios["first"] = r["first"]["seconds"] / r["floor-first"]["seconds"]
        ratios["first-rss_mb"] = r["first"]["peak_mb"]
        if args.profile:
            prof = args.workdir / "first.prof.txt"
            child("first", url, args.workdir / "mirror-profiled.sqlite3", profile=prof)
            print(f"  profile of a first sync: {prof}")
        if pg_url:
            r["pg-floor-first"] = child("pg-floor-first", url, _pg_database(pg_url, "bench_floor"))
            r["pg-first"] = child("pg-first", url, _pg_database(pg_url, "bench_first"))
            ratios["pg-first"] = r["pg-first"]["seconds"] / r["pg-floor-first"]["seconds"]
        else:
            print("  (no PostgreSQL: run under scripts/with-postgres for the PostgreSQL phases)")
        if not args.only_first:
            r["floor-nochange"] = child("floor-nochange", url, mirror)
            r["nochange"] = child("nochange", url, mirror)
            ratios["nochange"] = r["nochange"]["seconds"] / r["floor-nochange"]["seconds"]
            r["daemon"] = child("daemon", url, args.workdir / "daemon.sqlite3")
            ratios["daemon-idle_mb"] = r["daemon"]["rss_idle_mb"]
            t1 = time.perf_counter()
            edited = change_one_percent(control, seed=7)
            print(f"edited {edited} records through the control surface in {time.perf_counter() - t1:.1f} s")
            floor_db = args.workdir / "floor-1pct.sqlite3"
            r["floor-1pct"] = child("floor-1pct", url, mirror, write_to=floor_db)
            r["1pct"] = child("1pct", url, mirror)
            ratios["1pct"] = r["1pct"]["seconds"] / r["floor-1pct"]["seconds"]
        control.close()
    finally:
        emulator.close()

    for size, label in ((args.small, "small"), (args.scale, "scale")):
        if not size:
            continue
        emulator = Emulator(size)
        try:
            if label == "small":
                r["small-floor"] = child("small-floor", emulator.url, args.workdir / "small-floor.sqlite3")
                r["small-sync"] = child("small-sync", emulator.url, args.workdir / "small.sqlite3")
                ratios["small"] = r["small-sync"]["seconds"] / r["small-floor"]["seconds"]
            else:
                r["scale-floor"] = child("floor-first", emulator.url, args.workdir / "scale-floor.sqlite3")
                r["scale-first"] = child("first", emulator.url, args.workdir / "scale.sqlite3")
                ratios["scale-time"] = r["scale-first"]["seconds"] / r["first"]["seconds"]
                ratios["scale-rss"] = r["scale-first"]["peak_mb"] / r["first"]["peak_mb"]
                ratios["scale-floor-time"] = r["scale-floor"]["seconds"] / r["floor-first"]["seconds"]
        finally:
            emulator.close()

    print("\nratio vs floor, or MB (target):")
    for key, value in ratios.items():
        target = TARGETS.get(key)
        unit = " MB" if key.endswith("_mb") else "x"
        verdict = "" if target is None else ("ok" if value <= target else "MISSED")
        print(f"  {key:16s} {value:7.2f}{unit}  (<= {target}{unit})  {verdict}")
    print(f"\nmachine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at the end")
    (args.workdir / "results.json").write_text(json.dumps({"phases": r, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
