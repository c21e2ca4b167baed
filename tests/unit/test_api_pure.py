"""Query parameters, DTO shapes and tokens: the API's pure core."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import slugs
from gateway.api import dto, errors, params, render
from gateway.model import (
    CommunicationType,
    Connectivity,
    Device,
    DeviceType,
    JsonValue,
    LatestValue,
    LogEntry,
    LogSeverity,
    MqttProtocol,
    Role,
    Site,
)
from gateway.tokens import RANDOM_BYTES, format_token, hash_token

SITE = Site(id="site-1", name="Site", timezone="UTC", updated_at=0.0)
DEVICE = Device(
    id="dev-1",
    site_id="site-1",
    name="Peer",
    slug="peer",
    type=DeviceType.STANDALONE,
    blueprint_id="00000000-0000-0000-0000-000000000000",
    communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
    hardware_id="SABC",
    channel_id="s",
    upstream_id=None,
    created_at=1_700_000_000.0,
    updated_at=1_700_000_000.25,
)
VIEW = dto.DeviceView(
    device=DEVICE,
    properties={"vendor": "x"},
    connectivity=Connectivity.ONLINE,
    raised_alert_names=["overheat"],
)


def test_paging_defaults_and_bounds() -> None:
    assert params.page({}) == params.Page(offset=0, limit=50)
    assert params.page({"offset": "7", "limit": "3"}) == params.Page(offset=7, limit=3)
    for bad in ({"offset": "-1"}, {"offset": "x"}, {"limit": "0"}, {"limit": "100000"}):
        with pytest.raises(errors.ApiError) as caught:
            params.page(bad)
        assert caught.value.status == 400
        assert caught.value.details == {"parameter": next(iter(bad))}


@given(st.dictionaries(st.sampled_from(["offset", "limit"]), st.text(max_size=30)))
def test_paging_gives_a_page_or_a_400(query: dict[str, str]) -> None:
    try:
        parsed = params.page(query)
    except errors.ApiError as error:
        status = error.status
    else:
        status = 200
        assert parsed.offset >= 0
        assert 1 <= parsed.limit <= params.MAX_LIMIT
    assert status in (200, 400)


def test_expand_accepts_empty_and_rejects_unknown_values() -> None:
    assert params.expand({"expand": ""}, params.DEVICE_EXPANDS) == frozenset()
    assert params.expand({"expand": "properties, connectivity"}, params.DEVICE_EXPANDS) == {
        "properties",
        "connectivity",
    }
    with pytest.raises(errors.ApiError, match="bogus"):
        params.expand({"expand": "properties,bogus"}, params.DEVICE_EXPANDS)


def test_asset_paging_and_type_filter() -> None:
    assert params.asset_page({"page_token": "", "page_size": "2"}) == params.Page(0, 2)
    assert params.asset_page({"page_token": "4"}).offset == 4
    with pytest.raises(errors.ApiError):
        params.asset_page({"page_token": "../etc"})
    assert params.asset_types({}) is None
    assert params.asset_types({"filter[type_in]": "UCM,gateway"}) == frozenset({"ucm", "gateway"})
    with pytest.raises(errors.ApiError):
        params.asset_types({"filter[type_in]": "toaster"})


def test_json_body_must_be_an_object() -> None:
    assert params.json_object(b"") == {}
    assert params.json_object(b'{"a": 1}') == {"a": 1}
    for bad in (b"[1]", b"{nope", b"[" * 100_000):
        with pytest.raises(errors.ApiError) as caught:
            params.json_object(bad)
        assert caught.value.status == 400


def test_rfc3339_parses_back_with_fromisoformat() -> None:
    text = dto.rfc3339(1_700_000_000.25)
    assert text == "2023-11-14T22:13:20.250000Z"
    assert dt.datetime.fromisoformat(text).timestamp() == 1_700_000_000.25


def test_device_has_every_key_python_sdk_requires_and_only_expanded_extras() -> None:
    body = dto.device(VIEW, role=Role.OWNER, expand=frozenset(), site_record=SITE)
    assert {"id", "blueprint_id", "name", "site_id", "updated_at", "slug", "type"} <= body.keys()
    assert body["authorized_role"] == "OWNER"
    assert body["type"] == "STANDALONE"
    assert not {"properties", "connectivity", "communication", "manifest"} & body.keys()


def test_device_expansions() -> None:
    expand = params.DEVICE_EXPANDS
    body = dto.device(VIEW, role=Role.READONLY, expand=expand, site_record=SITE)
    assert body["properties"] == {"vendor": "x"}
    assert body["connectivity"] == {"status": "ONLINE"}
    assert body["communication"] == {
        "type": "MQTT_V1_PLAINTEXT",
        "upstream_id": None,
        "hardware_id": "SABC",
        "channel_id": "s",
    }
    assert body["communication_info"] == {
        "communication_type": "MQTT_V1_PLAINTEXT",
        "upstream_id": None,
    }
    site = body["site"]
    assert isinstance(site, dict)
    assert site["version"] == "V3"
    assert site["authorized_role"] == "READONLY"
    assert body["raised_alert_names"] == ["overheat"]
    assert body["manifest"] is None


def test_asset_device_shape_and_types() -> None:
    body = dto.asset_device(VIEW, expand=frozenset({"connectivity", "properties"}))
    assert body == {
        "device_id": "dev-1",
        "type": "endpoint",
        "updated_at": "2023-11-14T22:13:20.250000Z",
        "properties": {"vendor": "x"},
        "connectivity": {"online": True},
    }
    assert dto.asset_type(DeviceType.VIRTUAL_UCM) == "ucm"
    assert dto.asset_type(DeviceType.GATEWAY) == "gateway"
    assert dto.asset_types_to_device_types(frozenset({"gateway"})) == {DeviceType.GATEWAY}


def test_communication_config_carries_the_protocol_twice() -> None:
    config = dto.communication_config(
        host="10.0.0.2",
        port=1883,
        protocol=MqttProtocol.MQTT,
        credentials={"username": "SABC", "password": "pw"},
        hardware_id="SABC",
        channel_id="s",
        time_sync=dto.TimeSync("NTP", "10.0.0.2", 123),
    )
    assert config["mqtt_protocol"] == "MQTT"
    assert config["mqtt_credentials"] == {"protocol": "MQTT", "username": "SABC", "password": "pw"}


def test_tokens_are_random_looking_and_only_their_hash_is_kept() -> None:
    token = format_token(bytes(range(RANDOM_BYTES)))
    assert token.startswith("egw_")
    assert len(token) == 4 + 43
    assert hash_token(token) != token
    assert len(hash_token(token)) == 64
    with pytest.raises(ValueError, match="random bytes"):
        format_token(b"short")


@given(st.binary(min_size=RANDOM_BYTES, max_size=RANDOM_BYTES) | st.binary(max_size=40))
def test_any_bytes_give_a_token_that_reads_back_or_value_error(random_bytes: bytes) -> None:
    try:
        token = format_token(random_bytes)
    except ValueError:
        assert len(random_bytes) != RANDOM_BYTES
        return
    assert re.fullmatch(r"egw_[A-Za-z0-9_-]{43}", token)
    assert base64.urlsafe_b64decode(token.removeprefix("egw_") + "=") == random_bytes
    assert re.fullmatch(r"[0-9a-f]{64}", hash_token(token))


def test_role_order() -> None:
    assert Role.OWNER.at_least(Role.USER)
    assert not Role.USER.at_least(Role.OWNER)
    assert Role.VENDOR.at_least(Role.VENDOR)


# --- Latest telemetry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("500ms", 0.5), ("3600s", 3600.0), ("45", 45.0)],
)
def test_durations(raw: str, seconds: float) -> None:
    assert params.duration(raw, "relevance_interval") == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "s", "30 s", "-5s", "5d", "1h1", "abc", "1e400s", "9" * 40 + "h"])
def test_bad_durations_name_the_parameter(raw: str) -> None:
    with pytest.raises(errors.ApiError) as caught:
        params.duration(raw, "relevance_interval")
    assert caught.value.status == 400
    assert caught.value.details == {"parameter": "relevance_interval"}


@given(st.text(max_size=30))
def test_any_duration_text_gives_seconds_or_a_400(raw: str) -> None:
    status, seconds = 200, 0.0
    try:
        seconds = params.duration(raw, "d")
    except errors.ApiError as error:
        status = error.status
    assert status in (200, 400)
    assert 0 <= seconds <= params.MAX_DURATION_S


def test_relevance_interval_defaults_to_30_seconds() -> None:
    assert params.relevance_interval({}) == 30.0
    assert params.relevance_interval({"relevance_interval": "2m"}) == 120.0


def test_latest_selectors_by_device() -> None:
    query = {"devices[dev-1]": "a, b", "devices[my-slug]": "", "relevance_interval": "30s", "other": "x"}
    assert params.latest_selectors(query) == {"dev-1": ["a", "b"], "my-slug": []}
    with pytest.raises(errors.ApiError) as caught:
        params.latest_selectors({"relevance_interval": "30s"})
    assert caught.value.details == {"parameter": "devices"}


def test_latest_telemetry_values_warnings_and_relevance() -> None:
    values = {
        "voltage": LatestValue(230.5, 1000.0),
        "on": LatestValue(True, 1000.0),
        "old": LatestValue(1, 900.0),
        "nothing": LatestValue(None, 1000.5),
    }
    body = dto.latest_telemetry(
        values, ["voltage", "on", "old", "nothing", "ghost"], now=1010.0, relevance=30.0
    )
    assert body == {
        "voltage": {"value": 230.5, "timestamp": 1000},
        "on": {"value": True, "timestamp": 1000},
        "old": {"warning": dto.ATTRIBUTE_OUTDATED},
        "nothing": {"value": None, "timestamp": 1000.5},
        "ghost": {"warning": dto.ATTRIBUTE_NOT_FOUND},
    }
    voltage = body["voltage"]
    assert isinstance(voltage, dict)
    assert isinstance(voltage["timestamp"], int)
    # No attributes named: every attribute the device has, in name order.
    assert list(dto.latest_telemetry(values, [], now=1010.0, relevance=200.0)) == sorted(values)
    assert dto.latest_telemetry(values, ["old"], now=1010.0, relevance=200.0) == {
        "old": {"value": 1, "timestamp": 900}
    }


# --- Logs ----------------------------------------------------------------------------------------


def test_moments_in_rfc3339_or_unix_seconds() -> None:
    assert params.moment("2025-01-01T00:00:00Z", "t") == 1735689600.0
    assert params.moment("2025-01-01T01:00:00+01:00", "t") == 1735689600.0
    assert params.moment("1735689600.5", "t") == 1735689600.5
    # RFC 3339 also allows a lower-case t and z, and a leap second (the second after :59).
    assert params.moment("2025-01-01t00:00:00z", "t") == 1735689600.0
    assert params.moment("2016-12-31T23:59:60Z", "t") == params.moment("2017-01-01T00:00:00Z", "t")
    assert params.moment("2016-12-31T23:59:60.5+00:00", "t") == params.moment("2017-01-01T00:00:00.5Z", "t")
    for bad in ("2025-01-01T00:00:00", "yesterday", ""):
        with pytest.raises(errors.ApiError) as caught:
            params.moment(bad, "received_at_from")
        assert caught.value.details == {"parameter": "received_at_from"}


def test_log_query_defaults_and_values() -> None:
    default = params.log_query({})
    assert (default.received_from, default.received_to, default.severity) == (None, None, None)
    assert (default.newest_first, default.persisted, default.page) == (False, None, params.Page(0, 50))
    given = params.log_query(
        {
            "received_at_from": "2025-01-01T00:00:00Z",
            "severity": "WARNING",
            "order": "received_at_desc",
            "show": "TEMPORARY_ONLY",
            "limit": "5",
        }
    )
    assert given.received_from == 1735689600.0
    assert given.severity is LogSeverity.WARNING
    assert (given.newest_first, given.persisted, given.page.limit) == (True, False, 5)


@pytest.mark.parametrize("name", ["severity", "order", "show", "received_at_to", "limit"])
def test_bad_log_filters_name_the_parameter(name: str) -> None:
    with pytest.raises(errors.ApiError) as caught:
        params.log_query({name: "nonsense"})
    assert caught.value.details == {"parameter": name}


def test_log_entries_have_integer_timestamps_and_rfc3339_arrival() -> None:
    entry = LogEntry(timestamp=1700000000.7, message="m", severity=LogSeverity.ERROR, persist=False)
    assert dto.log_entry(entry, 1735689600.25) == {
        "timestamp": 1700000000,
        "received_at": "2025-01-01T00:00:00.250000Z",
        "severity": "error",
        "message": "m",
        "persist": False,
    }


# --- Fuzzing: every query and body parser gives a value or a 400 naming what is wrong --------------

# Integer texts: near misses of `-?[0-9]+` (signs doubled, spaces, other digit systems, far too many
# digits) as well as arbitrary text.
INTEGER_TEXTS = st.one_of(
    st.from_regex(r"[-+ ]{0,2}[0-9]{0,25}[ .]?", fullmatch=True),
    st.integers(-(10**25), 10**25).map(str),
    st.sampled_from(["", "0x10", "1_000", "١٢", "²", "5.0", "1e3", "9" * 5000, "0" * 5000 + "7", "--5"]),
    st.from_regex(r"-?0{15,30}[0-9]{1,3}", fullmatch=True),
    st.text(max_size=10),
)


def _expected_integer(raw: str | None, default: int, low: int, high: int) -> int | None:
    """What `page` should make of one value: the number, or None for a 400."""
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?[0-9]+", raw):
        return None
    sign, digits = ("-", raw[1:]) if raw.startswith("-") else ("", raw)
    digits = digits.lstrip("0") or "0"
    if len(digits) > 30:  # far out of any range (and int() refuses over 4300 digits)
        return None
    value = int(sign + digits)
    return value if low <= value <= high else None


def _fails_on(parse: Callable[[], object]) -> str | None:
    """The parameter a parser's 400 names (None if it gave a value); any other exception fails."""
    try:
        parse()
    except errors.ApiError as error:
        status, details = error.status, error.details
    else:
        return None
    assert status == 400
    parameter = details.get("parameter") if details else None
    assert isinstance(parameter, str)
    return parameter


