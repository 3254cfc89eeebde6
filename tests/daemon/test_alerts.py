"""Alerts end to end: a real HTTP receiver on loopback reached through apprise's `json://` webhook,
real databases (SQLite and PostgreSQL), an injected clock. Start, clear, once a day while it stays,
a receiver that is down (logged, sent later), a restart in between (no repeat, no forget), the
queue's items listed in one message, the guard, stale pulls, a failed backup; then the daemon
itself sending them while it goes on with its jobs; then `alerts test` / `alerts status`."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import wait_for as _wait
from structlog.testing import capture_logs
from support.webhook import Receiver

from clevertim_sync.daemon.alerts import Alerts, Sender, read_status
from clevertim_sync.daemon.runtime import Backends
from clevertim_sync.daemon.service import Service
from clevertim_sync.errors import ConfigError
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror import lock as instance_lock
from clevertim_sync.mirror import schema
from clevertim_sync.settings import Settings, load
from clevertim_sync.writeback import outbox
from clevertim_sync.writeback import tables as wb

TOKEN = "secret-token-never-in-a-message"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _settings(tmp_path: Path, db_url: str, urls: list[str], extra: str = "") -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[clevertim]
url = "http://127.0.0.1:9/api"
token = "{TOKEN}"
[database]
url = "{db_url}"
[daemon]
stale_after = 3600
[alerts]
urls = {json.dumps(urls)}
{extra}
"""
    )
    return load(path, env={})


def _pulls(engine: sa.Engine, name: str, *, failures: int = 0, at: datetime = T0, **extra: Any) -> None:
    """resource_status of one resource, as a pull leaves it."""
    rs = schema.resource_status
    values: dict[str, Any] = {
        "last_pull_at": at,
        "consecutive_failures": failures,
        "last_error": "connection refused" if failures else None,
        **extra,
    }
    if not failures:
        values["last_success_at"] = at
    with engine.begin() as conn:
        if conn.execute(sa.select(rs.c.resource).where(rs.c.resource == name)).first() is None:
            conn.execute(sa.insert(rs).values(resource=name, **values))
        else:
            conn.execute(sa.update(rs).where(rs.c.resource == name).values(**values))


def test_start_once_a_day_receiver_down_restart_and_clear(
    mirror_engine: sa.Engine, migrated_database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, migrated_database_url, [receiver.url])
    alerts = Alerts(mirror_engine, settings, "default")
    _pulls(mirror_engine, "contact", failures=2)
    assert alerts.evaluate(T0) == []  # 2 failures: below alerts.failures (3)
    _pulls(mirror_engine, "contact", failures=3)
    sent = alerts.evaluate(T0)
    assert [(m.condition, m.kind) for m in sent] == [("pull_failing", "start")]
    assert receiver.titles() == ["clevertim-sync: pulls failing"]
    body = receiver.messages[0]["message"]
    assert "contact: the last 3 pulls failed: connection refused" in body
    assert "clevertim-sync status" in body
    assert receiver.messages[0]["type"] == "failure"

    # It stays: no repeat within the day, even from a restarted daemon (a new Alerts).
    assert alerts.evaluate(T0 + timedelta(hours=1)) == []
    assert Alerts(mirror_engine, settings, "default").evaluate(T0 + timedelta(hours=23)) == []
    assert len(receiver.messages) == 1
    # A day later it is told once more.
    later = T0 + timedelta(hours=24, minutes=1)
    assert [m.kind for m in alerts.evaluate(later)] == ["still"]
    assert receiver.titles()[-1] == "clevertim-sync: still: pulls failing"
    assert alerts.evaluate(later + timedelta(minutes=5)) == []

    # It clears while the receiver is down: logged, not lost.
    receiver.down()
    _pulls(mirror_engine, "contact", at=later + timedelta(hours=1))
    with capture_logs() as logs:
        assert alerts.evaluate(later + timedelta(hours=1)) == []
    failed = [e for e in logs if e["event"] == "alerts.send_failed"]
    assert failed and failed[0]["condition"] == "pull_failing" and failed[0]["log_level"] == "warning"
    assert TOKEN not in repr(logs)
    with mirror_engine.connect() as conn:
        (owed,) = read_status(conn)
    assert not owed.active and not owed.told and owed.cleared_at == later + timedelta(hours=1)
    assert owed.lines[0] == "Pulls work again for: contact"

    # The daemon restarts, the receiver is back: the clear message comes, once, and says what
    # cleared and how long it lasted (until it cleared, not until it could be told).
    receiver.up()
    restarted = Alerts(mirror_engine, settings, "default")
    assert [m.kind for m in restarted.evaluate(later + timedelta(hours=1, minutes=5))] == ["clear"]
    assert receiver.titles()[-1] == "clevertim-sync: cleared: pulls failing"
    assert receiver.messages[-1]["message"] == (
        "Pulls work again for: contact\nIt lasted 1 d 1 h: from 2026-11-30 08:00 to 2026-12-01 09:01 UTC."
    )
    assert receiver.messages[-1]["type"] == "success"
    assert restarted.evaluate(later + timedelta(hours=1, minutes=10)) == []
    assert len(receiver.messages) == 3
    assert all(TOKEN not in json.dumps(m) for m in receiver.messages)
    with mirror_engine.connect() as conn:
        assert read_status(conn) == []


