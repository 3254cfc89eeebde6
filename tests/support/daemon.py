"""The daemon as systemd runs it: `clevertim-sync run` in a subprocess with its config, log file
and a test NOTIFY_SOCKET (what systemd would hear)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from conftest import EMULATOR_TOKEN as TOKEN
from conftest import wait_for


class NotifySocket:
    """What systemd would hear: every datagram sent to $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self._sock.recv(65536).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.split("\n")]

    def count(self, line: str) -> int:
        return self.lines().count(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


class Daemon:
    """One `clevertim-sync run` process with its config, log file and notify socket."""

    def __init__(self, workdir: Path, name: str, config: str, *, args: tuple[str, ...] = ()) -> None:
        self.dir = workdir / name
        self.dir.mkdir()
        self.config = self.dir / "config.toml"
        self.config.write_text(config)
        self.notify = NotifySocket(self.dir / "notify.sock")
        self.log = self.dir / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
        env |= {"NOTIFY_SOCKET": self.notify.path, "WATCHDOG_USEC": "1000000", "JOURNAL_STREAM": "0:0"}
        cmd = [sys.executable, "-m", "clevertim_sync", "--config", str(self.config), "run", *args]
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=self.dir)

    def ready(self, timeout: float = 90.0) -> None:
        wait_for(lambda: self.notify.count("READY=1") or self.proc.poll() is not None, "READY=1", timeout)
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()
        self.notify.close()


def config(
    emulator_url: str,
    db_url: str,
    *,
    pull: float = 2,
    push: float = 1,
    health: int | None = None,
    extra: str = "",
) -> str:
    health_line = f'health_listen = "127.0.0.1:{health}"' if health else ""
    return f"""
log_format = "json"
[clevertim]
url = "{emulator_url}"
token = "{TOKEN}"
timeout = 5
read_retries = 0
[database]
url = "{db_url}"
[pull]
interval = {pull}
jitter = 0
[push]
interval = {push}
lease = 3
backoff_base = 0.5
[daemon]
stale_after = 60
{health_line}
{extra}
"""
