"""Benchmark of the emulator at account size: start-up, the big listing, a write, memory.

    .venv/bin/python bench/emulator.py [--contacts 100000] [--seed 1] [--rounds 3]

The emulator runs in a child process (as `clevertim-sync emulator` would), so the client's JSON
parsing does not compete with the server for one GIL. Prints: start-up time (generate the
account, index it, serialize every record, bind), the time to serve GET /api/contact measured by
an httpx client (total, including the client's JSON parse) and server-side (from the request
log: building the response), the time of a child write that re-serializes its parent, and the
emulator's peak RSS.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from multiprocessing.connection import Connection

import httpx
import orjson

from clevertim_sync.emulator import EmulatorServer

TOKEN = "bench-token"


def _serve(contacts: int, seed: int, conn: Connection) -> None:
    started = time.perf_counter()
    server = EmulatorServer(token=TOKEN, contacts=contacts, seed=seed).start()
    startup = time.perf_counter() - started
    records = sum(server.store.count(r) for r in server.store.blobs)
    rss_idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send(
        {"base_url": server.base_url, "startup_s": startup, "records": records, "rss_idle_mb": rss_idle}
    )
    conn.recv()  # the parent is done
    conn.send({"rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_serve, args=(args.contacts, args.seed, child), daemon=True)
    proc.start()
    info = parent.recv()
    print(
        f"emulator start-up, {args.contacts} contacts ({info['records']} records): {info['startup_s']:.2f} s"
    )

    totals, servers, transfers = [], [], []
    with httpx.Client(base_url=info["base_url"], auth=(TOKEN, "X"), timeout=120) as client:
        for _ in range(args.rounds):
            client.delete(info["base_url"].removesuffix("/api") + "/_control/requests")
            started = time.perf_counter()
            response = client.get("/contact")
            transferred = time.perf_counter() - started
            contacts = orjson.loads(response.content)["content"]
            totals.append(time.perf_counter() - started)
            transfers.append(transferred)
            log = client.get(info["base_url"].removesuffix("/api") + "/_control/requests").json()
            servers.append(log[0]["ms"] / 1000)
        size_mb = len(response.content) / 1e6
        print(
            f"GET /api/contact: {len(contacts)} contacts, {size_mb:.1f} MB: "
            f"total {statistics.median(totals):.3f} s (HTTP transfer {statistics.median(transfers):.3f} s, "
            f"then orjson parse), server-side build {statistics.median(servers) * 1000:.1f} ms "
            f"(median of {args.rounds})"
        )
        # A note on a contact: the write also re-serializes the contact (its back-reference list).
        target = contacts[len(contacts) // 2]["id"]
        started = time.perf_counter()
        for i in range(100):
            client.post("/note", json={"desc": f"bench {i}", "cust": target}).raise_for_status()
        per_write = (time.perf_counter() - started) / 100
        print(f"POST /api/note on a contact (child + parent re-serialized): {per_write * 1000:.2f} ms each")

    parent.send("report")
    peak = parent.recv()
    proc.join(timeout=10)
    print(f"emulator RSS after start-up {info['rss_idle_mb']:.0f} MB, peak {peak['rss_peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