def test_a_condition_that_starts_while_the_receiver_is_down_is_sent_after_a_restart(
    mirror_engine: sa.Engine, migrated_database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, migrated_database_url, [receiver.url])
    receiver.down()
    _pulls(mirror_engine, "company", failures=5)
    assert Alerts(mirror_engine, settings, "default").evaluate(T0) == []
    with mirror_engine.connect() as conn:
        (row,) = read_status(conn)
    assert row.condition == "pull_failing" and row.active and not row.told and row.since == T0
    receiver.up()
    sent = Alerts(mirror_engine, settings, "default").evaluate(T0 + timedelta(minutes=5))
    assert [(m.condition, m.kind) for m in sent] == [("pull_failing", "start")]
    assert "company: the last 5 pulls failed" in receiver.messages[0]["message"]
    with mirror_engine.connect() as conn:
        (row,) = read_status(conn)
    assert row.told and row.since == T0  # still since it started, not since it was told


def test_queue_items_needing_a_person_come_in_one_message_with_the_command_to_look(
    mirror_engine: sa.Engine, migrated_database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, migrated_database_url, [receiver.url])
    alerts = Alerts(mirror_engine, settings, "default")
    q = wb.writeback_queue

    def item(state: str) -> int:
        with mirror_engine.begin() as conn:
            fields = '{"title": "Secret Title"}'
            stmt = sa.insert(q).values(
                resource="contact", op="update", target_id=7, state=state, fields=fields
            )
            return int(conn.execute(stmt).inserted_primary_key[0])

    a, b, c, d = item(outbox.CONFLICT), item(outbox.CONFLICT), item(outbox.FAILED), item(outbox.QUARANTINED)
    item(outbox.DONE)
    assert [m.kind for m in alerts.evaluate(T0)] == ["start"]
    (msg,) = receiver.messages
    assert msg["title"] == "clevertim-sync: queue items need a person"
    assert f"2 conflict: {a}, {b} (look: clevertim-sync queue list --state conflict)" in msg["message"]
    assert f"1 failed: {c} (look: clevertim-sync queue list --state failed)" in msg["message"]
    assert f"1 quarantined: {d}" in msg["message"]
    assert "Secret Title" not in msg["message"]  # ids and counts, never record contents
    # One more conflict: news, told at once; the same set again: nothing.
    e = item(outbox.CONFLICT)
    assert [m.kind for m in alerts.evaluate(T0 + timedelta(minutes=1))] == ["more"]
    assert f"3 conflict: {a}, {b}, {e}" in receiver.messages[-1]["message"]
    assert alerts.evaluate(T0 + timedelta(minutes=2)) == []
    # Settled (here by hand): the clear message.
    with mirror_engine.begin() as conn:
        conn.execute(sa.update(q).where(q.c.state.in_(outbox.NEEDS_A_PERSON)).values(state=outbox.CANCELLED))
    assert [m.kind for m in alerts.evaluate(T0 + timedelta(minutes=3))] == ["clear"]
    assert receiver.titles()[-1] == "clevertim-sync: cleared: queue items need a person"
    assert receiver.messages[-1]["message"].startswith(
        f"No longer needing a person: queue items {a}, {b}, {e} (conflict); {c} (failed); {d} (quarantined)\n"
        "It lasted 3 min: from 2026-11-30 08:00"
    )


