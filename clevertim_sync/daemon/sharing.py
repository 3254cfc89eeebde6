"""Standby daemons sharing the accounts over PostgreSQL: each takes its fair share, no more.

Owns: the balancing loop of a daemon started with `run --standby` whose accounts are all on
PostgreSQL. Every `daemon.rebalance_interval` seconds it counts the live daemons (members.py) and
compares what it serves with `fair_share(accounts, live)`: above it, it gives back the accounts
over it (idle ones only: a running pull ends before its account goes); below it, it tries the
free ones, in an order of its own so that peers starting together do not all try the same
account first. Which daemon serves an account is decided by its advisory lock alone (lock.py), so
two daemons never serve one account, whatever this loop believes.

What follows from it: a daemon that dies or stops frees its locks and leaves the members, the
others' share grows and they take its accounts at their next look; a daemon that joins lowers
everyone's share, those above it give back, and it takes what they give.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from clevertim_sync.daemon.members import Membership, fair_share
from clevertim_sync.daemon.runtime import AccountRuntime

log = structlog.get_logger(__name__)

# An account whose opening failed (a refused token, a database it cannot reach) is tried again
# after this long, not at every look.
RETRY_FAILED_SECONDS = 60.0


class Sharing:
    def __init__(
        self,
        runtimes: Sequence[AccountRuntime],
        membership: Membership,
        interval: float,
        *,
        take: Callable[[AccountRuntime], bool],
        give_up: Callable[[AccountRuntime], bool],
    ) -> None:
        self.runtimes = runtimes
        self.membership = membership
        self.interval = interval
        self._take = take
        self._give_up = give_up
        self.live: list[str] = []
        self._failed_until: dict[str, float] = {}
        self._rng = random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sharing", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.balance()
            except Exception:  # a database hiccup: the next look tries again
                log.exception("sharing.balance_failed")
            self._stop.wait(self.interval)

    def balance(self) -> None:
        live = self.membership.live()
        if live is None:
            return  # cannot count the daemons now: keep what is held, take nothing
        self.live = live
        held = [rt for rt in self.runtimes if rt.held]
        share = fair_share(len(self.runtimes), len(live))
        if len(held) > share:
            # Only idle accounts: a running job keeps its account (and its lock) until it ends,
            # so the account is never pulled by two daemons at once; the rest at a later look.
            idle = [rt for rt in held if rt.runner.current is None]
            over = idle[: len(held) - share]
            log.info("sharing.giving_back", accounts=[rt.name for rt in over], live=len(live), share=share)
            for rt in over:
                if not self._stop.is_set():
                    self._give_up(rt)
            return
        now = time.monotonic()
        free = [rt for rt in self.runtimes if not rt.held and self._failed_until.get(rt.name, 0.0) <= now]
        self._rng.shuffle(free)
        count = len(held)
        for rt in free:
            if count >= share or self._stop.is_set():
                break
            try:
                taken = self._take(rt)
            except Exception:
                log.exception("sharing.take_failed", account=rt.name)
                self._failed_until[rt.name] = now + RETRY_FAILED_SECONDS
                continue
            count += taken


class ServedAccounts(Collector):
    """`/metrics`: which daemon serves which account, and how many daemons are alive."""

    def __init__(self, daemon: str, runtimes: Sequence[AccountRuntime], live: Callable[[], int]) -> None:
        self.daemon = daemon
        self.runtimes = runtimes
        self._live = live

    def collect(self) -> Iterator[GaugeMetricFamily]:
        served = GaugeMetricFamily(
            "clevertim_sync_account_served",
            "1 while this daemon serves the account (holds its instance lock), else 0",
            labels=["account", "daemon"],
        )
        for rt in self.runtimes:
            served.add_metric([rt.name, self.daemon], 1 if rt.held else 0)
        live = GaugeMetricFamily(
            "clevertim_sync_daemons_live", "Daemons sharing the accounts, this one included (1 alone)"
        )
        live.add_metric([], self._live())
        yield from (served, live)
