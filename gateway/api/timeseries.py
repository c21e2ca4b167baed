"""Time-series queries: the JSON request in, buckets aggregated and gap-filled, CSV out.

Pure. Serves `POST /v3/telemetry/query_timeseries` and the legacy `POST /telemetry/v1/timeseries`, which
share one format (`enapter-http-api.md` §7.2, `enapter-device-protocol.md` §2.4). The store hands over
partial aggregates (raw values, or rollups of them) per series; this module merges them into buckets of
the requested granularity, aligned to the epoch, carries values forward where asked (`locf`), and renders
the CSV body plus one `X-Enapter-Timeseries-Data-Types` word per column.

Every bad request value is a `QueryError` naming its JSON path; the handler turns it into a 422.
"""

from __future__ import annotations

import enum
import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.api.errors import ApiError
from gateway.api.params import MAX_DURATION_S, duration, moment
from gateway.model import JsonValue, SeriesKind

MAX_SELECTORS = 100
MAX_COLUMNS = 500
# One CSV row per bucket; more than this is a mistake (or an attack), not a chart.
MAX_BUCKETS = 100_000
MAX_LABEL_CHARS = 256
# The range `moment` can produce: year 1 to year 9999, as unix seconds.
MIN_TIME = -62_135_596_800
MAX_TIME = 253_402_300_800


class Aggregation(enum.StrEnum):
    """How the values in one bucket become one value; python-sdk sends them in lower case."""

    AUTO = "auto"
    AVG = "avg"
    LAST = "last"
    MIN = "min"
    MAX = "max"
    BOOL_OR = "bool_or"


class GapFillingMethod(enum.StrEnum):
    """What an empty bucket gets: nothing, or the last observation carried forward."""

    NONE = "none"
    LOCF = "locf"


class DataType(enum.StrEnum):
    """The `X-Enapter-Timeseries-Data-Types` words; python-sdk upper-cases them into its own enum."""

    FLOAT = "float"
    INTEGER = "integer"
    STRING = "string"
    STRING_ARRAY = "string_array"
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class GapFilling:
    """`gap_filling` of one selector; `look_around` in seconds."""

    method: GapFillingMethod
    look_around: float


@dataclass(frozen=True, slots=True)
class ColumnRequest:
    """One output column: one attribute of one selector.

    `selector_index` is the selector's place in `telemetry`, so that errors found later (an aggregation
    that does not fit the series) can still name `telemetry[i].aggregation`.
    """

    device: str
    attribute: str
    aggregation: Aggregation
    gap_filling: GapFilling
    selector_index: int


@dataclass(frozen=True, slots=True)
class TimeseriesQuery:
    """A validated query: `[start, end)` in unix seconds, buckets of `granularity` whole seconds."""

    start: float
    end: float
    granularity: int
    columns: tuple[ColumnRequest, ...]

    def lookback(self) -> float:
        """How far before `start` the store must also read to seed `locf` gap filling (0 if unused)."""
        return max(
            (
                column.gap_filling.look_around
                for column in self.columns
                if column.gap_filling.method is GapFillingMethod.LOCF
            ),
            default=0.0,
        )


