"""Benchmark of a pull against the emulator with 100,000 contacts (~220,000 records), in one run.

    scripts/with-postgres .venv/bin/python bench/pull.py [--contacts 100000] [--scale 500000]
        [--small 2000] [--workdir /tmp/clevertim-bench] [--only-first] [--profile]
        [--baseline CHECKOUT [--rounds N]]

Phases, each in a fresh child interpreter so that its peak RSS (VmHWM) is its own; a phase that
runs a command as a subprocess reports that subprocess's peak (sampled every 50 ms) and CPU:

  floor-first     bare httpx GET of every listing, orjson parse, executemany (id, raw) into SQLite
  first           the project's first sync: pull() into a fresh, migrated SQLite mirror
  pg-floor-first  (under scripts/with-postgres) fetch + parse + COPY (id, raw jsonb) into PostgreSQL
  pg-first        the project's first sync into a fresh, migrated PostgreSQL database
  floor-nochange  fetch + parse + record_hash + compare with the mirror's {id: hash} index
  nochange        a sync where nothing changed
  daemon          the real daemon (`clevertim-sync run`, a pull every 30 s) through two pulls, a
                  first and a no-change one: RSS when the first pull starts, peak, idle after
  (1% of the records of every resource are then edited through the emulator's control surface)
  floor-1pct      fetch + parse + hash + compare + executemany (id, raw) of the changed records
  1pct            the sync after 1% changed
  small-floor     (--small N, its own emulator) a floor script as a process: interpreter start-up,
                  httpx/orjson/sqlite3 imports, fetch + parse + store (id, raw); median of three
  small-sync      `clevertim-sync sync` into a new mirror, start-up and migrations included
  small-nochange  the same command again, nothing changed (the everyday case; no target)
  scale-floor, scale-first   (--scale N, its own emulator) floor-first and first at N contacts

It prints each phase (with the load average), then the ratios against their floors and the
targets. The emulator runs in its own process; its serving time is part of both sides of every
ratio. Wall times on a shared machine vary by 10-25% between runs: compare ratios of one run.

With --baseline CHECKOUT (another clone or worktree, with its own .venv: an earlier commit), it
compares the two instead: the first sync (SQLite, and PostgreSQL under scripts/with-postgres), the
no-change sync and the sync after 1% changed, each run four times against the same emulator in the
order this, baseline, baseline, this (so a drift in the machine's load falls on both sides), and
prints this checkout's time over the baseline's (median of the runs of each; wall and CPU).
--rounds N repeats that order N times (2N runs a side): on a shared machine one run in four can be
20% off, and the median of six shrugs that off where the mean of two does not.
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
import statistics
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
SUBPROCESS_PHASES = frozenset({"small-sync", "small-nochange", "small-floor", "daemon"})
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


def _id_type(name: str) -> str:
    """The floor's id column: text for the documents' text ids (`f1001`), else an integer."""
    from clevertim_sync.resources import TEXT_ID_RESOURCES

    return "TEXT" if name in TEXT_ID_RESOURCES else "INTEGER"


def phase_floor_first(url: str, db_path: str, names: list[str] | None = None) -> dict[str, Any]:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    count = 0
    for name, records in _fetch_all(url, names):
        conn.execute(f"CREATE TABLE IF NOT EXISTS t_{name} (id {_id_type(name)} PRIMARY KEY, raw TEXT)")
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
            id_type = "text" if _id_type(name) == "TEXT" else "bigint"
            conn.execute(f"CREATE TABLE t_{name} (id {id_type} PRIMARY KEY, raw jsonb NOT NULL)")
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
    from clevertim_sync import shapes
    from clevertim_sync.pull.diff import record_hash

    out = sqlite3.connect(write_to) if write_to else None
    changed = count = 0
    for name, records in _fetch_all(url):
        index = _mirror_index(db_path, name)
        if _id_type(name) == "TEXT":  # the documents' ids as the mirror spells them (7 is "7")
            records = [shapes.with_text_id(r) for r in records]  # noqa: PLW2901
        dirty = [r for r in records if index.get(r["id"]) != record_hash(r)]
        changed += len(dirty)
        count += len(records)
        if out is not None:
            out.execute(f"CREATE TABLE IF NOT EXISTS t_{name} (id {_id_type(name)} PRIMARY KEY, raw TEXT)")
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
    from clevertim_sync.pull.pipeline import pull

    configure_logging("json", "warning", stream=sys.stderr)
    engine = db.make_engine(_database_url(db_path))
    db.upgrade(engine, revision)  # before timing, as every command does it first
    with ClevertimClient(url, TOKEN, timeout=600) as client:
        t0 = time.perf_counter()
        report = pull(engine, client)
        seconds = time.perf_counter() - t0
    engine.dispose()
    return {"seconds_in_pull": seconds, "ok": report.ok, **report.totals()}


def _env(url: str, db_path: str, **more: str) -> dict[str, str]:
    """The environment of a `clevertim-sync` subprocess: this account, this mirror, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
    env |= {
        "CLEVERTIM_URL": url,
        "CLEVERTIM_TOKEN": TOKEN,
        "CLEVERTIM_SYNC_DATABASE_URL": _database_url(db_path),
        "CLEVERTIM_SYNC_LOG_LEVEL": "warning",
        "CLEVERTIM_SYNC_LOG_FORMAT": "json",
        **more,
    }
    return env


