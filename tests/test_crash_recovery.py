"""Reliability scenario 1 of the design notes: killed (SIGKILL) at any point of a pull or a push,
then restarted, the end state equals an uninterrupted run, and one more cycle makes no API write.

`clevertim-sync sync` and `clevertim-sync push` run as subprocesses against the emulator over
loopback, with added latency so that the run is spread over time, and are killed at several
points: after the k-th API request reached the emulator, plus a little, so kills land while a
request is on the wire, while a response is parsed and while the mirror is being written.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from conftest import as_mirrored

from clevertim_sync import resources
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema, store
from clevertim_sync.writeback import queue
from clevertim_sync.writeback import tables as wb

TOKEN = "test-token"  # the `emulator` fixture's owner token (tests/conftest.py)
WRITES = ("POST", "PUT", "DELETE")


class Cli:
    """Runs `clevertim-sync COMMAND` against the emulator and the test's database."""

    def __init__(
        self, emulator: EmulatorServer, database_url: str, workdir: Path, lease: float | None = 1
    ) -> None:
        self.config = workdir / "config.toml"
        # A short lease: an item left in flight by a killed push is reconciled by the next one
        # even when that one cannot take the instance lock. None: the default (300 s).
        lease_line = f"lease = {lease}\n" if lease is not None else ""
        self.config.write_text(
            f'[clevertim]\nurl = "{emulator.base_url}"\ntoken = "{TOKEN}"\ntimeout = 10\n'
            f'[database]\nurl = "{database_url}"\n[push]\n{lease_line}backoff_base = 0.2\n'
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
        self.workdir = workdir

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "clevertim_sync", "--config", str(self.config), *args]
        return subprocess.Popen(
            cmd, env=self.env, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def run(self, *args: str) -> str:
        proc = self.start(*args)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode(errors="replace")
        return out.decode(errors="replace")


def kill_after_requests(
    proc: subprocess.Popen[bytes],
    emulator: EmulatorServer,
    methods: tuple[str, ...],
    count: int,
    extra: float,
) -> bool:
    """SIGKILL `proc` once `count` requests of `methods` reached the emulator, `extra` s later.
    False when the process ended first (the kill point lay beyond the run)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        seen = sum(1 for r in emulator.control.requests() if r["method"] in methods)
        if seen >= count:
            time.sleep(extra)
            proc.kill()
            proc.wait(10)
            return True
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
        raise AssertionError("the run neither reached the kill point nor ended within 60 s")
    return False


def mirror_state(engine: sa.Engine, out: Path) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        store.export_jsonl(conn, out)
    return {
        r.name: [orjson.loads(line) for line in (out / f"{r.name}.jsonl").read_text().splitlines()]
        for r in resources.RESOURCES
    }


def remote_state(emulator: EmulatorServer) -> dict[str, list[dict[str, Any]]]:
    return as_mirrored(emulator.control.state(as_token=TOKEN))


def assert_history_follows_the_mirror(engine: sa.Engine) -> None:
    """Every mirrored record's newest history row is its current version; every record whose
    newest history row is a delete is gone from the current tables."""
    h = schema.history
    newest = (
        sa.select(h.c.resource, h.c.record_id, h.c.record_key, sa.func.max(h.c.id).label("id"))
        .group_by(h.c.resource, h.c.record_id, h.c.record_key)
        .subquery()
    )
    with engine.connect() as conn:
        last = {  # a document's text id is its record_key
            (row.resource, row.record_id if row.record_key is None else row.record_key): (
                row.op,
                row.content_hash,
            )
            for row in conn.execute(
                sa.select(h.c.resource, h.c.record_id, h.c.record_key, h.c.op, h.c.content_hash).join(
                    newest, h.c.id == newest.c.id
                )
            )
        }
        for resource in resources.PULL_ORDER:
            table = schema.CURRENT[resource]
            current = {
                row.id: row.content_hash for row in conn.execute(sa.select(table.c.id, table.c.content_hash))
            }
            for record_id, content_hash in current.items():
                assert last.get((resource, record_id)) in {
                    ("insert", content_hash),
                    ("update", content_hash),
                }, (
                    resource,
                    record_id,
                )
            gone = {rid for (res, rid), (op, _) in last.items() if res == resource and op == "delete"}
            assert not gone & current.keys(), (resource, sorted(gone & current.keys()))


def remote_edits(emulator: EmulatorServer, rng: random.Random, round_no: int) -> None:
    """What colleagues do in the web UI between two attempts: an update, a create and a delete
    in several resources, so each pull has news everywhere."""
    state = emulator.control.state()
    control = emulator.control
    for name in ("company", "contact", "opportunity", "case", "task", "note"):
        records = state.get(name, [])
        if not records:
            continue
        victim = rng.choice(records)
        field = {"company": "cn", "contact": "title", "note": "desc"}.get(name, "name")
        control.update(name, victim["id"], {field: f"round {round_no} {name} {victim['id']}"})
    contact = control.create("contact", {"fn": f"Round{round_no}", "ln": "Remote"})
    control.create("note", {"desc": f"remote note {round_no}", "cust": contact["id"]})
    deletable = [n for n in state.get("comment", []) if n.get("note") or n.get("task")]
    if deletable:
        control.delete("comment", rng.choice(deletable)["id"])


def test_a_pull_killed_at_any_point_recovers_to_the_uninterrupted_result(
    mirror_engine: sa.Engine, migrated_database_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    rng = random.Random(7)
    cli = Cli(emulator, migrated_database_url, tmp_path)
    cli.run("sync")
    # Each listing takes 0.3 s: the kill points below fall across the ten resources of a pull.
    emulator.control.add_fault(method="GET", path=".*", kind="latency", latency_ms=300)
    killed = 0
    for round_no, count in enumerate((1, 3, 5, 7, 9), start=1):
        remote_edits(emulator, rng, round_no)
        emulator.control.clear_requests()
        proc = cli.start("sync")
        killed += kill_after_requests(proc, emulator, ("GET",), count, rng.uniform(0.0, 0.35))
    assert killed >= 4, "the kills must land inside the pulls"
    emulator.control.clear_faults()

    cli.run("sync")
    assert mirror_state(mirror_engine, tmp_path / "after") == remote_state(emulator)
    assert_history_follows_the_mirror(mirror_engine)

    emulator.control.clear_requests()
    out = cli.run("sync")
    assert [r for r in emulator.control.requests() if r["method"] in WRITES] == []
    with mirror_engine.connect() as conn:
        last_run = conn.execute(sa.select(schema.runs).order_by(schema.runs.c.id.desc()).limit(1)).one()
    counts = orjson.loads(last_run.counts) if isinstance(last_run.counts, str) else last_run.counts
    assert all(c["inserted"] == c["updated"] == c["deleted"] == 0 for c in counts.values()), out


def test_a_push_killed_at_any_point_recovers_without_loss_or_duplicates(
    mirror_engine: sa.Engine, migrated_database_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    rng = random.Random(11)
    cli = Cli(emulator, migrated_database_url, tmp_path)
    cli.run("sync")
    contacts = sorted(c["id"] for c in remote_state(emulator)["contact"])
    notes = sorted(n["id"] for n in remote_state(emulator)["note"])
    items = []
    for i in range(4):  # dependent creates: company <- contact <- note
        company = queue.enqueue_create(mirror_engine, "company", {"cn": f"Killed Co {i}"})
        person = queue.enqueue_create(
            mirror_engine, "contact", {"fn": f"Killed{i}", "ln": "Push", "companyId": company.local_ref}
        )
        items += [
            company,
            person,
            queue.enqueue_create(
                mirror_engine, "note", {"desc": f"killed note {i}", "cust": person.local_ref}
            ),
        ]
    items += [
        queue.enqueue_update(mirror_engine, "contact", cid, {"title": f"title {cid}"}) for cid in contacts[:8]
    ]
    items += [queue.enqueue_delete(mirror_engine, "note", nid) for nid in notes[:4]]

    # Each write takes 0.3 s: a kill after the k-th write request lands with writes on the wire.
    emulator.control.add_fault(method="*", path=".*", kind="latency", latency_ms=300)
    killed = 0
    for count in (1, 3, 5, 7):
        emulator.control.clear_requests()
        proc = cli.start("push")
        killed += kill_after_requests(proc, emulator, WRITES, count, rng.uniform(0.0, 0.35))
        time.sleep(1.2)  # the lease (1 s) of what the killed push had claimed runs out
    assert killed >= 3, "the kills must land inside the pushes"
    emulator.control.clear_faults()

    for _ in range(5):  # retries wait out their (short) backoff
        cli.run("push")
        with mirror_engine.connect() as conn:
            q = wb.writeback_queue
            states = {
                row.id: row.state
                for row in conn.execute(sa.select(q.c.id, q.c.state).where(q.c.id.in_([i.id for i in items])))
            }
        if set(states.values()) == {"done"}:
            break
        time.sleep(0.5)
    assert set(states.values()) == {"done"}, states

    remote = emulator.control.state()
    for i in range(4):
        assert [c["cn"] for c in remote["company"]].count(f"Killed Co {i}") == 1
        (person,) = [c for c in remote["contact"] if c.get("fn") == f"Killed{i}"]
        (company,) = [c for c in remote["company"] if c.get("cn") == f"Killed Co {i}"]
        assert person["companyId"] == company["id"]
        (note,) = [n for n in remote["note"] if n.get("desc") == f"killed note {i}"]
        assert note["cust"] == person["id"]
    by_id = {c["id"]: c for c in remote["contact"]}
    assert all(by_id[cid]["title"] == f"title {cid}" for cid in contacts[:8])
    assert not {n["id"] for n in remote["note"]} & set(notes[:4])

    cli.run("sync")
    assert mirror_state(mirror_engine, tmp_path / "after") == remote_state(emulator)
    assert_history_follows_the_mirror(mirror_engine)
    emulator.control.clear_requests()
    cli.run("push")
    cli.run("sync")
    assert [r for r in emulator.control.requests() if r["method"] in WRITES] == []


def test_a_killed_push_is_taken_over_at_once_not_after_the_lease(
    mirror_engine: sa.Engine, migrated_database_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    # The default push.lease (300 s): a push that holds the instance lock knows the push it
    # follows is gone (the lock was free), so it reconciles what that one left in flight now.
    rng = random.Random(23)
    cli = Cli(emulator, migrated_database_url, tmp_path, lease=None)
    cli.run("sync")
    contacts = sorted(c["id"] for c in remote_state(emulator)["contact"])
    items = []
    for i in range(4):
        company = queue.enqueue_create(mirror_engine, "company", {"cn": f"Taken Over Co {i}"})
        items += [
            company,
            queue.enqueue_create(
                mirror_engine,
                "contact",
                {"fn": f"TakenOver{i}", "ln": "Push", "companyId": company.local_ref},
            ),
        ]
    items += [
        queue.enqueue_update(mirror_engine, "contact", cid, {"title": f"over {cid}"}) for cid in contacts[:20]
    ]  # enough that the last of three killed pushes still has items to send when it is killed

    emulator.control.add_fault(method="*", path=".*", kind="latency", latency_ms=300)
    killed = 0
    for count in (2, 3, 1):  # each push is killed mid-flight; the next one starts at once
        emulator.control.clear_requests()
        killed += kill_after_requests(cli.start("push"), emulator, WRITES, count, rng.uniform(0.0, 0.3))
    assert killed >= 2, "the kills must land inside the pushes"
    emulator.control.clear_faults()
    q = wb.writeback_queue
    ids = [i.id for i in items]
    with mirror_engine.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(q.c.id.in_(ids), q.c.state == "in_flight")
        ).scalar()
    assert left, "the last kill must leave items in flight"

    started = time.monotonic()
    for _ in range(3):
        cli.run("push")
        with mirror_engine.connect() as conn:
            states = {
                row.id: row.state for row in conn.execute(sa.select(q.c.id, q.c.state).where(q.c.id.in_(ids)))
            }
        if set(states.values()) == {"done"}:
            break
    assert set(states.values()) == {"done"}, states
    assert time.monotonic() - started < 60  # seconds, not the 300 s lease

    remote = emulator.control.state()
    for i in range(4):
        (company,) = [c for c in remote["company"] if c.get("cn") == f"Taken Over Co {i}"]
        (person,) = [c for c in remote["contact"] if c.get("fn") == f"TakenOver{i}"]
        assert person["companyId"] == company["id"]
    by_id = {c["id"]: c for c in remote["contact"]}
    assert all(by_id[cid]["title"] == f"over {cid}" for cid in contacts[:6])
