"""The daemon as systemd runs it: `clevertim-sync run` in a subprocess, against the emulator over
loopback, with a test NOTIFY_SOCKET. Intervals are a second or two so each test takes seconds."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import wait_for
from support import free_port
from support.daemon import Daemon, config

from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.writeback import queue
from clevertim_sync.writeback import tables as wb

TOKEN = "test-token"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(name: str, cfg: str, *args: str) -> Daemon:
        d = Daemon(tmp_path, name, cfg, args=args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def _contacts(engine: sa.Engine) -> dict[int, dict[str, Any]]:
    table = schema.CURRENT["contact"]
    with engine.connect() as conn:
        return {row.id: json.loads(row.raw) for row in conn.execute(sa.select(table.c.id, table.c.raw))}


def test_ready_watchdog_pull_push_twin_refused_reload_then_sigterm_exits_0(
    emulator: EmulatorServer, database_url: str, daemons: Callable[..., Daemon]
) -> None:
    d = daemons("a", config(emulator.base_url, database_url))
    d.ready()
    engine = make_engine(database_url)
    mirrored = wait_for(lambda: _contacts(engine), what="the first pull")
    # A remote edit is pulled on schedule...
    some_id = sorted(mirrored)[0]
    emulator.control.update("contact", some_id, {"title": "Remote Title"})
    wait_for(lambda: _contacts(engine)[some_id].get("title") == "Remote Title", what="the remote edit")
    # ...and a queued edit is pushed on schedule.
    other_id = sorted(mirrored)[1]
    queue.enqueue_update(engine, "contact", other_id, {"title": "Local Title"})
    wait_for(
        lambda: emulator.control.record("contact", other_id).get("title") == "Local Title", what="the push"
    )
    # A twin on the same database is refused (a lock file for SQLite, an advisory lock on PostgreSQL).
    twin = daemons("twin", config(emulator.base_url, database_url, pull=60))
    # Generous: on a loaded machine the twin's interpreter start alone can take seconds.
    assert twin.wait(timeout=90) == 1
    assert "already runs against this mirror" in twin.output()
    assert "READY=1" not in twin.notify.lines()
    assert d.proc.poll() is None
    assert d.notify.count("WATCHDOG=1") >= 2  # every 0.5 s, from the scheduler's heartbeat and jobs
    assert any(line.startswith("STATUS=") and "pull ok" in line for line in d.notify.lines())
    # SIGHUP re-reads the configuration: the pull interval of 2 s becomes 600 s.
    d.config.write_text(d.config.read_text().replace("interval = 2\n", "interval = 600\n"))
    d.signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "daemon.reloaded" for e in d.events()), what="the reload")
    assert [e["pull_interval"] for e in d.events() if e["event"] == "daemon.scheduled"] == [2.0, 600.0]
    d.signal(signal.SIGTERM)
    assert d.wait() == 0, d.output()
    assert "STOPPING=1" in d.notify.lines()
    events = {e["event"] for e in d.events()}
    assert {"daemon.ready", "job.finished", "daemon.stopped"} <= events
    assert TOKEN not in d.output()
    engine.dispose()


def test_sigterm_in_the_middle_of_a_pull_exits_0_and_leaves_the_database_consistent(
    emulator: EmulatorServer, sqlite_url: str, daemons: Callable[..., Daemon]
) -> None:
    emulator.control.add_fault(method="GET", path="^/contact$", kind="latency", latency_ms=1500, times=None)
    d = daemons("a", config(emulator.base_url, sqlite_url, pull=60))
    d.ready()
    wait_for(
        lambda: (
            any(r["path"].endswith("/contact") for r in emulator.control.requests())
            or any(
                e["event"] == "pull.resource_finished" and e.get("resource") == "company" for e in d.events()
            )
        ),
        what="the pull to reach contacts",
    )
    time.sleep(0.3)  # inside the slow GET /contact
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait() == 0, d.output()
    assert time.monotonic() - started < 10
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA integrity_check")).scalar_one() == "ok"
        running = conn.execute(
            sa.select(sa.func.count()).where(schema.runs.c.status == "running")
        ).scalar_one()
        assert running == 0
        status = {r.resource: r for r in conn.execute(sa.select(schema.resource_status))}
        # Contacts were either applied whole or not at all; later resources were never started.
        n_contacts = conn.execute(
            sa.select(sa.func.count()).select_from(schema.CURRENT["contact"])
        ).scalar_one()
        assert n_contacts in (0, len(emulator.control.state(as_token=TOKEN)["contact"]))
        assert "note" not in status and "comment" not in status
    engine.dispose()


def test_sigkill_in_the_middle_of_a_push_then_restart_completes_the_queue_without_duplicates(
    emulator: EmulatorServer, sqlite_url: str, daemons: Callable[..., Daemon]
) -> None:
    first = daemons("first", config(emulator.base_url, sqlite_url, pull=60, push=1))
    first.ready()
    engine = make_engine(sqlite_url)
    wait_for(lambda: _contacts(engine), what="the first pull")
    emulator.control.add_fault(method="POST", path="^/contact$", kind="latency", latency_ms=1500, times=1)
    item = queue.enqueue_create(engine, "contact", {"fn": "Killed", "ln": "Mid-Push"})
    q = wb.writeback_queue

    def state() -> str:
        with engine.connect() as conn:
            return str(conn.execute(sa.select(q.c.state).where(q.c.id == item.id)).scalar_one())

    wait_for(lambda: state() == "in_flight", what="the push to claim the create")
    time.sleep(0.3)  # the POST is on the wire, held by the emulator's latency
    first.proc.kill()
    first.wait()
    time.sleep(1.5)  # the emulator completes the POST after its latency: the outcome is unknown to us
    second = daemons("second", config(emulator.base_url, sqlite_url, pull=60, push=1))
    second.ready()
    wait_for(lambda: state() == "done", timeout=20, what="the queue item to complete")
    created = [c for c in emulator.control.state()["contact"] if c.get("ln") == "Mid-Push"]
    assert len(created) == 1, created
    posts = [r for r in emulator.control.requests() if r["method"] == "POST"]
    assert len(posts) == 1, posts  # reconciled, never re-sent
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.output()
    engine.dispose()


def test_a_rejected_token_exits_1_before_ready(
    emulator: EmulatorServer, sqlite_url: str, daemons: Callable[..., Daemon]
) -> None:
    d = daemons(
        "a", config(emulator.base_url, sqlite_url).replace(f'token = "{TOKEN}"', 'token = "wrong-token"')
    )
    assert d.wait() == 1
    assert "READY=1" not in d.notify.lines()
    assert "wrong-token" not in d.output()


def test_healthz_turns_503_when_the_api_is_unreachable_and_200_after(
    emulator: EmulatorServer, sqlite_url: str, daemons: Callable[..., Daemon]
) -> None:
    port = free_port()
    d = daemons("a", config(emulator.base_url, sqlite_url, pull=1, health=port))
    d.ready()
    url = f"http://127.0.0.1:{port}"

    def status() -> int:
        return httpx.get(url + "/healthz", timeout=5).status_code

    wait_for(lambda: status() == 200, what="healthy")
    metrics = httpx.get(url + "/metrics", timeout=5).text
    assert 'clevertim_sync_pull_duration_seconds_count{account="default",resource="contact"}' in metrics
    assert (
        'clevertim_sync_records_changed_total{account="default",op="inserted",resource="contact"}' in metrics
    )
    assert 'clevertim_sync_last_success_timestamp_seconds{account="default",resource="note"}' in metrics
    emulator.control.add_fault(method="*", path=".*", kind="reset", times=None)
    wait_for(lambda: status() == 503, what="unhealthy")
    body = httpx.get(url + "/healthz", timeout=5).json()
    assert body["status"] == "unhealthy" and any("failed" in r for r in body["reasons"]), body
    metrics = httpx.get(url + "/metrics", timeout=5).text
    assert "clevertim_sync_consecutive_failures" in metrics and "clevertim_sync_queue_depth" in metrics
    emulator.control.clear_faults()
    wait_for(lambda: status() == 200, timeout=20, what="healthy again")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


@pytest.mark.postgres
def test_the_standby_takes_over_when_the_active_daemon_dies(
    emulator: EmulatorServer, postgres_url: str, daemons: Callable[..., Daemon]
) -> None:
    active = daemons("active", config(emulator.base_url, postgres_url, pull=60))
    active.ready()
    standby = daemons("standby", config(emulator.base_url, postgres_url, pull=60), "--standby")
    # To systemd the standby is started (READY=1, STATUS says it waits) and alive (watchdog pings).
    standby.ready()
    assert "STATUS=standby: waiting for the active daemon to stop" in standby.notify.lines()
    pings = standby.notify.count("WATCHDOG=1")
    wait_for(lambda: standby.notify.count("WATCHDOG=1") > pings, "a watchdog ping from the standby", 30)
    assert not any(e["event"] == "daemon.ready" for e in standby.events())
    assert standby.proc.poll() is None
    active.proc.kill()
    active.wait()
    wait_for(lambda: any(e["event"] == "daemon.ready" for e in standby.events()), "the takeover", 30)
    assert standby.notify.count("READY=1") == 2
    assert any(line.startswith("STATUS=running") for line in standby.notify.lines())
    standby.signal(signal.SIGTERM)
    assert standby.wait() == 0


def test_sigterm_during_a_long_push_exits_promptly_and_a_restart_finishes_without_duplicates(
    emulator: EmulatorServer, database_url: str, daemons: Callable[..., Daemon]
) -> None:
    first = daemons("first", config(emulator.base_url, database_url, pull=60, push=1))
    first.ready()
    engine = make_engine(database_url)
    wait_for(lambda: _contacts(engine), what="the first pull")
    # Every create takes 0.6 s at the server: 40 of them, 4 at a time, make a push of ~6 s.
    emulator.control.add_fault(method="POST", path="^/contact$", kind="latency", latency_ms=600)
    items = [queue.enqueue_create(engine, "contact", {"fn": f"Stop{i}", "ln": "Sigterm"}) for i in range(40)]
    q = wb.writeback_queue

    def states() -> dict[int, tuple[str, int]]:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(q.c.id, q.c.state, q.c.attempts).where(q.c.id >= items[0].id))
            return {r.id: (r.state, r.attempts) for r in rows}

    wait_for(lambda: sum(s == "done" for s, _ in states().values()) >= 4, what="the push under way")
    first.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert first.wait(10) == 0, first.output()
    assert time.monotonic() - t0 < 4, "the stop waited for the whole queue"
    after_stop = states()
    # Every request that went out has its outcome; nothing is left claimed, no attempt was spent.
    assert {s for s, _ in after_stop.values()} <= {"done", "pending"}, after_stop
    assert all(a == 0 for _, a in after_stop.values()), after_stop
    assert any(s == "pending" for s, _ in after_stop.values()), "the push was not cut short"
    assert any(e.get("event") == "push.finished" and e.get("stopped") for e in first.events())

    second = daemons("second", config(emulator.base_url, database_url, pull=60, push=1))
    second.ready()
    wait_for(lambda: all(s == "done" for s, _ in states().values()), timeout=30, what="the rest of the queue")
    created = [c for c in emulator.control.state()["contact"] if c.get("ln") == "Sigterm"]
    assert sorted(c["fn"] for c in created) == sorted(f"Stop{i}" for i in range(40))
    posts = [r for r in emulator.control.requests() if r["method"] == "POST"]
    assert len(posts) == 40, len(posts)  # each create sent exactly once across the two daemons
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.output()
    engine.dispose()


def test_sigterm_during_a_pull_stops_between_resources_and_records_the_run_stopped(
    emulator: EmulatorServer, sqlite_url: str, daemons: Callable[..., Daemon]
) -> None:
    # Every listing takes 1 s: a whole pull takes 13 s or more, a stop (one listing in flight and
    # the shutdown, on a loaded machine) well under half of that.
    emulator.control.add_fault(method="GET", path="^/[a-z]+$", kind="latency", latency_ms=1000)
    d = daemons("a", config(emulator.base_url, sqlite_url, pull=60))
    d.ready()
    engine = make_engine(sqlite_url)

    def pulled() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(schema.resource_status)).scalar_one()
            )

    wait_for(lambda: pulled() >= 1, what="the first resource of the pull")
    d.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert d.wait(10) == 0, d.output()
    assert time.monotonic() - t0 < 6, "the stop waited for the whole pull"
    with engine.connect() as conn:
        runs = conn.execute(sa.select(schema.runs.c.kind, schema.runs.c.status)).all()
    assert [tuple(r) for r in runs] == [("pull", "stopped")]
    assert 1 <= pulled() < len(schema.CURRENT)  # whole resources applied, the rest left alone
    engine.dispose()
