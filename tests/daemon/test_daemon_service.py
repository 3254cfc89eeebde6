"""The daemon's service in-process, with stand-in pull/push functions: scheduling, exclusion of pull
and push, the push soon after an edit is queued, the start-up token check, stop in the middle of
a pull, reload, and /healthz + /metrics judged from a real database (SQLite and PostgreSQL).
The real pull and push against the emulator, in a subprocess, are in test_daemon_process.py."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import wait_for as _wait

from clevertim_sync import resources
from clevertim_sync.api import errors as e
from clevertim_sync.daemon import healthz, wiring
from clevertim_sync.daemon.accounts import Account
from clevertim_sync.daemon.runtime import AccountRuntime, Backends
from clevertim_sync.daemon.scheduler import new_scheduler, schedule_account
from clevertim_sync.daemon.service import Service
from clevertim_sync.errors import ApiError, ClevertimSyncError
from clevertim_sync.health import Pause
from clevertim_sync.health.delays import resting_wait
from clevertim_sync.mirror import pause as server_pause
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.settings import load
from clevertim_sync.writeback import tables as wb


def FakeApiError(message: str, *, transient: bool) -> ApiError:
    """An error of the API, retried at start-up (transient: cannot connect) or fatal (a refused token)."""
    kind = e.TransportError if transient else e.LoginRequired
    return kind(message, method="GET", resource="user")


class Recorder:
    """Stand-ins for the client, the pull and the push that record what ran, when, and overlaps."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.calls: list[tuple[str, float]] = []
        self.running = 0
        self.overlaps = 0
        self.token_errors: list[ClevertimSyncError] = []
        self.pull_hook: Callable[[Callable[..., None]], None] | None = None
        self.pull_fails = False
        self.clients: list[_Client] = []
        self.holders: list[Any] = []  # the instance lock's holder id each push was given
        self._lock = threading.Lock()

    def _enter(self, name: str) -> None:
        with self._lock:
            self.running += 1
            self.overlaps += self.running > 1
            self.calls.append((name, time.monotonic()))

    def _leave(self) -> None:
        with self._lock:
            self.running -= 1

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def backends(self) -> Backends:
        def check_token(_client: Any) -> None:
            if self.token_errors:
                raise self.token_errors.pop(0)

        def pull(
            engine: sa.Engine, _client: Any, *, resources: Any, settings: Any, progress: Any, stop: Any
        ) -> Any:
            self._enter("pull")
            try:
                time.sleep(0.2)  # long enough for a push to try to cut in
                if self.pull_hook is not None:
                    self.pull_hook(progress)
                mark_pulled(engine, list(resources), ok=not self.pull_fails)
                if self.pull_fails:
                    raise FakeApiError("connection refused", transient=True)
                return None
            finally:
                self._leave()

        def push(
            _engine: sa.Engine, _client: Any, _settings: Any, *, stop: Any = None, holder: Any = None
        ) -> Any:
            self.holders.append(holder)
            self._enter("push")
            try:
                time.sleep(0.2)
                return None
            finally:
                self._leave()

        def make_client(settings: Any, **_: Any) -> _Client:
            client = _Client(settings.token_value())
            self.clients.append(client)
            return client

        return Backends(make_client=make_client, check_token=check_token, pull=pull, push=push)


class _Client:
    def __init__(self, token: str) -> None:
        self.token = token
        self.closed = False

    def close(self) -> None:
        self.closed = True


def mark_pulled(engine: sa.Engine, names: list[str], *, ok: bool, at: datetime | None = None) -> None:
    """What a pull records in resource_status, written the way the pull does."""
    rs = schema.resource_status
    at = at or datetime.now(UTC)
    with engine.begin() as conn:
        for name in names:
            row = conn.execute(sa.select(rs).where(rs.c.resource == name)).first()
            failures = 0 if ok else (row.consecutive_failures + 1 if row else 1)
            values: dict[str, Any] = {
                "last_pull_at": at,
                "consecutive_failures": failures,
                "last_error": None if ok else "connection refused",
            }
            if ok:
                values["last_success_at"] = at
            if row is None:
                conn.execute(sa.insert(rs).values(resource=name, **values))
            else:
                conn.execute(sa.update(rs).where(rs.c.resource == name).values(**values))


