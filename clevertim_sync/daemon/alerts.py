"""Alerts: tell a person, through apprise (ntfy, Slack, e-mail, a JSON webhook, ...), what went wrong.

Owns: the conditions (a resource failing `alerts.failures` pulls in a row, a resource held by the
mass-delete guard, queue items in failed / conflict / quarantined, /healthz unhealthy through
stale pulls or a stuck queue, a failed backup, a failed restore drill), their state in
`alert_state`, the messages, and the background thread that evaluates and sends them in the daemon.

The rules, all kept in the database so that a restart neither repeats nor forgets:
- one message when a condition starts (or gains members: a new resource failing, new queue
  items), one when it clears, and one a day (`alerts.repeat_after`) while it stays;
- a message counts as told only once every receiver took it: a receiver that is down is logged
  (`alerts.send_failed`) and the message is tried again at the next evaluation;
- a condition that came and went while nothing could be delivered is not told at all.
Messages carry resource names, queue item ids and counts, never the token nor record contents.

It reads what they recorded (resource_status, the queue) and the backup job's outcome handed to it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa
import structlog

from clevertim_sync.daemon import healthz
from clevertim_sync.errors import ConfigError
from clevertim_sync.logs import register_url_secret
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.failures import error_text
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import outbox

log = structlog.get_logger(__name__)

CONDITIONS = healthz.ALERT_CONDITIONS
TITLES = {
    "pull_failing": "pulls failing",
    "held": "held by the mass-delete guard",
    "queue": "queue items need a person",
    "unhealthy": "unhealthy: stale pulls or a stuck queue",
    "backup": "backup failed",
    "drill": "restore drill failed",
}
# Conditions only a job's outcome tells (record_backup), with the line their message opens with.
JOB_CONDITIONS = {
    "backup": "the backup failed",
    "drill": "the restore drill failed: the newest backup does not restore",
}
LISTED_IDS = 20  # queue item ids named per state in one message; the rest are counted
ERROR_CHARS = 200  # an error as far as a message quotes it


@dataclass(frozen=True)
class Condition:
    """One active condition: what it is about (`members`) and the lines a message about it carries."""

    key: str
    members: frozenset[str]
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Message:
    condition: str
    kind: str  # "start", "more", "still" or "clear"
    title: str
    body: str
    members: frozenset[str]


@dataclass(frozen=True)
class AlertRow:
    """What `alerts status` shows of one condition."""

    condition: str
    active: bool
    since: datetime | None
    lines: list[str]
    told: bool  # the last delivered message says what is true now
    sent_at: datetime | None
    cleared_at: datetime | None = None  # when it cleared (a cleared row not yet told)


def _short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:LISTED_IDS])
    return shown + (f" and {len(ids) - LISTED_IDS} more" if len(ids) > LISTED_IDS else "")


def duration_text(seconds: float) -> str:
    """How long a condition lasted, as a person says it: `45 s`, `12 min`, `3 h 10 min`, `2 d 4 h`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 >= 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 >= 3600 else f"{s // 86400} d"


def _queue_members(members: Iterable[str]) -> str:
    """`conflict:12`, `failed:14` -> `12, 13 (conflict); 14 (failed)`."""
    by_state: dict[str, list[int]] = {}
    for member in members:
        state, _, item = member.partition(":")
        if item.isdigit():
            by_state.setdefault(state, []).append(int(item))
    return "; ".join(f"{_ids(sorted(ids))} ({state})" for state, ids in sorted(by_state.items()))


def _unhealthy_members(members: frozenset[str]) -> str:
    """`stale:note`, `stuck` -> `note (stale pulls), the writeback queue (stuck)`."""
    names = sorted(m.removeprefix("stale:") + " (stale pulls)" for m in members if m.startswith("stale:"))
    if "stuck" in members:
        names.append("the writeback queue (stuck)")
    return ", ".join(names)


