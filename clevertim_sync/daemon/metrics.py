"""Prometheus metrics of the daemon, in its own CollectorRegistry (never the global one).

Owns: what is counted from job outcomes in this process (job and pull durations, records changed,
push results and retries, errors), and what is read from the database at scrape time (queue depth
per state, last successful pull per resource, consecutive failures), so that the gauges that
matter for alerting survive a restart and agree with /healthz.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from clevertim_sync.daemon.healthz import ALERT_CONDITIONS, MirrorFacts
from clevertim_sync.daemon.jobs import JobOutcome
from clevertim_sync.entries import REASONS

_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class _DatabaseCollector(Collector):
    """Gauges computed from the mirror at scrape time."""

    def __init__(self, read_facts: Callable[[], Iterable[MirrorFacts]]) -> None:
        self._read_facts = read_facts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "clevertim_sync_queue_depth", "Writeback queue items per state", labels=["account", "state"]
        )
        conflicts = GaugeMetricFamily(
            "clevertim_sync_open_conflicts",
            "Writeback queue items in conflict, waiting for `queue resolve` (0 when none)",
            labels=["account"],
        )
        stuck = GaugeMetricFamily(
            "clevertim_sync_queue_stuck", "Queue items overdue and not moving", labels=["account"]
        )
        last_ok = GaugeMetricFamily(
            "clevertim_sync_last_success_timestamp_seconds",
            "Unix time of the last successful pull of a resource",
            labels=["account", "resource"],
        )
        failures = GaugeMetricFamily(
            "clevertim_sync_consecutive_failures",
            "Pulls of a resource that failed in a row",
            labels=["account", "resource"],
        )
        held = GaugeMetricFamily(
            "clevertim_sync_resource_held",
            "1 while the mass-delete guard holds a resource",
            labels=["account", "resource"],
        )
        stale_after = GaugeMetricFamily(
            "clevertim_sync_stale_after_seconds",
            "Seconds after its last successful pull at which a resource counts as stale (/healthz)",
            labels=["account", "resource"],
        )
        backup_failing = GaugeMetricFamily(
            "clevertim_sync_backup_failing",
            "1 while the last scheduled backup failed (kept in the database across restarts)",
            labels=["account"],
        )
        alert_active = GaugeMetricFamily(
            "clevertim_sync_alert_active",
            "1 while an alert condition of the daemon is active (see [alerts])",
            labels=["account", "condition"],
        )
        for facts in self._read_facts():
            backup_failing.add_metric([facts.account], 1 if "backup" in facts.active_alerts else 0)
            for condition in ALERT_CONDITIONS:
                alert_active.add_metric(
                    [facts.account, condition], 1 if condition in facts.active_alerts else 0
                )
            for name, limit in sorted(facts.stale_limits.items()):
                stale_after.add_metric([facts.account, name], limit)
            for state, n in sorted(facts.queue.depth.items()):
                depth.add_metric([facts.account, state], n)
            conflicts.add_metric([facts.account], facts.queue.depth.get("conflict", 0))
            stuck.add_metric([facts.account], facts.queue.stuck)
            for r in facts.resources:
                if r.last_success_at is not None:
                    last_ok.add_metric([facts.account, r.resource], r.last_success_at.timestamp())
                failures.add_metric([facts.account, r.resource], r.consecutive_failures)
                held.add_metric([facts.account, r.resource], 1 if r.held else 0)
        yield from (
            depth,
            conflicts,
            stuck,
            last_ok,
            failures,
            held,
            stale_after,
            backup_failing,
            alert_active,
        )


def _int_field(obj: Any, name: str) -> int:
    value = obj.get(name, 0) if isinstance(obj, dict) else getattr(obj, name, 0)
    return int(value) if isinstance(value, int | float) else 0


class DaemonMetrics:
    """The metrics of one daemon process (all its accounts)."""

    def __init__(self, read_facts: Callable[[], Iterable[MirrorFacts]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.job_duration = Histogram(
            "clevertim_sync_job_duration_seconds",
            "Duration of a pull or push job",
            ["account", "job", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.pull_duration = Histogram(
            "clevertim_sync_pull_duration_seconds",
            "Duration of the pull of one resource",
            ["account", "resource"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.records_changed = Counter(
            "clevertim_sync_records_changed_total",
            "Records inserted, updated or deleted in the mirror by pulls",
            ["account", "resource", "op"],
            registry=r,
        )
        self.pushed = Counter(
            "clevertim_sync_push_items_total",
            "Writeback queue items by outcome of a push attempt",
            ["account", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "clevertim_sync_retries_total",
            "Push attempts that failed transiently and will be retried",
            ["account"],
            registry=r,
        )
        self.bad_entries = Gauge(
            "clevertim_sync_bad_entries",
            "Entries of a resource's last pulled listing reported by reason (see docs: bad data)",
            ["account", "resource", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "clevertim_sync_errors_total",
            "Failed jobs and failed resource pulls",
            ["account", "job", "resource"],
            registry=r,
        )
        self.last_job_success = Gauge(
            "clevertim_sync_last_job_success_timestamp_seconds",
            "Unix time a job last ended well in this process",
            ["account", "job"],
            registry=r,
        )
        r.register(_DatabaseCollector(read_facts))

    def observe(self, outcome: JobOutcome) -> None:
        if outcome.status == "skipped":
            return
        job_kind = outcome.job.split(":", 1)[0]
        self.job_duration.labels(outcome.account, job_kind, outcome.status).observe(outcome.duration)
        if outcome.status != "ok":
            self.errors.labels(outcome.account, job_kind, "").inc()
            return
        self.last_job_success.labels(outcome.account, job_kind).set(time.time())
        if job_kind == "pull" and outcome.result is not None:
            self._observe_pull(outcome.account, outcome.result)
        elif job_kind == "push" and outcome.result is not None:
            self._observe_push(outcome.account, outcome.result)

    def _observe_pull(self, account: str, report: Any) -> None:
        for name, res in (getattr(report, "resources", None) or {}).items():
            seconds = getattr(res, "seconds", None)
            if isinstance(seconds, int | float):
                self.pull_duration.labels(account, name).observe(seconds)
            for op in ("inserted", "updated", "deleted"):
                n = _int_field(res, op)
                if n:
                    self.records_changed.labels(account, name, op).inc(n)
            if getattr(res, "error", None):
                self.errors.labels(account, "pull", name).inc()
            else:  # a pull that read the listing: its counts by reason, 0 for the others
                found = getattr(res, "bad_entries", None) or {}
                for reason in REASONS:
                    self.bad_entries.labels(account, name, reason).set(_int_field(found, reason))

    def _observe_push(self, account: str, report: Any) -> None:
        for outcome in ("done", "adopted", "conflicts", "retry_later", "failed", "quarantined"):
            n = _int_field(report, outcome)
            if n:
                self.pushed.labels(account, outcome).inc(n)
        retried = _int_field(report, "retry_later")
        if retried:
            self.retries.labels(account).inc(retried)

    def exposition(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
