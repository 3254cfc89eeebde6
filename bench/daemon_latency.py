"""How soon the daemon pushes a queued edit, with the default 30 s push interval.

Runs the real Service (real client, pull, push) in-process against the emulator, into a temporary
SQLite mirror, queues EDITS edits one after another and times each from enqueue to the change
being visible on the (emulated) server. Bounded: about 10-20 s.

    .venv/bin/python bench/daemon_latency.py [EDITS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from clevertim_sync.daemon.service import Service
from clevertim_sync.daemon.wiring import real_backends
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.settings import load
from clevertim_sync.writeback import queue


def main(edits: int) -> None:
    configure_logging("console", "error")
    emulator = EmulatorServer(token="bench", contacts=500, seed=3).start()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'mirror.sqlite3'}"
        config = Path(tmp) / "config.toml"
        config.write_text(
            f'[clevertim]\nurl = "{emulator.base_url}"\ntoken = "bench"\n[database]\nurl = "{db_url}"\n'
            "[pull]\ninterval = 600\njitter = 0\n[push]\ninterval = 30\n"
        )
        first_pull = threading.Event()
        service = Service(
            load(config, env={}),
            real_backends(),
            env={},
            on_outcome=[lambda o: o.job == "pull" and o.ok and first_pull.set()],
        )
        t0 = time.monotonic()
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        assert first_pull.wait(60), "no first pull"
        print(f"start to first pull done: {time.monotonic() - t0:.2f} s (500 contacts)")
        engine = make_engine(db_url)
        ids = [c["id"] for c in emulator.control.state(as_token="bench")["contact"][:edits]]
        latencies = []
        for n, record_id in enumerate(ids):
            title = f"Bench {n}"
            started = time.monotonic()
            queue.enqueue_update(engine, "contact", record_id, {"title": title})
            while emulator.control.record("contact", record_id).get("title") != title:
                time.sleep(0.02)
            latencies.append(time.monotonic() - started)
        service.request_stop()
        thread.join(30)
        engine.dispose()
    emulator.stop()
    print(
        f"enqueue -> on the server, {len(latencies)} edits, push interval 30 s: "
        f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
