"""Helpers that more than one test file uses: `from support.daemon import Daemon`.

Importable because pytest puts tests/ on sys.path for its conftest.py. A test module imports no
other test module: in another folder that works only when pytest happened to import that folder's
tests first."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for a server a test starts later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