@settings(max_examples=200)
@given(st.fixed_dictionaries({}, optional={"offset": INTEGER_TEXTS, "limit": INTEGER_TEXTS}))
def test_any_paging_text_gives_exactly_its_number_or_a_400(query: dict[str, str]) -> None:
    offset = _expected_integer(query.get("offset"), 0, 0, params.MAX_OFFSET)
    limit = _expected_integer(query.get("limit"), params.DEFAULT_LIMIT, 1, params.MAX_LIMIT)
    failed = _fails_on(lambda: params.page(query))
    if offset is None:
        assert failed == "offset"
    elif limit is None:
        assert failed == "limit"
    else:
        assert failed is None
        assert params.page(query) == params.Page(offset=offset, limit=limit)


@pytest.mark.parametrize("raw", ["--5", "-" * 3 + "1", "9" * 5000, "+5", " 5"])
def test_malformed_and_huge_integers_are_a_400_not_a_crash(raw: str) -> None:
    """`--5` passed the old digit check and then failed in int(), and so did 5000 digits: a 500."""
    assert _fails_on(lambda: params.page({"offset": raw})) == "offset"


def test_leading_zeros_do_not_count_against_the_length() -> None:
    assert params.page({"offset": "0" * 5000 + "7", "limit": "0" * 30 + "5"}) == params.Page(7, 5)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "page_token": INTEGER_TEXTS,
            "page_size": INTEGER_TEXTS,
            "filter[type_in]": st.lists(
                st.sampled_from(["endpoint", "UCM", "gateway", " ucm ", "", "toaster"]) | st.text(max_size=4),
                max_size=4,
            ).map(",".join),
        },
    )
)
def test_any_asset_query_gives_a_page_and_types_or_a_400(query: dict[str, str]) -> None:
    failed = _fails_on(lambda: params.asset_page(query))
    if failed is None:
        page = params.asset_page(query)
        token = query.get("page_token", "")
        assert page.offset == (int(token) if token else 0)
        assert 1 <= page.limit <= params.MAX_LIMIT
    else:
        assert failed in ("page_token", "page_size")
    failed = _fails_on(lambda: params.asset_types(query))
    if failed is None:
        types = params.asset_types(query)
        assert types is None or types <= params.ASSET_TYPES
        assert (types is None) == ("filter[type_in]" not in query)
    else:
        assert failed == "filter[type_in]"