def _rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _pulls_started_and_done(db_path: str) -> tuple[int, int]:
    try:
        with sqlite3.connect(db_path) as conn:
            row = conn.execute("SELECT count(*), count(finished_at) FROM runs WHERE kind = 'pull'").fetchone()
    except sqlite3.Error:  # not created yet, or being migrated
        return 0, 0
    return int(row[0]), int(row[1])


def phase_daemon(url: str, db_path: str) -> dict[str, Any]:
    """The real daemon (`clevertim-sync run`, a pull every 30 s) over two pulls (a first and a
    no-change one): its RSS when the first pull starts (start-up: imports, migrations, the token
    check done), its peak, and its RSS idling 10 s after the second pull."""
    exe = ROOT / ".venv" / "bin" / "clevertim-sync"
    env = _env(url, db_path, CLEVERTIM_SYNC_PULL_INTERVAL="30")
    daemon = subprocess.Popen([str(exe), "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < 1800:
            rss = _rss_mb(daemon.pid)
            if rss is None:
                raise SystemExit(f"the daemon exited: {daemon.stderr.read() if daemon.stderr else ''}")
            started, done = _pulls_started_and_done(db_path)
            if started and "rss_startup_mb" not in out:
                out["rss_startup_mb"] = rss
            if done >= 2:
                break
            time.sleep(0.05)
        out["seconds_to_two_pulls"] = round(time.perf_counter() - t0, 1)
        time.sleep(10)
        out["rss_idle_mb"] = _rss_mb(daemon.pid)
        out["rss_peak_mb"] = _rss_mb(daemon.pid, "VmHWM")
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
    return out


def phase_small_sync(url: str, db_path: str) -> dict[str, Any]:
    """`clevertim-sync sync` as its own process: start-up, migrations and pull."""
    exe = ROOT / ".venv" / "bin" / "clevertim-sync"
    t0 = time.perf_counter()
    subprocess.run([str(exe), "sync"], check=True, env=_env(url, db_path), capture_output=True, timeout=600)
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
    import clevertim_sync.pull.diff  # noqa: F401  the floors hash with it too

    children = ChildrenPeak()
    t0, cpu0, child_cpu0 = time.perf_counter(), time.process_time(), _children_cpu()
    if args.phase == "floor-first":
        result = phase_floor_first(args.url, args.db)
    elif args.phase == "pg-floor-first":
        result = phase_pg_floor_first(args.url, args.db)
    elif args.phase == "daemon":
        result = phase_daemon(args.url, args.db)
    elif args.phase in ("small-sync", "small-nochange"):
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
    # CPU: this process (all its threads) and the child processes it waited for.
    result["cpu_seconds"] = round(time.process_time() - cpu0 + _children_cpu() - child_cpu0, 2)
    result["max_rss_mb"] = peak_rss_mb()
    result["children_max_rss_mb"] = children.stop()
    # Peak RSS of the phase: a phase that runs the command as a subprocess (`sync`, `run`, the
    # small floor script) is that subprocess; any other, this process and its children.
    if args.phase in SUBPROCESS_PHASES:
        result["peak_mb"] = result["children_max_rss_mb"]
    else:
        result["peak_mb"] = round(result["max_rss_mb"] + result["children_max_rss_mb"], 1)
    result["load"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    """The largest peak RSS (VmHWM) of this process's child processes (a `sync` or `run`
    subprocess, the small floor's script), sampled every 50 ms on a thread: they have exited by the
    time the phase reports."""

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
    phase: str,
    url: str,
    db_path: Path | str,
    write_to: Path | None = None,
    profile: Path | None = None,
    checkout: Path = ROOT,
) -> dict[str, Any]:
    """Run `phase` in a child interpreter of `checkout` (its own .venv and bench/pull.py)."""
    python = sys.executable if checkout == ROOT else str(checkout / ".venv" / "bin" / "python")
    script = __file__ if checkout == ROOT else str(checkout / "bench" / "pull.py")
    cmd = [python, script, "--phase", phase, "--url", url, "--db", str(db_path)]
    if write_to is not None:
        cmd += ["--write-to", str(write_to)]
    if profile is not None:
        cmd += ["--profile-to", str(profile)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    side = "" if checkout == ROOT else " (baseline)"
    print(
        f"  {phase + side:15s} {result['seconds']:8.2f} s wall {result['cpu_seconds']:7.2f} s cpu"
        f"  peak RSS {result['peak_mb']:7.1f} MB  load {result['load']:.2f}  {result}",
        flush=True,
    )
    return result


# This checkout, the baseline, the baseline, this checkout: a load that drifts during the run
# weighs on both sides alike.
ABBA = ("this", "baseline", "baseline", "this")


def compare_with(
    baseline: Path, url: str, control: Any, work: Path, pg_url: str | None, rounds: int = 1
) -> None:
    """The syncs of this checkout against the same syncs of `baseline`, interleaved (ABBA, `rounds`
    times)."""
    checkouts = {"this": ROOT, "baseline": baseline}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    order = list(enumerate(ABBA * rounds))

    def run(phase: str, db_of: Any) -> None:
        for i, side in order:
            result = child(phase, url, db_of(i, side), checkout=checkouts[side])
            runs.setdefault(phase, {}).setdefault(side, []).append(result)

    run("first", lambda i, side: work / f"{side}-first{i}.sqlite3")
    if pg_url:
        run("pg-first", lambda i, side: _pg_database(pg_url, f"bench_{side}_{i}"))
    # Each side's mirror is the first one it made (run 0 for this checkout, 1 for the baseline).
    mirror = {"this": work / "this-first0.sqlite3", "baseline": work / "baseline-first1.sqlite3"}
    run("nochange", lambda _i, side: mirror[side])
    edited = change_one_percent(control, seed=7)
    print(f"edited {edited} records through the control surface")
    for i, side in order:  # each 1% sync on its own copy: every run sees the same change
        shutil.copy(mirror[side], work / f"{side}-1pct{i}.sqlite3")
    run("1pct", lambda i, side: work / f"{side}-1pct{i}.sqlite3")

    print(f"\nthis checkout ({_commit(ROOT)})")
    print(f"over the baseline ({_commit(baseline)}), median of {2 * rounds} runs each:")
    for phase, sides in runs.items():
        parts = []
        for measure in ("seconds", "cpu_seconds", "peak_mb"):
            this = statistics.median(r[measure] for r in sides["this"])
            base = statistics.median(r[measure] for r in sides["baseline"])
            parts.append(f"{measure} {this:7.2f} / {base:7.2f} = {this / base:5.2f}x")
        # Each run over its neighbour of the other side (ABBA pairs them): a drift cancels out.
        paired = [
            t["cpu_seconds"] / b["cpu_seconds"] for t, b in zip(sides["this"], sides["baseline"], strict=True)
        ]
        spread = f"{min(paired):.2f}x to {max(paired):.2f}x"
        parts.append(f"cpu, run by run: median {statistics.median(paired):.2f}x ({spread})")
        print(f"  {phase:10s} " + "   ".join(parts))
    print(f"\nmachine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at the end")
    (work / "compare.json").write_text(json.dumps(runs, indent=1))


def _commit(checkout: Path) -> str:
    cmd = ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    return f"{checkout}: {done.stdout.strip()[:60]}"


def median_of(runs: int, phase: str, url: str, make_db: Any) -> dict[str, Any]:
    """The run with the median wall time of `runs` runs of `phase` (each on a new database)."""
    results = sorted((child(phase, url, make_db(i)) for i in range(runs)), key=lambda r: r["seconds"])
    return results[len(results) // 2]


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
    parser.add_argument(
        "--scale", type=int, default=500_000, help="a first sync at this many contacts (0: none)"
    )
    parser.add_argument(
        "--small", type=int, default=2_000, help="CLI syncs of an account this small (0: none)"
    )
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
    parser.add_argument(
        "--baseline", type=Path, help="compare with this checkout (its own .venv): first, no-change, 1%%"
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: the ABBA order N times")
    parser.add_argument("--only-first", action="store_true", help="stop after the first syncs (quick look)")
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return

    from clevertim_sync.emulator.control import EmulatorControl

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    work = args.workdir
    pg_url = os.environ.get("CLEVERTIM_SYNC_TEST_PG_URL")
    r: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float] = {}
    emulator = Emulator(args.contacts)
    url = emulator.url
    try:
        control = EmulatorControl(url)
        counts = {k: len(v) for k, v in control.state().items()}
        print(f"account: {sum(counts.values())} records {counts}")
        if args.baseline is not None:
            compare_with(args.baseline.resolve(), url, control, work, pg_url, args.rounds)
            return
        mirror = work / "mirror.sqlite3"
        r["floor-first"] = child("floor-first", url, work / "floor.sqlite3")
        r["first"] = child("first", url, mirror)
        ratios["first"] = r["first"]["seconds"] / r["floor-first"]["seconds"]
        ratios["first-rss_mb"] = r["first"]["peak_mb"]
        if args.profile:
            prof = work / "first.prof.txt"
            child("first", url, work / "mirror-profiled.sqlite3", profile=prof)
            print(f"  profile of a first sync: {prof}")
        if pg_url:
            r["pg-floor-first"] = child("pg-floor-first", url, _pg_database(pg_url, "bench_floor"))
            r["pg-first"] = child("pg-first", url, _pg_database(pg_url, "bench_first"))
            ratios["pg-first"] = r["pg-first"]["seconds"] / r["pg-floor-first"]["seconds"]
            ratios["pg-first-rss_mb"] = r["pg-first"]["peak_mb"]
        else:
            print("  (no PostgreSQL: run under scripts/with-postgres for the PostgreSQL phases)")
        if not args.only_first:
            r["floor-nochange"] = child("floor-nochange", url, mirror)
            r["nochange"] = child("nochange", url, mirror)
            ratios["nochange"] = r["nochange"]["seconds"] / r["floor-nochange"]["seconds"]
            r["daemon"] = child("daemon", url, work / "daemon.sqlite3")
            ratios["daemon-idle_mb"] = r["daemon"]["rss_idle_mb"]
            ratios["daemon-idle-vs-startup"] = r["daemon"]["rss_idle_mb"] / r["daemon"]["rss_startup_mb"]
            t1 = time.perf_counter()
            edited = change_one_percent(control, seed=7)
            print(f"edited {edited} records through the control surface in {time.perf_counter() - t1:.1f} s")
            r["floor-1pct"] = child("floor-1pct", url, mirror, write_to=work / "floor-1pct.sqlite3")
            r["1pct"] = child("1pct", url, mirror)
            ratios["1pct"] = r["1pct"]["seconds"] / r["floor-1pct"]["seconds"]
        control.close()
    finally:
        emulator.close()

    if args.small and not args.only_first:
        emulator = Emulator(args.small)
        try:
            # A second or so each: the median of three.
            r["small-floor"] = median_of(
                3, "small-floor", emulator.url, lambda i: work / f"small-floor{i}.sqlite3"
            )
            r["small-sync"] = median_of(3, "small-sync", emulator.url, lambda i: work / f"small{i}.sqlite3")
            ratios["small"] = r["small-sync"]["seconds"] / r["small-floor"]["seconds"]
            # The everyday case: the same command when nothing changed (informative, no target).
            r["small-nochange"] = median_of(
                3, "small-nochange", emulator.url, lambda _i: work / "small0.sqlite3"
            )
        finally:
            emulator.close()
    if args.scale and not args.only_first:
        emulator = Emulator(args.scale)
        try:
            r["scale-floor"] = child("floor-first", emulator.url, work / "scale-floor.sqlite3")
            r["scale-first"] = child("first", emulator.url, work / "scale.sqlite3")
            ratios["scale-time"] = r["scale-first"]["seconds"] / r["first"]["seconds"]
            ratios["scale-rss"] = r["scale-first"]["peak_mb"] / r["first"]["peak_mb"]
            ratios["scale-vs-floor"] = r["scale-first"]["seconds"] / r["scale-floor"]["seconds"]
        finally:
            emulator.close()

    print("\nratio vs floor, or MB (target):")
    for key, value in ratios.items():
        target = TARGETS.get(key)
        unit = " MB" if key.endswith("_mb") else "x"
        verdict = "" if target is None else ("ok" if value <= target else "MISSED")
        bound = "" if target is None else f"(<= {target}{unit})"
        print(f"  {key:24s} {value:7.2f}{unit}  {bound}  {verdict}")
    print(f"\nmachine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at the end")
    (work / "results.json").write_text(json.dumps({"phases": r, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
