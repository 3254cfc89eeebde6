"""Conflicts a person can settle: a real conflict made against the emulator (a local edit, the same
fields changed through the web UI, then a push), `queue show` naming each side in plain words with
the commands that settle it, `queue resolve --field` settling it field by field (and refusing a
partial or wrong choice without changing anything), and the open conflicts counted by `status`,
`check` and /metrics. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from clevertim_sync.daemon import healthz
from clevertim_sync.daemon.metrics import DaemonMetrics
from clevertim_sync.mirror.db import make_engine


def _conflict(run: Any, emulator: Any) -> tuple[dict[str, Any], int]:
    """A contact edited here (title, city, background) and in Clevertim (title, city): one item
    in conflict on title and city, its background sent."""
    contact = min(emulator.control.state(as_token="test-token")["contact"], key=lambda r: r["id"])
    cid = contact["id"]
    run("edit", "update", "contact", str(cid), "--set", "title=Mine", "--set", "city=Here", code=0)
    run("edit", "update", "contact", str(cid), "--set", "description=sent anyway", code=0)
    emulator.control.update("contact", cid, {"title": "Theirs", "city": "There"})
    assert run("push", code=0).output.startswith(
        "push: 0 done (0 adopted after a lost answer), 1 in conflict"
    )
    (item,) = [i for i in orjson.loads(run("queue", "list", "--json").output) if i["state"] == "conflict"]
    return contact, item["id"]


def test_a_conflict_is_shown_side_by_side_and_settled_field_by_field(
    cli_runner: Any, database_url: str, emulator: Any
) -> None:
    run = cli_runner(database_url)
    run("sync", code=0)
    contact, item_id = _conflict(run, emulator)
    cid = contact["id"]

    shown = run("queue", "show", str(item_id), code=0).output
    assert f"queue item {item_id}: update contact {cid}, conflict" in shown
    header = next(line for line in shown.splitlines() if "your edit" in line)
    # Which side is which, in plain words, in this order: base, local, remote.
    assert header.index("as it was when you edited") < header.index("your edit")
    assert header.index("your edit") < header.index("changed in Clevertim since")
    title = next(line for line in shown.splitlines() if line.strip().startswith("title "))
    base_title = orjson.dumps(contact.get("title")).decode() if contact.get("title") else "(empty)"
    assert title.split()[1:4] == [base_title, '"Mine"', '"Theirs"'] or (
        base_title in title and title.index('"Mine"') < title.index('"Theirs"')
    )
    assert "? (you decide)" in title
    city = next(line for line in shown.splitlines() if line.strip().startswith("city "))
    assert city.index('"Here"') < city.index('"There"')
    assert f"clevertim-sync queue resolve {item_id} --keep local" in shown
    assert f"clevertim-sync queue resolve {item_id} --keep remote" in shown
    assert f"clevertim-sync queue resolve {item_id} --field city=local --field title=remote" in shown
    as_json = orjson.loads(run("queue", "show", str(item_id), "--json", code=0).output)
    assert as_json["undecided"] == ["city", "title"]
    assert as_json["conflict"]["title"] == {
        "base": contact.get("title"),
        "local": "Mine",
        "remote": "Theirs",
        "winner": "none",
    }
    # The field not in conflict went out with the push.
    server = {r["id"]: r for r in emulator.control.state()["contact"]}[cid]
    assert server["description"] == "sent anyway"

    # Counted where people look.
    status = run("status", code=0).output
    assert f"open conflicts: 1 (items {item_id}); `clevertim-sync queue show {item_id}`" in status
    assert "open conflicts: 1, settle each with `clevertim-sync queue show ID`" in run("check").output
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            facts = healthz.read_facts(conn, "default", datetime.now(UTC), 600)
        exposition = DaemonMetrics(lambda: [facts]).exposition()[2].decode()
    finally:
        engine.dispose()
    assert 'clevertim_sync_open_conflicts{account="default"} 1.0' in exposition

    # Refused, and nothing changes: a field left out, a field not in conflict, a bad side.
    for args in (
        ("--field", "title=local"),
        ("--field", "title=local", "--field", "city=remote", "--field", "fn=local"),
        ("--field", "title=mine", "--field", "city=remote"),
        ("--keep", "local", "--field", "title=local"),
        (),
    ):
        refused = run("queue", "resolve", str(item_id), *args, code=2)
        assert "clevertim-sync: queue item" in refused.output
    assert (
        "say which side to keep for city too"
        in run("queue", "resolve", str(item_id), "--field", "title=local").output
    )
    assert orjson.loads(run("queue", "show", str(item_id), "--json").output)["state"] == "conflict"

    settled = run(
        "queue", "resolve", str(item_id), "--field", "title=local", "--field", "city=remote", code=0
    )
    assert f"item {item_id}: conflict resolved field by field: city=remote, title=local" in settled.output
    after = orjson.loads(run("queue", "show", str(item_id), "--json").output)
    assert after["state"] == "pending" and after["fields"] == {"title": "Mine"}
    assert after["conflict"]["city"]["winner"] == "remote"
    assert after["conflict"]["city"]["decided_by"] == "person"
    assert run("push", code=0).output.startswith("push: 1 done")
    server = {r["id"]: r for r in emulator.control.state()["contact"]}[cid]
    assert (server["title"], server["city"]) == ("Mine", "There")
    assert "open conflicts" not in run("status", code=0).output
    shown = run("queue", "show", str(item_id), code=0).output
    assert "settled: conflict resolved field by field" in shown and "to settle it" not in shown
    assert "remote (person)" in shown and "local (person)" in shown


def test_every_field_kept_remote_closes_the_item_and_sends_nothing(
    cli_runner: Any, database_url: str, emulator: Any
) -> None:
    run = cli_runner(database_url)
    run("sync", code=0)
    contact, item_id = _conflict(run, emulator)
    run("queue", "resolve", str(item_id), "--field", "title=remote", "--field", "city=remote", code=0)
    assert orjson.loads(run("queue", "show", str(item_id), "--json").output)["state"] == "done"
    emulator.control.clear_requests()
    assert "0 writes sent" in run("push", code=0).output
    server = {r["id"]: r for r in emulator.control.state()["contact"]}[contact["id"]]
    assert (server["title"], server["city"]) == ("Theirs", "There")
    # An item that is not a conflict is refused.
    assert "not a conflict" in run("queue", "resolve", str(item_id), "--field", "title=local", code=2).output
