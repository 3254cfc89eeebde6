"""The daemon's life: start, READY, run the schedule, reload on SIGHUP, stop cleanly on SIGTERM.

Owns: the order of start-up (lock, migrations, token check for every account, then the health
listener and the scheduler, then READY=1), signal handling, the watchdog heartbeat, STATUS lines,
and the stop sequence (STOPPING=1, no new jobs, the running job ends or rolls back, locks freed,
exit 0 well within TimeoutStopSec).

It turns no error into text: start-up errors propagate to the caller.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
import structlog

from clevertim_sync.backup import restic
from clevertim_sync.daemon import members, memory
from clevertim_sync.daemon import scheduler as sched_mod
from clevertim_sync.daemon.accounts import accounts
from clevertim_sync.daemon.alerts import Alerts, AlertThread, Sender
from clevertim_sync.daemon.healthz import HealthServer, MirrorFacts, healthz_route
from clevertim_sync.daemon.jobs import JobOutcome
from clevertim_sync.daemon.metrics import DaemonMetrics
from clevertim_sync.daemon.notify import Notifier, watchdog_interval
from clevertim_sync.daemon.runtime import AccountRuntime, Backends
from clevertim_sync.daemon.sharing import ServedAccounts, Sharing
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror.db import normalise_url
from clevertim_sync.mirror.failures import error_text
from clevertim_sync.settings import Settings, load

log = structlog.get_logger(__name__)

# How long a stop waits for the running job; the unit's TimeoutStopSec (60 s) leaves room above it.
STOP_GRACE_SECONDS = 30.0
# How long giving an account back to the other daemons waits for a job that just started.
GIVE_UP_WAIT_SECONDS = 2.0
# Without a systemd watchdog the heartbeat still runs, to notice a lost PostgreSQL lock.
DEFAULT_HEARTBEAT_SECONDS = 10.0


def describe(outcome: JobOutcome, summarize: Callable[[Any], str | None] | None = None) -> str:
    """One short line about a finished job, for STATUS= and the terminal."""
    when = datetime.now(UTC).strftime("%H:%M:%S")
    head = f"{outcome.account}: {outcome.job} {outcome.status} at {when} UTC ({outcome.duration:.1f} s)"
    if outcome.error is not None:
        return f"{head}: {error_text(outcome.error)}"
    summary = summarize(outcome.result) if summarize is not None else None
    return f"{head}: {summary}" if summary else head


class Service:
    """Runs every configured account until stopped. `run()` returns the exit status."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        *,
        config_path: Path | None = None,
        standby: bool = False,
        notifier: Notifier | None = None,
        env: Mapping[str, str] | None = None,
        on_outcome: Iterable[Callable[[JobOutcome], None]] = (),
        on_ready: Callable[[Service], None] | None = None,
        configure_logs: bool = False,
        config_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.config_path = config_path
        self.standby = standby
        self.notifier = notifier or Notifier.from_env(env)
        self.env = env
        self._listeners = list(on_outcome)
        self._on_ready = on_ready
        self.configure_logs = configure_logs  # re-read log_format/log_level on SIGHUP
        self.config_env = config_env  # the environment a reload reads (None: os.environ)
        self.stopping = threading.Event()
        self._reload = threading.Event()
        self._exit_code = 0
        self.daemon = members.this_daemon()
        self.runtimes = [
            AccountRuntime(
                acc, backends, on_finish=self._finished, stopping=self.stopping, daemon=self.daemon
            )
            for acc in accounts(settings)
        ]
        self.sharing: Sharing | None = None
        self._accounts_lock = threading.Lock()  # taking or giving back an account, and a reload
        self.metrics = DaemonMetrics(self._all_facts)
        self.metrics.registry.register(ServedAccounts(self.daemon, self.runtimes, self._live_daemons))
        self.health_server: HealthServer | None = None
        self._scheduler = sched_mod.new_scheduler(settings.daemon)
        self._last_status: dict[str, str] = {}
        Sender(settings)  # an alert URL apprise does not understand stops the start, like a bad config
        if backends.backup is not None:  # restic configured but absent: now, not at the first backup
            for rt in self.runtimes:
                restic.preflight(rt.settings)
        self.alerts: dict[str, Alerts] = {}
        self._alert_thread: AlertThread | None = None
        self._ready_logged = False

    # --- control from signals or another thread ----------------------------------------------

    def request_stop(self) -> None:
        self.stopping.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
            return
        if self.stopping.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the job
        self.stopping.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    # --- the life -----------------------------------------------------------------------------

    def run(self) -> int:
        memory.limit_arenas()
        previous = self._install_signals()
        try:
            self._start()
            if self.stopping.is_set():
                return 0
            self._loop()
            return self._exit_code
        except BaseException:
            self._exit_code = 1  # for the log line; the caller turns the error into text
            raise
        finally:
            self._stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _start(self) -> None:
        self.notifier.status("starting: taking the lock, migrating, checking the API token")
        if self.standby and all(_on_postgresql(rt) for rt in self.runtimes):
            self._start_sharing()
            return
        for rt in self.runtimes:
            try:
                rt.open(
                    standby=self.standby,
                    on_status=self.notifier.status,
                    on_standby=self._standing_by,
                    tick=self.notifier.watchdog,
                )
            except ClevertimSyncError:
                if self.stopping.is_set():
                    log.info("daemon.stopped_during_start", account=rt.name)
                    return
                raise
        now = datetime.now(UTC)
        for rt in self.runtimes:
            sched_mod.schedule_account(self._scheduler, rt, first_run=now)
        interval = self._start_common()
        names = ", ".join(rt.name for rt in self.runtimes)
        self.notifier.ready(status=f"running: {names}")
        log.info("daemon.ready", accounts=[rt.name for rt in self.runtimes], watchdog_interval=interval)
        if self._on_ready is not None:
            self._on_ready(self)

    def _start_common(self) -> float | None:
        """The health listener, the heartbeat, the alerts and the scheduler; the watchdog interval."""
        listen = self.settings.daemon.health_listen
        if listen:
            self.health_server = HealthServer(
                listen, {"/healthz": healthz_route(self._healthz), "/metrics": self.metrics.exposition}
            )
            self.health_server.start()
        interval = watchdog_interval(self.env if self.env is not None else os.environ)
        sched_mod.add_heartbeat(self._scheduler, interval or DEFAULT_HEARTBEAT_SECONDS, self._heartbeat)
        self._start_alerts()
        self._scheduler.start()
        return interval

    def _start_alerts(self) -> None:
        for rt in self.runtimes:
            if rt.engine is not None:
                self.alerts[rt.name] = Alerts(rt.engine, rt.settings, rt.name)
        self._alert_thread = AlertThread(list(self.alerts.values()), self.settings.alerts.interval)
        self._alert_thread.start()

    # --- standby daemons sharing the accounts (sharing.py) ------------------------------------

    def _start_sharing(self) -> None:
        """Join the live daemons; READY at once, serving what the balancing gives this daemon."""
        # Joined at the balancing's first look, and again after a lost session: a standby
        # outlives a database that is down or restarts.
        membership = members.Membership(self.runtimes[0].settings.database.url, self.daemon)
        self.sharing = Sharing(
            self.runtimes,
            membership,
            self.settings.daemon.rebalance_interval,
            take=self._take,
            give_up=self._give_up,
        )
        self._start_common()
        self._standing_by("standby: waiting for the active daemon to stop")
        self.sharing.start()

    def _take(self, rt: AccountRuntime) -> bool:
        with self._accounts_lock:
            if self.stopping.is_set() or not rt.try_open(on_status=self.notifier.status):
                return False
            assert rt.engine is not None
            self.alerts[rt.name] = Alerts(rt.engine, rt.settings, rt.name)
            if self._alert_thread is not None:
                self._alert_thread.alerts = list(self.alerts.values())
            sched_mod.schedule_account(self._scheduler, rt, first_run=datetime.now(UTC))
            log.info("daemon.account_taken", account=rt.name, daemon=self.daemon)
            self._announce_share()
        return True

    def _give_up(self, rt: AccountRuntime) -> bool:
        with self._accounts_lock:
            rt.runner.close()
            if not rt.runner.wait_idle(GIVE_UP_WAIT_SECONDS):
                # A job started meanwhile: the lock stays until it ends (another daemon taking the
                # account now would pull it twice at once); the next look tries again.
                rt.runner.reopen()
                return False
            sched_mod.unschedule_account(self._scheduler, rt)
            self.alerts.pop(rt.name, None)
            if self._alert_thread is not None:
                self._alert_thread.alerts = list(self.alerts.values())
            rt.close()
            rt.runner.reopen()
            rt.last_pull_outcome = None
            log.info("daemon.account_given_back", account=rt.name, daemon=self.daemon)
            self._announce_share()
        return True

    def _announce_share(self) -> None:
        held = [rt.name for rt in self.runtimes if rt.held]
        if not held:
            self.notifier.status("standby: waiting for the active daemon to stop")
            return
        status = f"running: {', '.join(held)}"
        if not self._ready_logged:
            # To systemd the standby was started already; READY=1 again, with the new STATUS.
            self._ready_logged = True
            self.notifier.ready(status=status)
            log.info("daemon.ready", accounts=held, daemon=self.daemon)
            if self._on_ready is not None:
                self._on_ready(self)
        else:
            self.notifier.status(status)

    def _live_daemons(self) -> int:
        return len(self.sharing.live) if self.sharing is not None else 1

    def _standing_by(self, status: str) -> None:
        # To systemd a waiting standby is a started service (else TimeoutStartSec would kill it),
        # pinging its watchdog from the wait; READY=1 comes again, with a new STATUS, on takeover.
        log.info("daemon.standby", status=status)
        self.notifier.ready(status=status)

    def _loop(self) -> None:
        while not self.stopping.wait(0.5):
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()

    def _stop(self) -> None:
        self.stopping.set()
        if self.sharing is not None:
            self.sharing.stop()  # takes and gives back nothing more; leaves the members last
        busy = [rt.runner.current for rt in self.runtimes if rt.runner.current]
        self.notifier.stopping(status=f"stopping: waiting for {', '.join(busy)}" if busy else "stopping")
        log.info("daemon.stopping", running=busy)
        for rt in self.runtimes:
            rt.runner.close()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        # One grace period for all accounts together: TimeoutStopSec bounds the whole stop.
        grace_ends = time.monotonic() + STOP_GRACE_SECONDS
        for rt in self.runtimes:
            if not rt.runner.wait_idle(grace_ends - time.monotonic()):
                # Exiting ends the job's open transaction: the database rolls it back.
                log.warning("daemon.job_abandoned", account=rt.name, job=rt.runner.current)
        if self.health_server is not None:
            self.health_server.stop()
        if self._alert_thread is not None:
            self._alert_thread.stop()
        for rt in self.runtimes:
            try:
                rt.close()
            except Exception:
                log.exception("daemon.close_failed", account=rt.name)
        if self.sharing is not None:
            self.sharing.membership.leave()  # after the locks: the others see both at one look
        if self.backends.close is not None:
            self.backends.close()
        self.notifier.close()
        log.info("daemon.stopped", exit_code=self._exit_code)

    def _do_reload(self) -> None:
        try:
            new = load(self.config_path, env=self.config_env)
            by_name = {a.name: a for a in accounts(new)}
        except ClevertimSyncError as exc:
            log.error("daemon.reload_refused", error=str(exc))
            self.notifier.status(f"reload refused, still running the old configuration: {exc}")
            return
        current = {rt.name for rt in self.runtimes}
        if set(by_name) != current:
            log.warning(
                "daemon.reload_accounts_changed", hint="restart the service to add or remove accounts"
            )
        for rt in self.runtimes:
            acc = by_name.get(rt.name)
            if acc is None:
                continue
            if acc.settings.database.url != rt.settings.database.url:
                log.warning(
                    "daemon.reload_database_changed", account=rt.name, hint="restart to switch databases"
                )
                continue
            rt.reconfigure(acc.settings)
            rt.settings = acc.settings  # the schedule follows at once; the job picks the rest up
            if rt.name in self.alerts:
                self.alerts[rt.name].reconfigure(acc.settings)
        self.settings = new
        if self._alert_thread is not None:
            self._alert_thread.interval = new.alerts.interval
        if self.configure_logs:
            configure_logging(new.log_format, new.log_level)
        with self._accounts_lock:
            sched_mod.reschedule(self._scheduler, [rt for rt in self.runtimes if rt.held])
        self.notifier.status("configuration reloaded")
        log.info("daemon.reloaded")

    # --- progress, health ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        for rt in self.runtimes:
            if rt.lock is not None and not rt.lock.check():
                log.error(
                    "daemon.lock_lost", account=rt.name, hint="exiting so another instance can take over"
                )
                self._exit_code = 1
                self.stopping.set()
                return
        self.notifier.watchdog()

    def _finished(self, outcome: JobOutcome) -> None:
        self.metrics.observe(outcome)
        if outcome.status == "skipped":
            return
        line = describe(outcome, self.backends.summarize)
        fields: dict[str, Any] = {
            "account": outcome.account,
            "job": outcome.job,
            "duration": outcome.duration,
        }
        if outcome.ok and getattr(outcome.result, "claimed", None) == 0:
            log.debug("job.finished", status=outcome.status, **fields)  # an idle push, every 30 s
        elif outcome.ok:
            log.info("job.finished", status=outcome.status, **fields)
        else:
            log.error("job.failed", status=outcome.status, error=error_text(outcome.error), **fields)
        self._last_status[f"{outcome.account}:{outcome.job.split(':')[0]}"] = line
        self.notifier.status("; ".join(self._last_status.values()))
        # A job that ends proves the loop makes progress, between heartbeats too.
        self.notifier.watchdog()
        self._alert_after(outcome)
        for listener in self._listeners:
            listener(outcome)

    def _alert_after(self, outcome: JobOutcome) -> None:
        alerts = self.alerts.get(outcome.account)
        if alerts is None or self._alert_thread is None:
            return
        if outcome.job in ("backup", "drill"):
            try:
                alerts.record_backup(
                    outcome.ok,
                    None if outcome.ok else error_text(outcome.error),
                    datetime.now(UTC),
                    outcome.job,
                )
            except Exception as exc:  # the database is what failed: the next backup records it
                log.warning("alerts.record_failed", account=outcome.account, error=error_text(exc))
        self._alert_thread.poke()

    def _all_facts(self) -> list[MirrorFacts]:
        now = datetime.now(UTC)
        return [rt.facts(now) for rt in self.runtimes if rt.held and rt.engine is not None]

    def _healthz(self) -> tuple[list[str], dict[str, Any]]:
        now = datetime.now(UTC)
        reasons: list[str] = []
        queues: dict[str, dict[str, int]] = {}
        for rt in self.runtimes:
            if not rt.held:  # another daemon serves it, and answers for it
                continue
            facts = rt.facts(now)
            reasons.extend(rt.reasons(facts, now))
            queues[rt.name] = facts.queue.depth
        return reasons, {"checked_at": now.isoformat(), "queue": queues}


def _on_postgresql(rt: AccountRuntime) -> bool:
    return sa.make_url(normalise_url(rt.settings.database.url)).get_backend_name() == "postgresql"
