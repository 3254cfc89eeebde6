"""From an API record to the typed column values and child rows of the mirror (pure, no SQL).

Owns: the conversion of each property kind to its column value, defensively: every plausible
spelling is read through `clevertim_sync.shapes` (0/1 booleans, numeric strings, a reference as a
list, date parts as strings, "" for null), and a value of no usable shape (an unknown date
format, a decimal too large for NUMERIC(18,4)) becomes NULL in its column and stays untouched in
`raw`, so one odd record can never make a whole resource fail to store. A reference that may hold
several ids (`Prop.child_table` set on a REF) keeps the id in its column when it holds exactly
one, and every id in its child table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from clevertim_sync import shapes
from clevertim_sync.resources import Kind, Prop, Resource

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_DECIMAL = Decimal(10) ** 14  # NUMERIC(18, 4): 14 digits before the point


def to_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


to_int = shapes.as_int  # 445 or "445"
to_ref = shapes.single_ref  # 445, "445", [445]; a list of several ids -> None (the child table has them)
to_bool = shapes.as_bool  # true/false, 0/1, "0"/"1", "true"/"false"


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
    part = shapes.date_part  # 9 or "9"; null and "" are absent
    try:
        hour, minute = part(value.get("h")), part(value.get("mi"))
        year, month, day = part(value["y"]), part(value["mo"]), part(value["d"])
        if year is None or month is None or day is None:
            return None, None
        at = datetime(year, month, day, hour or 0, minute or 0, tzinfo=UTC)
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
    Kind.TEXT_REF: shapes.as_text_id,  # "f1001", 7 -> "7"
    Kind.BOOL: to_bool,
    Kind.DECIMAL: to_decimal,
    Kind.TIMESTAMP: to_timestamp,
}


# --- SQLite storage forms ----------------------------------------------------------------------
# Rows are written with the driver's executemany, past SQLAlchemy's per-row bind processing (a
# third of a first sync's time). So the values must already be in the form the column types of
# mirror/types.py store: on SQLite a timestamp is the text SQLAlchemy's DATETIME writes, a decimal
# its text; PostgreSQL (psycopg) takes datetime and Decimal objects as they are.


def sqlite_datetime(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME stores for a UTC instant: `2017-01-02 05:22:12.000000`."""
    if value is None:
        return None
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def to_sqlite_timestamp(value: Any) -> str | None:
    if isinstance(value, str) and len(value) == 20 and value[10] == "T" and value[19] == "Z":
        # The API's usual 2017-01-02T05:22:12Z: validate, then re-spell without a datetime round trip.
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return None
        return f"{value[:10]} {value[11:19]}.000000"
    return sqlite_datetime(to_timestamp(value))


def to_sqlite_decimal(value: Any) -> str | None:
    number = to_decimal(value)
    return None if number is None else str(number)


_SQLITE_SCALAR: Mapping[Kind, Callable[[Any], Any]] = {
    **_SCALAR,
    Kind.DECIMAL: to_sqlite_decimal,
    Kind.TIMESTAMP: to_sqlite_timestamp,
}


def child_columns(prop: Prop) -> tuple[str, ...]:
    """The columns of `prop`'s child table, in the order of the tuples `child_rows` builds."""
    if prop.kind is Kind.PHONES:
        return ("owner_id", "position", "type", "number")
    if prop.kind is Kind.SMIDS:
        return ("owner_id", "position", "type", "social_id")
    if prop.kind is Kind.CUSTOM_FIELDS:
        return ("owner_id", "custom_field_id", "position", "value")
    if prop.kind in (Kind.REF, Kind.INT_LIST):  # note_customers(owner_id, position, customer_id)
        return ("owner_id", "position", prop.column)
    return ("owner_id", "position", "value")


