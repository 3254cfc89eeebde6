"""`clevertim-sync queue adopt ITEM REMOTE_ID` on SQLite and PostgreSQL: a create quarantined
after a lost answer (two matching records appeared) is bound to the record the user names, its
dependants get the remote id and go out; and the refusals, which change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from click.testing import Result

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.settings import Settings
from clevertim_sync.writeback.worker import push

TOKEN = "test-token"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def run(cli_runner: Any, database_url: str) -> Any:
    invoke = cli_runner(database_url)
    invoke("sync", code=0)
    return invoke


def item(run: Any, item_id: int) -> dict[str, Any]:
    result = run("queue", "list", "--json")
    assert result.exit_code == 0, result.output
    return next(i for i in orjson.loads(result.output) if i["id"] == item_id)


def created_id(result: Result) -> int:
    assert result.exit_code == 0, result.output
    return int(result.output.split("local reference: local:")[1].split(":")[1].split()[0])


def test_adopt_settles_a_quarantined_create_and_releases_its_dependants(
    run: Any, emulator: Any, database_url: str
) -> None:
    old_company = min(r["id"] for r in emulator.control.state(as_token=TOKEN)["company"])
    company_item = created_id(run("edit", "create", "company", "--set", "cn=Twin Co"))
    made = run(
        "edit", "create", "contact", "--set", "fn=Dep", "--set", f"companyId=local:company:{company_item}"
    )
    assert made.exit_code == 0, made.output
    # The POST lands but its answer is lost; a second matching company appears (made in the web UI);
    # the next push (an hour later: past the backoff) finds two candidates and quarantines the item.
    emulator.control.add_fault(method="POST", path="^/company$", kind="lost_response", times=1)
    engine = make_engine(database_url)
    with ClevertimClient(emulator.base_url, TOKEN, read_retries=0, sleep=lambda _: None) as client:
        push(engine, client, Settings(), now=T0)
        emulator.control.create("company", {"cn": "Twin Co"})
        assert push(engine, client, Settings(), now=T0 + timedelta(hours=1)).quarantined == 1
    engine.dispose()
    quarantined = item(run, company_item)
    assert quarantined["state"] == "quarantined", quarantined
    twins = sorted(r["id"] for r in emulator.control.state()["company"] if r.get("cn") == "Twin Co")
    assert len(twins) == 2 and "queue adopt" in quarantined["last_error"]
    assert not [r for r in emulator.control.state()["contact"] if r.get("fn") == "Dep"]

    # Refusals (exit 2), each leaving the item quarantined.
    some_contact = min(r["id"] for r in emulator.control.state(as_token=TOKEN)["contact"])
    for bad, says in [
        (some_contact, "not in the mirror"),  # a customer id, but a contact, not a company
        (10**9, "not in the mirror"),
        (old_company, "existed before this create was sent"),
    ]:
        refused = run("queue", "adopt", str(company_item), str(bad))
        assert refused.exit_code == 2 and says in refused.output, refused.output
        assert item(run, company_item)["state"] == "quarantined"

    # The user says the older twin is theirs (the other one is deleted in Clevertim).
    adopted = run("queue", "adopt", str(company_item), str(twins[0]))
    assert adopted.exit_code == 0 and f"company {twins[0]}" in adopted.output, adopted.output
    done = item(run, company_item)
    assert done["state"] == "done" and done["remote_id"] == twins[0]
    again = run("queue", "adopt", str(company_item), str(twins[0]))
    assert again.exit_code == 2 and "only a quarantined create" in again.output

    # The contact that waited for the company goes out with the adopted id.
    assert run("push").exit_code == 0
    deps = [r for r in emulator.control.state()["contact"] if r.get("fn") == "Dep"]
    assert [d["companyId"] for d in deps] == [twins[0]]
    posts = [
        r for r in emulator.control.requests() if r["method"] == "POST" and r["path"].endswith("/company")
    ]
    assert len(posts) == 1  # the company was never resent
