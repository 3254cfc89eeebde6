"""The restore drill end to end: a mirror the emulator filled (photos on) is backed up as the
daemon does it (an age-encrypted archive and a restic snapshot); then, in a fresh directory holding
only the identity and the restic password, `clevertim-sync restore` brings each back into an empty
SQLite and an empty PostgreSQL; `export` equals the source's; the daemon started on the restored
mirror pulls with no change and pushes a new edit. And the drill's alert when a backup does not
restore."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support.offsite import new_identity, new_repository
from support.webhook import Receiver

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import configured
from clevertim_sync.daemon.jobs import JobOutcome
from clevertim_sync.daemon.service import Service
from clevertim_sync.daemon.wiring import real_backends
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema, store
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.pipeline import PullReport, pull
from clevertim_sync.settings import Settings, load
from clevertim_sync.writeback import queue

TOKEN = "test-token"


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def exported(url: str, directory: Path) -> dict[str, bytes]:
    """What `export` writes, file by file, and the photos as rows."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            store.export_jsonl(conn, directory)
            photos = conn.execute(
                sa.select(schema.contact_photos.c.contact_id, schema.contact_photos.c.sha256).order_by(
                    schema.contact_photos.c.contact_id
                )
            ).all()
    finally:
        engine.dispose()
    out = {p.name: p.read_bytes() for p in sorted(directory.glob("*.jsonl"))}
    out["photos"] = repr([tuple(r) for r in photos]).encode()
    return out


