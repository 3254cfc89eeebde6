"""A hypothesis state machine: local edits, web-UI edits, faults, pulls and pushes interleaved at
random against the emulator; after quiescence the mirror equals the emulator, every accepted
edit is applied or sits in conflict/failed with a reason, nothing was created twice, and one more
cycle writes nothing.

Bounded (few steps, few examples) so that it runs in seconds; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import as_served, with_quirks
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from clevertim_sync import resources, shapes
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.errors import EditRejected
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.mirror.store import record_hash
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import PushSettings, Settings
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.outbox import OPEN_STATES
from clevertim_sync.writeback.worker import push

# Every test twice: the plain emulator, and every data quirk on (a server that differs as a real
# one may: emulator/quirks.py).
pytestmark = with_quirks

TOKEN = "test-token"
SETTINGS = Settings(push=PushSettings(concurrency=2, backoff_base=60.0, max_attempts=4))
TEXT = st.sampled_from(["alpha", "beta", "gamma"])
FIELDS = st.sampled_from(["title", "description", "city"])
FAULTS = st.sampled_from(
    [
        {"method": "POST", "path": "^/contact$", "kind": "lost_response"},
        {"method": "PUT", "path": "^/contact/", "kind": "lost_response"},
        {"method": "DELETE", "path": "^/contact/", "kind": "lost_response"},
        {"method": "POST", "path": "^/contact$", "kind": "reset"},
        {"method": "*", "path": "^/contact", "kind": "status", "status": 503},
        {"method": "*", "path": "^/contact", "kind": "status", "status": 429, "retry_after": 30},
        {"method": "PUT", "path": "^/contact/", "kind": "status", "status": 400},
    ]
)


class PushMachine(RuleBasedStateMachine):
    server: EmulatorServer
    database_url: str
    _names = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.server.reset(contacts=6, seed=3)
        self.control = self.server.control
        self.client = ClevertimClient(self.server.base_url, TOKEN, read_retries=0, sleep=lambda _: None)
        self.engine = make_engine(self.database_url)
        upgrade(self.engine)
        with self.engine.begin() as conn:
            for table in reversed(schema.metadata.sorted_tables):
                conn.execute(table.delete())
        self.now = datetime(2030, 1, 1, tzinfo=UTC)
        self.created_names: list[str] = []

    @initialize()
    def first_pull(self) -> None:
        assert pull(self.engine, self.client).ok

    def mirrored(self) -> list[int]:
        t = schema.CURRENT["contact"]
        with self.engine.connect() as conn:
            return [r for (r,) in conn.execute(sa.select(t.c.id).order_by(t.c.id))]

    def remote_ids(self) -> list[int]:
        return sorted(r["id"] for r in self.control.state(as_token=TOKEN)["contact"])

    # --- local edits ---

    @rule(data=st.data(), field=FIELDS, value=TEXT)
    def local_update(self, data: st.DataObject, field: str, value: str) -> None:
        ids = self.mirrored()
        if ids:
            queue.enqueue_update(self.engine, "contact", data.draw(st.sampled_from(ids)), {field: value})

    @rule()
    def local_create(self) -> None:
        name = f"Local{next(self._names)}"
        self.created_names.append(name)
        queue.enqueue_create(self.engine, "contact", {"fn": name, "ln": "Machine"})

    @rule(data=st.data())
    def local_delete(self, data: st.DataObject) -> None:
        ids = self.mirrored()
        if ids:
            queue.enqueue_delete(self.engine, "contact", data.draw(st.sampled_from(ids)))

    @rule()
    def local_invalid(self) -> None:
        with pytest.raises(EditRejected):
            queue.enqueue_create(self.engine, "contact", {"title": "no name"})

    # --- the web UI ---

    @rule(data=st.data(), field=FIELDS, value=TEXT)
    def web_update(self, data: st.DataObject, field: str, value: str) -> None:
        ids = self.remote_ids()
        if ids:
            self.control.update("contact", data.draw(st.sampled_from(ids)), {field: value})

    @rule(data=st.data())
    def web_delete(self, data: st.DataObject) -> None:
        ids = self.remote_ids()
        if len(ids) > 2:
            self.control.delete("contact", data.draw(st.sampled_from(ids)))

    @rule(value=TEXT)
    def web_create(self, value: str) -> None:
        self.control.create("contact", {"fn": f"Web {value}", "ln": "UI", "puser": None})

    # --- the network and the cycles ---

    @rule(fault=FAULTS)
    def fault(self, fault: dict[str, Any]) -> None:
        self.control.add_fault(times=1, **fault)

    @rule()
    def do_pull(self) -> None:
        pull(self.engine, self.client)  # may fail under a fault: that is allowed

    @rule()
    def do_push(self) -> None:
        self.now += timedelta(minutes=10)
        push(self.engine, self.client, SETTINGS, now=self.now)

    @invariant()
    def no_duplicate_creates(self) -> None:
        names = [r.get("fn") for r in self.control.state()["contact"]]
        for name in self.created_names:
            assert names.count(name) <= 1, f"{name} was created twice"

    def teardown(self) -> None:
        try:
            self.control.clear_faults()
            for _ in range(12):
                self.now += timedelta(hours=2)
                push(self.engine, self.client, SETTINGS, now=self.now)
                if not queue.list_items(self.engine, limit=None) or all(
                    i.state not in OPEN_STATES for i in queue.list_items(self.engine)
                ):
                    break
            # Local and web deletes together may empty a resource of this tiny account: the
            # mass-delete guard then holds it for a person to confirm. Confirm, as they would.
            assert pull(self.engine, self.client, allow_mass_delete=True).ok
            self.check_quiescent()
        finally:
            self.client.close()
            self.engine.dispose()

    def check_quiescent(self) -> None:
        items = queue.list_items(self.engine)
        for item in items:
            assert item.state in ("done", "conflict", "failed"), (item.id, item.state, item.last_error)
            if item.state != "done":
                assert item.last_error, f"item {item.id} is {item.state} without a reason"
        # The mirror equals what the token sees (as the API serves it, under the quirks if any).
        remote = as_served(self.server, self.control.state(as_token=TOKEN))
        with self.engine.connect() as conn:
            for res in resources.RESOURCES:
                t = schema.CURRENT[res.name]
                mirrored = dict(conn.execute(sa.select(t.c.id, t.c.content_hash)).all())
                # Raw keeps the id as served; the id column and the hash take it by meaning.
                respell = shapes.with_text_id if res.text_ids else shapes.with_int_id
                by_meaning = [respell(r) for r in remote[res.name]]
                expected = {r["id"]: record_hash(r) for r in by_meaning}
                assert mirrored == expected, res.name
        # One more cycle makes no write.
        self.control.clear_requests()
        push(self.engine, self.client, SETTINGS, now=self.now + timedelta(hours=1))
        assert [r for r in self.control.requests() if r["method"] != "GET"] == []


def test_random_histories_converge(emulator: EmulatorServer, migrated_database_url: str) -> None:
    PushMachine.server = emulator
    PushMachine.database_url = migrated_database_url
    run_state_machine_as_test(
        PushMachine,
        settings=settings(
            max_examples=int(os.environ.get("WRITEBACK_MACHINE_EXAMPLES", "4")),
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
