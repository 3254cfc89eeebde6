"""/healthz and /metrics: a small HTTP listener on localhost, and the health verdict read from the database.

Owns: reading the health facts of one mirror (`resource_status`, the writeback queue), judging
them (`judge`), and serving `/healthz` (200 or 503 with the reasons as JSON) and `/metrics`.

It reads what they recorded, so the answer is the truth of the database, not of this process's
memory: a restarted daemon, or a pull run by hand, is judged the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import sqlalchemy as sa
import structlog

from clevertim_sync import resources
from clevertim_sync.errors import ConfigError
from clevertim_sync.health import ServerHealth
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.failures import error_text
from clevertim_sync.mirror.pause import PauseRow
from clevertim_sync.settings import Settings
from clevertim_sync.writeback import outbox

log = structlog.get_logger(__name__)

# The conditions daemon/alerts.py tells a person about, one alert_state row each.
ALERT_CONDITIONS = ("pull_failing", "held", "queue", "unhealthy", "backup", "drill")
# When each starts, in words: the reference page of the documentation site is generated from it.
ALERT_CONDITION_TEXT = {
    "pull_failing": "a resource failed `alerts.failures` pulls in a row; the message names the "
    "resources, how many failures and the last error",
    "held": "the mass-delete guard holds a resource; the message gives its reason, and "
    "`sync --allow-mass-delete --resource NAME` if the deletes are real",
    "queue": "writeback queue items are `failed`, `conflict` or `quarantined`; one message with the "
    "count and ids per state",
    "unhealthy": "`/healthz` is red for a stale pull or a stuck queue; the message names the stale "
    "resources and their limits, and the overdue items",
    "backup": "a scheduled backup failed; it clears with the next good backup",
    "drill": "a scheduled restore drill (backup.drill_interval, restic) could not restore the newest "
    "snapshot; it clears with the next good drill",
}


@dataclass(frozen=True)
class ResourceFacts:
    resource: str
    last_success_at: datetime | None
    last_pull_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    held: bool
    held_reason: str | None
    # The endpoint is missing for this account (resource_status.unavailable): asked again only
    # every pull.unavailable_retry, so never stale and never failing.
    unavailable: str | None = None


@dataclass(frozen=True)
class QueueFacts:
    depth: dict[str, int] = field(default_factory=dict)  # state -> items
    stuck: int = 0  # items that should have moved by now and did not
    oldest_stuck_age: float | None = None

    def stuck_text(self) -> str:
        """How /healthz, `check` and the alerts say it (empty when nothing is stuck)."""
        if not self.stuck:
            return ""
        age = self.oldest_stuck_age or 0.0
        return f"the writeback queue is stuck: {self.stuck} item(s) overdue, the oldest by {age:.0f} s"


@dataclass(frozen=True)
class MirrorFacts:
    account: str
    resources: list[ResourceFacts]
    queue: QueueFacts
    active_alerts: tuple[str, ...] = ()  # alert_state conditions active at the last evaluation
    stale_limits: dict[str, float] = field(default_factory=dict)  # resource -> seconds (when known)


def read_queue_facts(conn: sa.Connection, now: datetime, stuck_after: float) -> QueueFacts:
    """Queue depth per state, and the items that should have moved by now (`outbox.stuck`: an item
    the server asked us to hold back is not stuck, so it is handed the pause, which `health` keeps)."""
    pause = ServerHealth(PauseRow(conn, read_only=True)).pause()
    stuck, oldest = outbox.stuck(conn, now, stuck_after, pause)
    return QueueFacts(depth=outbox.depth(conn), stuck=stuck, oldest_stuck_age=oldest)


def read_facts(
    conn: sa.Connection,
    account: str,
    now: datetime,
    stuck_after: float,
    stale_after: Callable[[str], float] | None = None,
) -> MirrorFacts:
    limits = {r.name: stale_after(r.name) for r in resources.RESOURCES} if stale_after else {}
    return MirrorFacts(
        account,
        read_resource_facts(conn),
        read_queue_facts(conn, now, stuck_after),
        read_active_alerts(conn),
        limits,
    )


def read_active_alerts(conn: sa.Connection) -> tuple[str, ...]:
    st = schema.alert_state
    stmt = sa.select(st.c.condition).where(st.c.active).order_by(st.c.condition)
    return tuple(conn.execute(stmt).scalars())


def read_resource_facts(conn: sa.Connection) -> list[ResourceFacts]:
    rs = schema.resource_status
    rows = {r.resource: r for r in conn.execute(sa.select(rs))}
    out = []
    for res in resources.RESOURCES:
        row = rows.get(res.name)
        if row is None:
            out.append(ResourceFacts(res.name, None, None, 0, None, False, None))
            continue
        out.append(
            ResourceFacts(
                res.name,
                row.last_success_at,
                row.last_pull_at,
                int(row.consecutive_failures or 0),
                row.last_error,
                bool(row.held),
                row.held_reason,
                row.unavailable,
            )
        )
    return out


def stale_limit(settings: Settings, resource: str) -> float:
    """Seconds after which a resource's last good pull is too old: daemon.stale_after, but never
    less than two of its own pull intervals (`intervals = { user = 86400 }` must not make
    /healthz red for 23 hours a day)."""
    pull = settings.pull
    interval = pull.intervals.get(resource, pull.interval)
    return max(settings.daemon.stale_after, 2 * interval + pull.jitter_for(interval))


def stuck_limit(settings: Settings) -> float:
    """Seconds after which a due queue item that has not moved counts as stuck."""
    return 3 * settings.push.interval + 60


def _age(now: datetime, then: datetime) -> str:
    seconds = max((now - then).total_seconds(), 0.0)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def stale_resources(
    facts: MirrorFacts, now: datetime, stale_after: Callable[[str], float]
) -> list[ResourceFacts]:
    """The resources pulled well once, but not within their limit since."""
    return [
        r
        for r in facts.resources
        if r.last_success_at is not None
        and r.unavailable is None
        and now - r.last_success_at > timedelta(seconds=stale_after(r.resource))
    ]


def judge(facts: MirrorFacts, now: datetime, stale_after: Callable[[str], float]) -> list[str]:
    """Every reason this mirror is not healthy; empty when it is.

    `stale_after(resource)`: seconds after which a resource's last good pull is too old.
    """
    reasons: list[str] = []
    prefix = f"{facts.account}: " if facts.account != "default" else ""
    stale = {r.resource for r in stale_resources(facts, now, stale_after)}
    for r in facts.resources:
        if r.held:
            reasons.append(f"{prefix}{r.resource} is held by the mass-delete guard: {r.held_reason}")
        if r.consecutive_failures:
            reasons.append(
                f"{prefix}{r.resource}: the last {r.consecutive_failures} pull(s) failed: {r.last_error}"
            )
        if r.last_success_at is None:
            if not r.consecutive_failures:
                reasons.append(f"{prefix}{r.resource} has not been pulled yet")
        elif r.resource in stale:
            reasons.append(
                f"{prefix}{r.resource} is stale: last good pull {_age(now, r.last_success_at)} ago "
                f"(limit {stale_after(r.resource):g} s)"
            )
    if facts.queue.stuck:
        reasons.append(prefix + facts.queue.stuck_text())
    return reasons


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError([f"daemon.health_listen must be host:port such as 127.0.0.1:9187, not {listen!r}"])
    return host, int(port)


Route = Callable[[], tuple[int, str, bytes]]


class HealthServer:
    """A threaded HTTP server for a few GET routes, in a background thread."""

    def __init__(self, listen: str, routes: dict[str, Route]) -> None:
        host, port = parse_listen(listen)
        if host not in ("127.0.0.1", "::1", "localhost"):
            # Health and metrics reveal account activity; they are meant for this host.
            log.warning("health.not_loopback", listen=listen, hint="prefer 127.0.0.1:PORT")
        self.routes = routes

        class Handler(BaseHTTPRequestHandler):
            server_version = "clevertim-sync"

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, ctype, body = 404, "application/json", b'{"error": "not found"}'
                else:
                    try:
                        status, ctype, body = route()
                    except Exception as exc:
                        log.exception("health.route_failed", path=self.path)
                        body = orjson.dumps(
                            {"status": "error", "reasons": [f"health check failed: {error_text(exc)}"]}
                        )
                        status, ctype = 503, "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the journal

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(
                [f"daemon.health_listen {listen}: cannot listen there: {exc.strerror}"]
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()
        log.info("health.listening", url=self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def healthz_route(check: Callable[[], tuple[list[str], dict[str, Any]]]) -> Route:
    def route() -> tuple[int, str, bytes]:
        reasons, details = check()
        body = {"status": "ok" if not reasons else "unhealthy", "reasons": reasons, **details}
        return (200 if not reasons else 503), "application/json", orjson.dumps(body, default=str)

    return route