def clevertim_sync(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as a person runs it on a fresh machine: no config, no CLEVERTIM_* nor RESTIC_*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTIM", "RESTIC", "CREDENTIALS"))}
    clean |= {"HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd), **(env or {})}
    argv = [sys.executable, "-m", "clevertim_sync", *args]
    return subprocess.run(argv, cwd=cwd, env=clean, capture_output=True, text=True, check=False)


@pytest.fixture
def backed_up(sqlite_url: str, emulator: EmulatorServer, tmp_path: Path) -> dict[str, Any]:
    """A mirror filled by the emulator with photos, backed up as configured: archive and restic."""
    keys = tmp_path / "keys"  # kept apart from the machine that takes the backups
    keys.mkdir()
    recipient = new_identity(keys / "identity.txt")
    location, password = new_repository(keys, "offsite")
    settings = Settings.model_validate(
        {
            "state_dir": tmp_path / "state",
            "pull": {"photos": True},
            "backup": {
                "dir": tmp_path / "backups",
                "age_recipients": [recipient],
                "restic_repository": location,
                "restic_password_file": password,
            },
        }
    )
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        report = pull(engine, client, settings=settings)
    assert report.ok and report.photos is not None and report.photos.fetched > 0
    done = configured.backup_as_configured(engine, settings, "default")
    engine.dispose()
    assert done.archive is not None and done.restic is not None
    # The fresh machine: the identity, the password, the archive copied off-site. Nothing else.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for f in (keys / "identity.txt", password, done.archive.path):
        shutil.copy(f, fresh / f.name)
    return {
        "source": sqlite_url,
        "fresh": fresh,
        "archive": done.archive.path.name,
        "repository": location,
        "password": fresh / password.name,
    }


def daemon_on(
    url: str, emulator: EmulatorServer, tmp_path: Path
) -> tuple[Service, threading.Thread, list[JobOutcome]]:
    tmp_path.mkdir()
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[clevertim]\nurl = "{emulator.base_url}"\ntoken = "{TOKEN}"\n'
        f'[database]\nurl = "{url}"\n[pull]\ninterval = 600\njitter = 0\nphotos = true\n'
        "[push]\ninterval = 0.5\n"
    )
    outcomes: list[JobOutcome] = []
    service = Service(
        load(config, env={}), real_backends(), env={}, config_env={}, on_outcome=[outcomes.append]
    )
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return service, thread, outcomes


def test_a_backup_restores_on_a_fresh_machine_and_the_daemon_carries_on(
    backed_up: dict[str, Any], empty_database: Callable[[], str], emulator: EmulatorServer, tmp_path: Path
) -> None:
    fresh: Path = backed_up["fresh"]
    source = exported(backed_up["source"], tmp_path / "source-export")
    restic_env = {"RESTIC_PASSWORD_FILE": str(backed_up["password"])}

    # The drill first, as a person proves a backup where the keys are kept.
    out = clevertim_sync(fresh, "restore", "--drill", backed_up["archive"], "--identity", "identity.txt")
    assert out.returncode == 0 and out.stdout.startswith("drill OK"), out.stderr
    out = clevertim_sync(
        fresh, "restore", "--drill", "--from-restic", backed_up["repository"], env=restic_env
    )
    assert out.returncode == 0 and "drill OK: restic" in out.stdout, out.stderr

    from_age, from_restic = empty_database(), empty_database()
    out = clevertim_sync(fresh, "restore", backed_up["archive"], "--to", from_age)
    assert out.returncode == 1 and "encrypted with age: give --identity" in out.stderr
    out = clevertim_sync(
        fresh, "restore", backed_up["archive"], "--identity", "identity.txt", "--to", from_age
    )
    assert out.returncode == 0, out.stderr
    out = clevertim_sync(fresh, "restore", "--from-restic", backed_up["repository"], "--to", from_restic)
    assert out.returncode == 1 and "restic needs the repository's password" in out.stderr
    out = clevertim_sync(
        fresh, "restore", "--from-restic", backed_up["repository"], "--to", from_restic, env=restic_env
    )
    assert out.returncode == 0 and "from restic snapshot" in out.stdout, out.stderr

    urls = (from_age, from_restic)
    for n, url in enumerate(urls):
        assert exported(url, tmp_path / f"export-{n}") == source
    # A daemon on each restored mirror, at once: each one's first pull finds nothing new.
    daemons = [daemon_on(url, emulator, tmp_path / f"daemon-{n}") for n, url in enumerate(urls)]
    try:
        for _service, _thread, outcomes in daemons:
            first = wait_for(lambda o=outcomes: next((x for x in o if x.job == "pull"), None), what="a pull")
            report = first.result
            assert isinstance(report, PullReport) and report.ok, first.error
            changed = {k: v for k, v in report.totals().items() if k != "unchanged"}
            assert changed == dict.fromkeys(("inserted", "updated", "deleted", "touched"), 0)
            assert report.photos is not None and report.photos.fetched == 0
        # An edit made on each restored mirror goes out.
        contacts = sorted(r["id"] for r in emulator.control.state(as_token=TOKEN)["contact"])
        for n, url in enumerate(urls):
            engine = make_engine(url)
            queue.enqueue_update(engine, "contact", contacts[n], {"title": f"Restored {n}"})
            engine.dispose()
        for n in range(len(urls)):
            wait_for(
                lambda n=n: emulator.control.record("contact", contacts[n]).get("title") == f"Restored {n}",
                what="the push of an edit made on the restored mirror",
            )
    finally:
        for service, thread, _outcomes in daemons:
            service.request_stop()
            thread.join(30)


def test_the_drill_fails_and_says_why_on_a_damaged_archive(backed_up: dict[str, Any]) -> None:
    fresh: Path = backed_up["fresh"]
    archive = fresh / backed_up["archive"]
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        offset = tar.getmember("sealed.tar.age").offset_data
    data[offset + 1000] ^= 0x01
    (fresh / "damaged.tar").write_bytes(bytes(data))
    out = clevertim_sync(fresh, "restore", "--drill", "damaged.tar", "--identity", "identity.txt")
    assert out.returncode == 1 and "was altered or damaged" in out.stderr
    out = clevertim_sync(fresh, "verify", "damaged.tar")  # without the key too
    assert out.returncode == 1 and "was altered or damaged" in out.stderr
    out = clevertim_sync(fresh, "verify", backed_up["archive"])
    assert out.returncode == 0 and "whole, encrypted with age" in out.stdout
    out = clevertim_sync(fresh, "verify", backed_up["archive"], "--identity", "identity.txt")
    assert out.returncode == 0 and ": OK, sqlite backup of" in out.stdout


def test_the_daemons_drill_alerts_when_the_backup_does_not_restore(
    backed_up: dict[str, Any],
    emulator: EmulatorServer,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    repository = Path(backed_up["repository"])
    for pack in (repository / "data").rglob("*"):  # the repository's contents damaged on the disk
        if pack.is_file():
            pack.chmod(0o600)
            pack.write_bytes(b"\0" * pack.stat().st_size)
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[clevertim]\nurl = "{emulator.base_url}"\ntoken = "{TOKEN}"\n'
        f'[database]\nurl = "{backed_up["source"]}"\n[pull]\ninterval = 600\n'
        f'[backup]\nrestic_repository = "{repository}"\nrestic_password_file = "{backed_up["password"]}"\n'
        f'drill_interval = 1\n[alerts]\nurls = ["{receiver.url}"]\ninterval = 1\n'
    )
    outcomes: list[JobOutcome] = []
    service = Service(
        load(config, env={}), real_backends(), env={}, config_env={}, on_outcome=[outcomes.append]
    )
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        drill = wait_for(lambda: next((o for o in outcomes if o.job == "drill"), None), what="a drill")
        assert drill.status == "failed" and "restic dump" in str(drill.error)
        wait_for(lambda: "clevertim-sync: restore drill failed" in receiver.titles(), what="the alert")
        body = next(m["message"] for m in receiver.messages if m["title"].endswith("restore drill failed"))
        assert "the newest backup does not restore" in body
    finally:
        service.request_stop()
        thread.join(30)
