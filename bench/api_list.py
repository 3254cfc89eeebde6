"""Benchmark: ClevertimClient.list() against a bare httpx GET + orjson.loads on a large listing.

Not part of the test suite. Starts the emulator with `--contacts` contacts (default 100,000), then
for each run times the floor (httpx.Client.get with the same auth, orjson.loads of the body) and
the client's list() (the same plus status mapping and envelope validation), and prints the ratio.

    .venv/bin/python bench/api_list.py [--contacts 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

import httpx
import orjson

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorServer

TOKEN = "bench-token"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resource", default="contact")
    args = parser.parse_args()

    started = time.perf_counter()
    server = EmulatorServer(token=TOKEN, contacts=args.contacts, seed=1).start()
    print(f"emulator seeded with {args.contacts} contacts in {time.perf_counter() - started:.1f}s")
    try:
        url = f"{server.base_url}/{args.resource}"
        floors, ours = [], []
        with (
            httpx.Client(auth=(TOKEN, "X"), timeout=300) as bare,
            ClevertimClient(server.base_url, TOKEN, timeout=300) as client,
        ):
            for run in range(args.runs):
                t = time.perf_counter()
                body = bare.get(url).content
                n_floor = len(orjson.loads(body)["content"])
                floors.append(time.perf_counter() - t)
                t = time.perf_counter()
                n_ours = len(client.list(args.resource))
                ours.append(time.perf_counter() - t)
                assert n_floor == n_ours
                print(
                    f"run {run + 1}: {n_ours} records, {len(body) / 1e6:.1f} MB; floor {floors[-1]:.2f}s, "
                    f"list() {ours[-1]:.2f}s, ratio {ours[-1] / floors[-1]:.2f}"
                )
        print(f"best: floor {min(floors):.2f}s, list() {min(ours):.2f}s, ratio {min(ours) / min(floors):.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