EXPAND_ITEMS = st.sampled_from([*sorted(params.DEVICE_EXPANDS), " site ", "", " ", "Manifest", "bogus"])
COMMA_LISTS = st.lists(EXPAND_ITEMS | st.text(max_size=6), max_size=5).map(",".join)


@given(COMMA_LISTS)
def test_any_expand_gives_the_named_values_or_a_400(raw: str) -> None:
    named = {part.strip() for part in raw.split(",")} - {""}
    failed = _fails_on(lambda: params.expand({"expand": raw}, params.DEVICE_EXPANDS))
    if named <= params.DEVICE_EXPANDS:
        assert failed is None
        assert params.expand({"expand": raw}, params.DEVICE_EXPANDS) == named
    else:
        assert failed == "expand"


SELECTOR_KEYS = st.one_of(
    st.text(max_size=8).map(lambda device: f"devices[{device}]"),
    st.sampled_from(["devices[]", "devices[a", "devices]a[", "devices[a][b]", "devices", "expand", "x"]),
    st.text(max_size=10),
)


@given(st.dictionaries(SELECTOR_KEYS, COMMA_LISTS, max_size=6))
def test_any_latest_query_gives_selectors_or_a_400(query: dict[str, str]) -> None:
    failed = _fails_on(lambda: params.latest_selectors(query))
    wanted = [key for key in query if key.startswith("devices[") and key.endswith("]") and len(key) > 9]
    if failed is not None:
        assert failed == "devices"
        assert not wanted
        return
    selected = params.latest_selectors(query)
    assert len(selected) == len(wanted)
    for device, attributes in selected.items():
        assert all(name and name == name.strip() and "," not in name for name in attributes)
        assert set(attributes) == set(params.comma_list(query[f"devices[{device}]"]))


