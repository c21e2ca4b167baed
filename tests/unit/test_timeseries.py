"""Time-series queries: request parsing, bucket aggregation, gap filling and the CSV the clients read."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Sequence
from typing import cast

import httpx
import pytest
from enapter.http.api import telemetry as sdk
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api.timeseries import (
    MAX_BUCKETS,
    MAX_COLUMNS,
    MAX_SELECTORS,
    Aggregation,
    Column,
    ColumnRequest,
    DataType,
    GapFilling,
    GapFillingMethod,
    QueryError,
    TimeseriesQuery,
    aggregate,
    parse_query,
    render_csv,
)
from gateway.model import JsonValue, Partial, SeriesKind

NO_GAP_FILLING = GapFilling(method=GapFillingMethod.NONE, look_around=0.0)


def raw(time: float, value: JsonValue) -> Partial:
    """One stored value, as the store hands it over."""
    numeric = isinstance(value, int | float)  # booleans count as 0/1
    number = float(value) if isinstance(value, int | float) else None
    return Partial(
        start=time,
        count=1,
        num_count=1 if numeric else 0,
        total=number if number is not None else 0.0,
        low=number,
        high=number,
        last=value,
        last_ts=time,
    )


def column(
    attribute: str = "t",
    aggregation: Aggregation = Aggregation.AUTO,
    gap_filling: GapFilling = NO_GAP_FILLING,
    device: str = "d1",
    selector_index: int = 0,
) -> ColumnRequest:
    return ColumnRequest(
        device=device,
        attribute=attribute,
        aggregation=aggregation,
        gap_filling=gap_filling,
        selector_index=selector_index,
    )


def query(start: float, end: float, granularity: int, *columns: ColumnRequest) -> TimeseriesQuery:
    return TimeseriesQuery(start=start, end=end, granularity=granularity, columns=columns or (column(),))


def locf(look_around: float) -> GapFilling:
    return GapFilling(method=GapFillingMethod.LOCF, look_around=look_around)


# Values 1, 3, 2 at t = 0, 20, 40 and 10 at t = 70; with g = 60 the buckets are 0 and 60.
SMALL = [raw(0, 1), raw(20, 3), raw(40, 2), raw(70, 10)]
SMALL_QUERY = query(0, 120, 60)


# --- aggregation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregation", "data_type", "values"),
    [
        (Aggregation.AVG, DataType.FLOAT, {0: 2.0, 60: 10.0}),
        (Aggregation.AUTO, DataType.FLOAT, {0: 2.0, 60: 10.0}),
        (Aggregation.MIN, DataType.INTEGER, {0: 1, 60: 10}),
        (Aggregation.MAX, DataType.INTEGER, {0: 3, 60: 10}),
        (Aggregation.LAST, DataType.INTEGER, {0: 2, 60: 10}),
    ],
)
def test_every_numeric_aggregation_on_an_integer_series(
    aggregation: Aggregation, data_type: DataType, values: dict[int, JsonValue]
) -> None:
    result = aggregate(column(aggregation=aggregation), SeriesKind.INTEGER, SMALL, SMALL_QUERY)
    assert result.data_type is data_type
    assert result.values == values
    # Integers stay Python ints (rendered "3", not "3.0"); averages are floats.
    assert all(type(value) is (float if data_type is DataType.FLOAT else int) for value in values.values())
    assert all(type(value) is type(values[bucket]) for bucket, value in result.values.items())


def test_float_series_min_max_stay_float() -> None:
    partials = [raw(0, 1.5), raw(20, 3.0), raw(70, -2.25)]
    assert aggregate(column(aggregation=Aggregation.MIN), SeriesKind.FLOAT, partials, SMALL_QUERY) == Column(
        request=column(aggregation=Aggregation.MIN), data_type=DataType.FLOAT, values={0: 1.5, 60: -2.25}
    )
    result = aggregate(column(aggregation=Aggregation.MAX), SeriesKind.FLOAT, partials, SMALL_QUERY)
    assert result.data_type is DataType.FLOAT
    assert result.values == {0: 3.0, 60: -2.25}
    assert isinstance(result.values[0], float)


def test_an_integer_series_with_a_fractional_extreme_becomes_float() -> None:
    # A rollup of an integer series whose minimum is fractional (a float slipped in at some point).
    rollup = Partial(start=0, count=2, num_count=2, total=4.5, low=1.5, high=3.0, last=3, last_ts=30)
    result = aggregate(
        column(aggregation=Aggregation.MIN), SeriesKind.INTEGER, [rollup, raw(70, 4)], SMALL_QUERY
    )
    assert result.data_type is DataType.FLOAT
    assert result.values == {0: 1.5, 60: 4.0}


def test_rollups_and_raw_values_merge_into_one_bucket() -> None:
    # The 1-minute rollup of 1, 3, 2 plus a raw 10 in a 2-minute bucket: avg over all four values.
    rollup = Partial(start=0, count=3, num_count=3, total=6.0, low=1.0, high=3.0, last=2, last_ts=40)
    two_minutes = query(0, 120, 120)
    aggregations = (Aggregation.AVG, Aggregation.MIN, Aggregation.MAX, Aggregation.LAST)
    partials = [rollup, raw(70, 10)]
    by = {
        a: aggregate(column(aggregation=a), SeriesKind.INTEGER, partials, two_minutes) for a in aggregations
    }
    assert by[Aggregation.AVG].values == {0: 4.0}
    assert by[Aggregation.MIN].values == {0: 1}
    assert by[Aggregation.MAX].values == {0: 10}
    assert by[Aggregation.LAST].values == {0: 10}


def test_last_takes_the_newest_value_and_the_later_partial_on_a_tie() -> None:
    partials = [raw(50, "late"), raw(10, "early"), raw(70, "first"), raw(70, "second")]
    result = aggregate(column(aggregation=Aggregation.LAST), SeriesKind.STRING, partials, SMALL_QUERY)
    assert result.values == {0: "late", 60: "second"}


def test_booleans_with_bool_or() -> None:
    partials = [raw(0, False), raw(30, True), raw(60, False), raw(90, False), raw(130, "on")]
    q = query(0, 180, 60)
    result = aggregate(column(), SeriesKind.BOOLEAN, partials, q)  # auto = bool_or for booleans
    assert result.data_type is DataType.BOOLEAN
    # Bucket 120 holds only a string: nothing boolean to aggregate, so no value.
    assert result.values == {0: True, 60: False}
    last = aggregate(column(aggregation=Aggregation.LAST), SeriesKind.BOOLEAN, partials[:4], q)
    assert (last.data_type, last.values) == (DataType.BOOLEAN, {0: True, 60: False})
    types, body = render_csv([result])
    assert types == ["boolean"]
    assert body == "ts,device=d1 telemetry=t\n0,true\n60,false\n"


def test_strings_and_string_arrays_with_last_and_their_csv_quoting() -> None:
    q = query(0, 180, 60)
    strings = aggregate(
        column("s"),
        SeriesKind.STRING,
        [raw(0, 'say "hi", then go'), raw(60, "plain"), raw(70, 5), raw(120, "a\rb")],
        q,
    )
    arrays = aggregate(column("a"), SeriesKind.STRING_ARRAY, [raw(0, ["a", "b"]), raw(60, [])], q)
    # A number that slipped into a string series is left out, not mixed in.
    assert strings.values == {0: 'say "hi", then go', 120: "a\rb"}
    assert arrays.values == {0: ["a", "b"], 60: []}
    types, body = render_csv([strings, arrays])
    assert types == ["string", "string_array"]
    assert body == (
        "ts,device=d1 telemetry=s,device=d1 telemetry=a\n"
        '0,"say ""hi"", then go","[""a"",""b""]"\n'
        "60,,[]\n"
        '120,"a\rb",\n'
    )


def test_json_values_become_compact_json_strings() -> None:
    partials = [raw(0, {"mode": "éco", "level": [1, 2]}), raw(60, "x")]
    result = aggregate(column(), SeriesKind.JSON, partials, SMALL_QUERY)
    assert result.data_type is DataType.STRING
    assert result.values == {0: '{"mode":"éco","level":[1,2]}', 60: '"x"'}


def test_a_missing_series_is_an_empty_float_column() -> None:
    result = aggregate(column(aggregation=Aggregation.BOOL_OR), None, SMALL, SMALL_QUERY)
    assert (result.data_type, result.values) == (DataType.FLOAT, {})
    types, body = render_csv([result])
    assert (types, body) == (["float"], "ts,device=d1 telemetry=t\n")


def test_nulls_and_missing_buckets_are_empty_cells() -> None:
    q = query(0, 180, 60)
    numbers = aggregate(column("n"), SeriesKind.FLOAT, [raw(0, 1.0), raw(120, 0.5)], q)
    words = aggregate(column("w", device="d2"), SeriesKind.STRING, [raw(60, "x"), raw(130, None)], q)
    assert words.values == {60: "x"}
    types, body = render_csv([numbers, words])
    assert types == ["float", "string"]
    assert body == "ts,device=d1 telemetry=n,device=d2 telemetry=w\n0,1.0,\n60,,x\n120,0.5,\n"


def test_buckets_align_to_the_epoch_and_the_range_is_half_open() -> None:
    # start 90 lies in bucket 60; the value at 80 is before start (look-back only), at 150 is `end`.
    q = query(90, 150, 60)
    partials = [raw(80, 100.0), raw(95, 1.0), raw(125, 3.0), raw(150, 7.0), raw(200, 9.0)]
    result = aggregate(column(), SeriesKind.FLOAT, partials, q)
    assert result.values == {60: 1.0, 120: 3.0}


def test_aggregation_that_does_not_apply_names_the_selector() -> None:
    cases = [
        (Aggregation.AVG, SeriesKind.STRING),
        (Aggregation.MIN, SeriesKind.BOOLEAN),
        (Aggregation.MAX, SeriesKind.STRING_ARRAY),
        (Aggregation.BOOL_OR, SeriesKind.INTEGER),
        (Aggregation.AVG, SeriesKind.JSON),
    ]
    for aggregation, kind in cases:
        request = column("mode", aggregation=aggregation, selector_index=3)
        with pytest.raises(QueryError) as caught:
            aggregate(request, kind, SMALL, SMALL_QUERY)
        assert caught.value.field == "telemetry[3].aggregation"
        assert f"{aggregation} does not apply to {kind} attribute mode" in caught.value.message
    # last applies to everything; auto picks what applies.
    for kind in SeriesKind:
        aggregate(column(aggregation=Aggregation.LAST), kind, SMALL, SMALL_QUERY)
        aggregate(column(aggregation=Aggregation.AUTO), kind, SMALL, SMALL_QUERY)


# --- gap filling ---------------------------------------------------------------------------------------


def test_locf_fills_only_within_look_around() -> None:
    q = query(0, 360, 60)
    partials = [raw(10, 1.0), raw(190, 2.0)]  # buckets 0 and 180, of 0..300
    values = {
        look_around: aggregate(column(gap_filling=locf(look_around)), SeriesKind.FLOAT, partials, q).values
        for look_around in (0, 59, 60, 120, 1e9)
    }
    assert values[0] == {0: 1.0, 180: 2.0}
    assert values[59] == {0: 1.0, 180: 2.0}
    assert values[60] == {0: 1.0, 60: 1.0, 180: 2.0, 240: 2.0}
    assert values[120] == {0: 1.0, 60: 1.0, 120: 1.0, 180: 2.0, 240: 2.0, 300: 2.0}
    # Never past the grid, and the later observation takes over from the earlier.
    assert values[1e9] == values[120]
    none = aggregate(column(gap_filling=NO_GAP_FILLING), SeriesKind.FLOAT, partials, q)
    assert none.values == {0: 1.0, 180: 2.0}


def test_locf_is_seeded_from_a_look_back_value_before_start() -> None:
    q = query(120, 360, 60)
    partials = [raw(40, 5.0), raw(100, 7.0), raw(250, 9.0)]  # 40 and 100 are before start
    near = aggregate(column(gap_filling=locf(30)), SeriesKind.FLOAT, partials, q)
    assert near.values == {120: 7.0, 240: 9.0}  # 120 - 100 = 20 <= 30; 180 - 100 = 80 > 30
    far = aggregate(column(gap_filling=locf(80)), SeriesKind.FLOAT, partials, q)
    assert far.values == {120: 7.0, 180: 7.0, 240: 9.0, 300: 9.0}
    short = aggregate(column(gap_filling=locf(10)), SeriesKind.FLOAT, partials, q)
    assert short.values == {240: 9.0}
    # The seed is the newest look-back value (by last_ts), whatever the order of the partials.
    shuffled = aggregate(column(gap_filling=locf(30)), SeriesKind.FLOAT, partials[::-1], q)
    assert shuffled.values == near.values


def test_locf_seed_takes_the_column_type() -> None:
    q = query(120, 240, 60)
    seeded = aggregate(
        column(aggregation=Aggregation.AVG, gap_filling=locf(60)), SeriesKind.INTEGER, [raw(100, 4)], q
    )
    assert (seeded.data_type, seeded.values) == (DataType.FLOAT, {120: 4.0})
    assert isinstance(seeded.values[120], float)
    flags = aggregate(column(gap_filling=locf(600)), SeriesKind.BOOLEAN, [raw(100, True), raw(190, False)], q)
    assert flags.values == {120: True, 180: False}
    # A look-back value of another type seeds nothing.
    mismatched = aggregate(column(gap_filling=locf(600)), SeriesKind.FLOAT, [raw(100, "x")], q)
    assert mismatched.values == {}


def test_lookback_is_the_widest_locf_look_around() -> None:
    assert query(0, 60, 60).lookback() == 0.0
    mixed = query(
        0,
        60,
        60,
        column(gap_filling=locf(300)),
        column(gap_filling=GapFilling(method=GapFillingMethod.NONE, look_around=9999)),
        column(gap_filling=locf(120)),
    )
    assert mixed.lookback() == 300.0


# --- rendering -----------------------------------------------------------------------------------------


def test_render_header_types_and_number_formats() -> None:
    columns = [
        Column(column("a"), DataType.FLOAT, {60: 1.0, 0: 0.1 + 0.2}),
        Column(column("b", device="dev-2"), DataType.INTEGER, {120: -3, 0: 12345678901234}),
        Column(column("c"), DataType.FLOAT, {}),
    ]
    types, body = render_csv(columns)
    assert types == ["float", "integer", "float"]
    assert body.splitlines() == [
        "ts,device=d1 telemetry=a,device=dev-2 telemetry=b,device=d1 telemetry=c",
        "0,0.30000000000000004,12345678901234,",
        "60,1.0,,",
        "120,,-3,",
    ]
    assert body.endswith("\n")
    assert "\r" not in body
    assert render_csv([]) == ([], "ts\n")


async def test_the_sdk_client_reads_our_csv_with_the_right_types() -> None:
    """python-sdk's own telemetry client, over an in-memory transport: its request parses, our reply reads."""
    stored: dict[tuple[str, str], tuple[SeriesKind | None, list[Partial]]] = {
        ("d1", "temp"): (SeriesKind.FLOAT, [raw(1_700_000_000, 20.5), raw(1_700_000_050, 21.5)]),
        ("d1", "count"): (SeriesKind.INTEGER, [raw(1_700_000_010, 7)]),
        ("d1", "on"): (SeriesKind.BOOLEAN, [raw(1_700_000_000, False), raw(1_700_000_070, True)]),
        ("d2", "state"): (SeriesKind.STRING, [raw(1_700_000_065, 'idle, "waiting"')]),
        ("d2", "errors"): (SeriesKind.STRING_ARRAY, [raw(1_700_000_005, ["E1", "E,2"])]),
        ("d2", "gone"): (None, []),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v3/telemetry/query_timeseries"
        q = parse_query(json.loads(request.content))
        columns = [aggregate(c, *stored[c.device, c.attribute], q) for c in q.columns]
        types, body = render_csv(columns)
        headers = [("Content-Type", "text/csv")] + [("X-Enapter-Timeseries-Data-Types", t) for t in types]
        return httpx.Response(200, headers=headers, text=body)

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway/api/") as http:
        client = sdk.Client(http)
        wide = await client.wide_timeseries(
            from_=dt.datetime.fromtimestamp(1_700_000_000, tz=dt.UTC),
            to=dt.datetime.fromtimestamp(1_700_000_120, tz=dt.UTC),
            granularity=60,
            selectors=[
                sdk.Selector(device="d1", attributes=["temp", "count", "on"]),
                sdk.Selector(
                    device="d2",
                    attributes=["state", "errors", "gone"],
                    aggregation=sdk.Aggregation.LAST,
                ),
            ],
        )
    assert [t.timestamp() for t in wide.timestamps] == [1_699_999_980, 1_700_000_040]
    by_name = {(c.labels.device, c.labels.telemetry): c for c in wide.columns}
    assert list(by_name) == list(stored)
    expected: dict[tuple[str, str], tuple[sdk.DataType, list[object]]] = {
        ("d1", "temp"): (sdk.DataType.FLOAT, [20.5, 21.5]),
        ("d1", "count"): (sdk.DataType.FLOAT, [7.0, None]),  # auto = avg: float
        ("d1", "on"): (sdk.DataType.BOOLEAN, [False, True]),
        ("d2", "state"): (sdk.DataType.STRING, [None, 'idle, "waiting"']),
        ("d2", "errors"): (sdk.DataType.STRING_ARRAY, [["E1", "E,2"], None]),
        ("d2", "gone"): (sdk.DataType.FLOAT, [None, None]),
    }
    for key, (data_type, values) in expected.items():
        assert (by_name[key].data_type, by_name[key].values) == (data_type, values), key
    assert isinstance(by_name["d1", "temp"].values[0], float)


# --- parsing -------------------------------------------------------------------------------------------

SDK_BODY: dict[str, JsonValue] = {
    "from": "2023-11-14T22:13:20+00:00",
    "to": "2023-11-14T23:13:20+00:00",
    "granularity": "60s",
    "telemetry": [
        {
            "device": "d1",
            "attribute": ["t", "b"],
            "aggregation": "auto",
            "gap_filling": {"method": "none", "look_around": "0s"},
        }
    ],
}


def body(**changes: JsonValue) -> dict[str, JsonValue]:
    """SDK_BODY with some top-level keys replaced (None removes a key)."""
    result = dict(SDK_BODY)
    for key, value in changes.items():
        if value is None:
            result.pop(key.rstrip("_"))
        else:
            result[key.rstrip("_")] = value
    return result


def selector(**changes: JsonValue) -> dict[str, JsonValue]:
    """A valid selector with some keys replaced (None removes a key)."""
    result: dict[str, JsonValue] = {"device": "d1", "attribute": "t"}
    for key, value in changes.items():
        if value is None:
            result.pop(key)
        else:
            result[key] = value
    return result


def test_parses_what_python_sdk_sends() -> None:
    q = parse_query(SDK_BODY)
    assert q == TimeseriesQuery(
        start=1_700_000_000.0,
        end=1_700_003_600.0,
        granularity=60,
        columns=(
            ColumnRequest("d1", "t", Aggregation.AUTO, NO_GAP_FILLING, 0),
            ColumnRequest("d1", "b", Aggregation.AUTO, NO_GAP_FILLING, 0),
        ),
    )
    assert q.lookback() == 0.0


def test_parses_the_documented_form() -> None:
    q = parse_query(
        {
            "from": 1_700_000_000,
            "to": 1_700_003_600.5,
            "granularity": "1m",
            "aggregation": "AVG",
            "extra": {"ignored": True},
            "telemetry": [
                {"device": "dev-1", "attribute": "voltage"},
                {
                    "device": "dev-2",
                    "attribute": ["current", "on"],
                    "aggregation": "Max",
                    "gap_filling": {"method": "LOCF", "look_around": "5m"},
                },
                {
                    "device": "dev-3",
                    "attribute": "mode",
                    "gap_filling": {"method": "locf", "look_around": 90},
                },
            ],
        }
    )
    assert (q.start, q.end, q.granularity) == (1_700_000_000.0, 1_700_003_600.5, 60)
    assert [(c.device, c.attribute, c.aggregation, c.selector_index) for c in q.columns] == [
        ("dev-1", "voltage", Aggregation.AVG, 0),
        ("dev-2", "current", Aggregation.MAX, 1),
        ("dev-2", "on", Aggregation.MAX, 1),
        ("dev-3", "mode", Aggregation.AVG, 2),
    ]
    assert q.columns[0].gap_filling == NO_GAP_FILLING
    assert q.columns[1].gap_filling == locf(300.0)
    assert q.columns[3].gap_filling == locf(90.0)
    assert q.lookback() == 300.0


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-15T00:13:20.5+02:00", 1_700_000_000.5),
        ("1700000000", 1_700_000_000.0),
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000.25, 1_700_000_000.25),
    ],
)
def test_from_accepts_rfc3339_and_unix_seconds(raw: JsonValue, seconds: float) -> None:
    assert parse_query(body(from_=raw, to=1_700_003_600)).start == seconds


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("60s", 60),
        ("1m", 60),
        ("1h", 3600),
        ("1m30s", 90),
        ("0.1h", 360),
        ("90", 90),
        (60, 60),
        (60.0, 60),
        ("1s", 1),
        ("24h", 86400),
    ],
)
def test_granularity_forms(raw: JsonValue, seconds: int) -> None:
    q = parse_query(body(granularity=raw, to="2023-11-15T22:13:20Z"))
    assert q.granularity == seconds
    assert type(q.granularity) is int