def _config(tmp_path: Path, db_url: str, extra: str = "", pull: str = "interval = 1\njitter = 0") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[clevertim]
url = "http://127.0.0.1:9/api"
token = "test-token"
[database]
url = "{db_url}"
[pull]
{pull}
[push]
interval = 60
[daemon]
health_listen = "127.0.0.1:0"
{extra}
"""
    )
    return path


class Running:
    def __init__(self, service: Service, thread: threading.Thread, result: dict[str, Any]) -> None:
        self.service = service
        self.thread = thread
        self.result = result

    def stop(self, timeout: float = 10) -> int:
        self.service.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service did not stop"
        if "error" in self.result:
            raise self.result["error"]
        return int(self.result["code"])

    def get(self, path: str) -> httpx.Response:
        assert self.service.health_server is not None
        return httpx.get(self.service.health_server.url + path, timeout=5)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def _start(
        db_url: str, rec: Recorder, extra: str = "", wait_ready: bool = True, pull: str = ""
    ) -> Running:
        config = _config(tmp_path, db_url, extra, pull) if pull else _config(tmp_path, db_url, extra)
        ready = threading.Event()
        service = Service(
            load(config, env={}),
            rec.backends(),
            config_path=config,
            env={},
            config_env={},
            on_ready=lambda _s: ready.set(),
        )
        result: dict[str, Any] = {}

        def body() -> None:
            try:
                result["code"] = service.run()
            except BaseException as exc:
                result["error"] = exc

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        running = Running(service, thread, result)
        started.append(running)
        if wait_ready:
            assert ready.wait(15), result
        return running

    yield _start
    for running in started:
        running.service.request_stop()
        running.thread.join(10)


def test_pulls_on_schedule_and_pull_and_push_never_overlap(
    sqlite_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(sqlite_url)
    svc = start(sqlite_url, rec)
    _wait(lambda: rec.names().count("pull") >= 3)
    assert "push" in rec.names()  # the first push runs at start
    assert rec.overlaps == 0
    pulls = [t for n, t in rec.calls if n == "pull"]
    assert all(0.5 < b - a < 4 for a, b in itertools.pairwise(pulls)), pulls  # 1 s, on a busy machine
    assert svc.stop() == 0


def test_pushes_run_as_the_instance_lock_s_holder(sqlite_url: str, start: Callable[..., Running]) -> None:
    # So a push reconciles at once what a killed predecessor left in flight
    # (outbox.recover_dead_holders).
    rec = Recorder(sqlite_url)
    svc = start(sqlite_url, rec)
    _wait(lambda: "push" in rec.names())
    (runtime,) = svc.service.runtimes
    assert runtime.lock is not None and rec.holders[0] == runtime.lock.holder_id
    assert svc.stop() == 0


def test_a_queued_edit_is_pushed_within_seconds_not_at_the_push_interval(
    database_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(database_url)
    svc = start(database_url, rec, extra="")
    _wait(lambda: "push" in rec.names())
    time.sleep(0.5)
    pushes = rec.names().count("push")
    engine = make_engine(database_url)
    with engine.begin() as conn:  # the documented way to queue an edit from plain SQL
        conn.execute(sa.insert(wb.writeback_queue).values(resource="contact", op="update", target_id=1))
    queued = time.monotonic()
    _wait(lambda: rec.names().count("push") > pushes)
    pushed_at = next(t for n, t in reversed(rec.calls) if n == "push")
    assert pushed_at - queued < 8  # the push interval is 60 s; the queue is watched every 2 s
    # The stand-in push left the item pending (as a real one does when the item must wait): the
    # watch does not bring the push forward again for it...
    pushes = rec.names().count("push")
    time.sleep(4.5)
    assert rec.names().count("push") == pushes
    # ...but does for the next new edit.
    with engine.begin() as conn:
        conn.execute(sa.insert(wb.writeback_queue).values(resource="contact", op="update", target_id=2))
    _wait(lambda: rec.names().count("push") > pushes)
    engine.dispose()
    assert svc.stop() == 0


def test_health_is_503_until_every_resource_is_fresh_then_200_and_503_when_pulls_fail(
    database_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(database_url)
    svc = start(database_url, rec, extra="stale_after = 30")
    _wait(lambda: svc.get("/healthz").status_code == 200)
    body = svc.get("/healthz").json()
    assert body["status"] == "ok" and body["reasons"] == []
    rec.pull_fails = True
    _wait(lambda: svc.get("/healthz").status_code == 503)
    reasons = svc.get("/healthz").json()["reasons"]
    assert any("contact: the last" in r and "connection refused" in r for r in reasons), reasons
    metrics = svc.get("/metrics").text
    assert 'clevertim_sync_consecutive_failures{account="default",resource="contact"}' in metrics
    assert 'clevertim_sync_last_success_timestamp_seconds{account="default",resource="contact"}' in metrics
    assert 'clevertim_sync_errors_total{account="default",job="pull",resource=""}' in metrics
    assert 'clevertim_sync_job_duration_seconds_count{account="default",job="push",status="ok"}' in metrics
    rec.pull_fails = False
    _wait(lambda: svc.get("/healthz").status_code == 200, timeout=15)
    assert svc.stop() == 0


def test_health_names_stale_resources_and_a_stuck_queue(
    database_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(database_url)
    rec.pull_hook = _no_pull  # keep the scheduled pulls from writing anything
    svc = start(database_url, rec, extra="stale_after = 600")
    engine = make_engine(database_url)
    old = datetime.now(UTC) - timedelta(hours=2)
    mark_pulled(engine, [r.name for r in resources.RESOURCES], ok=True, at=old)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(wb.writeback_queue).values(
                resource="contact", op="update", target_id=1, state="in_flight", lease_until=old
            )
        )
    resp = svc.get("/healthz")
    assert resp.status_code == 503
    reasons = resp.json()["reasons"]
    assert any(r.startswith("contact is stale: last good pull 120 min ago") for r in reasons), reasons
    assert any("writeback queue is stuck: 1 item(s) overdue" in r for r in reasons), reasons
    assert resp.json()["queue"] == {"default": {"in_flight": 1}}
    assert 'clevertim_sync_queue_depth{account="default",state="in_flight"} 1.0' in svc.get("/metrics").text
    engine.dispose()
    assert svc.stop() == 0


def _no_pull(_progress: Callable[..., None]) -> None:
    raise RuntimeError("no pull in this test")


def test_stop_in_the_middle_of_a_pull_ends_it_at_the_next_resource(
    sqlite_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(sqlite_url)
    in_pull = threading.Event()
    seen: list[str] = []

    def hook(progress: Callable[..., None]) -> None:
        in_pull.set()
        for name in ("user", "contact", "note"):
            time.sleep(0.3)
            progress(name)  # raises once the daemon is stopping
            seen.append(name)

    rec.pull_hook = hook
    svc = start(sqlite_url, rec)
    assert in_pull.wait(5)
    started = time.monotonic()
    assert svc.stop() == 0
    assert time.monotonic() - started < 3
    assert len(seen) < 3


def test_a_rejected_token_fails_start_and_an_unreachable_api_is_waited_for(
    sqlite_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(sqlite_url)
    rec.token_errors = [FakeApiError("401: the token was rejected", transient=False)]
    svc = start(sqlite_url, rec, wait_ready=False)
    svc.thread.join(10)
    assert isinstance(svc.result.get("error"), e.LoginRequired)
    assert rec.calls == []  # nothing ran before READY

    rec = Recorder(sqlite_url)
    rec.token_errors = [FakeApiError("connection refused", transient=True)]
    svc = start(sqlite_url, rec)  # READY after the retry, about 2 s later
    assert svc.stop() == 0


def test_reload_reschedules_with_the_new_interval_and_a_rotated_token_gets_a_new_client(
    sqlite_url: str, start: Callable[..., Running], tmp_path: Path
) -> None:
    rec = Recorder(sqlite_url)
    svc = start(sqlite_url, rec)
    _wait(lambda: rec.names().count("pull") >= 2)
    text = _config(tmp_path, sqlite_url).read_text()
    _config(tmp_path, sqlite_url).write_text(
        text.replace("interval = 1\n", "interval = 300\n", 1).replace("test-token", "rotated-token")
    )
    svc.service.request_reload()
    _wait(lambda: svc.service.runtimes[0].settings.pull.interval == 300)
    count = rec.names().count("pull")
    time.sleep(3)
    # The pull already due under the old interval may still run once; then the new one rules.
    assert rec.names().count("pull") <= count + 1
    # The next job (the pull due at once, or the queue watch's push) swapped the client.
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.insert(wb.writeback_queue).values(resource="contact", op="update", target_id=1))
    engine.dispose()
    _wait(lambda: [c.token for c in rec.clients] == ["test-token", "rotated-token"])
    assert rec.clients[0].closed and svc.service.runtimes[0].client is rec.clients[1]
    assert svc.stop() == 0


def test_failing_resources_wait_longer_each_time() -> None:
    assert [resting_wait(n, 60) for n in (0, 1, 2, 3, 4)] == [0, 0, 60, 120, 240]
    assert resting_wait(30, 900) == 3600


def test_several_accounts_each_get_their_own_jobs_database_and_lock(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    a_url, b_url = f"sqlite:///{tmp_path}/a.sqlite3", f"sqlite:///{tmp_path}/b.sqlite3"
    accounts = f"""
