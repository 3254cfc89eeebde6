"""A caller's stop signal (the daemon's `stopping` event) in push() and pull(), in-process against
the emulator over loopback, on SQLite and PostgreSQL. The daemon end to end (SIGTERM in a
subprocess) is in test_daemon_process.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from conftest import wait_for
from sqlalchemy.engine import Engine

from clevertim_sync import resources as registry
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.mirror import schema
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import PushSettings, Settings
from clevertim_sync.writeback import queue
from clevertim_sync.writeback import tables as wb
from clevertim_sync.writeback.worker import push

TOKEN = "test-token"


def test_push_stops_sending_when_asked_and_leaves_nothing_in_flight(
    emulator: Any, mirror_engine: Engine, api_client: ClevertimClient
) -> None:
    assert pull(mirror_engine, api_client).ok
    emulator.control.add_fault(method="POST", path="^/contact$", kind="latency", latency_ms=150)
    items = [queue.enqueue_create(mirror_engine, "contact", {"fn": f"S{i}", "ln": "Stop"}) for i in range(24)]
    stop = threading.Event()

    def stop_mid_push() -> None:  # once two answers are on their way: by events, not a timer
        wait_for(lambda: sum(r["method"] == "POST" for r in emulator.control.requests()) >= 2, "2 POSTs", 30)
        stop.set()

    timer = threading.Thread(target=stop_mid_push)
    timer.start()
    report = push(mirror_engine, api_client, Settings(push=PushSettings(concurrency=2)), stop=stop)
    timer.join()
    assert report.stopped is not None and "stop requested" in report.stopped
    posts = [r for r in emulator.control.requests() if r["method"] == "POST"]
    assert 0 < report.done == len(posts) < len(items)  # every request sent has its outcome recorded
    q = wb.writeback_queue
    with mirror_engine.connect() as conn:
        rows = conn.execute(sa.select(q.c.state, q.c.attempts, q.c.claimed_by)).all()
    assert sorted({r.state for r in rows}) == ["done", "pending"]
    assert all(r.attempts == 0 and r.claimed_by is None for r in rows)  # no attempt spent, no claim left
    # The next push sends the rest, each once.
    assert (
        push(mirror_engine, api_client, Settings(push=PushSettings(concurrency=4))).done
        == len(items) - report.done
    )
    posts = [r for r in emulator.control.requests() if r["method"] == "POST"]
    assert len(posts) == len(items)


def test_pull_stops_between_resources_and_records_the_run_as_stopped(
    emulator: Any, mirror_engine: Engine, api_client: ClevertimClient
) -> None:
    stop = threading.Event()
    order = [r.name for r in registry.RESOURCES]

    def progress(name: str, counts: Any) -> None:
        if counts is not None and name == order[1]:
            stop.set()  # as if SIGTERM arrived while the second resource was being written

    report = pull(mirror_engine, api_client, progress=progress, stop=stop)
    assert report.stopped and report.status == "stopped"
    assert list(report.resources) == order[:2]  # both applied whole, the rest not started
    with mirror_engine.connect() as conn:
        run = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == report.run_id)).one()
        pulled = {r for (r,) in conn.execute(sa.select(schema.resource_status.c.resource))}
        n_contacts = conn.execute(sa.select(sa.func.count()).select_from(schema.CURRENT["contact"])).scalar()
    assert run.status == "stopped" and run.finished_at is not None and run.error is None
    assert pulled == set(order[:2])
    if "contact" in order[:2]:
        assert n_contacts == len(emulator.control.state()["contact"])
    # The next pull takes every resource, the first two with nothing new.
    again = pull(mirror_engine, api_client)
    assert again.ok and list(again.resources) == order
    assert again.resources[order[0]].inserted == 0


def test_a_stop_during_an_outage_does_not_wait_out_the_prefetched_listings_retries(
    emulator: Any, mirror_engine: Engine
) -> None:
    class Top:  # the top of the jitter range: each wait is the full backoff
        def uniform(self, a: float, b: float) -> float:
            return b

    order = [r.name for r in registry.RESOURCES]
    emulator.control.add_fault(method="GET", path=f"^/{order[2]}$", kind="status", status=503, times=None)
    stop = threading.Event()

    def progress(name: str, counts: Any) -> None:
        if counts is not None and name == order[1]:
            stop.set()  # SIGTERM while the next listing is being retried in the background

    with ClevertimClient(emulator.base_url, TOKEN, stop=stop, rng=Top(), backoff_base=20.0) as client:
        started = time.monotonic()
        report = pull(mirror_engine, client, progress=progress, stop=stop)
    assert time.monotonic() - started < 15  # not 20 s + 40 s + ... of backoff
    assert report.status == "stopped" and list(report.resources) == order[:2]
