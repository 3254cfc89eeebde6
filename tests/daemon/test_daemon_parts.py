"""The daemon's parts that need no API: sd_notify, the instance lock, the job runner, the accounts
config and the systemd unit. The daemon as a whole, in a subprocess, is in test_daemon_process.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clevertim_sync.daemon.accounts import accounts
from clevertim_sync.daemon.jobs import JobRunner
from clevertim_sync.daemon.notify import Notifier, watchdog_interval
from clevertim_sync.errors import ConfigError, InstanceLocked, MirrorError
from clevertim_sync.mirror import lock as instance_lock
from clevertim_sync.settings import load

ROOT = Path(__file__).resolve().parents[2]


# --- sd_notify --------------------------------------------------------------------------------


def _datagram_server(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_notify_sends_datagrams_to_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    server = _datagram_server(path)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.ready(status="mirroring 3 resources")
    assert server.recv(4096) == b"READY=1\nSTATUS=mirroring 3 resources"
    assert notifier.watchdog()
    assert server.recv(4096) == b"WATCHDOG=1"
    assert notifier.status("line one\nline two")
    assert server.recv(4096) == b"STATUS=line one line two"
    assert notifier.stopping()
    assert server.recv(4096) == b"STOPPING=1"
    notifier.close()
    server.close()


def test_notify_supports_abstract_sockets() -> None:
    name = f"clevertim-sync-test-{os.getpid()}-{time.monotonic_ns()}"
    server = _datagram_server(b"\0" + name.encode())
    notifier = Notifier(f"@{name}")
    assert notifier.ready()
    assert server.recv(4096) == b"READY=1"
    server.close()


def test_notify_is_a_no_op_without_socket_and_survives_a_missing_one(tmp_path: Path) -> None:
    assert not Notifier.from_env({}).enabled
    assert Notifier.from_env({}).ready() is False
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert gone.watchdog() is False  # logged, never raised


def test_notify_never_blocks_on_a_socket_nobody_reads_and_owes_the_watchdog(tmp_path: Path) -> None:
    path = str(tmp_path / "unread.sock")
    server = _datagram_server(path)  # bound, never read until the end: its queue fills
    notifier = Notifier(path)
    sent: list[bool] = []

    def flood() -> None:
        sent.extend(notifier.status(f"job {i} finished") for i in range(200))
        sent.append(notifier.watchdog())

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    sender.join(timeout=5)
    assert not sender.is_alive(), "a send blocked on the full notify socket"
    assert sent[0] and not sent[-1]  # the queue took some lines, then refused the watchdog ping
    server.setblocking(False)
    while True:  # systemd reads again
        try:
            server.recv(4096)
        except BlockingIOError:
            break
    server.settimeout(2)
    assert notifier.status("running")
    assert server.recv(4096) == b"WATCHDOG=1\nSTATUS=running"  # the owed ping went with it
    assert notifier.status("idle")
    assert server.recv(4096) == b"STATUS=idle"
    notifier.close()
    server.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None


# --- the instance lock ------------------------------------------------------------------------

_HOLD_LOCK = """
import sys, time
from clevertim_sync.mirror import lock
held = lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_sqlite_lock_refuses_a_second_holder_and_frees_when_the_holder_dies(sqlite_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, sqlite_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert "held" in (line.strip() for line in iter(holder.stdout.readline, ""))  # logs come first
        with pytest.raises(InstanceLocked, match=rf"pid {holder.pid}\b.*stop it first"):
            instance_lock.acquire(sqlite_url)
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL left the lock file behind, but not the lock.
    mine = instance_lock.acquire(sqlite_url)
    assert mine.check()
    with pytest.raises(InstanceLocked):
        instance_lock.acquire(sqlite_url)  # a second open file description in this process too
    mine.release()
    instance_lock.acquire(sqlite_url).release()


def test_standby_is_refused_on_sqlite(sqlite_url: str) -> None:
    with pytest.raises(InstanceLocked, match="PostgreSQL"):
        instance_lock.acquire(sqlite_url, standby=True)


@pytest.mark.postgres
def test_postgres_advisory_lock_and_standby_takeover(postgres_url: str) -> None:
    first = instance_lock.acquire(postgres_url)
    with pytest.raises(
        InstanceLocked, match=r"server pid \d+\); stop it first, or start this one with --standby"
    ):
        instance_lock.acquire(postgres_url)
    taken: list[instance_lock.InstanceLock] = []
    waits: list[str] = []
    stop = threading.Event()
    standby = threading.Thread(
        target=lambda: taken.append(
            instance_lock.acquire(
                postgres_url, standby=True, retry_every=0.1, stop=stop, on_wait=waits.append
            )
        )
    )
    standby.start()
    time.sleep(0.5)
    assert not taken and waits == ["standby: waiting for the active daemon to stop"]
    first.release()
    standby.join(timeout=5)
    assert len(taken) == 1 and taken[0].check()
    assert not first.check()
    # A standby told to stop gives up with a clear error instead of waiting forever.
    stop.set()
    with pytest.raises(InstanceLocked, match="standby"):
        instance_lock.acquire(postgres_url, standby=True, retry_every=0.1, stop=stop)
    taken[0].release()


# --- the job runner ---------------------------------------------------------------------------


def test_jobs_of_one_account_never_overlap_and_a_hung_job_meets_its_deadline() -> None:
    outcomes = []
    runner = JobRunner("a", deadline=0.3, on_finish=outcomes.append, wait_for_busy=0.05)
    release = threading.Event()
    hung = runner.run("pull", lambda: release.wait(10))
    assert hung.status == "timeout" and 0.3 <= hung.duration < 1
    assert runner.current == "pull"
    # While the hung pull still runs, a push does not start: it is skipped, not interleaved.
    pushed: list[int] = []
    assert runner.run("push", lambda: pushed.append(1)).status == "skipped"
    assert pushed == []
    release.set()
    assert runner.wait_idle(2)
    ok = runner.run("push", lambda: 42)
    assert ok.ok and ok.result == 42
    failed = runner.run("push", lambda: 1 / 0)
    assert failed.status == "failed" and isinstance(failed.error, ZeroDivisionError)
    runner.close()
    assert runner.run("push", lambda: 1).status == "skipped"
    assert [o.status for o in outcomes] == ["timeout", "skipped", "ok", "failed", "skipped"]


# --- several accounts -------------------------------------------------------------------------


def test_accounts_each_get_their_own_url_token_and_database(tmp_path: Path) -> None:
    token_file = tmp_path / "b.token"
    token_file.write_text("token-b\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[pull]
interval = 60
[[accounts]]
name = "a"
url = "http://127.0.0.1:1/api"
token = "token-a"
database_url = "sqlite:///{tmp_path}/a.db"
[[accounts]]
name = "b"
url = "https://b.example.com/api"
token_file = "{token_file}"
"""
    )
    got = accounts(load(config, env={"STATE_DIRECTORY": str(tmp_path)}))
    assert [a.name for a in got] == ["a", "b"]
    a, b = (acc.settings for acc in got)
    assert (a.clevertim.url, a.token_value(), a.database.url) == (
        "http://127.0.0.1:1/api",
        "token-a",
        f"sqlite:///{tmp_path}/a.db",
    )
    assert (b.token_value(), b.database.url) == ("token-b", f"sqlite:///{tmp_path}/b.sqlite3")
    assert a.pull.interval == b.pull.interval == 60
    assert "token-a" not in repr(a) and "token-b" not in repr(b)


def test_accounts_problems_are_reported_together(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[[accounts]]
name = "a"
token_file = "{tmp_path}/missing.token"
[[accounts]]
name = "a"
"""
    )
    with pytest.raises(ConfigError) as err:
        accounts(load(config, env={"STATE_DIRECTORY": str(tmp_path)}))
    text = str(err.value)
    assert "repeated: a" in text and "missing.token cannot be read" in text and "give token_file" in text
    assert "share one database" in text


def test_single_account_without_token_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no API token"):
        accounts(load(None, env={"STATE_DIRECTORY": str(tmp_path)}))


# --- the systemd unit -------------------------------------------------------------------------


def test_systemd_unit_verifies_clean(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        # `make test` installs it (scripts/ensure-system-packages); CI must not pass without it.
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: scripts/ensure-system-packages installs it")
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "deploy" / "clevertim-sync.service").read_text()
    for required in (
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=clevertim-sync",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "LoadCredential=clevertim-token:/etc/clevertim-sync/token",
        "TimeoutStopSec=",
        "Restart=on-failure",
        "MemoryMax=",
        "CacheDirectory=clevertim-sync",
        "Environment=TMPDIR=%C/clevertim-sync",
    ):
        assert required in unit, required
    # verify checks that ExecStart's binary exists: point a copy at this checkout's venv.
    exe = Path(sys.executable).parent / "clevertim-sync"
    assert exe.exists()
    copy = tmp_path / "clevertim-sync.service"
    copy.write_text(unit.replace("/opt/clevertim-sync/venv/bin/clevertim-sync", str(exe)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "clevertim-sync.service" not in done.stderr, done.stderr  # no warning about our unit


def test_example_config_loads(tmp_path: Path) -> None:
    settings = load(ROOT / "deploy" / "config.example.toml", env={"CLEVERTIM_TOKEN": "t"})
    assert settings.daemon.health_listen == "127.0.0.1:9187"
    assert settings.push.interval == 30


def test_an_unreachable_postgresql_is_a_clear_error_without_the_password() -> None:
    port = _closed_port()
    with pytest.raises(
        MirrorError, match=r"cannot connect to .*:\*\*\*@127\.0\.0\.1.* to take the instance lock"
    ) as err:
        instance_lock.acquire(f"postgresql+psycopg://u:hunter2secret@127.0.0.1:{port}/x")
    assert "hunter2secret" not in str(err.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
