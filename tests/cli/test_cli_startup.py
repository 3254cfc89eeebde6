"""Start-up: `--help` imports no command module, and lists the commands exactly as click would
with every module loaded (the summaries in cli.COMMANDS say what the docstrings say)."""

from __future__ import annotations

import inspect
import subprocess
import sys

from clevertim_sync.cli import COMMANDS, cli, load_all

SCRIPT = """
import sys
from click.testing import CliRunner
from clevertim_sync.cli import cli, load_all
runner = CliRunner()
lazy = runner.invoke(cli, ["--help"], terminal_width=WIDTH)
heavy = sorted(m for m in ("sqlalchemy", "httpx", "alembic", "rich", "pydantic") if m in sys.modules)
loaded = sorted(m for m in sys.modules if m.startswith("clevertim_sync.cli."))
load_all()
eager = runner.invoke(cli, ["--help"], terminal_width=WIDTH)
assert lazy.exit_code == eager.exit_code == 0, (lazy.output, eager.output)
assert lazy.output == eager.output, (lazy.output, eager.output)
print(heavy, loaded)
"""


def test_every_command_has_its_summary() -> None:
    load_all()
    assert set(cli.commands) == set(COMMANDS)
    for name, (module, summary) in COMMANDS.items():
        cmd = cli.commands[name]
        assert cmd.callback is not None
        assert cmd.callback.__module__ == f"clevertim_sync.cli.{module}"
        first = " ".join(inspect.cleandoc(cmd.help or "").split("\n\n")[0].split())
        assert first == summary, f"update cli.COMMANDS[{name!r}] to the docstring's first paragraph"


def test_help_imports_no_command_and_reads_the_same() -> None:
    for width in (60, 80, 200):
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT.replace("WIDTH", str(width))],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[] []"