[[accounts]]
name = "acme"
url = "http://127.0.0.1:9/api"
token = "token-a"
database_url = "{a_url}"
[[accounts]]
name = "globex"
url = "http://127.0.0.1:9/api"
token = "token-b"
database_url = "{b_url}"
"""
    rec = Recorder(a_url)
    svc = start(f"sqlite:///{tmp_path}/unused.sqlite3", rec, extra=accounts)
    assert [rt.name for rt in svc.service.runtimes] == ["acme", "globex"]
    _wait(lambda: svc.get("/healthz").status_code == 200)

    def pulled(url: str) -> int:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                count = sa.select(sa.func.count()).select_from(schema.resource_status)
                return int(conn.execute(count).scalar_one())
        except sa.exc.OperationalError:  # not migrated yet
            return 0
        finally:
            engine.dispose()

    # Each account's first pull runs on its own: healthy is not yet "both pulled" on a loaded machine.
    _wait(lambda: all(pulled(url) == len(resources.RESOURCES) for url in (a_url, b_url)))
    for url in (a_url, b_url):
        assert Path(url.removeprefix("sqlite:///") + ".lock").exists()
    metrics = svc.get("/metrics").text
    assert 'account="acme"' in metrics and 'account="globex"' in metrics
    rec.pull_fails = True
    _wait(lambda: svc.get("/healthz").status_code == 503)
    reasons = svc.get("/healthz").json()["reasons"]
    assert any(r.startswith("acme: ") for r in reasons) and any(r.startswith("globex: ") for r in reasons)
    assert svc.stop() == 0


def test_a_hung_pull_meets_its_deadline_keeps_push_out_and_shows_in_health(
    sqlite_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(sqlite_url)
    release = threading.Event()
    rec.pull_hook = lambda _progress: release.wait(20)
    svc = start(sqlite_url, rec, extra="job_deadline = 1")
    _wait(lambda: svc.service.runtimes[0].last_pull_outcome is not None)
    outcome = svc.service.runtimes[0].last_pull_outcome
    assert outcome is not None and outcome.status == "timeout"
    reasons = svc.get("/healthz").json()["reasons"]
    assert any("the last pull job timeout: pull ran past its deadline of 1 s" in r for r in reasons), reasons
    # The hung pull still holds the account: the push waits its turn instead of interleaving.
    assert "push" not in rec.names()
    release.set()
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:  # a due edit brings the push forward once the account is free
        conn.execute(sa.insert(wb.writeback_queue).values(resource="contact", op="update", target_id=1))
    engine.dispose()
    _wait(lambda: "push" in rec.names())
    assert rec.overlaps == 0
    assert svc.stop() == 0


def test_the_backup_job_writes_archives_on_schedule(
    sqlite_url: str, start: Callable[..., Running], tmp_path: Path
) -> None:
    rec = Recorder(sqlite_url)
    backups = tmp_path / "backups"
    real = Recorder.backends

    def with_backup(self: Recorder) -> Backends:
        return dataclasses.replace(real(self), backup=wiring.real_backends().backup)

    rec.backends = types.MethodType(with_backup, rec)  # type: ignore[method-assign]
    svc = start(sqlite_url, rec, extra=f'[backup]\ndir = "{backups}"\ninterval = 1\nkeep = 2')
    _wait(lambda: backups.is_dir() and len(list(backups.glob("*.tar*"))) >= 2, timeout=15)
    assert svc.stop() == 0
    assert len(list(backups.glob("*.tar*"))) <= 2  # keep = 2


def test_a_resource_with_its_own_interval_is_pulled_alone_on_its_own_schedule(
    sqlite_url: str, start: Callable[..., Running]
) -> None:
    rec = Recorder(sqlite_url)
    groups: list[list[str]] = []
    backends = rec.backends()

    def pull(engine: sa.Engine, client: Any, *, resources: Any, settings: Any, **kw: Any) -> Any:
        groups.append(list(resources))
        return backends.pull(engine, client, resources=resources, settings=settings, **kw)

    rec.backends = lambda: dataclasses.replace(backends, pull=pull)  # type: ignore[method-assign]
    svc = start(sqlite_url, rec, pull="interval = 600\njitter = 0\nintervals = { user = 1 }")
    _wait(lambda: groups.count(["user"]) >= 3)
    assert groups[0] == [r.name for r in resources.RESOURCES if r.name != "user"]  # the main pull, once
    assert all(g == ["user"] for g in groups[1:]), groups
    assert svc.stop() == 0


def runtime_of(settings: Any, url: str = "") -> AccountRuntime:
    """One account's runtime, its jobs recorded (not run), no mirror opened."""
    return AccountRuntime(
        Account("default", settings),
        Recorder(url).backends(),
        on_finish=lambda _o: None,
        stopping=threading.Event(),
    )


