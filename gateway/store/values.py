"""How telemetry values are kept in `telemetry_raw.value` (an SQLite ANY column), and read back.

Pure. Integers and booleans are INTEGER (booleans as 0/1), numbers REAL, strings TEXT, and arrays
and objects compact JSON in a BLOB, so that a string that looks like JSON stays a string. The kind
of a series (of its newest value) tells a boolean from an integer when reading.
"""

from __future__ import annotations

import json

from gateway.model import JsonValue, SeriesKind

SqlValue = int | float | str | bytes

# SQLite integers are 64-bit; a larger JSON integer is kept as a REAL.
_INT64 = 2**63


def kind_of(value: JsonValue) -> SeriesKind:
    """The kind of one (non-null) value."""
    if isinstance(value, bool):
        return SeriesKind.BOOLEAN
    if isinstance(value, int):
        return SeriesKind.INTEGER if -_INT64 <= value < _INT64 else SeriesKind.FLOAT
    if isinstance(value, float):
        return SeriesKind.FLOAT
    if isinstance(value, str):
        return SeriesKind.STRING
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return SeriesKind.STRING_ARRAY
    return SeriesKind.JSON


def to_sql(value: JsonValue) -> SqlValue:
    """The SQLite value for one non-null telemetry value (ValueError for null)."""
    if value is None:
        raise ValueError("null values are not kept in the history")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, float | str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def kind_and_value(value: JsonValue) -> tuple[SeriesKind, SqlValue]:
    """`kind_of` and `to_sql` of one non-null value at once, quickest for the usual types (this
    runs for every stored value)."""
    if type(value) is float:
        return SeriesKind.FLOAT, value
    if type(value) is int and -_INT64 <= value < _INT64:
        return SeriesKind.INTEGER, value
    return kind_of(value), to_sql(value)


def from_sql(value: SqlValue | None, kind: SeriesKind) -> JsonValue:
    """The JSON value for a stored one; integers read as booleans in a boolean series."""
    if value is None:
        return None
    if isinstance(value, bytes):
        decoded: JsonValue = json.loads(value)
        return decoded
    if isinstance(value, int) and kind is SeriesKind.BOOLEAN:
        return bool(value)
    return value