class RowBuilder:
    """Builds the current row (a tuple in `columns` order) and child rows of one resource's records.

    `sqlite=True` gives values in SQLite's storage form (see above), else Python objects.
    """

    def __init__(self, resource: Resource, *, sqlite: bool) -> None:
        self.resource = resource
        converters = _SQLITE_SCALAR if sqlite else _SCALAR
        self.scalars = [(p.api, converters[p.kind]) for p in resource.props if p.kind in _SCALAR]
        self.dates = [p.api for p in resource.props if p.kind is Kind.DATE_PARTS]
        self._date_form: Callable[[datetime | None], Any] = sqlite_datetime if sqlite else _same
        self.timestamp: Callable[[Any], Any] = converters[Kind.TIMESTAMP]
        self.columns: tuple[str, ...] = (
            "id",
            *(p.column for p in resource.props if p.kind in _SCALAR),
            *(c for p in resource.props if p.kind is Kind.DATE_PARTS for c in (p.column, all_day_column(p))),
            "raw",
            "content_hash",
        )
        self.children = list(resource.child_props)

        self.current: Callable[[Mapping[str, Any], str, str], tuple[Any, ...]] = self._compile(
            resource, converters
        )
        self.rows: Callable[
            [Iterable[tuple[Mapping[str, Any], str, str]]],
            tuple[list[tuple[Any, ...]], list[list[tuple[Any, ...]]]],
        ] = self._compile_rows()

    def _compile(
        self, resource: Resource, converters: Mapping[Kind, Callable[[Any], Any]]
    ) -> Callable[[Mapping[str, Any], str, str], tuple[Any, ...]]:
        """`current(record, raw, hash) -> row`, generated per resource as one flat function.

        The hot loop of a first sync: a generic loop over (property, converter) pairs spent more
        time in calls than in work, so the common kinds are inlined as type checks (`bool` is
        not `int` here, as in the converters) and only the rare ones call their converter. It
        must give exactly what the converters give; tests/mirror/test_store.py checks odd values.
        """
        env: dict[str, Any] = {"_date_parts": date_parts, "_date_form": self._date_form}
        lines = ["def current(record, raw, digest):", "    get = record.get", "    rid = record['id']"]
        # The id in its one spelling: an int ("445" is 445), or a text id (7 is "7", trimmed).
        values = [
            "text_id(rid)" if resource.text_ids else "rid if rid.__class__ is int else record_id(record)"
        ]
        env["record_id"], env["text_id"] = record_id, shapes.as_text_id
        for i, prop in enumerate(p for p in resource.props if p.kind in _SCALAR):
            lines.append(f"    v{i} = get({prop.api!r})")
            if prop.kind is Kind.STR:
                values.append(f"v{i} if v{i}.__class__ is str else None")
            elif prop.kind is Kind.BOOL:
                env[f"c{i}"] = converters[prop.kind]
                values.append(f"v{i} if v{i}.__class__ is bool else (None if v{i} is None else c{i}(v{i}))")
            elif prop.kind is Kind.INT:
                env[f"c{i}"] = converters[prop.kind]
                values.append(
                    f"v{i} if v{i}.__class__ is int and {_INT64_MIN} <= v{i} <= {_INT64_MAX} else "
                    f"(None if v{i} is None else c{i}(v{i}))"
                )
            else:  # REF (ints inline, other spellings via to_ref), DECIMAL, TIMESTAMP
                env[f"c{i}"] = converters[prop.kind]
                fast = (
                    f"v{i} if v{i}.__class__ is int and {_INT64_MIN} <= v{i} <= {_INT64_MAX} else "
                    if (prop.kind is Kind.REF)
                    else ""
                )
                values.append(f"None if v{i} is None else ({fast}c{i}(v{i}))")
        for j, prop in enumerate(p for p in resource.props if p.kind is Kind.DATE_PARTS):
            lines.append(f"    d{j} = _date_parts(get({prop.api!r}))")
            values.extend([f"_date_form(d{j}[0])", f"d{j}[1]"])
        values.extend(["raw", "digest"])
        lines.append("    return (" + ", ".join(values) + ",)")
        exec(compile("\n".join(lines), f"<RowBuilder {resource.name}>", "exec"), env)  # noqa: S102 registry-made
        built: Callable[[Mapping[str, Any], str, str], tuple[Any, ...]] = env["current"]
        return built

    def _compile_rows(
        self,
    ) -> Callable[
        [Iterable[tuple[Mapping[str, Any], str, str]]],
        tuple[list[tuple[Any, ...]], list[list[tuple[Any, ...]]]],
    ]:
        """`rows(items) -> (current rows, [child rows of each of self.children])` for (record, raw,
        hash) items: one generated loop, list, phone/social and custom-field entries inlined (any
        other kind goes through `child_rows`). Same rows as `child_rows`, tested."""
        env: dict[str, Any] = {
            "current": self.current,
            "_child_rows": child_rows,
            "_to_ref": to_ref,
            "_cf_text": _cf_text,
            "record_id": record_id,
            "text_id": shapes.as_text_id,
            "text_ids": self.resource.text_ids,
        }
        n = len(self.children)
        lines = ["def rows(items):", "    cur = []", "    add = cur.append"]
        lines += [f"    c{k} = []" for k in range(n)]
        lines += ["    for record, raw, digest in items:", "        add(current(record, raw, digest))"]
        lines += [
            "        rid = record['id']",
            "        if text_ids:",
            "            rid = text_id(rid)",
            "        elif rid.__class__ is not int:",
            "            rid = record_id(record)",
            "        get = record.get",
        ]
        for k, prop in enumerate(self.children):
            lines.append(f"        v = get({prop.api!r})")
            if prop.kind is Kind.STR_LIST:
                lines += [
                    "        if v and isinstance(v, list):",
                    f"            c{k}.extend([(rid, i, x) for i, x in enumerate(v) if isinstance(x, str)])",
                ]
            elif prop.kind in (Kind.PHONES, Kind.SMIDS):
                inner = "no" if prop.kind is Kind.PHONES else "smid"
                lines += [
                    "        if v and isinstance(v, list):",
                    "            for i, x in enumerate(v):",
                    "                if isinstance(x, dict):",
                    f"                    t = x.get('type'); u = x.get({inner!r})",
                    f"                    c{k}.append((rid, i, t if isinstance(t, str) else None,"
                    " u if isinstance(u, str) else None))",
                ]
            elif prop.kind is Kind.CUSTOM_FIELDS:
                # The hottest child kind (a dict of lists per contact): child_rows' logic inlined,
                # with the common spellings (an ASCII-digit key, a str value) tested first.
                lines += [
                    "        if v and isinstance(v, dict):",
                    "            seen = set()",
                    "            for key, x in v.items():",
                    "                if key.__class__ is str and key.isascii() and key.isdigit():",
                    "                    fid = int(key) if len(key) < 19 else _to_ref(key)",
                    "                else:",
                    "                    fid = _to_ref(key)",
                    "                if fid is None or fid in seen:",
                    "                    continue",
                    "                seen.add(fid)",
                    "                if isinstance(x, list):",
                    f"                    c{k}.extend([(rid, fid, i, y if y.__class__ is str"
                    " else _cf_text(y)) for i, y in enumerate(x)])",
                    "                else:",
                    f"                    c{k}.append((rid, fid, 0, x if x.__class__ is str"
                    " else _cf_text(x)))",
                ]
            else:
                env[f"p{k}"] = prop
                lines += ["        if v:", f"            c{k}.extend(_child_rows(p{k}, rid, v))"]
        lines.append("    return cur, [" + ", ".join(f"c{k}" for k in range(n)) + "]")
        exec(compile("\n".join(lines), f"<RowBuilder rows {self.resource.name}>", "exec"), env)  # noqa: S102
        built: Callable[
            [Iterable[tuple[Mapping[str, Any], str, str]]],
            tuple[list[tuple[Any, ...]], list[list[tuple[Any, ...]]]],
        ] = env["rows"]
        return built

    def id_of(self, record: Mapping[str, Any]) -> Any:
        """The id column of a record the diff let through (its id as served may be spelled
        otherwise: "445", or 7 for the text id "7")."""
        rid = record["id"]
        if self.resource.text_ids:
            return shapes.as_text_id(rid)
        return rid if rid.__class__ is int else record_id(record)

    def lm(self, record: Mapping[str, Any]) -> Any:
        """The record's `lm` in the form modified_at holds it: what the index compares."""
        return self.timestamp(record.get("lm"))


