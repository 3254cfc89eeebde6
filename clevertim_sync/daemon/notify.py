"""sd_notify over `$NOTIFY_SOCKET`, spoken directly (the `sdnotify` package is unmaintained).

Owns: the datagram to systemd (READY=1, WATCHDOG=1, STATUS=..., STOPPING=1) and the watchdog
period derived from `WATCHDOG_USEC` / `WATCHDOG_PID`. Everything is a no-op when the variables are
unset, so the same code runs on a terminal and under systemd.

Sends never block: a socket nobody reads (PID 1 busy, a supervisor that reads late) fills after
about ten datagrams, and a blocking send would then stall every job that reports its status. A
datagram that finds the queue full is dropped (a STATUS= line is only the latest news), except a
WATCHDOG=1, which is owed and rides along with the next datagram that goes.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def _address(raw: str) -> str | bytes:
    # '@name' is a Linux abstract socket: its address starts with a NUL byte.
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when there is no watchdog."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    # systemd sets WATCHDOG_PID to the main process; a child that inherited the variable must not ping.
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000


class Notifier:
    """One connection-less sender to systemd's notify socket."""

    def __init__(self, socket_path: str | None) -> None:
        self._address = _address(socket_path) if socket_path else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._watchdog_owed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send `KEY=value` lines in one datagram, without waiting; False when it could not go
        (a full queue, or no systemd: logged)."""
        if self._address is None:
            return False
        with self._lock:
            owed = self._watchdog_owed and "WATCHDOG=1" not in lines
            payload = "\n".join(("WATCHDOG=1", *lines) if owed else lines).encode()
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, socket.MSG_DONTWAIT, self._address)
            except BlockingIOError:
                self._watchdog_owed = self._watchdog_owed or "WATCHDOG=1" in lines
                log.debug("notify.queue_full", message=lines[0] if lines else "")
                return False
            except OSError as exc:
                # systemd going away must never take the daemon down with it.
                log.warning("notify.failed", error=str(exc), message=lines[0] if lines else "")
                return False
            self._watchdog_owed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        # A STATUS line ends at the newline; keep it one line.
        return self.send("STATUS=" + " ".join(text.split()))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