def runtime_on(settings: Any, sqlite_url: str) -> AccountRuntime:
    """`runtime_of` with its mirror open and migrated (dispose `rt.engine` at the end)."""
    rt = runtime_of(settings, sqlite_url)
    rt.engine = make_engine(sqlite_url)
    upgrade(rt.engine)
    return rt


def test_resources_that_keep_failing_rest_while_the_others_are_pulled(sqlite_url: str) -> None:
    settings = load(None, env={"CLEVERTIM_TOKEN": "t", "CLEVERTIM_SYNC_DATABASE_URL": sqlite_url})
    rt = runtime_on(settings, sqlite_url)
    now = datetime.now(UTC)
    mark_pulled(rt.engine, ["contact", "note"], ok=True, at=now - timedelta(seconds=10))
    for _ in range(3):  # contact: 3 failures in a row, the last 10 s ago -> rests 2 intervals
        mark_pulled(rt.engine, ["contact"], ok=False, at=now - timedelta(seconds=10))
    mark_pulled(rt.engine, ["note"], ok=False, at=now - timedelta(seconds=10))  # 1 failure: no rest
    assert rt.due_resources(["company", "contact", "note"], now) == ["company", "note"]
    later = now + timedelta(seconds=2 * settings.pull.interval)
    assert rt.due_resources(["company", "contact", "note"], later) == ["company", "contact", "note"]
    rt.engine.dispose()


