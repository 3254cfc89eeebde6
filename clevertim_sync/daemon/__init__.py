"""The long-running service: scheduled pull and push under systemd.

Owns: talking to systemd (notify.py), one active instance per mirror (lock.py), the per-account
settings (accounts.py), running jobs with a deadline and without overlap (jobs.py), APScheduler
wiring (scheduler.py), /healthz and /metrics (healthz.py, metrics.py), signals and start-up
(service.py), and the demo (demo.py).

It calls `clevertim_sync.pull.pipeline.pull` and `clevertim_sync.writeback.worker.push`; it never
talks SQL to the mirror tables beyond reading health facts, and never talks HTTP to Clevertim beyond
the start-up token check.
"""

from __future__ import annotations