def cleared_lines(
    key: str, told: frozenset[str], since: datetime | None, cleared_at: datetime
) -> tuple[str, ...]:
    """The clear message: what cleared (the members the person was told of) and how long it lasted."""
    names = ", ".join(sorted(told))
    if key == "pull_failing":
        what = f"Pulls work again for: {names}"
    elif key == "held":
        what = f"No longer held by the mass-delete guard: {names}"
    elif key == "queue":
        what = f"No longer needing a person: queue items {_queue_members(told)}"
    elif key == "unhealthy":
        what = f"Healthy again: {_unhealthy_members(told)}"
    else:
        what = "The backup works again."
    if since is None:
        return (what,)
    lasted = duration_text((cleared_at - since).total_seconds())
    return (
        what,
        f"It lasted {lasted}: from {since:%Y-%m-%d %H:%M} to {cleared_at:%Y-%m-%d %H:%M} UTC.",
    )


def read_conditions(
    conn: sa.Connection, settings: Settings, account: str, now: datetime
) -> dict[str, Condition]:
    """Every condition active now but `backup` and `drill` (which only those jobs' outcomes tell)."""

    def stale_after(name: str) -> float:
        return healthz.stale_limit(settings, name)

    facts = healthz.read_facts(conn, account, now, healthz.stuck_limit(settings), stale_after)
    out: dict[str, Condition] = {}
    failing = [r for r in facts.resources if r.consecutive_failures >= settings.alerts.failures]
    if failing:
        out["pull_failing"] = Condition(
            "pull_failing",
            frozenset(r.resource for r in failing),
            (
                *(
                    f"{r.resource}: the last {r.consecutive_failures} pulls failed: {_short(r.last_error)}"
                    for r in failing
                ),
                "Look: clevertim-sync status",
            ),
        )
    held = [r for r in facts.resources if r.held]
    if held:
        out["held"] = Condition(
            "held",
            frozenset(r.resource for r in held),
            (
                *(f"{r.resource}: {_short(r.held_reason)}" for r in held),
                "If the deletions are real: clevertim-sync sync --allow-mass-delete "
                + " ".join(f"--resource {r.resource}" for r in held),
            ),
        )
    by_state = outbox.needing_a_person(conn)
    if by_state:
        lines = [
            f"{len(ids)} {state}: {_ids(ids)} (look: clevertim-sync queue list --state {state})"
            for state, ids in by_state.items()
        ]
        out["queue"] = Condition(
            "queue", frozenset(f"{state}:{i}" for state, ids in by_state.items() for i in ids), tuple(lines)
        )
    # A resource failing or held is stale too, but its own condition already tells it.
    told_elsewhere = {r.resource for r in failing} | {r.resource for r in held}
    stale = [r for r in healthz.stale_resources(facts, now, stale_after) if r.resource not in told_elsewhere]
    members = {f"stale:{r.resource}" for r in stale}
    lines = [
        f"{r.resource}: last good pull at {r.last_success_at:%Y-%m-%d %H:%M} UTC "
        f"(limit {stale_after(r.resource):g} s)"
        for r in stale
        if r.last_success_at is not None
    ]
    if facts.queue.stuck:
        members.add("stuck")
        lines.append(facts.queue.stuck_text())
    if members:
        out["unhealthy"] = Condition(
            "unhealthy", frozenset(members), (*lines, "Look: clevertim-sync check (or GET /healthz)")
        )
    return out


def _json_list(text: str | None) -> list[Any]:
    value = orjson.loads(text) if text else []
    return value if isinstance(value, list) else []


