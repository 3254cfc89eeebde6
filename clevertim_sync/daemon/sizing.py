"""How much memory one daemon needs for its accounts: the sizing rule, from bench/accounts.py.

Owns: the rule `start-up + per account x accounts + per pull x daemon.concurrent_pulls` and its
three numbers, measured with accounts of 2,000 contacts on SQLite (docs/how-to/agency.md shows
the runs), and reading a systemd size (`256M`) for `check`'s comparison with the unit's limit.
"""

from __future__ import annotations

MB = 2**20

# Measured (bench/accounts.py, see docs/how-to/agency.md), rounded up.
START_MB = 95  # the daemon with one account, between pulls (measured 89-92)
PER_ACCOUNT_MB = 2  # each further account, between pulls (measured 1.75 at 20 accounts, 1.3 at 100)
# Each pull running at once, above the idle daemon: measured 8-10 MB at 2,000 contacts; the
# README's single account shows ~15 MB at 100,000 contacts, which this covers too.
PER_PULL_MB = 16
# What a push and a backup beside the pulls, and SQLite's caches, may take on top.
MARGIN_MB = 32

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def needed_bytes(accounts: int, concurrent_pulls: int) -> int:
    """The MemoryMax= a daemon serving `accounts` with `concurrent_pulls` slots should have.

    An account never runs two pulls at once, so fewer accounts than slots use fewer slots.
    """
    pulls = min(concurrent_pulls, accounts)
    mb = START_MB + PER_ACCOUNT_MB * max(accounts - 1, 0) + PER_PULL_MB * pulls + MARGIN_MB
    return int(mb * MB)


def parse_size(text: str) -> int:
    """Bytes in a systemd size: 268435456, 256M, 1G (settings checks the spelling)."""
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    return int(text[: len(text) - len(unit)]) * _UNITS[unit]


def as_systemd(n: int) -> str:
    """A size as MemoryMax= takes it, rounded up to whole 32 MiB: `320M`."""
    step = 32 * MB
    return f"{-(-n // step) * step // MB}M"
