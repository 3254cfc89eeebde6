"""Installing as people install tools: `--version` names the schema revision this version brings a
mirror to, without importing the heavy libraries; shell completion (click's) prints a script for
bash, zsh and fish and completes the lazily loaded commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clevertim_sync import __version__
from clevertim_sync.mirror import db

EXE = str(Path(sys.executable).parent / "clevertim-sync")

VERSION_SCRIPT = """
import sys
from click.testing import CliRunner
from clevertim_sync.cli import cli
result = CliRunner().invoke(cli, ["--version"])
heavy = sorted(m for m in ("sqlalchemy", "httpx", "alembic", "rich", "pydantic") if m in sys.modules)
print(result.exit_code, heavy)
print(result.output, end="")
"""


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=os.environ | env, capture_output=True, text=True, timeout=60, check=False)


def test_version_names_the_schema_revision_without_loading_the_heavy_libraries() -> None:
    proc = _run([sys.executable, "-c", VERSION_SCRIPT])
    assert proc.returncode == 0, proc.stderr
    status, output = proc.stdout.split("\n", 1)
    assert status == "0 []"
    assert output == f"clevertim-sync, version {__version__} (schema {db.head_revision()})\n"


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _clevertim_sync_completion clevertim-sync"),
        ("zsh", "#compdef clevertim-sync"),
        ("fish", "complete --no-files --command clevertim-sync"),
    ],
)
def test_completion_script_for_each_shell(shell: str, marker: str) -> None:
    proc = _run([EXE], _CLEVERTIM_SYNC_COMPLETE=f"{shell}_source")
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout


def test_completion_completes_commands_and_subcommands() -> None:
    proc = _run(
        [EXE], _CLEVERTIM_SYNC_COMPLETE="bash_complete", COMP_WORDS="clevertim-sync que", COMP_CWORD="1"
    )
    assert proc.stdout.split() == ["plain,queue"]
    proc = _run(
        [EXE], _CLEVERTIM_SYNC_COMPLETE="bash_complete", COMP_WORDS="clevertim-sync queue re", COMP_CWORD="2"
    )
    assert set(proc.stdout.split()) == {"plain,resolve", "plain,retry"}
