"""A Clevertim stand-in: a real HTTP server with a seeded account, the API's rules, faults and a
control surface. `EmulatorServer` serves it; `EmulatorControl` drives it from tests.

Modules: seed.py (deterministic data), store.py (records and rules), faults.py (fault specs),
quirks.py (a real server's variants, `--quirks`), server.py (HTTP), control.py (the control
surface's client).
"""

from __future__ import annotations

from clevertim_sync.emulator.control import EmulatorControl, EmulatorControlError
from clevertim_sync.emulator.faults import FaultSpecError
from clevertim_sync.emulator.server import EmulatorServer

__all__ = ["EmulatorControl", "EmulatorControlError", "EmulatorServer", "FaultSpecError"]
