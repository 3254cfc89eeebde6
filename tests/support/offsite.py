"""Where backups go off the machine in a test: an age identity, a local restic repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyrage


def new_identity(path: Path) -> str:
    """An age identity file at `path`, as age-keygen writes it; returns its public key."""
    identity = pyrage.x25519.Identity.generate()
    path.write_text(f"# created for a test\n# public key: {identity.to_public()}\n{identity}\n")
    path.chmod(0o600)
    return str(identity.to_public())


def new_repository(tmp_path: Path, name: str = "repo") -> tuple[str, Path]:
    """A local restic repository, initialised by restic itself; returns (location, password file)."""
    password = tmp_path / f"{name}-password"
    password.write_text("correct horse battery staple\n")
    location = str(tmp_path / name)
    subprocess.run(
        ["restic", "--repo", location, "--password-file", str(password), "init", "--quiet"],
        check=True,
        capture_output=True,
    )
    return location, password
