"""The writeback commands end to end through click, against the emulator and a SQLite mirror:
edit create/update/delete (--json, --set, local references), push, queue list/retry/cancel/
resolve, revert, and the refusals (exit status 2, nothing queued)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from clevertim_sync.cli.edit import parse_set


@pytest.fixture
def run(cli_runner: Any, tmp_path: Path) -> Any:
    invoke = cli_runner(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    invoke("sync", code=0)
    return invoke


def items(run: Any, *extra: str) -> list[dict[str, Any]]:
    result = run("queue", "list", "--json", *extra)
    assert result.exit_code == 0, result.output
    return list(orjson.loads(result.output))


def test_parse_set_takes_json_for_non_text_properties() -> None:
    assert parse_set("contact", "fn=007") == ("fn", "007")
    assert parse_set("contact", "companyId=12") == ("companyId", 12)
    assert parse_set("contact", "companyId=local:company:3") == ("companyId", "local:company:3")
    assert parse_set("contact", 'tags=["a","b"]') == ("tags", ["a", "b"])
    assert parse_set("contact", "is_private=true") == ("is_private", True)
    assert parse_set("contact", "title=null") == ("title", None)


def test_edit_push_and_list_end_to_end(run: Any, emulator: Any) -> None:
    contact = min(emulator.control.state(as_token="test-token")["contact"], key=lambda r: r["id"])
    assert run("edit", "update", "contact", str(contact["id"]), "--set", "title=CLI title").exit_code == 0
    made = run("edit", "create", "company", "--json", '{"cn": "CLI Co"}')
    assert made.exit_code == 0 and "local reference: local:company:" in made.output
    ref = made.output.split("local reference: ")[1].strip()
    assert run("edit", "create", "contact", "--set", "fn=Cli", "--set", f"companyId={ref}").exit_code == 0
    pushed = run("push")
    assert pushed.exit_code == 0, pushed.output
    assert "3 done" in pushed.output
    listed = items(run)
    assert [i["state"] for i in listed] == ["done", "done", "done"]
    assert {"id", "state", "resource", "op", "target_id", "attempts", "last_error"} <= listed[0].keys()
    state = emulator.control.state()
    assert {r["id"]: r for r in state["contact"]}[contact["id"]]["title"] == "CLI title"
    company_id = listed[1]["remote_id"]
    assert {r["id"]: r for r in state["contact"]}[listed[2]["remote_id"]]["companyId"] == company_id
    assert run("edit", "delete", "contact", str(contact["id"])).exit_code == 0
    assert run("push").exit_code == 0
    assert contact["id"] not in {r["id"] for r in emulator.control.state()["contact"]}


@pytest.mark.parametrize(
    "args",
    [
        ("edit", "create", "contact", "--set", "title=No name"),
        ("edit", "update", "contact", "999999", "--set", "fn=x"),
        ("edit", "update", "comment", "1", "--set", "comment=x"),
        ("edit", "create", "user", "--set", "user=x"),
        ("edit", "update", "contact", "1", "--json", "[1, 2]"),
        ("edit", "update", "contact", "1", "--set", "novalue"),
    ],
)
def test_refusals_exit_2_and_queue_nothing(run: Any, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert "nothing was queued" in result.output
    assert items(run) == []


def test_conflict_resolve_failed_retry_cancel_and_revert(run: Any, emulator: Any) -> None:
    a, b = sorted(emulator.control.state(as_token="test-token")["contact"], key=lambda r: r["id"])[:2]
    run("edit", "update", "contact", str(a["id"]), "--set", "title=Mine")
    emulator.control.update("contact", a["id"], {"title": "Theirs"})
    emulator.control.add_fault(method="PUT", path=f"^/contact/{b['id']}$", kind="status", status=400)
    run("edit", "update", "contact", str(b["id"]), "--set", "title=Poison")
    assert run("push").exit_code == 1  # one failed
    conflict, failed = items(run)
    assert conflict["state"] == "conflict" and conflict["conflict"]["title"]["remote"] == "Theirs"
    assert failed["state"] == "failed" and failed["server_message"]
    assert "writeback queue: 1 failed, 1 conflict (see `clevertim-sync queue list" in run("status").output
    assert run("queue", "resolve", str(conflict["id"]), "--keep", "local").exit_code == 0
    emulator.control.clear_faults()  # the cause is fixed
    assert run("queue", "retry", "--failed").exit_code == 0
    assert run("push").exit_code == 0
    assert {r["id"]: r for r in emulator.control.state()["contact"]}[a["id"]]["title"] == "Mine"
    # Revert contact a to the version the first sync saw.
    assert run("sync").exit_code == 0
    result = run("revert", "contact", str(a["id"]), "--to", "999999")
    assert result.exit_code == 2 and "versions are" in result.output
    version = result.output.split("versions are: ")[1].split(",")[0].strip()
    assert run("revert", "contact", str(a["id"]), "--to", version).exit_code == 0
    assert run("push").exit_code == 0
    assert {r["id"]: r for r in emulator.control.state()["contact"]}[a["id"]].get("title") == a.get("title")
    run("edit", "update", "contact", str(a["id"]), "--set", "title=Never")
    (pending,) = items(run, "--state", "pending")
    assert run("queue", "cancel", str(pending["id"])).exit_code == 0
    assert run("queue", "cancel", str(pending["id"])).exit_code == 2
