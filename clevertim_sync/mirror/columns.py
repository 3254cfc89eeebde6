"""From an API record to the typed column values and child rows of the mirror (pure, no SQL).

Owns: the conversion of each property kind to its column value, defensively: a value of the
wrong shape (the vendor's client sometimes sends `cust` as a list, an unknown date format, a
decimal too large for NUMERIC(18,4)) becomes NULL in its column and stays untouched in `raw`, so
one odd record can never make a whole resource fail to store.

Must not import: SQLAlchemy, httpx.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from clevertim_sync.resources import Kind, Prop, Resource

Row = dict[str, Any]
_MAX_DECIMAL = Decimal(10) ** 14  # NUMERIC(18, 4): 14 digits before the point


def to_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def to_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None


def to_ref(value: Any) -> int | None:
    # A one-element list is the vendor client's other spelling of a single pointer.
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return to_int(value)


def to_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    if not number.is_finite() or abs(number) >= _MAX_DECIMAL or number != number.quantize(Decimal("0.0001")):
        return None
    return number


def to_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def date_parts(value: Any) -> tuple[datetime | None, bool | None]:
    """{y, mo, d, h?, mi?} -> (the instant, all_day). The parts carry no zone: stored as UTC."""
    if not isinstance(value, dict):
        return None, None
    try:
        hour, minute = value.get("h"), value.get("mi")
        at = datetime(value["y"], value["mo"], value["d"], hour or 0, minute or 0, tzinfo=UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None, None
    return at, hour is None and minute is None


def all_day_column(prop: Prop) -> str:
    """The boolean column beside a DATE_PARTS timestamp: `start_at` -> `start_at_all_day`."""
    return f"{prop.column}_all_day"


_SCALAR: Mapping[Kind, Callable[[Any], Any]] = {
    Kind.STR: to_str,
    Kind.INT: to_int,
    Kind.REF: to_ref,
    Kind.BOOL: to_bool,
    Kind.DECIMAL: to_decimal,
    Kind.TIMESTAMP: to_timestamp,
}


class RowBuilder:
    """Builds the current row and the child rows of one resource's records."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.scalars = [(p.api, p.column, _SCALAR[p.kind]) for p in resource.props if p.kind in _SCALAR]
        self.dates = [
            (p.api, p.column, all_day_column(p)) for p in resource.props if p.kind is Kind.DATE_PARTS
        ]
        self.children = list(resource.child_props)

    def current(self, record: Mapping[str, Any], raw: str, digest: str) -> Row:
        get = record.get
        row: Row = {"id": record["id"], "raw": raw, "content_hash": digest}
        for api, column, convert in self.scalars:
            row[column] = convert(get(api))
        for api, column, all_day in self.dates:
            row[column], row[all_day] = date_parts(get(api))
        return row

    def child_rows(self, prop: Prop, record: Mapping[str, Any]) -> list[Row]:
        return child_rows(prop, record["id"], record.get(prop.api))


def child_rows(prop: Prop, owner: int, value: Any) -> list[Row]:
    """The rows of `prop`'s child table for one record; entries of the wrong shape are skipped."""
    if not value:
        return []
    kind = prop.kind
    if kind is Kind.STR_LIST:
        if not isinstance(value, list):
            return []
        return [
            {"owner_id": owner, "position": i, "value": v} for i, v in enumerate(value) if isinstance(v, str)
        ]
    if kind in (Kind.PHONES, Kind.SMIDS):
        if not isinstance(value, list):
            return []
        inner, column = ("no", "number") if kind is Kind.PHONES else ("smid", "social_id")
        return [
            {"owner_id": owner, "position": i, "type": to_str(v.get("type")), column: to_str(v.get(inner))}
            for i, v in enumerate(value)
            if isinstance(v, dict)
        ]
    if kind is Kind.CUSTOM_FIELDS:
        if not isinstance(value, dict):
            return []
        rows: list[Row] = []
        seen: set[int] = set()
        for key, v in value.items():
            field_id = to_ref(key)
            if field_id is None or field_id in seen:  # "7" and "07" would collide
                continue
            seen.add(field_id)
            values = v if isinstance(v, list) else [v]
            rows.extend(
                {"owner_id": owner, "custom_field_id": field_id, "position": i, "value": _cf_text(x)}
                for i, x in enumerate(values)
            )
        return rows
    return []


def _cf_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)  # a number where a string was expected: keep it readable