def test_limits_are_inclusive() -> None:
    at_most = parse_query(body(from_=0, to=MAX_BUCKETS, granularity="1s"))
    assert at_most.granularity == 1
    # The grid starts at the bucket of `from`: 59 is in bucket 0, so 0..6_000_000 is exactly 100,000 buckets.
    assert parse_query(body(from_=59, to=MAX_BUCKETS * 60, granularity="60s")).start == 59
    selectors: list[JsonValue] = [
        selector(device=f"d{i}", attribute=[f"a{j}" for j in range(5)]) for i in range(MAX_SELECTORS)
    ]
    assert len(parse_query(body(telemetry=selectors)).columns) == MAX_COLUMNS


def _bad(field: str, *bodies: JsonValue) -> list[tuple[JsonValue, str]]:
    return [(b, field) for b in bodies]


BAD_BODIES: list[tuple[JsonValue, str]] = [
    *_bad("body", None, [], "x", 3),
    *_bad(
        "from",
        body(from_=None),
        body(from_="yesterday"),
        body(from_="2023-11-14T22:00:00"),
        body(from_=True),
        body(from_=[1]),
        body(from_=1e300),
        body(from_=10**400),
        body(from_="9" * 400),
        body(from_="0001-01-01T00:00:00+01:00"),
        body(from_=-1e12),
        body(from_=""),
    ),
    *_bad(
        "to",
        body(to=None),
        body(to="2023-11-14T22:00:00+00:00"),
        body(to="2023-11-14T21:00:00Z"),
        body(to={"t": 1}),
        body(to=float("nan")),
    ),
    *_bad(
        "granularity",
        body(granularity=None),
        body(granularity="1.5s"),
        body(granularity="500ms"),
        body(granularity="0s"),
        body(granularity=0),
        body(granularity=-60),
        body(granularity=2.5),
        body(granularity="1 minute"),
        body(granularity=True),
        body(granularity=["60s"]),
        body(granularity=10**400),
        body(granularity="60x"),
        body(from_=0, to=MAX_BUCKETS + 1, granularity="1s"),
        body(from_=0, to=1e11, granularity=60),
    ),
    *_bad("aggregation", body(aggregation="mean"), body(aggregation=1), body(aggregation="")),
    *_bad(
        "telemetry",
        body(telemetry=None),
        body(telemetry=[]),
        body(telemetry={"device": "d1"}),
        body(telemetry="d1"),
        body(telemetry=[selector()] * (MAX_SELECTORS + 1)),
        body(telemetry=[selector(attribute=[f"a{j}" for j in range(MAX_COLUMNS + 1)])]),
    ),
    *_bad("telemetry[1]", body(telemetry=[selector(), "d1"]), body(telemetry=[selector(), None])),
    *_bad(
        "telemetry[0].device",
        body(telemetry=[selector(device=None)]),
        body(telemetry=[selector(device="")]),
        body(telemetry=[selector(device=7)]),
        body(telemetry=[selector(device="my device")]),
        body(telemetry=[selector(device="a=b")]),
        body(telemetry=[selector(device="x" * 300)]),
    ),
    *_bad(
        "telemetry[0].attribute",
        body(telemetry=[selector(attribute=None)]),
        body(telemetry=[selector(attribute=[])]),
        body(telemetry=[selector(attribute={"a": 1})]),
        body(telemetry=[selector(attribute="")]),
        body(telemetry=[selector(attribute="a,b")]),
        body(telemetry=[selector(attribute="a\nb")]),
        body(telemetry=[selector(attribute="a\u2028b")]),
        body(telemetry=[selector(attribute="a\ud800")]),
        body(telemetry=[selector(attribute="tab\tbed")]),
    ),
    *_bad(
        "telemetry[0].attribute[1]",
        body(telemetry=[selector(attribute=["ok", 3])]),
        body(telemetry=[selector(attribute=["ok", "x=y"])]),
        body(telemetry=[selector(attribute=["ok", ""])]),
    ),
    *_bad(
        "telemetry[1].aggregation",
        body(telemetry=[selector(), selector(aggregation="median")]),
        body(telemetry=[selector(), selector(aggregation=["avg"])]),
    ),
    *_bad(
        "telemetry[0].gap_filling",
        body(telemetry=[selector(gap_filling="locf")]),
        body(telemetry=[selector(gap_filling=[])]),
    ),
    *_bad(
        "telemetry[0].gap_filling.method",
        body(telemetry=[selector(gap_filling={"method": "linear"})]),
        body(telemetry=[selector(gap_filling={"method": 1})]),
    ),
    *_bad(
        "telemetry[0].gap_filling.look_around",
        body(telemetry=[selector(gap_filling={"method": "locf", "look_around": "soon"})]),
        body(telemetry=[selector(gap_filling={"method": "locf", "look_around": -5})]),
        body(telemetry=[selector(gap_filling={"method": "locf", "look_around": False})]),
        body(telemetry=[selector(gap_filling={"method": "locf", "look_around": "999999h"})]),
    ),
]