def test_no_scheduled_pull_while_the_server_wide_pause_is_in_force(sqlite_url: str) -> None:
    # A push met a 429 asking for 120 s (or a refused token, an outage): the pulls wait too.
    settings = load(None, env={"CLEVERTIM_TOKEN": "t", "CLEVERTIM_SYNC_DATABASE_URL": sqlite_url})
    rt = runtime_on(settings, sqlite_url)
    now = datetime.now(UTC)
    names = ["company", "contact"]
    assert rt.due_resources(names, now) == names
    server_pause.put(rt.engine, Pause(now + timedelta(seconds=120), 1, "rate limited (HTTP 429)"), now)
    assert rt.due_resources(names, now) == []
    assert rt.due_resources(names, now + timedelta(seconds=121)) == names
    rt.engine.dispose()


def test_a_resource_the_account_lacks_is_asked_again_only_slowly_and_is_never_stale(sqlite_url: str) -> None:
    env = {"CLEVERTIM_TOKEN": "t", "CLEVERTIM_SYNC_DATABASE_URL": sqlite_url}
    settings = load(None, env=env)
    settings = settings.model_copy(
        update={"pull": settings.pull.model_copy(update={"unavailable_retry": 7200})}
    )
    rt = runtime_on(settings, sqlite_url)
    now = datetime.now(UTC)
    mark_pulled(rt.engine, ["contact", "folder"], ok=True, at=now - timedelta(seconds=10))
    with rt.engine.begin() as conn:  # /folder answered 404: unavailable, not failed (documents.py)
        conn.execute(
            sa.update(schema.resource_status)
            .where(schema.resource_status.c.resource == "folder")
            .values(unavailable="/folder answered HTTP 404")
        )
    later = now + timedelta(seconds=2 * settings.pull.interval)
    assert rt.due_resources(["contact", "folder"], later) == ["contact"]
    assert rt.due_resources(["contact", "folder"], now + timedelta(seconds=7200)) == ["contact", "folder"]
    # Hours without a new success: stale for an ordinary resource, never for an unavailable one.
    then = now + timedelta(hours=5)
    stale = {r.resource for r in healthz.stale_resources(rt.facts(then), then, rt.stale_after)}
    assert stale == {"contact"}
    rt.engine.dispose()


