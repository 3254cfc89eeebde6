"""`clevertim-sync demo`, the README's first command, as a newcomer runs it: a subprocess in an
empty directory, a mirror within seconds, the printed commands work, Ctrl-C ends it with status 0."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from clevertim_sync import resources


def _wait_for_line(log: Path, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} within {timeout} s in:\n{log.read_text(errors='replace')}")


def test_demo_mirrors_pushes_an_edit_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
    env["CLEVERTIM_TOKEN"] = "a-real-token-the-demo-must-ignore"
    log = tmp_path / "demo.log"
    exe = Path(sys.executable).parent / "clevertim-sync"
    args = [
        "demo",
        "--contacts",
        "300",
        "--pull-interval",
        "2",
        "--push-interval",
        "1",
        "--remote-edits",
        "1",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        started = time.monotonic()
        _wait_for_line(log, r"The mirror is live", timeout=30)
        assert time.monotonic() - started < 30
        text = log.read_text()
        assert re.search(rf"pull ok at .*: \+\d+ ~0 -0 in {len(resources.RESOURCES)} resources", text), text
        db = tmp_path / "demo" / "clevertim-sync.sqlite3"
        rows = sqlite3.connect(db).execute("select count(*) from contacts").fetchone()[0]
        assert rows > 250
        # The printed edit command works as printed (from the same directory).
        edit = _wait_for_line(
            log, r"\n    (CLEVERTIM_URL=\S+ .* edit update contact ID --set title=CEO)\n", 5
        ).group(1)
        contact_id = sqlite3.connect(db).execute("select min(id) from contacts").fetchone()[0]
        command = edit.replace(" ID ", f" {contact_id} ").replace("clevertim-sync edit", f"{exe} edit", 1)
        words = shlex.split(command)
        assignments = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
        argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
        if not Path(argv[0]).is_absolute():
            argv[0] = str(exe)
        done = subprocess.run(
            argv, cwd=tmp_path, env=env | assignments, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        base_url = assignments["CLEVERTIM_URL"]
        token = assignments["CLEVERTIM_TOKEN"]

        def remote_title() -> str | None:
            resp = httpx.get(f"{base_url}/contact/{contact_id}", auth=(token, "X"), timeout=5)
            return resp.json()["content"][0].get("title")

        deadline = time.monotonic() + 10
        while remote_title() != "CEO":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        _wait_for_line(log, r"remote: a colleague set contact \d+'s title", timeout=10)
        _wait_for_line(log, r"pull ok at .*: \+0 ~[1-9]", timeout=10)
        # The printed Datasette command finds the demo's mirror (here without --serve: no server).
        browse = _wait_for_line(log, r"\n    \S+ (--config \S+ datasette) --serve\n", 1).group(1)
        done = subprocess.run(
            [str(exe), *browse.split()], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "clevertim-sync" in json.loads((tmp_path / "datasette-metadata.json").read_text())["databases"]
        health = _wait_for_line(log, r"curl (http://127\.0\.0\.1:\d+)/healthz", 1).group(1)
        assert httpx.get(health + "/metrics", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    assert "Demo stopped after" in log.read_text()
    assert "a-real-token-the-demo-must-ignore" not in (tmp_path / "demo" / "clevertim-sync.toml").read_text()
    assert (tmp_path / "demo" / "clevertim-sync.toml").stat().st_mode & 0o077 == 0