@pytest.mark.parametrize(("raw", "field"), BAD_BODIES)
def test_every_bad_value_names_its_field(raw: JsonValue, field: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(raw)
    assert caught.value.field == field
    assert caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"


def test_error_messages_say_what_is_wrong() -> None:
    cases: list[tuple[JsonValue, str]] = [
        (body(to="2023-11-14T22:00:00Z"), "must be later than from"),
        (body(from_=0, to=MAX_BUCKETS + 1, granularity="1s"), "raise the granularity"),
        (body(granularity="1.5s"), "whole number of seconds"),
        (body(from_="2023-11-14T22:00:00"), "time zone"),
        (body(aggregation="mean"), "auto, avg, last, min, max, bool_or"),
        (body(telemetry=[selector(device="a b")]), "must not contain ' '"),
    ]
    for raw, text in cases:
        with pytest.raises(QueryError, match=text):
            parse_query(raw)


# --- fuzzing -------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
TIMES = st.one_of(
    st.integers(min_value=-(10**13), max_value=10**13),
    st.floats(allow_nan=True),
    st.datetimes(timezones=st.just(dt.UTC)).map(lambda t: t.isoformat()),
    st.sampled_from(["2025-01-01T00:00:00Z", "1700000000", "", "now", "2025-01-01"]),
    JSON,
)
DURATIONS = st.one_of(
    st.integers(min_value=-5, max_value=10**10).map(lambda n: f"{n}s"),
    st.sampled_from(["1m", "1h", "0.5s", "60", "1h30m", "", "ms", "1e3s", "٣s"]),
    st.floats(allow_nan=True),
    st.integers(),
    JSON,
)
LABELS = st.one_of(st.text(max_size=10), st.sampled_from(["d1", "t", "a b", "x=y"]), JSON)
SELECTORS = st.fixed_dictionaries(
    {},
    optional={
        "device": LABELS,
        "attribute": st.one_of(LABELS, st.lists(LABELS, max_size=4)),
        "aggregation": st.one_of(st.sampled_from([*Aggregation, "AVG", "Last", "median"]), JSON),
        "gap_filling": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "method": st.one_of(st.sampled_from(["none", "locf", "LOCF", "x"]), JSON),
                    "look_around": DURATIONS,
                },
            ),
            JSON,
        ),
    },
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "from": TIMES,
        "to": TIMES,
        "granularity": DURATIONS,
        "aggregation": st.one_of(st.sampled_from(list(Aggregation)), JSON),
        "telemetry": st.one_of(st.lists(st.one_of(SELECTORS, JSON), max_size=4), JSON),
    },
)


