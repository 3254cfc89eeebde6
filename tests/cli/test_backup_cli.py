"""The backup and report commands end to end: a real emulator, a real SQLite mirror, click's runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result


@pytest.fixture
def run(cli_runner: Callable[..., Callable[..., Result]], tmp_path: Path) -> Callable[..., Result]:
    invoke = cli_runner(
        f"sqlite:///{tmp_path / 'mirror.sqlite3'}",
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path),
        STATE_DIRECTORY=str(tmp_path / "state"),
    )

    def checked(*args: str, code: int = 0) -> Result:
        return invoke(*args, code=code)

    return checked


def test_backup_verify_restore_report_search_export_as_of(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("sync")
    first = run("backup", str(tmp_path / "b"), "--keep", "2").output
    assert "sqlite backup" in first and "rows in" in first
    for _ in range(2):
        run("backup", str(tmp_path / "b"), "--keep", "2")
    archives = sorted((tmp_path / "b").glob("clevertim-sync-*.tar"))
    assert len(archives) == 2

    assert "OK, sqlite backup" in run("verify", str(archives[-1])).output
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archives[-1].read_bytes()[:3000])
    assert "truncated" in run("verify", str(cut), code=1).output

    target = f"sqlite:///{tmp_path / 'restored.sqlite3'}"
    assert "restored" in run("restore", str(archives[-1]), "--to", target).output
    assert "--force" in run("restore", str(archives[-1]), "--to", target, code=1).output
    run("restore", str(archives[-1]), "--to", target, "--force")
    assert "one of them" in run("restore", "--to", target, code=1).output

    listing = run("report", "--list").output
    assert all(name in listing for name in ("contacts", "pipeline", "open-tasks", "changes"))
    pipeline = json.loads(run("report", "pipeline", "--format", "json").output)
    assert pipeline and {"status", "currency", "opportunities", "total_value"} <= pipeline[0].keys()
    assert run("report", "contacts", "--format", "csv").output.startswith("contact_id,name,")
    assert "no report named" in run("report", "nonsense", code=2).output
    assert "not a timestamp" in run("report", "changes", "--since", "yesterday-ish", code=2).output
    assert "takes no --since" in run("report", "pipeline", "--since", "2020-01-01", code=2).output

    hits = json.loads(run("search", "pricing", "--format", "json").output)
    assert hits and all(h["kind"] in ("note", "contact", "company") for h in hits)

    run("export", str(tmp_path / "asof"), "--as-of", "2999-01-01T00:00:00Z")
    run("export", str(tmp_path / "now"))
    for name in ("contact", "note"):  # no change since the pull: the same records, lm aside
        asof = [json.loads(x) for x in (tmp_path / "asof" / f"{name}.jsonl").read_text().splitlines()]
        now = [json.loads(x) for x in (tmp_path / "now" / f"{name}.jsonl").read_text().splitlines()]
        assert asof == now
    out = run(
        "restore", "--from-export", str(tmp_path / "asof"), "--to", f"sqlite:///{tmp_path / 'x.sqlite3'}"
    )
    assert "restored" in out.output
