"""A mirror with every awkward type in it, and every row of it read back: what the backups' tests
take, restore and compare (the `mirror` fixture is this data on `mirror_engine`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

PHOTO = bytes(range(256)) * 3  # every byte value: not text, not UTF-8


def seed(engine: sa.Engine, n: int = 30, *, documents: bool = True) -> None:
    """A small mirror with every awkward type: timestamps, exact decimals, booleans, unicode, and
    (from 0009) text ids in tables, child tables and history, and a photo's bytes."""
    if documents:
        with engine.begin() as conn:
            folders = [("f1001", "Verträge", None), ("f1002", None, "f1001")]
            conn.execute(
                schema.CURRENT["folder"].insert(),
                [
                    {"id": i, "name": name, "parent_id": parent, "raw": f'{{"id":"{i}"}}', "content_hash": i}
                    for i, name, parent in folders
                ],
            )
            conn.execute(
                schema.CHILDREN[("contact", "files")].insert(), {"owner_id": 1, "position": 0, "file_id": "7"}
            )
            conn.execute(
                schema.history.insert(),
                {"resource": "folder", "record_key": "f1001", "origin": "pull", "op": "insert", "at": T0},
            )
            conn.execute(
                schema.contact_photos.insert(),
                {"contact_id": 1, "cphoto": "c1.png", "content_type": "image/png", "content": PHOTO,
                 "size": len(PHOTO), "sha256": "x" * 64, "fetched_at": T0, "attempted_at": T0},
            )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            schema.CURRENT["contact"].insert(),
            [
                {
                    "id": i,
                    "first_name": f"Zoë {i}",
                    "is_company": False,
                    "modified_at": T0 + timedelta(minutes=i),
                    "raw": f'{{"id": {i}, "fn": "Zoë {i}"}}',
                    "content_hash": f"h{i}",
                }
                for i in range(1, n + 1)
            ],
        )
        conn.execute(
            schema.CURRENT["opportunity"].insert(),
            [{"id": 900, "value": Decimal("1234567890123.4567"), "raw": "{}", "content_hash": "o"}],
        )
        conn.execute(
            schema.history.insert(),
            [
                {"resource": "contact", "record_id": i, "origin": "pull", "op": "insert", "at": T0}
                for i in range(1, n + 1)
            ],
        )


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every project table, through the project's types (so both databases compare)."""
    engine = make_engine(url)
    try:
        present = set(sa.inspect(engine).get_table_names())
        out = {}
        with engine.connect() as conn:
            for name, table in schema.metadata.tables.items():
                if name in present:
                    pk = list(table.primary_key.columns) or list(table.columns)
                    out[name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*pk))]
        return out
    finally:
        engine.dispose()