def _same(value: datetime | None) -> datetime | None:
    return value


def record_id(record: Mapping[str, Any]) -> Any:
    """The id column of a record the diff let through: its int id ("445" spelled as 445)."""
    rid = record["id"]
    return rid if rid.__class__ is int else shapes.as_int(rid)


def child_rows(prop: Prop, owner: int, value: Any) -> list[tuple[Any, ...]]:
    """The rows of `prop`'s child table for one record (tuples in `child_columns` order); entries
    of the wrong shape are skipped."""
    if not value:
        return []
    kind = prop.kind
    if kind is Kind.STR_LIST:
        if not isinstance(value, list):
            return []
        return [(owner, i, v) for i, v in enumerate(value) if isinstance(v, str)]
    if kind in (Kind.PHONES, Kind.SMIDS):
        if not isinstance(value, list):
            return []
        inner = "no" if kind is Kind.PHONES else "smid"
        return [
            (owner, i, to_str(v.get("type")), to_str(v.get(inner)))
            for i, v in enumerate(value)
            if isinstance(v, dict)
        ]
    if kind is Kind.CUSTOM_FIELDS:
        if not isinstance(value, dict):
            return []
        rows: list[tuple[Any, ...]] = []
        seen: set[int] = set()
        for key, v in value.items():
            field_id = to_ref(key)
            if field_id is None or field_id in seen:  # "7" and "07" would collide
                continue
            seen.add(field_id)
            values = v if isinstance(v, list) else [v]
            rows.extend((owner, field_id, i, _cf_text(x)) for i, x in enumerate(values))
        return rows
    if kind is Kind.REF:
        return [(owner, i, ref) for i, ref in enumerate(shapes.as_ids(value))]
    if kind is Kind.INT_LIST and prop.child_table is not None:
        # A record's files: ids of documents, in sorted order (a server-computed list's order
        # means nothing, and a server may serve it otherwise on each read).
        return [(owner, i, ref) for i, ref in enumerate(sorted(shapes.text_ids(value)))]
    return []


_cf_text = shapes.cf_text  # a value of any JSON type as text: never Python's repr


def has_typed_column(prop: Prop) -> bool:
    """Whether `prop` has a column of its own in the resource's table (a reference does even when
    a child table also keeps every id of a list)."""
    return prop.kind in _SCALAR or prop.kind is Kind.DATE_PARTS


def typed_value(prop: Prop, value: Any) -> Any:
    """What `prop`'s typed column holds for `value` (None: NULL), converted as the row builders
    do; a kind without a typed column gives `value` back. For the probe, so both agree."""
    if prop.kind is Kind.DATE_PARTS:
        return date_parts(value)[0]
    convert = _SCALAR.get(prop.kind)
    return value if convert is None else convert(value)