class QueryError(Exception):
    """A request value that is wrong (HTTP 422): `field` is its JSON path, `message` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- parsing -------------------------------------------------------------------------------------------


def parse_query(body: object) -> TimeseriesQuery:
    """The query in a decoded JSON request body; any other shape or value raises `QueryError`.

    Unknown keys are ignored: clients may send more than this gateway reads.
    """
    if not isinstance(body, dict):
        raise QueryError("body", "must be a JSON object")
    start = _time(body.get("from"), "from")
    end = _time(body.get("to"), "to")
    if end <= start:
        # python-sdk refuses such a query itself; the API should too.
        raise QueryError("to", "must be later than from")
    granularity = _granularity(body.get("granularity"))
    buckets = len(_grid(start, end, granularity))
    if buckets > MAX_BUCKETS:
        raise QueryError(
            "granularity",
            f"too many points ({buckets} buckets, at most {MAX_BUCKETS}); raise the granularity",
        )
    default = _aggregation(body.get("aggregation"), "aggregation", Aggregation.AUTO)
    selectors = body.get("telemetry")
    if not isinstance(selectors, list) or not selectors:
        raise QueryError("telemetry", "must be a non-empty list of {device, attribute} objects")
    if len(selectors) > MAX_SELECTORS:
        raise QueryError("telemetry", f"at most {MAX_SELECTORS} selectors per query")
    columns: list[ColumnRequest] = []
    for index, selector in enumerate(selectors):
        columns.extend(_selector(selector, index, default))
        if len(columns) > MAX_COLUMNS:
            raise QueryError("telemetry", f"at most {MAX_COLUMNS} attributes per query")
    return TimeseriesQuery(start=start, end=end, granularity=granularity, columns=tuple(columns))


def _time(raw: object, field: str) -> float:
    """`from`/`to`: an RFC 3339 string or unix seconds (a number, or digits in a string)."""
    if raw is None:
        raise QueryError(field, "is required (an RFC 3339 time or unix seconds)")
    if isinstance(raw, str):
        try:
            seconds = moment(raw, field)
        except ApiError as error:
            raise QueryError(field, _bare(error, field)) from None
        except (ValueError, OverflowError):
            # `timestamp()` of a year-1 or year-9999 time with an offset falls off the calendar.
            raise QueryError(field, f"is out of range: {raw[:40]!r}") from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = raw
    else:
        raise QueryError(field, f"must be an RFC 3339 string or unix seconds, not {_json_type(raw)}")
    # Compared before any float() so that a huge JSON integer cannot overflow; NaN fails too.
    if not MIN_TIME <= seconds <= MAX_TIME:
        raise QueryError(field, "is out of range (years 1 to 9999)")
    return float(seconds)


def _granularity(raw: object) -> int:
    """A duration (`"60s"`, `"1m"`, `"1h"`) or a bare number of seconds; whole seconds, at least 1."""
    field = "granularity"
    seconds = _duration(raw, field)
    if seconds is None:
        raise QueryError(field, 'is required (a duration such as "60s")')
    whole = round(seconds)
    # Sub-second buckets would not fit the unix-second `ts` column; allow float noise such as 0.1h.
    if whole < 1 or abs(seconds - whole) > 1e-6:
        raise QueryError(field, f"must be a whole number of seconds, at least 1s, got {seconds:g}s")
    return whole


def _duration(raw: object, field: str) -> float | None:
    """A Go-style duration string or a number of seconds, >= 0; None when absent or null."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            return duration(raw, field)
        except ApiError as error:
            raise QueryError(field, _bare(error, field)) from None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if not 0 <= raw <= MAX_DURATION_S:  # also refuses NaN, and compares huge ints without float()
            raise QueryError(field, f"must be between 0 and {MAX_DURATION_S:.0f} seconds")
        return float(raw)
    raise QueryError(field, f'must be a duration such as "60s" or a number of seconds, not {_json_type(raw)}')


def _aggregation(raw: object, field: str, default: Aggregation) -> Aggregation:
    """An aggregation name in any case; absent or null means `default`."""
    if raw is None:
        return default
    allowed = ", ".join(Aggregation)
    if not isinstance(raw, str):
        raise QueryError(field, f"must be one of {allowed}, not {_json_type(raw)}")
    name = raw.strip().lower()
    if name not in Aggregation.__members__.values():
        raise QueryError(field, f"must be one of {allowed}, got {raw[:40]!r}")
    return Aggregation(name)


def _selector(raw: object, index: int, default: Aggregation) -> list[ColumnRequest]:
    """One `telemetry[i]` item: a device and one or more attributes, each becoming a column."""
    path = f"telemetry[{index}]"
    if not isinstance(raw, dict):
        raise QueryError(path, f"must be an object with device and attribute, not {_json_type(raw)}")
    device = _label(raw.get("device"), f"{path}.device")
    attribute = raw.get("attribute")
    # The docs and Grafana send one string, python-sdk a list (`enapter-device-protocol.md` §2.4).
    if isinstance(attribute, str):
        attributes = [_label(attribute, f"{path}.attribute")]
    elif isinstance(attribute, list) and attribute:
        attributes = [_label(item, f"{path}.attribute[{j}]") for j, item in enumerate(attribute)]
    else:
        raise QueryError(f"{path}.attribute", "must be an attribute name or a non-empty list of them")
    aggregation = _aggregation(raw.get("aggregation"), f"{path}.aggregation", default)
    gap_filling = _gap_filling(raw.get("gap_filling"), f"{path}.gap_filling")
    return [
        ColumnRequest(
            device=device,
            attribute=name,
            aggregation=aggregation,
            gap_filling=gap_filling,
            selector_index=index,
        )
        for name in attributes
    ]