# Valid bodies (python-sdk's and the docs' forms), then a few values swapped for odd ones.
VALID_SELECTORS = st.fixed_dictionaries(
    {
        "device": st.sampled_from(["d1", "dev-2", "f0e1d2c3"]),
        "attribute": st.one_of(
            st.sampled_from(["t", "on"]),
            st.lists(st.sampled_from(["t", "on", "mode"]), min_size=1, max_size=3),
        ),
    },
    optional={
        "aggregation": st.sampled_from(["auto", "avg", "LAST", "min", "max", "bool_or"]),
        "gap_filling": st.fixed_dictionaries(
            {},
            optional={
                "method": st.sampled_from(["none", "locf", "LOCF"]),
                "look_around": st.sampled_from(["0s", "5m", 30, 0.5]),
            },
        ),
    },
)


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, JsonValue]:
    start = draw(st.integers(1_600_000_000, 1_800_000_000))
    end = start + draw(st.integers(1, 400_000))
    as_text = draw(st.booleans())

    def moment(seconds: int) -> JsonValue:
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat() if as_text else seconds

    result: dict[str, JsonValue] = {
        "from": moment(start),
        "to": moment(end),
        "granularity": draw(st.sampled_from(["1s", "60s", "1m", "15m", "1h", 300, 3600.0])),
        # hypothesis types these dicts loosely; they hold only strings, lists of strings and numbers.
        "telemetry": cast(list[JsonValue], draw(st.lists(VALID_SELECTORS, min_size=1, max_size=3))),
    }
    if draw(st.booleans()):
        result["aggregation"] = draw(st.sampled_from(list(Aggregation)))
    return result


