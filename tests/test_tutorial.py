"""The tutorial (docs/tutorial.md) is true: every `$` command of its console blocks runs, in order,
in one directory against the emulator, and prints what the page shows. So does the install
page's (docs/how-to/install.md: `--version`).

The page's configuration (its first toml block) is written with the emulator's URL for the real
one, and `YOUR-API-TOKEN` is the emulator's token. Only stdout is compared (the probe's progress
goes to stderr), after these normalisations, applied to the page and the output alike:
- the emulator's URL reads as https://www.clevertim.com/api, the test's directory as /home/me/crm;
- the JSON log lines a command prints on a pipe (a terminal shows a progress bar) are left out;
- times and dates (2026-12-07 18:01:24, 2026-12-07T18:01:24Z, 18:02) and durations (0.1 s,
  0.01s, and the sync table's 0.01 seconds) are placeholders;
- runs of spaces are one space, a run of one box-drawing character is one (column widths follow
  the numbers), trailing blanks go.
`make demo`'s screen (a text block) is not run here: tests/daemon/test_daemon_demo.py runs the demo.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from clevertim_sync.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
INSTALL = ROOT / "docs" / "how-to" / "install.md"
PUBLIC_URL = "https://www.clevertim.com/api"
HOME = "/home/me/crm"
TOKEN_PLACEHOLDER = "YOUR-API-TOKEN"

_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?Z?")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_SECONDS = re.compile(r"\b\d+(\.\d+)? ?s\b|\b\d+\.\d\d\b")
_BOX_RUN = re.compile(r"([━─])\1+")
_LOG_LINE = re.compile(r'^\{".*"event":')


def blocks(text: str, language: str) -> list[list[str]]:
    """The fenced blocks of one language, as lists of lines."""
    found: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None and line.strip() == f"```{language}":
            current = []
        elif current is not None and line.strip() == "```":
            found.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return found


def examples(text: str) -> list[tuple[str, list[str]]]:
    """Every `$ command` of the console blocks with the output lines shown under it."""
    out: list[tuple[str, list[str]]] = []
    for block in blocks(text, "console"):
        for line in block:
            if line.startswith("$ "):
                out.append((line[2:], []))
            else:
                out[-1][1].append(line)
    return out


def normalise(text: str) -> str:
    lines = []
    for raw in text.splitlines():
        if _LOG_LINE.match(raw):
            continue
        line = _DATE.sub("<date>", _TIME.sub("<time>", raw))
        line = _BOX_RUN.sub(r"\1", _SECONDS.sub("<s>", line))
        lines.append(" ".join(line.split()))
    return "\n".join(lines).strip()


def test_normalise_keeps_what_matters() -> None:
    assert normalise("a  0.01s   2.7 KB\n") == "a <s> 2.7 KB"
    assert normalise('{"run_id":1,"event":"pull.started"}\nok') == "ok"
    assert normalise("v2   2026-12-07 18:01:34  local") == normalise("v2 2027-01-01 00:00:00 local")
    assert normalise("contact  28") != normalise("contact  27")


def test_every_command_of_the_tutorial_prints_what_it_shows(tmp_path: Path, emulator: EmulatorServer) -> None:
    page = TUTORIAL.read_text(encoding="utf-8")
    (config,) = blocks(page, "toml")[:1]
    (tmp_path / "clevertim-sync.toml").write_text(
        "\n".join(config).replace(PUBLIC_URL, emulator.base_url) + "\n", encoding="utf-8"
    )
    steps = examples(page)
    assert len(steps) >= 12, "the tutorial's console blocks were not found"
    _run_examples(TUTORIAL, steps, tmp_path, emulator.base_url)


def test_the_install_pages_examples_print_what_they_show(tmp_path: Path) -> None:
    steps = examples(INSTALL.read_text(encoding="utf-8"))
    assert [command for command, _ in steps] == ["clevertim-sync --version"]
    _run_examples(INSTALL, steps, tmp_path, PUBLIC_URL)


def _run_examples(page: Path, steps: list[tuple[str, list[str]]], cwd: Path, url: str) -> None:
    """Run each command in `cwd`, the API at `url`; compare its stdout with what the page shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTIM", "PYTHON"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for command, shown in steps:
        proc = subprocess.run(
            ["bash", "-c", command.replace(TOKEN_PLACEHOLDER, "test-token")],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode in (0, 1), f"$ {command}\n{proc.stdout}\n{proc.stderr}"
        printed = proc.stdout.replace(url, PUBLIC_URL).replace(str(cwd), HOME)
        expected = "\n".join(shown)
        assert normalise(printed) == normalise(expected), (
            f"{page.relative_to(ROOT)}: `$ {command}` now prints:\n{printed}\n(stderr: {proc.stderr})"
        )