def _label(raw: object, field: str) -> str:
    """A device or attribute name, fit for a CSV label cell `device=<d> telemetry=<a>`.

    python-sdk splits that cell on spaces and then on `=`, and reads the body line by line with
    `str.splitlines` semantics, so names must not contain whitespace, line breaks or `=`; a comma
    would need quoting that other readers may not expect.
    """
    if not isinstance(raw, str):
        raise QueryError(field, f"must be a string, not {_json_type(raw)}")
    if not raw:
        raise QueryError(field, "must not be empty")
    if len(raw) > MAX_LABEL_CHARS:
        raise QueryError(field, f"must be at most {MAX_LABEL_CHARS} characters")
    for char in raw:
        # Cs: a lone surrogate from a `\ud800` escape cannot be encoded as UTF-8 in the reply.
        if char in "=," or char.isspace() or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            raise QueryError(field, f"must not contain {char!r}")
    return raw


def _gap_filling(raw: object, path: str) -> GapFilling:
    """`{method: none|locf, look_around: duration}`; absent or null means no gap filling."""
    if raw is None:
        return GapFilling(method=GapFillingMethod.NONE, look_around=0.0)
    if not isinstance(raw, dict):
        raise QueryError(path, f"must be an object with method and look_around, not {_json_type(raw)}")
    method_raw = raw.get("method")
    method = GapFillingMethod.NONE
    if method_raw is not None:
        allowed = ", ".join(GapFillingMethod)
        if not isinstance(method_raw, str):
            raise QueryError(f"{path}.method", f"must be one of {allowed}, not {_json_type(method_raw)}")
        if method_raw.strip().lower() not in GapFillingMethod.__members__.values():
            raise QueryError(f"{path}.method", f"must be one of {allowed}, got {method_raw[:40]!r}")
        method = GapFillingMethod(method_raw.strip().lower())
    look_around = _duration(raw.get("look_around"), f"{path}.look_around")
    return GapFilling(method=method, look_around=0.0 if look_around is None else look_around)


def _bare(error: ApiError, field: str) -> str:
    """The message of an `invalid_parameter` error without its `<field>: ` prefix."""
    return error.message.removeprefix(f"{field}: ")


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _grid(start: float, end: float, granularity: int) -> range:
    """Every bucket start from the bucket holding `start` up to, excluding, `end`."""
    # An integer bucket start b is < end exactly when b < ceil(end).
    return range(_bucket(start, granularity), math.ceil(end), granularity)