def test_a_resource_pulled_daily_is_not_stale_after_an_hour(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "[pull]\ninterval = 900\njitter = 30\nintervals = { user = 86400 }\n[daemon]\nstale_after = 3600\n"
    )
    settings = load(config, env={"CLEVERTIM_TOKEN": "t", "STATE_DIRECTORY": str(tmp_path)})
    rt = runtime_of(settings)
    assert rt.stale_after("contact") == 3600
    assert rt.stale_after("user") == 2 * 86400 + 30


def test_pull_jitter_is_at_most_a_quarter_of_each_interval(tmp_path: Path) -> None:
    # CLEVERTIM_SYNC_PULL_INTERVAL=5 with the default 30 s jitter once gave pulls 0 to 35 s apart.
    settings = load(
        None,
        env={
            "CLEVERTIM_TOKEN": "t",
            "STATE_DIRECTORY": str(tmp_path),
            "CLEVERTIM_SYNC_PULL_INTERVAL": "5",
        },
    )
    settings = settings.model_copy(
        update={"pull": settings.pull.model_copy(update={"intervals": {"user": 600.0, "note": 40.0}})}
    )
    rt = runtime_of(settings)
    sched = new_scheduler(settings.daemon)
    schedule_account(sched, rt, first_run=datetime.now(UTC))
    jitter = {job.id: job.trigger.jitter for job in sched.get_jobs()}
    assert jitter["default:pull"] == 1  # 5 / 4, whole seconds
    assert jitter["default:pull:note"] == 10
    assert jitter["default:pull:user"] == 30  # the configured jitter, under a quarter of 600
    assert rt.stale_after("contact") >= settings.daemon.stale_after
