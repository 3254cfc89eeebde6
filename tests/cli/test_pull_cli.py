"""The mirror's commands end to end: `db upgrade`, `sync`, `status --json`, `export`, through
click against the emulator (real HTTP) and a real database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from clevertim_sync.emulator import EmulatorServer

TOKEN = "test-token"  # the `emulator` fixture's owner token


@pytest.fixture
def run(cli_runner: Any, database_url: str) -> Any:
    return cli_runner(database_url)


def test_sync_status_export(run: Any, emulator: EmulatorServer, tmp_path: Path) -> None:
    assert "is at revision" in run("db", "upgrade").output
    result = run("sync")
    assert result.exit_code == 0, result.output
    assert "contact" in result.output and "inserted" in result.output

    status = orjson.loads(run("status", "--json").output)
    by_name = {s["resource"]: s for s in status}
    visible = emulator.control.state(as_token=TOKEN)
    assert by_name["contact"]["records"] == len(visible["contact"])
    assert by_name["contact"]["last_counts"]["inserted"] == len(visible["contact"])
    assert by_name["note"]["held"] is False and by_name["note"]["age_seconds"] >= 0

    out = tmp_path / "export"
    assert run("export", str(out)).exit_code == 0
    lines = (out / "contact.jsonl").read_text().splitlines()
    assert [orjson.loads(line) for line in lines] == sorted(visible["contact"], key=lambda r: r["id"])
    table = run("status").output
    assert "mirror status" in table and "writeback queue: empty" in table


def test_sync_exits_1_when_a_resource_fails_or_is_held(run: Any, emulator: EmulatorServer) -> None:
    assert run("sync").exit_code == 0
    emulator.control.add_fault(method="GET", path="^/note$", kind="empty_listing")
    held = run("sync", "--resource", "note", "-r", "contact")
    assert held.exit_code == 1
    assert "note" in held.output and "HELD" in held.output
    status = {s["resource"]: s for s in orjson.loads(run("status", "--json").output)}
    assert status["note"]["held"] is True and status["contact"]["held"] is False
    allowed = run("sync", "-r", "note", "--allow-mass-delete")
    assert allowed.exit_code == 0, allowed.output
    status = {s["resource"]: s for s in orjson.loads(run("status", "--json").output)}
    assert status["note"]["records"] == 0 and status["note"]["held"] is False


def test_unknown_resource_is_a_usage_error(run: Any) -> None:
    result = run("sync", "-r", "contacts")
    assert result.exit_code == 2 and "contacts" in result.output
