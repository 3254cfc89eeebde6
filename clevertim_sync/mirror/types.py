"""Column types that behave the same on SQLite and PostgreSQL.

Owns: `UtcDateTime` (aware UTC datetimes in and out on both databases) and `ExactDecimal`
(decimals stored without rounding on both). Migrations import these by name, so a type here
keeps its name and meaning once released.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC instant: `timestamptz` on PostgreSQL, ISO text (`2017-01-02 05:22:12.000000`) on SQLite.

    Naive datetimes are taken as UTC; results are always aware (tzinfo=UTC) on both databases, so
    Python code never has to know which database it talks to. On SQLite the text sorts in time
    order and SQLite's date functions (`datetime()`, `strftime()`) read it.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value if dialect.name == "sqlite" else value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite's DATETIME storage drops the offset: store the UTC wall clock.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """A decimal kept exactly: NUMERIC(18, 4) on PostgreSQL, decimal text on SQLite.

    SQLite's NUMERIC affinity would turn "1234567890123.4567" into a lossy float, so there the
    value is TEXT; SQLite arithmetic (`SUM(value)`) still reads it as a number, and
    `CAST(value AS REAL)` sorts numerically.
    """

    impl = sa.Numeric(18, 4, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(sa.Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))
