"""`clevertim-sync check` against the emulator and a real database: what an operator sees after
installing, and when something is wrong (no mirror yet, a rejected token, a failing pull)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from clevertim_sync.emulator import EmulatorServer


def findings(done: subprocess.CompletedProcess[str]) -> dict[str, tuple[bool, str]]:
    return {f["check"]: (f["ok"], f["detail"]) for f in json.loads(done.stdout)}


def test_check_walks_an_operator_from_a_fresh_install_to_a_healthy_mirror(
    emulator: EmulatorServer, database_url: str, cli_process: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    fresh = cli_process(database_url, "check", "--json")
    assert fresh.returncode == 1, fresh.stderr
    got = findings(fresh)
    assert got["database"][0] and not got["schema"][0] and "sync" in got["schema"][1]
    assert got["api"] == (True, f"{emulator.base_url} accepts the token (8 user(s) visible)")
    assert "pulls" not in got  # nothing to judge before the mirror exists

    assert cli_process(database_url, "sync").returncode == 0
    healthy = cli_process(database_url, "check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * len(lines)
    assert any("pulls: every resource pulled recently" in line for line in lines), lines

    # The server rejects the token, and a pull of contacts fails: both are named, exit 1.
    emulator.control.add_fault(method="GET", path="^/contact$", kind="status", status=500)
    cli_process(database_url, "sync")
    broken = cli_process(database_url, "check", "--json", token="wrong-token")
    assert broken.returncode == 1
    got = findings(broken)
    assert not got["api"][0] and "401" in got["api"][1] and "wrong-token" not in broken.stdout
    assert not got["pulls"][0] and "contact" in got["pulls"][1]
    assert got["queue"][0] and got["schema"][0]