def test_held_stale_and_a_failed_backup_each_have_their_message(
    mirror_engine: sa.Engine, migrated_database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, migrated_database_url, [receiver.url])
    alerts = Alerts(mirror_engine, settings, "shop")  # a named account: its messages say so
    _pulls(
        mirror_engine,
        "contact",
        at=T0 - timedelta(hours=5),
        held=True,
        held_reason="would delete 40 of 100 records (40%)",
    )
    _pulls(mirror_engine, "note", at=T0 - timedelta(hours=3))  # stale_after is 1 h
    alerts.record_backup(False, "disk full writing /backups/x.tar", T0)
    sent = alerts.evaluate(T0)
    assert sorted(m.condition for m in sent) == ["backup", "held", "unhealthy"]
    by_title = {m["title"]: m["message"] for m in receiver.messages}
    held = by_title["clevertim-sync [shop]: held by the mass-delete guard"]
    assert "contact: would delete 40 of 100 records (40%)" in held
    assert "clevertim-sync sync --allow-mass-delete --resource contact" in held
    stale = by_title["clevertim-sync [shop]: unhealthy: stale pulls or a stuck queue"]
    assert "note: last good pull at 2026-11-30 05:00 UTC" in stale
    assert "the backup failed: disk full" in by_title["clevertim-sync [shop]: backup failed"]
    assert "contact" not in stale  # held (so stale too), but its own message tells it
    with mirror_engine.connect() as conn:
        assert [r.condition for r in read_status(conn)] == ["backup", "held", "unhealthy"]
    # The next backup works: its condition clears, the others stay quiet.
    alerts.record_backup(True, None, T0 + timedelta(hours=1))
    assert [(m.condition, m.kind) for m in alerts.evaluate(T0 + timedelta(hours=1))] == [("backup", "clear")]