ODD = st.one_of(JSON, LABELS, DURATIONS, TIMES, st.sampled_from(["", " ", "a=b", "1.5s", "-1", "LOCF"]))
PATHS = [
    ("from",),
    ("to",),
    ("granularity",),
    ("aggregation",),
    ("telemetry",),
    ("telemetry", 0),
    ("telemetry", 0, "device"),
    ("telemetry", 0, "attribute"),
    ("telemetry", 0, "attribute", 0),
    ("telemetry", 0, "aggregation"),
    ("telemetry", 0, "gap_filling"),
    ("telemetry", 0, "gap_filling", "method"),
    ("telemetry", 0, "gap_filling", "look_around"),
]


def _replace(document: JsonValue, path: tuple[str | int, ...], value: JsonValue) -> None:
    """Set `value` at `path`, if the containers on the way are there."""
    *parents, last = path
    for key in parents:
        document = _child(document, key)
    if isinstance(document, dict) and isinstance(last, str):
        document[last] = value
    if isinstance(document, list) and isinstance(last, int) and last < len(document):
        document[last] = value


def _child(document: JsonValue, key: str | int) -> JsonValue:
    """The item at `key`, or None if there is none."""
    if isinstance(document, dict) and isinstance(key, str):
        return document.get(key)
    if isinstance(document, list) and isinstance(key, int) and key < len(document):
        return document[key]
    return None


