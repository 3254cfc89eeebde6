"""deploy/'s timer pairs (clevertim-sync-sync and clevertim-sync-backup, .service + .timer): each
verifies clean with `systemd-analyze verify`, runs the commands the docs name, shares the daemon
unit's user, state directory and hardening, and its timer starts its service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
INSTALLED = "/opt/clevertim-sync/venv/bin/clevertim-sync"
PAIRS = {"clevertim-sync-sync": ("push", "sync"), "clevertim-sync-backup": ("backup",)}


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        # `make test` installs it (scripts/ensure-system-packages); CI must not pass without it.
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: scripts/ensure-system-packages installs it")
        pytest.skip("systemd-analyze is not installed")
    return found


def _service_section(text: str) -> list[str]:
    """The settings of a unit's [Service] section, one a line."""
    section = text.split("[Service]", 1)[1].split("\n[", 1)[0]
    return [line for line in section.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_timer_pair_verifies_clean(name: str, tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    service = (DEPLOY / f"{name}.service").read_text()
    timer = (DEPLOY / f"{name}.timer").read_text()
    commands = [line.split()[-1] for line in service.splitlines() if line.startswith("ExecStart=")]
    assert tuple(commands) == PAIRS[name]
    assert "Type=oneshot" in service and "OnCalendar=" in timer and "Persistent=true" in timer
    # The same mirror and the same protection as the daemon: every line of the daemon unit's
    # [Service] about who it runs as, where its state is and its hardening is here too.
    daemon = _service_section((DEPLOY / "clevertim-sync.service").read_text())
    daemon_only = (
        "Type=",
        "NotifyAccess=",
        "ExecStart=",
        "ExecReload=",
        "WatchdogSec=",
        "Timeout",
        "Restart",
    )
    shared = [line for line in daemon if not line.startswith(daemon_only)]
    missing = [line for line in shared if line not in _service_section(service)]
    assert not missing, missing
    # verify checks that ExecStart's binary exists: point copies at this checkout's venv.
    exe = Path(sys.executable).parent / "clevertim-sync"
    (tmp_path / f"{name}.service").write_text(service.replace(INSTALLED, str(exe)))
    (tmp_path / f"{name}.timer").write_text(timer)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / f"{name}.timer"), str(tmp_path / f"{name}.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert name not in done.stderr, done.stderr  # no warning about our units
