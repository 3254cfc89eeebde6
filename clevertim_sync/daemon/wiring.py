"""The real backends of the daemon: the API client, pull(), push(), backup() and the restore drill.

Owns: the one place that binds the daemon to the other areas' entry points (runtime.Backends),
and the one-line summaries of their reports for STATUS= and the terminal.
"""

from __future__ import annotations

from typing import Any

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.pool import SharedPool
from clevertim_sync.backup.configured import (
    ConfiguredBackup,
    DrillReport,
    backup_as_configured,
    scheduled_drill,
)
from clevertim_sync.daemon.runtime import Backends
from clevertim_sync.pull.pipeline import PullReport, pull
from clevertim_sync.settings import Settings
from clevertim_sync.writeback.worker import PushReport, push

# The cheapest authenticated GET: a handful of users, and every token may read them.
AUTH_PROBE_RESOURCE = "user"
# Kept-alive connections to the API host, for all accounts together: enough for the pulls (one
# listing ahead each) and the pushes (push.concurrency each) a daemon runs at once by default.
KEEPALIVE_CONNECTIONS = 16


def _check_token(client: ClevertimClient) -> None:
    client.list(AUTH_PROBE_RESOURCE)


def real_backends() -> Backends:
    pool = SharedPool(KEEPALIVE_CONNECTIONS)

    def make_client(settings: Settings, **kwargs: Any) -> ClevertimClient:
        ca_bundle = settings.clevertim.ca_bundle
        transport = pool.transport(str(ca_bundle) if ca_bundle is not None else None)
        return ClevertimClient.from_settings(settings, http=transport, **kwargs)

    return Backends(
        make_client=make_client,
        close=pool.close,
        check_token=_check_token,
        pull=pull,
        push=push,
        backup=backup_as_configured,
        drill=scheduled_drill,
        summarize=summarize,
    )


def summarize(result: Any) -> str | None:
    """A short line about a job's report, or None for a result we do not know."""
    if isinstance(result, PullReport):
        t = result.totals()
        line = f"+{t['inserted']} ~{t['updated']} -{t['deleted']} in {len(result.resources)} resources"
        if result.failed:
            line += f"; failed: {', '.join(result.failed)}"
        if result.halted:
            line += f"; {result.halted}"
        return line
    if isinstance(result, PushReport):
        if not result.claimed:
            return result.stopped or "queue empty"
        parts = [f"{result.done} done"]
        for name in ("adopted", "conflicts", "retry_later", "waiting", "failed", "quarantined"):
            n = getattr(result, name)
            if n:
                parts.append(f"{n} {name.replace('_', ' ')}")
        return ", ".join(parts) + (f"; {result.stopped}" if result.stopped else "")
    if isinstance(result, ConfiguredBackup):
        parts = []
        if result.archive is not None:
            parts.append(f"{result.archive.size} bytes to {result.archive.path.name}")
        if result.restic is not None:
            parts.append(f"restic snapshot {result.restic.snapshot_id} (+{result.restic.data_added} bytes)")
        return "; ".join(parts)
    if isinstance(result, DrillReport):
        return f"drill OK: {result.rows} rows restored in {result.seconds:.1f}s"
    return None