def test_too_many_latest_devices_is_a_400() -> None:
    query = {f"devices[d{n}]": "a" for n in range(params.MAX_LATEST_DEVICES + 1)}
    assert _fails_on(lambda: params.latest_selectors(query)) == "devices"


# Years 2 to 9998, so that moving to UTC cannot leave the calendar (hypothesis takes naive bounds).
DATETIMES = st.datetimes(
    min_value=dt.datetime(2, 1, 1),  # noqa: DTZ001 - a bound, not a time
    max_value=dt.datetime(9998, 12, 31),  # noqa: DTZ001 - a bound, not a time
)
AWARE_TIMES = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))),
    DATETIMES,
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
)
MOMENT_TEXTS = st.one_of(
    AWARE_TIMES.map(lambda moment: moment.isoformat()),
    AWARE_TIMES.map(lambda moment: moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")),
    DATETIMES.map(lambda moment: moment.isoformat()),  # no time zone: a 400
    st.from_regex(r"[0-9]{0,400}(\.[0-9]{0,5})?", fullmatch=True),
    st.sampled_from(
        [
            "",
            ".",
            "1.2.3",
            "-5",
            "2025-13-01T00:00:00Z",
            "2025-01-01T00:00:00+24:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2025-01-01T00:00:00 Z",
        ]
    ),
    st.text(max_size=30),
)


@settings(max_examples=200)
@given(MOMENT_TEXTS)
def test_any_moment_text_gives_finite_unix_seconds_or_a_400(raw: str) -> None:
    failed = _fails_on(lambda: params.moment(raw, "t"))
    if failed is not None:
        assert failed == "t"
        return
    seconds = params.moment(raw, "t")
    assert math.isfinite(seconds)
    text = raw.strip()
    if re.fullmatch(r"[0-9]*\.?[0-9]*", text):
        assert seconds == float(text)
    else:
        parsed = dt.datetime.fromisoformat(text)
        assert parsed.tzinfo is not None
        assert seconds == parsed.timestamp()


def test_a_moment_of_too_many_digits_is_a_400_not_infinity() -> None:
    assert _fails_on(lambda: params.moment("9" * 400, "received_at_to")) == "received_at_to"


# Up to a second before the end of year 9999: rounding to microseconds must not reach year 10000.
@given(st.floats(min_value=0, max_value=253_402_300_798))
def test_rfc3339_reads_back_as_the_same_moment(timestamp: float) -> None:
    assert params.moment(dto.rfc3339(timestamp), "t") == pytest.approx(timestamp, abs=1e-4)


def _strftime_rfc3339(timestamp: float) -> str:
    """How `dto.rfc3339` wrote timestamps before it was made quicker: it must write the same."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Year 1 to the last second of 9999 (pre-1970 too): every digit, every rounding of the fraction.
@settings(max_examples=500)
@given(
    st.one_of(
        st.floats(min_value=-62_135_596_800, max_value=253_402_300_798),
        st.integers(-62_135_596_800, 253_402_300_798).map(float),
        # Halfway between two microseconds, and just either side: rounding must agree.
        st.integers(0, 2_000_000_000_000_000).map(lambda micros: micros / 1e6 + 5e-7),
        st.integers(0, 2_000_000_000).flatmap(
            lambda seconds: st.sampled_from([seconds + 0.9999995, seconds + 0.0000005, seconds - 1e-7])
        ),
    )
)
def test_rfc3339_writes_what_strftime_wrote(timestamp: float) -> None:
    assert dto.rfc3339(timestamp) == _strftime_rfc3339(timestamp)


def test_rfc3339_writes_what_strftime_wrote_at_the_edges() -> None:
    for timestamp in (0.0, -1e-7, 1e-7, -62_135_596_800.0, -30_610_224_000.5, 253_402_300_799.0, 1e9 + 0.5):
        assert dto.rfc3339(timestamp) == _strftime_rfc3339(timestamp)


def test_json_body_is_compact_utf8_in_the_given_key_order_and_takes_what_orjson_refuses() -> None:
    body = {"b": 1, "a": [1.5, None, True, "é"], "big": 2**70, "nested": {"z": -(2**64)}}
    encoded = render.json_body(body)
    assert encoded.startswith(b'{"b":1,"a":[1.5,null,true,')
    assert json.loads(encoded) == body
    assert json.loads(render.json_body({"s": "\ud800"})) == {"s": "\ud800"}  # a lone surrogate
    assert render.json_body({"k": "é"}) == '{"k":"é"}'.encode()
    assert json.loads(render.json_body({1: "x"})) == {"1": "x"}  # json's key conversion


def _mixed_case(words: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(words).flatmap(lambda word: st.sampled_from([word, word.lower(), word.title()]))


LOG_QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "received_at_from": MOMENT_TEXTS,
        "received_at_to": MOMENT_TEXTS,
        "severity": _mixed_case(["DEBUG", "INFO", "WARNING", "ERROR", "FATAL", ""]) | st.text(max_size=6),
        "order": _mixed_case(["RECEIVED_AT_ASC", "RECEIVED_AT_DESC", "CREATED_AT_ASC"]) | st.text(max_size=6),
        "show": _mixed_case(["ALL", "PERSISTED_ONLY", "TEMPORARY_ONLY", "NONE"]) | st.text(max_size=6),
        "offset": INTEGER_TEXTS,
        "limit": INTEGER_TEXTS,
    },
)


@given(LOG_QUERIES)
def test_any_log_query_gives_filters_or_a_400_naming_one_of_them(query: dict[str, str]) -> None:
    failed = _fails_on(lambda: params.log_query(query))
    if failed is not None:
        assert failed in query
        return
    parsed = params.log_query(query)
    for bound in (parsed.received_from, parsed.received_to):
        assert bound is None or math.isfinite(bound)
    assert (parsed.severity is None) == (not query.get("severity"))


EXECUTION_QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "state.in": st.lists(
            _mixed_case(["NEW", "IN_PROGRESS", "SUCCESS", "ERROR", "TIMEOUT", "DONE"]) | st.text(max_size=4),
            max_size=3,
        ).map(",".join),
        "name.in": COMMA_LISTS,
        "device_id.in": COMMA_LISTS,
        "created_at.gte": MOMENT_TEXTS,
        "created_at.lt": MOMENT_TEXTS,
        "expand": st.lists(st.sampled_from(["log", "ephemeral", " log", "LOG", ""]), max_size=3).map(
            ",".join
        ),
        "order": _mixed_case(["CREATED_AT_ASC", "CREATED_AT_DESC", "RECEIVED_AT_ASC"]),
        "offset": INTEGER_TEXTS,
        "limit": INTEGER_TEXTS,
    },
)


@given(EXECUTION_QUERIES)
def test_any_execution_query_gives_filters_or_a_400_naming_one_of_them(query: dict[str, str]) -> None:
    failed = _fails_on(lambda: params.execution_query(query))
    if failed is not None:
        assert failed in query
        return
    parsed = params.execution_query(query)
    for bound in (parsed.created_from, parsed.created_before):
        assert bound is None or math.isfinite(bound)
    for names in (parsed.names, parsed.device_ids):
        assert names is None or all(name and name == name.strip() for name in names)
    assert parsed.with_log == ("log" in params.comma_list(query.get("expand", "")))


NOT_JSON = ("1e999", "NaN", "-Infinity", '"\\ud800"', '"\\udc00x"')
# JSON text from its own tokens, so that most examples are (nearly) JSON, with the values that are
# not: NaN, Infinity, numbers that overflow, lone surrogate escapes.
JSON_TOKENS = st.sampled_from(
    [*("{", "}", "[", "]", ",", ":", " ", '"a"', '"\\ud83d\\ude00"', "1", "-0.5", "true", "null"), *NOT_JSON]
)
BODY_BYTES = st.one_of(
    st.binary(max_size=80),
    st.lists(JSON_TOKENS, max_size=16).map(lambda tokens: "".join(tokens).encode()),
    st.tuples(
        st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers() | st.floats(), max_size=3),
        st.sampled_from(["utf-8", "utf-16-le", "utf-16", "utf-32"]),
    ).map(lambda pair: json.dumps(pair[0]).encode(pair[1])),
)


@settings(max_examples=200)
@given(BODY_BYTES)
def test_any_body_gives_a_storable_json_object_or_a_400(body: bytes) -> None:
    refused: tuple[int, str] | None = None
    try:
        value = params.json_object(body)
    except errors.ApiError as error:
        refused = (error.status, error.code)
    if refused is not None:
        assert refused == (400, "bad_request")
        return
    assert isinstance(value, dict)
    # What the handlers keep (SQLite, UTF-8) and send back (strict JSON) must hold it.
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert json.loads(text) == value


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": NaN}',
        b'{"arguments": {"x": -Infinity}}',
        b'{"arguments": {"x": 1e999}}',
        b'{"name": "\\ud800"}',
        b'{"\\udc00": 1}',
        '{"name":"'.encode("utf-16-le") + b"\x00\xd8" + '"}'.encode("utf-16-le"),
    ],
)
def test_bodies_that_are_not_strict_json_are_a_400(body: bytes) -> None:
    """NaN would make the echoing replies invalid JSON; a lone surrogate failed in SQLite (a 500)."""
    with pytest.raises(errors.ApiError) as caught:
        params.json_object(body)
    assert (caught.value.status, caught.value.code) == (400, "bad_request")


@pytest.mark.parametrize(
    ("location", "field"), [({"name": 5}, "location.name"), ({"name": "x" * 201}, "location.name")]
)
def test_a_bad_location_name_is_named_as_such(location: JsonValue, field: str) -> None:
    """It was reported as `name`, the site's own name, which the client had right."""
    assert _fails_on(lambda: params.site_changes({"name": "Site", "location": location})) == field


def test_strict_json_bodies_still_parse() -> None:
    assert params.json_object(b'{"name": "\\ud83d\\ude00", "x": 1.5e300}') == {
        "name": "\U0001f600",
        "x": 1.5e300,
    }
    assert params.json_object('{"name": "é"}'.encode("utf-16")) == {"name": "é"}


FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(
        [
            *("", " ", "MQTT", "mqtts", "my-slug", "Bad Slug", "00000000-0000-0000-0000-000000000000"),
            *("45.5", "-91", "nan", "1e999", "x" * 65, "x" * 201, "Europe/Berlin"),
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
LOCATIONS = st.fixed_dictionaries(
    {},
    optional={
        "name": FIELD_VALUES,
        "latitude": FIELD_VALUES | st.floats(-100, 100),
        "longitude": FIELD_VALUES | st.floats(-200, 200),
        "altitude": st.integers(),
    },
)
BODIES = st.dictionaries(
    st.sampled_from(["name", "device_name", "slug", "arguments", "ephemeral", "protocol", "timezone"]),
    FIELD_VALUES,
    max_size=5,
).flatmap(
    lambda body: st.one_of(
        st.just(body), (LOCATIONS | FIELD_VALUES).map(lambda location: {**body, "location": location})
    )
)


@settings(max_examples=200)
@given(BODIES)
def test_any_body_gives_each_parser_a_value_or_a_400_naming_a_field(body: dict[str, JsonValue]) -> None:
    location = body.get("location")
    fields = set(body) | {f"location.{key}" for key in (location if isinstance(location, dict) else {})}

    def check(parse: Callable[[], object], required: str | None = None) -> bool:
        failed = _fails_on(parse)
        assert failed is None or failed in fields or failed == required
        return failed is None

    if check(lambda: params.command_request(body), "name"):
        command = params.command_request(body)
        assert 0 < len(command.name) <= 200
        assert isinstance(command.arguments, dict)
        assert isinstance(command.ephemeral, bool)
    # A blank `device_name` (the older name of the field) is reported as `name`.
    if check(lambda: params.device_changes(body), "name"):
        changes = params.device_changes(body)
        assert changes.name is None or changes.name.strip()
        assert changes.slug is None or slugs.slug_problem(changes.slug) is None
    if check(lambda: params.site_changes(body)):
        site = params.site_changes(body)
        assert site.name is None or site.name.strip()
        if site.location is not None:
            latitude, longitude = site.location.latitude, site.location.longitude
            assert latitude is None or -90 <= latitude <= 90
            assert longitude is None or -180 <= longitude <= 180
    if check(lambda: params.mqtt_protocol(body), "protocol"):
        assert params.mqtt_protocol(body) in MqttProtocol