def test_without_receivers_nothing_is_sent_but_the_state_is_kept(
    mirror_engine: sa.Engine, migrated_database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    _pulls(mirror_engine, "contact", failures=3)
    quiet = Alerts(mirror_engine, _settings(tmp_path, migrated_database_url, []), "default")
    with capture_logs() as logs:
        assert quiet.evaluate(T0) == []
    assert not [e for e in logs if e["event"].startswith("alerts.")]  # no warning every 5 minutes
    # Receivers configured later hear of what is still wrong.
    told = Alerts(mirror_engine, _settings(tmp_path, migrated_database_url, [receiver.url]), "default")
    assert [m.kind for m in told.evaluate(T0 + timedelta(minutes=1))] == ["start"]


def test_an_alert_url_apprise_does_not_know_is_a_config_error_without_the_url(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, sqlite_url, ["json://127.0.0.1:1/ok", "nosuchscheme://hunter2@x"])
    with pytest.raises(ConfigError) as exc:
        Service(settings, Backends(make_client=None, check_token=None, pull=None, push=None), env={})  # type: ignore[arg-type]
    assert "URL 2 (nosuchscheme://...) is not one apprise understands" in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_alert_urls_are_redacted_from_every_log_line_apprise_s_own_at_debug_included(
    sqlite_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    # What a webhook or a mail URL keeps secret: a password, path segments, a query value.
    secrets = ("mail-pa55word-0xq", "T0SECRET7", "B0SECRET8", "XXhookSecretZZ", "qs-secret-91")
    url = f"json://alerter:{secrets[0]}@127.0.0.1:{receiver.port}/{secrets[1]}/{secrets[2]}/{secrets[3]}"
    url += f"?:X-Key={secrets[4]}"
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    try:
        sender = Sender(_settings(tmp_path, sqlite_url, [url]))
        assert sender.send("clevertim-sync: test", "a test message", "info")
        receiver.down()  # a receiver that is down: apprise and our own lines say so, at every level
        assert not sender.send("clevertim-sync: test", "again", "info")
    finally:
        configure_logging("json", "info", stream=io.StringIO())
    logged = stream.getvalue()
    assert "apprise" in logged and "127.0.0.1" in logged  # apprise's own lines are in this log
    assert [s for s in secrets if s in logged] == []


def test_alert_urls_come_from_a_file_or_a_systemd_credential(tmp_path: Path) -> None:
    urls = tmp_path / "urls"
    urls.write_text("# the team's channel\njson://127.0.0.1:1/a\n\nntfy://my-topic\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[alerts]\nurls = ["json://127.0.0.1:1/inline"]\nurls_file = "{urls}"\n')
    got = load(config, env={}).alerts.urls
    assert [u.get_secret_value() for u in got] == [
        "json://127.0.0.1:1/inline",
        "json://127.0.0.1:1/a",
        "ntfy://my-topic",
    ]
    assert "my-topic" not in repr(load(config, env={}))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "clevertim-sync-alert-urls").write_text("ntfy://from-credential\n")
    got = load(None, env={"CREDENTIALS_DIRECTORY": str(creds)}).alerts.urls
    assert [u.get_secret_value() for u in got] == ["ntfy://from-credential"]
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no URL"):
        load(None, env={"CLEVERTIM_SYNC_ALERT_URLS_FILE": str(tmp_path / "empty")})


# --- the daemon ------------------------------------------------------------------------------


class FailingPull:
    """Stand-in backends: a pull that records failures (or successes) the way the pull does, and
    a backup that fails until told otherwise."""

    def __init__(self) -> None:
        self.fail = True
        self.backup_fails = True
        self.pulls = 0

    def backends(self) -> Backends:
        def pull(engine: sa.Engine, _client: Any, *, resources: Any, **_: Any) -> None:
            self.pulls += 1
            rs = schema.resource_status
            now = datetime.now(UTC)
            with engine.begin() as conn:
                for name in resources:
                    row = conn.execute(sa.select(rs).where(rs.c.resource == name)).first()
                    failures = (row.consecutive_failures + 1 if row else 1) if self.fail else 0
                    values: dict[str, Any] = {"last_pull_at": now, "consecutive_failures": failures}
                    values["last_error"] = "connection refused" if self.fail else None
                    if not self.fail:
                        values["last_success_at"] = now
                    if row is None:
                        conn.execute(sa.insert(rs).values(resource=name, **values))
                    else:
                        conn.execute(sa.update(rs).where(rs.c.resource == name).values(**values))

        def backup(_engine: sa.Engine, _settings: Any, _account: str) -> None:
            if self.backup_fails:
                raise OSError("No space left on device")

        return Backends(
            make_client=lambda *_a, **_k: _Closable(),
            check_token=lambda _c: None,
            pull=pull,
            push=lambda *_a, **_k: None,
            backup=backup,
        )


class _Closable:
    def close(self) -> None:
        pass


def test_the_daemon_alerts_goes_on_while_the_receiver_is_down_and_sends_later(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    settings = _settings(
        tmp_path,
        database_url,
        [receiver.url],
        extra="failures = 2\ninterval = 1\n[pull]\ninterval = 0.5\njitter = 0\n"
        f"intervals = {{}}\n[backup]\ndir = '{tmp_path}'\ninterval = 1",
    )
    receiver.down()
    fake = FailingPull()
    ready = threading.Event()
    service = Service(settings, fake.backends(), env={}, config_env={}, on_ready=lambda _s: ready.set())
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", service.run()), daemon=True)
    with capture_logs() as logs:
        thread.start()
        try:
            assert ready.wait(15)
            # The receiver is down: the daemon logs it and goes on pulling.
            _wait(lambda: any(e["event"] == "alerts.send_failed" for e in logs))
            pulls = fake.pulls
            _wait(lambda: fake.pulls > pulls)
            assert receiver.messages == []
            # It comes back: the messages arrive without a new failure (the slow timer).
            receiver.up()
            _wait(
                lambda: (
                    {"clevertim-sync: pulls failing", "clevertim-sync: backup failed"}
                    <= set(receiver.titles())
                )
            )
            assert "No space left on device" in next(
                m["message"] for m in receiver.messages if m["title"].endswith("backup failed")
            )
            # /metrics says the same, from the database.
            metrics = service.metrics.exposition()[2].decode()
            assert 'clevertim_sync_backup_failing{account="default"} 1.0' in metrics
            assert 'clevertim_sync_alert_active{account="default",condition="pull_failing"} 1.0' in metrics
            assert (
                'clevertim_sync_stale_after_seconds{account="default",resource="contact"} 3600.0' in metrics
            )
            # The pulls and the backup work again: the clear messages, once each.
            fake.fail = fake.backup_fails = False
            _wait(
                lambda: (
                    {"clevertim-sync: cleared: pulls failing", "clevertim-sync: cleared: backup failed"}
                    <= set(receiver.titles())
                )
            )
            time.sleep(1.5)
            metrics = service.metrics.exposition()[2].decode()
            assert 'clevertim_sync_backup_failing{account="default"} 0.0' in metrics
            assert 'clevertim_sync_alert_active{account="default",condition="pull_failing"} 0.0' in metrics
            assert sorted(receiver.titles()) == sorted(
                [
                    "clevertim-sync: pulls failing",
                    "clevertim-sync: backup failed",
                    "clevertim-sync: cleared: pulls failing",
                    "clevertim-sync: cleared: backup failed",
                ]
            )
        finally:
            service.request_stop()
            thread.join(15)
    assert result.get("code") == 0
    assert TOKEN not in repr(logs) and all(TOKEN not in json.dumps(m) for m in receiver.messages)


# --- the command line ------------------------------------------------------------------------


def test_alerts_test_sends_one_message_and_fails_when_a_receiver_is_down(
    cli_runner: Callable[..., Any], migrated_database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    urls = tmp_path / "alert-urls"
    urls.write_text(receiver.url + "\n")
    run = cli_runner(migrated_database_url, CLEVERTIM_SYNC_ALERT_URLS_FILE=str(urls))
    assert run("alerts", "test", code=0).output == "test message sent to 1 receiver(s)\n"
    (msg,) = receiver.messages
    assert msg["title"] == "clevertim-sync: test message" and msg["type"] == "info"
    receiver.down()
    out = run("alerts", "test", code=1).output
    assert "did not reach every one of the 1 receiver(s)" in out
    bare = cli_runner(migrated_database_url)
    assert "no alert receivers: set alerts.urls" in bare("alerts", "test", code=2).output


def test_alerts_status_and_status_and_check_name_the_active_conditions(
    cli_runner: Callable[..., Any], mirror_engine: sa.Engine, migrated_database_url: str, tmp_path: Path
) -> None:
    run = cli_runner(migrated_database_url)
    assert run("alerts", "status", code=0).output == "no active alerts\n"
    _pulls(mirror_engine, "contact", failures=4)
    Alerts(mirror_engine, _settings(tmp_path, migrated_database_url, []), "default").evaluate()
    out = run("alerts", "status", code=0).output
    assert out.startswith("pull_failing: active since ")
    assert "not yet told" in out and "contact: the last 4 pulls failed: connection refused" in out
    (row,) = json.loads(run("alerts", "status", "--json", code=0).output)
    assert row["condition"] == "pull_failing" and row["active"] and not row["told"]
    status = run("status", code=0).output
    assert "alerts: pull_failing (not yet told) (see `clevertim-sync alerts status`)" in status
    check = run("check").output
    assert "ok    alerts: pull_failing (not yet told); no receiver(s) in [alerts]" in check


def test_receivers_added_by_a_reload_hear_what_is_still_wrong(
    sqlite_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    extra = "interval = 0.5\n[pull]\ninterval = 0.5\njitter = 0\n"
    settings = _settings(tmp_path, sqlite_url, [], extra="failures = 1\n" + extra)
    config = tmp_path / "config.toml"  # what _settings wrote, read again on SIGHUP
    fake = FailingPull()
    ready = threading.Event()
    service = Service(
        settings, fake.backends(), config_path=config, env={}, config_env={}, on_ready=lambda _s: ready.set()
    )
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert ready.wait(15)
        _wait(lambda: fake.pulls >= 2)
        time.sleep(1)
        assert receiver.messages == []  # no receivers yet: nothing sent
        _settings(tmp_path, sqlite_url, [receiver.url], extra="failures = 1\n" + extra)
        service.request_reload()
        _wait(lambda: "clevertim-sync: pulls failing" in receiver.titles())
    finally:
        service.request_stop()
        thread.join(15)
    assert not thread.is_alive()


# --- wherever the sync runs: commands from cron or a timer ---------------------------------


def _cron(
    cli_runner: Callable[..., Any], database_url: str, receiver: Receiver, tmp_path: Path
) -> Callable[..., Any]:
    """A command line as cron runs it: the receivers in a file, info-level logs."""
    urls = tmp_path / "alert-urls"
    urls.write_text(receiver.url + "\n")
    return cli_runner(  # type: ignore[no-any-return]
        database_url, CLEVERTIM_SYNC_ALERT_URLS_FILE=str(urls), CLEVERTIM_SYNC_LOG_LEVEL="info"
    )


def test_failing_cron_syncs_alert_once_and_the_good_one_says_what_cleared(
    cli_runner: Callable[..., Any], database_url: str, emulator: Any, receiver: Receiver, tmp_path: Path
) -> None:
    run = _cron(cli_runner, database_url, receiver, tmp_path)
    emulator.control.add_fault(kind="broken_listing", method="GET", path="^/company$")
    run("sync", code=1)
    run("sync", code=1)
    assert receiver.messages == []  # 2 failures: below alerts.failures (3)
    run("sync", code=1)
    (alert,) = receiver.messages
    assert alert["title"] == "clevertim-sync: pulls failing" and alert["type"] == "failure"
    assert "company: the last 3 pulls failed: GET company: body is not a JSON object" in alert["message"]
    names = [c["cn"] for c in emulator.control.state()["company"] if c.get("cn")]
    assert names and not any(name in alert["message"] for name in names)  # never record contents
    run("sync", code=1)  # a fourth failing run: nothing new to tell
    assert len(receiver.messages) == 1
    emulator.control.clear_faults()
    run("sync", code=0)
    assert receiver.titles() == ["clevertim-sync: pulls failing", "clevertim-sync: cleared: pulls failing"]
    cleared = receiver.messages[1]["message"]
    assert cleared.startswith("Pulls work again for: company\nIt lasted ")
    assert receiver.messages[1]["type"] == "success"
    # Quiet afterwards: a good run, and one failing run (1 failure, below the threshold).
    run("sync", code=0)
    emulator.control.add_fault(kind="broken_listing", method="GET", path="^/company$")
    run("sync", code=1)
    assert len(receiver.messages) == 2
    assert "no active alerts" in run("alerts", "status", code=0).output


def test_a_sync_run_by_hand_while_a_daemon_holds_the_lock_leaves_the_telling_to_it(
    cli_runner: Callable[..., Any], database_url: str, emulator: Any, receiver: Receiver, tmp_path: Path
) -> None:
    run = _cron(cli_runner, database_url, receiver, tmp_path)
    emulator.control.add_fault(kind="broken_listing", method="GET", path="^/company$")
    daemon_lock = instance_lock.acquire(database_url)  # what a running daemon holds
    try:
        for _ in range(3):
            run("sync", code=1)
        assert receiver.messages == []
    finally:
        daemon_lock.release()
    # The daemon is gone: the next run is the sender, and tells what is owed.
    run("sync", code=1)
    assert receiver.titles() == ["clevertim-sync: pulls failing"]
    assert "company: the last 4 pulls failed" in receiver.messages[0]["message"]


def test_a_failed_cron_backup_is_told_and_so_is_the_next_good_one(
    cli_runner: Callable[..., Any], database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    run = _cron(cli_runner, database_url, receiver, tmp_path)
    in_the_way = tmp_path / "not-a-directory"
    in_the_way.write_text("x")
    assert run("backup", str(in_the_way / "backups")).exit_code != 0
    (alert,) = receiver.messages
    assert alert["title"] == "clevertim-sync: backup failed"
    assert "the backup failed:" in alert["message"]
    run("backup", str(tmp_path / "backups"), code=0)
    assert receiver.titles()[-1] == "clevertim-sync: cleared: backup failed"
    assert receiver.messages[-1]["message"].startswith("The backup works again.\nIt lasted ")
    assert len(receiver.messages) == 2


def test_without_receivers_cron_runs_still_record_what_alerts_status_shows(
    cli_runner: Callable[..., Any], database_url: str, emulator: Any
) -> None:
    run = cli_runner(database_url)  # no [alerts] receivers
    emulator.control.add_fault(kind="broken_listing", method="GET", path="^/company$")
    for _ in range(3):
        run("sync", code=1)
    out = run("alerts", "status", code=0).output
    assert out.startswith("pull_failing: active since ") and "not yet told" in out
    assert "company: the last 3 pulls failed" in out