def _bucket(time: float, granularity: int) -> int:
    """The start of the epoch-aligned bucket holding `time`."""
    return int(time // granularity) * granularity


# --- aggregation ---------------------------------------------------------------------------------------


class PartialValues(Protocol):
    """What aggregation reads of a `model.Partial`: one, or the store's tuple of the same fields."""

    @property
    def start(self) -> float: ...
    @property
    def num_count(self) -> int: ...
    @property
    def total(self) -> float: ...
    @property
    def low(self) -> float | None: ...
    @property
    def high(self) -> float | None: ...
    @property
    def last(self) -> JsonValue: ...
    @property
    def last_ts(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Column:
    """One aggregated column: bucket start (unix seconds) -> value, only for buckets that have one."""

    request: ColumnRequest
    data_type: DataType
    values: Mapping[int, JsonValue]


_NUMERIC = frozenset({SeriesKind.FLOAT, SeriesKind.INTEGER})
# Which series kinds each aggregation can work on; `last` works on all.
_APPLIES: dict[Aggregation, frozenset[SeriesKind]] = {
    Aggregation.AVG: _NUMERIC,
    Aggregation.MIN: _NUMERIC,
    Aggregation.MAX: _NUMERIC,
    Aggregation.BOOL_OR: frozenset({SeriesKind.BOOLEAN}),
    Aggregation.LAST: frozenset(SeriesKind),
}
_AUTO: dict[SeriesKind, Aggregation] = {
    SeriesKind.FLOAT: Aggregation.AVG,
    SeriesKind.INTEGER: Aggregation.AVG,
    SeriesKind.BOOLEAN: Aggregation.BOOL_OR,
    SeriesKind.STRING: Aggregation.LAST,
    SeriesKind.STRING_ARRAY: Aggregation.LAST,
    SeriesKind.JSON: Aggregation.LAST,
}


def aggregate(
    request: ColumnRequest, kind: SeriesKind | None, partials: Sequence[PartialValues], query: TimeseriesQuery
) -> Column:
    """One column: `partials` of one series merged into the query's buckets, then gap-filled.

    `kind` is the series' kind (of its newest value), None if the series does not exist (an empty
    float column). Partials before `query.start` only seed `locf`; those at or after `query.end` are
    ignored. An aggregation that does not fit the kind raises `QueryError` on
    `telemetry[i].aggregation`.
    """
    if kind is None:
        return Column(request=request, data_type=DataType.FLOAT, values={})
    method = _AUTO[kind] if request.aggregation is Aggregation.AUTO else request.aggregation
    if kind not in _APPLIES[method]:
        raise QueryError(
            f"telemetry[{request.selector_index}].aggregation",
            f"{method} does not apply to {kind} attribute {request.attribute}",
        )
    granularity, start, end = query.granularity, query.start, query.end
    in_bucket: dict[int, list[PartialValues]] = {}
    seed: PartialValues | None = None
    # This loop and the next run for every stored value or rollup bucket: kept to plain steps.
    for partial in partials:
        at = partial.start
        if at >= end:
            continue
        if at < start:
            if seed is None or partial.last_ts >= seed.last_ts:
                seed = partial
            continue
        bucket = int(at // granularity) * granularity  # _bucket
        members = in_bucket.get(bucket)
        if members is None:
            in_bucket[bucket] = [partial]
        else:
            members.append(partial)
    values: dict[int, JsonValue] = {}
    if method is Aggregation.AVG:
        for bucket in sorted(in_bucket):
            members = in_bucket[bucket]
            if len(members) == 1:
                # What _reduce computes for one partial (`0 +` as sum() starts); a quotient is
                # always a float, which _fits takes.
                count = members[0].num_count
                if count:
                    values[bucket] = (0 + members[0].total) / count
                continue
            value = _reduce(method, members)
            if value is not None:
                values[bucket] = value
    else:
        for bucket in sorted(in_bucket):
            value = _reduce(method, in_bucket[bucket])
            if _fits(method, kind, value):
                values[bucket] = value
    gap_filling = request.gap_filling
    if gap_filling.method is GapFillingMethod.LOCF:
        # The newest look-back partial seeds the start with its newest raw value, seen at `last_ts`.
        carried = (seed.last_ts, seed.last) if seed is not None and _fits(method, kind, seed.last) else None
        grid = _grid(query.start, query.end, granularity)
        values = _locf(values, carried, grid, gap_filling.look_around)
    data_type, typed = _typed(method, kind, values)
    return Column(request=request, data_type=data_type, values=typed)


def _reduce(method: Aggregation, partials: Sequence[PartialValues]) -> JsonValue:
    """The value of one bucket from its partials; None when there is nothing to aggregate."""
    if method is Aggregation.LAST:
        newest = partials[0]
        for partial in partials[1:]:
            if partial.last_ts >= newest.last_ts:  # on a tie the later partial wins
                newest = partial
        return newest.last
    if method is Aggregation.AVG:
        count = sum(partial.num_count for partial in partials)
        return sum(partial.total for partial in partials) / count if count else None
    lows = [partial.low for partial in partials if partial.num_count and partial.low is not None]
    highs = [partial.high for partial in partials if partial.num_count and partial.high is not None]
    if method is Aggregation.MIN:
        return min(lows, default=None)
    if method is Aggregation.MAX:
        return max(highs, default=None)
    # bool_or: booleans count as 0/1, so any true value makes the maximum 1.
    return max(highs) >= 1 if highs else None


def _fits(method: Aggregation, kind: SeriesKind, value: JsonValue) -> bool:
    """Whether a bucket value (or a look-back value) belongs in this column.

    A series can change type over time; its kind is that of its newest value, and older values of
    another type are left out rather than mixed into the column.
    """
    if value is None:
        return False
    if method is Aggregation.BOOL_OR:
        return isinstance(value, bool)
    if method is not Aggregation.LAST or kind in _NUMERIC:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is SeriesKind.BOOLEAN:
        return isinstance(value, bool)
    if kind is SeriesKind.STRING:
        return isinstance(value, str)
    if kind is SeriesKind.STRING_ARRAY:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return True  # JSON: anything, rendered as JSON text


def _locf(
    values: Mapping[int, JsonValue],
    seed: tuple[float, JsonValue] | None,
    grid: range,
    look_around: float,
) -> dict[int, JsonValue]:
    """Empty grid buckets get the most recent earlier observation made at most `look_around` before them.

    An aggregated bucket counts as observed at its start; the look-back `seed` at its own time. Each
    observation can only reach the buckets before the next one, so only the buckets that get filled
    are visited: a sparse series over a long grid stays cheap.
    """
    filled = dict(values)
    observed = sorted(values)
    # (time of the observation, its value, the first bucket it may fill)
    sources: list[tuple[float, JsonValue, int]] = [
        (bucket, values[bucket], bucket + grid.step) for bucket in observed
    ]
    # Each source carries forward up to the next observed bucket (or the end of the grid).
    stops = [*observed, grid.stop]
    if seed is None:
        stops = stops[1:]
    else:
        sources.insert(0, (seed[0], seed[1], grid.start))
    for (time, value, first), stop in zip(sources, stops, strict=True):
        reach = math.floor(time + look_around) + 1  # bucket b qualifies when b <= time + look_around
        for bucket in range(first, min(stop, reach), grid.step):
            filled[bucket] = value
    return filled


def _typed(
    method: Aggregation, kind: SeriesKind, values: Mapping[int, JsonValue]
) -> tuple[DataType, dict[int, JsonValue]]:
    """The column's data type, and its values in that type."""
    if method is Aggregation.AVG:
        # Quotients are floats already; only a value carried forward by locf may not be.
        return DataType.FLOAT, {
            bucket: value if type(value) is float else _number(value) for bucket, value in values.items()
        }
    if method is Aggregation.BOOL_OR:
        return DataType.BOOLEAN, dict(values)
    if method in (Aggregation.MIN, Aggregation.MAX):
        # Stored extremes are floats; an integer series keeps its type while every extreme is whole.
        if kind is SeriesKind.INTEGER and all(_whole(value) for value in values.values()):
            return DataType.INTEGER, {bucket: int(_number(value)) for bucket, value in values.items()}
        return DataType.FLOAT, {bucket: _number(value) for bucket, value in values.items()}
    # last: values as stored, typed by the series kind.
    if kind is SeriesKind.INTEGER:
        integral = all(isinstance(value, int) for value in values.values())
        return (DataType.INTEGER if integral else DataType.FLOAT), dict(values)
    if kind is SeriesKind.JSON:
        return DataType.STRING, {bucket: _json_text(value) for bucket, value in values.items()}
    return DataType(kind.value), dict(values)


def _number(value: JsonValue) -> float:
    """A numeric bucket value as a float (only numbers reach here, see `_fits`)."""
    assert isinstance(value, int | float)
    return float(value)


def _whole(value: JsonValue) -> bool:
    """Whether a numeric value is an integer, whatever its Python type."""
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _json_text(value: JsonValue) -> str:
    """Compact JSON text, non-ASCII characters kept as they are (the body is UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- rendering -----------------------------------------------------------------------------------------


def render_csv(columns: Sequence[Column]) -> tuple[list[str], str]:
    """The data type word per column, in order, and the CSV body.

    Header `ts,device=<d> telemetry=<a>,...`, then one row per bucket in which at least one column
    has a value; an empty cell is null (§7.2). The header line is always there: python-sdk fails on
    an empty body.
    """
    header = ["ts", *(f"device={c.request.device} telemetry={c.request.attribute}" for c in columns)]
    buckets = sorted({bucket for column in columns for bucket in column.values})
    lines = [",".join(_quoted(cell) for cell in header)]
    cells_of = [column.values.get for column in columns]
    # This loop runs for every cell: floats (the usual kind) are written without a call.
    for bucket in buckets:
        row = [str(bucket)]
        for cell_of in cells_of:
            value = cell_of(bucket)
            row.append(repr(value) if type(value) is float else _cell(value))
        lines.append(",".join(row))
    lines.append("")
    return [column.data_type.value for column in columns], "\n".join(lines)


def _cell(value: JsonValue) -> str:
    """One CSV cell: empty for null, `true`/`false`, numbers as Python prints them, arrays as JSON;
    text quoted where it must be (`_quoted`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    return _quoted(_json_text(value))


def _quoted(cell: str) -> str:
    """RFC 4180 quoting, by hand: Python 3.11's `csv` module with a `\\n` line terminator leaves a
    field holding a bare `\\r` unquoted, which every reader then takes for a line break. (Numbers
    and booleans never need it.)"""
    if "," in cell or '"' in cell or "\r" in cell or "\n" in cell:
        return f'"{cell.replace(chr(34), chr(34) * 2)}"'
    return cell