class Alerts:
    """The alerts of one account's mirror: evaluate its conditions, send what is due, remember."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        account: str,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.account = account
        sender = Sender(settings)
        self._send = sender.send
        self._quiet = not sender.configured  # no receivers: the state is still kept, nothing is sent
        self._lock = threading.Lock()  # one evaluation at a time per account

    def reconfigure(self, settings: Settings) -> None:
        """New settings (SIGHUP); receivers apprise does not understand keep the old ones."""
        try:
            sender = Sender(settings)
        except ConfigError as exc:
            log.error("alerts.reload_refused", account=self.account, error=str(exc))
            return
        with self._lock:
            self.settings = settings
            self._send = sender.send
            self._quiet = not sender.configured

    # --- what the daemon calls -----------------------------------------------------------------

    def record_backup(self, ok: bool, error: str | None, now: datetime, condition: str = "backup") -> None:
        """Remember a backup's (or a drill's) outcome: a failed one is the condition until one succeeds."""
        st = schema.alert_state
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(st).where(st.c.condition == condition)).first()
            if ok and (row is None or not row.active):
                return  # nothing to clear: updated_at stays the time it cleared (for the message)
            values: dict[str, Any] = {"active": not ok, "updated_at": now}
            if ok:
                values |= {"members": "[]", "detail": "[]"}  # `since` stays: how long it lasted
            else:
                values |= {
                    "since": row.since if row is not None and row.active else now,
                    "members": orjson.dumps([condition]).decode(),
                    "detail": orjson.dumps([f"{JOB_CONDITIONS[condition]}: {_short(error)}"]).decode(),
                }
            if row is None:
                conn.execute(sa.insert(st).values(condition=condition, **values))
            else:
                conn.execute(sa.update(st).where(st.c.condition == condition).values(**values))

    def evaluate(self, now: datetime | None = None) -> list[Message]:
        """Record what is true now, send every message due; returns the messages delivered."""
        now = now or datetime.now(UTC)
        with self._lock:
            due = self._record(now)
            if self._quiet:
                return []
            delivered = []
            for message in due:
                if self._deliver(message):
                    self._mark_sent(message, now)
                    delivered.append(message)
            return delivered

    # --- the rules --------------------------------------------------------------------------------

    def _record(self, now: datetime) -> list[Message]:
        st = schema.alert_state
        with self.engine.begin() as conn:
            current = read_conditions(conn, self.settings, self.account, now)
            rows = {r.condition: r for r in conn.execute(sa.select(st))}
            for job in JOB_CONDITIONS:
                told = rows.get(job)
                if told is not None and told.active:
                    current[job] = Condition(
                        job, frozenset(_json_list(told.members)), tuple(_json_list(told.detail))
                    )
            due = []
            for key in CONDITIONS:
                cond, row = current.get(key), rows.get(key)
                if key not in JOB_CONDITIONS:
                    self._store(conn, key, cond, row, now)
                message = self._due(key, cond, row, now)
                if message is not None:
                    due.append(message)
        return due

    def _store(self, conn: sa.Connection, key: str, cond: Condition | None, row: Any, now: datetime) -> None:
        st = schema.alert_state
        if cond is None and (row is None or not row.active):
            return
        values: dict[str, Any] = {
            "active": cond is not None,
            # On a clear `since` stays and `updated_at` becomes the time it cleared: the clear
            # message says how long it lasted, even when it is delivered at a later evaluation.
            "since": row.since if cond is None or (row is not None and row.active) else now,
            "members": orjson.dumps(sorted(cond.members) if cond else []).decode(),
            "detail": orjson.dumps(list(cond.lines) if cond else []).decode(),
            "updated_at": now,
        }
        if row is None:
            conn.execute(sa.insert(st).values(condition=key, **values))
        else:
            conn.execute(sa.update(st).where(st.c.condition == key).values(**values))

    def _due(self, key: str, cond: Condition | None, row: Any, now: datetime) -> Message | None:
        told_active = bool(row is not None and row.sent_active)
        if cond is None:
            if not told_active:
                return None  # never told (or told it cleared): nothing to say
            told = frozenset(_json_list(row.sent_members))
            cleared_at = now if row.active else row.updated_at
            return self._message(key, "clear", frozenset(), cleared_lines(key, told, row.since, cleared_at))
        if not told_active:
            return self._message(key, "start", cond.members, cond.lines)
        told = frozenset(_json_list(row.sent_members))
        if cond.members - told:
            return self._message(key, "more", cond.members, cond.lines)
        if row.sent_at is None or now - row.sent_at >= timedelta(seconds=self.settings.alerts.repeat_after):
            return self._message(key, "still", cond.members, cond.lines)
        return None

    def _message(self, key: str, kind: str, members: frozenset[str], lines: Iterable[str]) -> Message:
        head = {"start": "", "more": "more: ", "still": "still: ", "clear": "cleared: "}[kind]
        where = f" [{self.account}]" if self.account != "default" else ""
        title = f"clevertim-sync{where}: {head}{TITLES[key]}"
        return Message(key, kind, title, "\n".join(lines), members)

    def _deliver(self, message: Message) -> bool:
        kind = "success" if message.kind == "clear" else "failure"
        try:
            ok = self._send(message.title, message.body, kind)
        except Exception as exc:  # a receiver must never break the daemon
            log.warning(
                "alerts.send_failed", account=self.account, condition=message.condition, error=str(exc)
            )
            return False
        if not ok:
            log.warning(
                "alerts.send_failed",
                account=self.account,
                condition=message.condition,
                kind=message.kind,
                hint="a receiver did not take it; tried again at the next evaluation",
            )
            return False
        log.info("alerts.sent", account=self.account, condition=message.condition, kind=message.kind)
        return True

    def _mark_sent(self, message: Message, now: datetime) -> None:
        st = schema.alert_state
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(st)
                .where(st.c.condition == message.condition)
                .values(
                    sent_active=message.kind != "clear",
                    sent_members=orjson.dumps(sorted(message.members)).decode(),
                    sent_at=now,
                )
            )


def read_status(conn: sa.Connection) -> list[AlertRow]:
    """Every condition active now, or told as active and not yet told as cleared."""
    st = schema.alert_state
    out = []
    for row in conn.execute(sa.select(st).order_by(st.c.condition)):
        if not row.active and not row.sent_active:
            continue
        told = bool(row.sent_active) == bool(row.active) and (
            not row.active or set(_json_list(row.members)) <= set(_json_list(row.sent_members))
        )
        cleared_at = None if row.active else row.updated_at
        lines = _json_list(row.detail)
        if not row.active:  # told as active, cleared since: the lines its clear message will carry
            told_of = frozenset(_json_list(row.sent_members))
            lines = list(cleared_lines(row.condition, told_of, row.since, row.updated_at))
        out.append(AlertRow(row.condition, bool(row.active), row.since, lines, told, row.sent_at, cleared_at))
    return out


def describe_scheme(url: str) -> str:
    """A URL as far as a log line or an error may show it: its scheme (the rest may be a secret)."""
    return (urlsplit(url).scheme or "?") + "://..."


class Sender:
    """The apprise receivers of `[alerts]`; `send` is True when every one took the message."""

    def __init__(self, settings: Settings) -> None:
        import apprise  # noqa: PLC0415 (90 ms: only where alerts are sent, not for status or check)

        self._apprise = apprise
        self.urls = [u.get_secret_value() for u in settings.alerts.urls]
        problems = []
        for n, url in enumerate(self.urls, start=1):
            register_url_secret(url)  # before apprise sees it: its debug lines quote it
            if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
                problems.append(
                    f"alerts.urls: URL {n} ({describe_scheme(url)}) is not one apprise understands; "
                    "see https://github.com/caronc/apprise/wiki"
                )
        if problems:
            raise ConfigError(problems)

    @property
    def configured(self) -> bool:
        return bool(self.urls)

    def send(self, title: str, body: str, kind: str) -> bool:
        if not self.urls:
            return False  # nobody to tell: the condition stays untold, as with a receiver down
        apprise = self._apprise
        notifier = apprise.Apprise()
        for url in self.urls:
            notifier.add(url)
        notify_type = {"success": apprise.NotifyType.SUCCESS, "failure": apprise.NotifyType.FAILURE}.get(
            kind, apprise.NotifyType.INFO
        )
        return bool(notifier.notify(body=body, title=title, notify_type=notify_type))


class AlertThread:
    """The daemon's evaluations, off the jobs' threads: after each job and every `alerts.interval`.

    Sending may take seconds (a mail server, a receiver's timeout); here it delays nothing else.
    """

    def __init__(self, alerts: Sequence[Alerts], interval: float) -> None:
        self.alerts = list(alerts)
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Evaluate soon (after a job)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            for alerts in self.alerts:
                if self._stop.is_set():
                    return
                try:
                    alerts.evaluate()
                except Exception as exc:  # a database hiccup: the next evaluation tries again
                    log.warning("alerts.evaluate_failed", account=alerts.account, error=error_text(exc))
            self._wake.wait(self.interval)
            self._wake.clear()
