"""The package works installed from its wheel, not only from the source tree (editable install).

Builds the wheel from a copy of the project (so no stale build/ of the work tree leaks in),
installs it with --no-deps into a fresh venv that sees the project venv's dependencies through a
.pth file, and runs `db upgrade` and `sync` against the emulator from a directory outside the
source tree: the migrations must come from the wheel (clevertim_sync._migrations).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror.revisions import head_revision

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of the project (no stale build/ of the work tree leaks in)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "alembic.ini"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "clevertim_sync", src / "clevertim_sync", ignore=ignore)
    shutil.copytree(ROOT / "migrations", src / "migrations", ignore=ignore)
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            ".",
        ],
        cwd=src,
    )
    (wheel,) = wheels.glob("clevertim_sync-*.whl")
    return wheel


def _emulator_env(emulator: EmulatorServer, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTIM", "PYTHON"))}
    return env | {
        "CLEVERTIM_URL": emulator.base_url,
        "CLEVERTIM_TOKEN": "test-token",
        "CLEVERTIM_SYNC_DATABASE_URL": f"sqlite:///{work / 'mirror.sqlite3'}",
        "PYTHONNOUSERSITE": "1",
    }


def _mirrored_contacts(work: Path) -> int:
    with sqlite3.connect(work / "mirror.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM contacts").fetchone()[0])


def test_wheel_installed_outside_the_source_tree(tmp_path: Path, emulator: EmulatorServer) -> None:
    wheel = _build_wheel(tmp_path)
    # Every package of the tree is in the wheel: a new subpackage left out of pyproject's list fails here.
    with zipfile.ZipFile(wheel) as zf:
        packaged = {str(Path(n).parent) for n in zf.namelist() if n.endswith("/__init__.py")}
    in_tree = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "clevertim_sync").rglob("__init__.py")}
    assert in_tree <= packaged, f"packages missing from the wheel: {sorted(in_tree - packaged)}"

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    # The new venv sees the project venv's third-party packages, but not its editable clevertim_sync:
    # a directory named in a .pth file is put on sys.path, its own .pth files (the editable finder)
    # are not run.
    site = Path(sysconfig.get_paths()["purelib"])
    new_site = next((target / "lib").glob("python3*/site-packages"))
    (new_site / "deps.pth").write_text(f"{site}\n")
    _run([sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "-q",
          "--no-deps", str(wheel)], cwd=tmp_path)  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _emulator_env(emulator, work)
    where = _run([str(target / "bin" / "python"), "-c",
                  "import clevertim_sync.mirror.db as d; print(d.__file__); print(d.MIGRATIONS_DIR)"],
                 cwd=work, env=env).stdout.split()  # fmt: skip
    assert where[0].startswith(str(target)), f"imported {where[0]}, not the installed wheel"
    assert where[1].startswith(str(target)), f"migrations from {where[1]}, not the installed wheel"

    exe = str(target / "bin" / "clevertim-sync")
    _run([exe, "db", "upgrade"], cwd=work, env=env)
    _run([exe, "sync"], cwd=work, env=env)
    mirrored = _mirrored_contacts(work)
    assert mirrored == len(emulator.control.state(as_token="test-token")["contact"])
    assert mirrored > 0
    # The wheel's own metadata writer (the registry, reports and schema it reads are packaged).
    _run([exe, "datasette", "--metadata", "meta.json"], cwd=work, env=env)
    assert "report-pipeline" in (work / "meta.json").read_text()


def test_pipx_installs_the_wheel_as_a_tool(tmp_path: Path, emulator: EmulatorServer) -> None:
    """`pipx install` of the built wheel, as a user installs a tool: its own venv with every
    dependency resolved from the package index, the command linked into PIPX_BIN_DIR (both in
    tmp_path, so no pipx state of the machine is touched), then used from outside the tree."""
    wheel = _build_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _emulator_env(emulator, work) | {
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipx", "install", str(wheel)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"pipx install failed:\n{proc.stdout}\n{proc.stderr}"
    exe = tmp_path / "bin" / "clevertim-sync"
    assert exe.is_file()
    version = _run([str(exe), "--version"], cwd=work, env=env).stdout
    assert f"(schema {head_revision()})" in version
    _run([str(exe), "sync"], cwd=work, env=env)
    assert _mirrored_contacts(work) == len(emulator.control.state(as_token="test-token")["contact"])
    # Its own environment: the package and its migrations come from pipx's venv, not the source tree.
    python = tmp_path / "pipx" / "venvs" / "clevertim-sync" / "bin" / "python"
    code = "import clevertim_sync.mirror.revisions as r; print(r.__file__); print(r.MIGRATIONS_DIR)"
    where = _run([str(python), "-c", code], cwd=work, env=env).stdout.split()
    assert all(w.startswith(str(tmp_path / "pipx")) for w in where), where
