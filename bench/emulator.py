"""Benchmark of the emulator at account size: start-up, the big listing, a write, memory.

    .venv/bin/python bench/emulator.py [--contacts 100000] [--seed 1] [--rounds 3]

The emulator runs in a child process (as `clevertim-sync emulator` would), so the client's JSON
parsing does not compete with the server for one GIL. Prints: start-up time (generate the
account, index it, serialize every record, bind), the time to serve GET /api/contact measured by
an httpx client (total, split into the HTTP exchange and the client's JSON parse) and
server-side (wall time to the last byte, and the handler thread's CPU time from the request
log), the time of a child write that re-serializes its parent, and the emulator's peak RSS.
CPU times are printed beside wall times because the machine is shared: a loaded machine
inflates wall time, much less CPU time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
from multiprocessing.connection import Connection

import httpx
import orjson

from clevertim_sync.emulator import EmulatorServer

TOKEN = "bench-token"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _calibrate() -> float:
    """CPU seconds for a 10^7-step Python loop: ~0.4-0.6 s on an idle modern core. Divide the
    numbers below by (this / 0.5) to compare runs on machines of different speed or load."""
    cpu, total = time.process_time(), 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - cpu


def _serve(contacts: int, seed: int, conn: Connection) -> None:
    started, cpu = time.perf_counter(), time.process_time()
    server = EmulatorServer(token=TOKEN, contacts=contacts, seed=seed).start()
    info = {
        "base_url": server.base_url,
        "startup_s": time.perf_counter() - started,
        "startup_cpu_s": time.process_time() - cpu,
        "records": sum(server.store.count(r) for r in server.store.blobs),
        "rss_idle_mb": _rss_mb(),
    }
    conn.send(info)
    conn.recv()  # the parent is done
    conn.send({"rss_peak_mb": _rss_mb()})
    server.stop()


def _bench_listing(client: httpx.Client, control: str, rounds: int) -> None:
    totals, transfers, parses, walls, cpus = [], [], [], [], []
    contacts: list[dict[str, object]] = []
    size = 0
    for _ in range(rounds):
        client.delete(f"{control}/requests")
        started = time.perf_counter()
        response = client.get("/contact")
        transfers.append(time.perf_counter() - started)
        cpu = time.process_time()
        contacts = orjson.loads(response.content)["content"]
        parses.append(time.process_time() - cpu)
        totals.append(time.perf_counter() - started)
        size = len(response.content)
        entry = client.get(f"{control}/requests").json()[0]
        walls.append(entry["ms"])
        cpus.append(entry["cpu_ms"])
    med = statistics.median
    print(
        f"GET /api/contact, {len(contacts)} contacts, {size / 1e6:.1f} MB (median of {rounds}): "
        f"client total {med(totals):.3f} s = HTTP {med(transfers):.3f} s + orjson parse "
        f"({med(parses):.3f} s CPU); server {med(walls):.0f} ms wall to the last byte, "
        f"{med(cpus):.0f} ms CPU"
    )


def _bench_writes(client: httpx.Client, n: int = 100) -> None:
    # A note on a contact: the write also re-serializes the contact (its back-reference list).
    target = client.get("/contact").json()["content"][0]["id"]
    started = time.perf_counter()
    for i in range(n):
        client.post("/note", json={"desc": f"bench {i}", "cust": target}).raise_for_status()
    each_ms = (time.perf_counter() - started) / n * 1000
    print(f"POST /api/note on a contact (child + parent re-serialized): {each_ms:.2f} ms each")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"load average at start: {load} on {os.cpu_count()} cores; calibration loop {_calibrate():.2f} s CPU"
    )
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_serve, args=(args.contacts, args.seed, child), daemon=True)
    proc.start()
    info = parent.recv()
    print(
        f"emulator start-up, {args.contacts} contacts ({info['records']} records): "
        f"{info['startup_s']:.2f} s wall, {info['startup_cpu_s']:.2f} s CPU"
    )
    control = info["base_url"].removesuffix("/api") + "/_control"
    with httpx.Client(base_url=info["base_url"], auth=(TOKEN, "X"), timeout=120, verify=False) as client:
        _bench_listing(client, control, args.rounds)
        _bench_writes(client)
    parent.send("report")
    peak = parent.recv()
    proc.join(timeout=10)
    print(f"emulator RSS after start-up {info['rss_idle_mb']:.0f} MB, peak {peak['rss_peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