def _outcome(raw: object) -> TimeseriesQuery | QueryError:
    try:
        return parse_query(raw)
    except QueryError as error:
        return error


def _check(raw: object) -> None:
    q = _outcome(raw)  # any other exception fails the test
    if isinstance(q, QueryError):
        assert q.field
        assert q.message
        return
    assert q.start < q.end
    assert q.granularity >= 1
    assert 1 <= len(q.columns) <= MAX_COLUMNS
    assert (q.end - q.start) / q.granularity <= MAX_BUCKETS
    assert q.lookback() >= 0


@given(JSON)
def test_any_json_gives_a_query_or_a_query_error(raw: JsonValue) -> None:
    _check(raw)


@given(BODIES)
def test_bodies_of_odd_parts_give_a_query_or_a_query_error(raw: dict[str, JsonValue]) -> None:
    _check(raw)


@settings(max_examples=300)
@given(valid_bodies(), st.lists(st.tuples(st.sampled_from(PATHS), ODD), max_size=2))
def test_near_valid_bodies_give_a_query_or_a_query_error(
    raw: dict[str, JsonValue], changes: list[tuple[tuple[str | int, ...], JsonValue]]
) -> None:
    for path, value in changes:
        _replace(raw, path, value)
    _check(raw)


@given(st.lists(st.tuples(st.integers(0, 299), st.integers(-50, 50)), min_size=1, max_size=30), st.data())
def test_rollups_aggregate_like_the_raw_values_they_summarise(
    points: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Merging raw values into partials (as the store's rollups do) does not change any bucket's value."""
    points.sort()
    raws = [raw(t, v) for t, v in points]
    # Split the raw values into runs inside one 60 s rollup bucket and summarise each run.
    runs: list[list[Partial]] = []
    for partial in raws:
        same = bool(runs) and int(runs[-1][0].start // 60) == int(partial.start // 60)
        if same and data.draw(st.booleans()):
            runs[-1].append(partial)
        else:
            runs.append([partial])
    rollups = [_summary(run) for run in runs]
    q = query(0, 300, 120)
    for aggregation in (Aggregation.AVG, Aggregation.MIN, Aggregation.MAX, Aggregation.LAST):
        request = column(aggregation=aggregation)
        direct = aggregate(request, SeriesKind.INTEGER, raws, q)
        merged = aggregate(request, SeriesKind.INTEGER, rollups, q)
        assert direct.data_type == merged.data_type
        assert direct.values.keys() == merged.values.keys()
        for bucket, value in direct.values.items():
            assert merged.values[bucket] == pytest.approx(value)


def _summary(run: Sequence[Partial]) -> Partial:
    numbers = [p.total for p in run]
    return Partial(
        start=float(int(run[0].start // 60) * 60),
        count=len(run),
        num_count=len(run),
        total=sum(numbers),
        low=min(numbers),
        high=max(numbers),
        last=run[-1].last,
        last_ts=run[-1].last_ts,
    )


# --- the CSV reads back --------------------------------------------------------------------------------

# Names as parse_query accepts them (checked below through parse_query itself).
NAMES = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs"), blacklist_characters="=,\x85"),
    min_size=1,
    max_size=6,
)
# Cell text with everything CSV must quote: separators, quotes, both line breaks, and other text.
CELL_TEXT = st.text(
    st.sampled_from([",", '"', "\r", "\n", " ", "a", "é", "\u2028"]) | st.characters(), max_size=8
)
VALUES_OF: dict[DataType, st.SearchStrategy[JsonValue]] = {
    DataType.FLOAT: st.floats(allow_nan=False, allow_infinity=False),
    DataType.INTEGER: st.integers(-(2**63), 2**63 - 1),
    DataType.BOOLEAN: st.booleans(),
    DataType.STRING: CELL_TEXT,
    DataType.STRING_ARRAY: st.lists(CELL_TEXT, max_size=3),
}


@st.composite
def columns(draw: st.DrawFn) -> list[Column]:
    result = []
    for index in range(draw(st.integers(0, 3))):
        device, attribute = draw(NAMES), draw(NAMES)
        # The names go through the request parser, as in the handler.
        (request,) = parse_query(
            {
                "from": 0,
                "to": 600,
                "granularity": "60s",
                "telemetry": [{"device": device, "attribute": attribute}],
            }
        ).columns
        data_type = draw(st.sampled_from(DataType))
        values = draw(
            st.dictionaries(st.integers(0, 9).map(lambda n: n * 60), VALUES_OF[data_type], max_size=4)
        )
        result.append(Column(dataclasses.replace(request, selector_index=index), data_type, values))
    return result


def _read(cell: str, data_type: DataType) -> JsonValue:
    """A CSV cell as python-sdk's `DataType.parse_value` reads it."""
    if not cell:
        return None
    if data_type is DataType.FLOAT:
        return float(cell)
    if data_type is DataType.INTEGER:
        return int(cell)
    if data_type is DataType.BOOLEAN:
        return {"true": True, "false": False}[cell]
    if data_type is DataType.STRING_ARRAY:
        parsed: JsonValue = json.loads(cell)
        return parsed
    return cell


@settings(max_examples=60)
@given(columns())
def test_rendered_csv_reads_back_to_the_same_labels_and_values(rendered: list[Column]) -> None:
    types, body = render_csv(rendered)
    assert types == [column.data_type.value for column in rendered]
    header, *rows = csv.reader(io.StringIO(body, newline=""))
    assert header[0] == "ts"
    for cell, column in zip(header[1:], rendered, strict=True):
        # python-sdk's Labels.parse: split on " ", then on "=".
        labels = dict(part.split("=") for part in cell.split(" "))
        assert labels == {"device": column.request.device, "telemetry": column.request.attribute}
    buckets = sorted({bucket for column in rendered for bucket in column.values})
    assert [int(row[0]) for row in rows] == buckets
    for row in rows:
        for cell, column in zip(row[1:], rendered, strict=True):
            value = column.values.get(int(row[0]))
            # An empty cell is null (§7.2), so an empty string cannot be told from one.
            assert _read(cell, column.data_type) == (None if value == "" else value)
