"""A push keeps `raw` as the server served it (issue 18: raw is the server's, the typed id column
the mirror's), on SQLite and PostgreSQL, against an emulator that serves ids as numeric strings
("445"): the answer to a create, to an update and a lost create's record adopted from the
listing are stored as served, so `export` after a push equals what the server serves and the
next pull records no change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from clevertim_sync import jsontext
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.worker import push

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def stored(engine: sa.Engine, resource: str, rid: int) -> Any:
    table = schema.CURRENT[resource]
    with engine.connect() as conn:
        raw = conn.execute(sa.select(table.c.raw).where(table.c.id == rid)).scalar_one()
    return jsontext.loads(raw)


def history_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.history)).scalar_one())


@pytest.mark.parametrize("emulator_quirks", [("string_ids",)], indirect=True)
def test_a_push_keeps_raw_as_served_and_the_next_pull_records_no_change(
    emulator: EmulatorServer, mirror_engine: sa.Engine, api_client: ClevertimClient
) -> None:
    engine = mirror_engine
    assert pull(engine, api_client).ok
    target = min(r["id"] for r in emulator.control.state()["contact"])
    updated = queue.enqueue_update(engine, "contact", target, {"title": "Raw keeper"})
    lost = queue.enqueue_create(engine, "contact", {"fn": "Lost", "ln": "Answer"})
    emulator.control.add_fault(method="POST", path="^/contact$", kind="lost_response", times=1)
    assert push(engine, api_client, Settings(), now=T0).done == 1  # the update; the create is lost
    made = queue.enqueue_create(engine, "contact", {"fn": "Made", "ln": "Here"})
    report = push(engine, api_client, Settings(), now=T0 + timedelta(hours=1))
    assert (report.adopted, report.done) == (1, 2)  # the lost create adopted, the new one made

    ids = [
        updated.target_id,
        queue.get_item(engine, lost.id).remote_id,
        queue.get_item(engine, made.id).remote_id,
    ]
    for rid in ids:
        assert rid is not None
        served = api_client.get("contact", rid)
        assert served["id"] == str(rid)  # this server spells ids as strings...
        assert stored(engine, "contact", rid) == served  # ...and raw keeps them so, as served

    before = history_rows(engine)
    again = pull(engine, api_client, resources=["contact"])
    assert again.ok and again.totals()["updated"] == again.totals()["inserted"] == 0
    assert history_rows(engine) == before  # the pull finds what the push stored: no new version
