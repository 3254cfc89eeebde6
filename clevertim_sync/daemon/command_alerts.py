"""Alerts wherever the sync runs: `sync`, `push` and `backup` from a shell, cron or a systemd timer.

Owns: when a command evaluates the alert conditions (at its end, whatever its outcome) and whether
it may send: only while it holds the mirror's instance lock, so that there is one sender. While a
daemon holds the lock the command leaves the telling to it (the daemon reads the same facts from
the database at its next evaluation); with no daemon, the lock is free and the command is the
sender. The conditions, their state in `alert_state` and the sending are alerts.py's, the same the
daemon uses: a condition is told once however many runs see it, cleared once, and what a run could
not deliver (a receiver down) the next run tells.

Without receivers in `[alerts]` the state is still recorded, so `alerts status` shows what is
wrong either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog

from clevertim_sync.daemon.accounts import DEFAULT_NAME
from clevertim_sync.daemon.alerts import Alerts, Message
from clevertim_sync.errors import ClevertimSyncError, InstanceLocked
from clevertim_sync.mirror import lock as instance_lock
from clevertim_sync.settings import Settings

log = structlog.get_logger(__name__)


@contextmanager
def alerts_after(
    engine: sa.Engine, settings: Settings, *, backup: bool = False, holding_lock: bool | None = None
) -> Iterator[None]:
    """Evaluate the alerts when the block ends, however it ends; a `backup` block records the
    backup's outcome first (an exception in the block is a failed backup, and still raised).

    `holding_lock`: True when the caller holds the instance lock already (a push takes it), False
    when it found it taken; None: the lock is tried here, for the evaluation only.
    """
    try:
        yield
    except Exception as exc:
        _tell_quietly(engine, settings, backup, exc, holding_lock)
        raise
    # (Ctrl-C or SystemExit inside the block: nothing is evaluated, the next run does it.)
    _tell_quietly(engine, settings, backup, None, holding_lock)


def _tell_quietly(
    engine: sa.Engine,
    settings: Settings,
    backup: bool,
    error: Exception | None,
    holding_lock: bool | None,
) -> None:
    # An evaluation that fails must not hide the command's own outcome or error.
    try:
        tell(engine, settings, backup=backup, backup_error=error, holding_lock=holding_lock)
    except Exception as exc:
        log.warning("alerts.evaluate_failed", error=str(exc), hint="the next run tries again")


def tell(
    engine: sa.Engine,
    settings: Settings,
    *,
    backup: bool = False,
    backup_error: BaseException | None = None,
    holding_lock: bool | None = None,
    now: datetime | None = None,
) -> list[Message] | None:
    """Record what is true now and send what is due; None when a daemon does the telling."""
    now = now or datetime.now(UTC)
    if holding_lock is False:
        log.info("alerts.left_to_daemon", hint="the process holding the instance lock tells")
        return None
    if holding_lock:
        return _evaluate(engine, settings, now, backup, backup_error)
    try:
        held = instance_lock.acquire(settings.database.url)
    except InstanceLocked:
        log.info("alerts.left_to_daemon", hint="the process holding the instance lock tells")
        return None
    except ClevertimSyncError as exc:  # a mirror no lock can cover (in-memory SQLite): no sender
        log.warning("alerts.not_evaluated", error=str(exc))
        return None
    try:
        return _evaluate(engine, settings, now, backup, backup_error)
    finally:
        held.release()


def _evaluate(
    engine: sa.Engine, settings: Settings, now: datetime, backup: bool, backup_error: BaseException | None
) -> list[Message]:
    alerts = Alerts(engine, settings, DEFAULT_NAME)
    if backup:
        alerts.record_backup(backup_error is None, None if backup_error is None else str(backup_error), now)
    return alerts.evaluate(now)
