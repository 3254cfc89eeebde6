"""Benchmark: push() of queued updates and creates against the emulator with added latency, and
the floor: a bare httpx loop sending the same requests at the same concurrency.

Not part of the test suite. The emulator runs in its own process (so its request handling does
not share this process's GIL), with a `latency` fault on every API request. Our side: a fresh
mirror (SQLite file by default, or --db URL) is pulled, then `--updates` updates (one per contact,
so each is a GET + PUT) and `--creates` creates (a POST each) are queued, and push() drains them
with `push.concurrency = --concurrency`. The floor: the emulator is reset, then the same
GET+PUT / POST requests go out from a ThreadPoolExecutor of the same size over one httpx.Client.

    .venv/bin/python bench/push.py [--updates 2000] [--creates 500] [--concurrency 8]
                                   [--latency-ms 20] [--db sqlite:///x.sqlite3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import pstats
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorControl, EmulatorServer
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import PushSettings, Settings
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.worker import push

TOKEN = "bench-token"


def _serve(port: int, contacts: int) -> None:
    EmulatorServer(token=TOKEN, contacts=contacts, seed=1, port=port).serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(control: EmulatorControl) -> None:
    for _ in range(600):
        try:
            control.faults()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit("the emulator did not start")


def _targets(control: EmulatorControl, n: int) -> list[int]:
    ids = sorted(r["id"] for r in control.state(as_token=TOKEN)["contact"])
    if len(ids) < n:
        raise SystemExit(f"the emulator has {len(ids)} contacts, fewer than --updates {n}")
    return ids[:n]


def run_push(args: argparse.Namespace, base: str, control: EmulatorControl, db_url: str) -> float:
    engine = make_engine(db_url)
    upgrade(engine)
    settings = Settings(push=PushSettings(concurrency=args.concurrency))
    with ClevertimClient(base, TOKEN, timeout=60) as client:
        assert pull(engine, client).ok
        with engine.begin() as conn:
            for i, rid in enumerate(_targets(control, args.updates)):
                queue.enqueue_update(conn, "contact", rid, {"title": f"bench {i}"})
            for i in range(args.creates):
                queue.enqueue_create(conn, "contact", {"fn": f"Bench{i}", "ln": "Create"})
        control.add_fault(method="*", path=".*", kind="latency", latency_ms=args.latency_ms, times=None)
        # --profile: the push loop's own thread (claims, recording, the fold); the worker threads
        # only do HTTP, whose cost the floor measures.
        profiler = cProfile.Profile() if args.profile else None
        t, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        report = push(engine, client, settings)
        if profiler is not None:
            profiler.disable()
        elapsed = time.perf_counter() - t
        args.push_cpu = time.process_time() - cpu
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(args.profile_sort).print_stats(
                args.profile_filter, 30
            )
    control.clear_faults()
    engine.dispose()
    expected = args.updates + args.creates
    if report.done != expected:
        raise SystemExit(f"push finished {report.done} of {expected} items: {report.as_dict()}")
    return elapsed


def run_floor(args: argparse.Namespace, base: str, control: EmulatorControl) -> float:
    control.reset(contacts=args.contacts, seed=1)
    targets = _targets(control, args.updates)
    control.add_fault(method="*", path=".*", kind="latency", latency_ms=args.latency_ms, times=None)
    limits = httpx.Limits(
        max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2
    )
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    with httpx.Client(auth=(TOKEN, "X"), timeout=60, limits=limits, headers=headers) as http:

        def update(job: tuple[int, int]) -> None:
            i, rid = job
            http.get(f"{base}/contact/{rid}").raise_for_status()
            body = orjson.dumps({"title": f"bench {i}"})
            http.put(f"{base}/contact/{rid}", content=body).raise_for_status()

        def create(i: int) -> None:
            body = orjson.dumps({"fn": f"Bench{i}", "ln": "Create"})
            http.post(f"{base}/contact", content=body).raise_for_status()

        t, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(update, enumerate(targets)))
            list(pool.map(create, range(args.creates)))
        elapsed = time.perf_counter() - t
        args.floor_cpu = time.process_time() - cpu
    control.clear_faults()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--creates", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="cProfile of the push loop, to stderr")
    parser.add_argument("--profile-sort", default="tottime", help="pstats sort key (e.g. cumulative)")
    parser.add_argument("--profile-filter", default="", help="only functions whose path matches")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument(
        "--db", default=None, help="SQLAlchemy URL of the mirror (default: a temp SQLite file)"
    )
    args = parser.parse_args()
    configure_logging("json", "warning")  # per-request debug lines would be measured too
    args.contacts = args.updates * 11 // 10 + 50  # some contacts are private to other users

    port = _free_port()
    proc = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, args.contacts), daemon=True
    )
    proc.start()
    control = EmulatorControl(f"http://127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}/api"
    try:
        _wait_up(control)
        with tempfile.TemporaryDirectory() as tmp:
            db_url = args.db or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            ours = run_push(args, base, control, db_url)
        floor = run_floor(args, base, control)
    finally:
        control.close()
        proc.terminate()
        proc.join(5)
    items = args.updates + args.creates
    print(
        f"{args.updates} updates + {args.creates} creates, concurrency {args.concurrency}, "
        f"{args.latency_ms} ms latency per request"
    )
    for name, wall, cpu in (("push():", ours, args.push_cpu), ("bare httpx:", floor, args.floor_cpu)):
        print(f"{name:<11} {wall:6.2f}s  {items / wall:7.1f} items/s  ({cpu / items * 1000:.1f} ms CPU/item)")
    print(f"ratio (push / floor throughput): {floor / ours:.2f}x")


if __name__ == "__main__":
    main()
