"""What every command of the mirror uses: its database, opened and migrated.

Owns: opening the mirror named by the settings (migrated to the newest schema first, as every
command does) and closing its connections after the command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from clevertim_sync.cli import AppContext
from clevertim_sync.mirror import db


def open_mirror(app: AppContext) -> Engine:
    """The mirror's engine, migrated to the newest schema (every command starts here)."""
    settings = app.settings
    engine = db.make_engine(settings.database.url, busy_timeout=settings.database.sqlite_busy_timeout)
    db.upgrade(engine)
    return engine


@contextmanager
def mirror(app: AppContext) -> Iterator[Engine]:
    engine = open_mirror(app)
    try:
        yield engine
    finally:
        engine.dispose()


def bad_entries_text(counts: dict[str, int]) -> str:
    """`status`'s and `sync`'s line for the entries reported by reason (clevertim_sync/entries.py)."""
    return "odd entries: " + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
