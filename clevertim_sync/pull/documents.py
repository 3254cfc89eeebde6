"""Resources an account may not have: the rule that makes a missing endpoint "unavailable".

Owns: recording an optional resource (`Resource.optional`: /folder, /file, /linkedfile) as
unavailable when `health`'s table says its listing's failure means the account or token lacks the
endpoint (an older plan, no rights: 404, 400 or 501) rather than a failing pull: the resource's
tables stay as they were, `resource_status.unavailable` says why, no failure is counted (no alert,
/healthz stays green, the run is not 'partial' for it), and the daemon asks again only every
`pull.unavailable_retry` (daemon/runtime.py). The next listing that succeeds clears it.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
import structlog

from clevertim_sync import resources
from clevertim_sync.errors import ApiError
from clevertim_sync.mirror import store
from clevertim_sync.mirror.store import ResourceCounts

log = structlog.get_logger(__name__)


def unavailable_reason(resource: str, exc: ApiError) -> str:
    """Why `resource` is unavailable to this account, its listing having met `exc` (the health
    table said `unavailable`)."""
    return f"{resources.get(resource).path} answered HTTP {exc.status}: not offered to this account or token"


def record_unavailable(
    engine: sa.Engine, resource: str, *, run_id: int, counts: ResourceCounts, why: str, t0: float
) -> ResourceCounts:
    """Record `resource` as unavailable in this run and in resource_status; nothing else changes."""
    counts.unavailable = why
    counts.seconds = round(time.perf_counter() - t0, 3)
    log.info("pull.resource_unavailable", resource=resource, reason=why)
    with engine.begin() as conn:
        store.record_outcome(conn, run_id, resource, counts, at=store.now())
    return counts
