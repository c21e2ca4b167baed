"""Query parameters, DTO shapes and tokens: the API's pure core."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api import dto, errors, params
from gateway.model import (
    CommunicationType,
    Connectivity,
    Device,
    DeviceType,
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
