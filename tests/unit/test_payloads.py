"""Tests for gateway.mqtt.payloads: device payload decoding (enapter-device-protocol.md §1.3)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import (
    CommandResponse,
    CommandResponseState,
    JsonValue,
    LogEntry,
    LogSeverity,
    Properties,
    Telemetry,
)
from gateway.mqtt.payloads import MAX_NESTING, MAX_PAYLOAD_BYTES, PayloadError, decode
from gateway.mqtt.topics import MessageKind

NOW = 1_700_000_123.5
DEVICE_MESSAGE_TYPES = (Telemetry, Properties, LogEntry, CommandResponse)


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason_of(result: object) -> str:
    assert isinstance(result, PayloadError), result
    return result.reason


# --- size and syntax -----------------------------------------------------------------------------


def padded_object(size: int) -> bytes:
    """A valid JSON object of exactly `size` bytes."""
    head, tail = b'{"pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_payload_at_the_limit_is_decoded() -> None:
    payload = padded_object(MAX_PAYLOAD_BYTES)
    assert len(payload) == MAX_PAYLOAD_BYTES
    result = decode(MessageKind.PROPERTIES, payload, NOW)
    assert isinstance(result, Properties)
    assert len(str(result.values["pad"])) > 60_000


@pytest.mark.parametrize("size", [MAX_PAYLOAD_BYTES + 1, 1024 * 1024])
def test_payload_over_the_limit_is_too_large(size: int) -> None:
    result = decode(MessageKind.TELEMETRY, padded_object(size), NOW)
    assert reason_of(result) == "too_large"
    assert isinstance(result, PayloadError)
    assert str(size) in result.detail


def test_size_is_checked_before_parsing() -> None:
    # Not JSON either, but the size is what gets reported.
    assert reason_of(decode(MessageKind.LOGS, b"\xff" * (MAX_PAYLOAD_BYTES + 1), NOW)) == "too_large"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"{",
        b"hello",
        b"{'a': 1}",
        b'{"a": 1} trailing',
        b"\xff\xfe{}",
        b'{"a": "\xff"}',
        '{"a": 1}'.encode("utf-16"),  # json.loads(bytes) would accept this; the wire is UTF-8
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 byte order mark
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b"NaN",
        b'{"a": 1e999}',  # valid syntax, but overflows to inf
        b'{"a": -1e999}',
        b'{"a": ' + b"9" * 5000 + b"}",  # beyond Python's int-from-string limit
        # Nested past the interpreter's recursion limit, yet under the size limit.
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        # Parses, but deeper than MAX_NESTING.
        b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1),
        b'{"a":' * (MAX_NESTING + 1) + b"1" + b"}" * (MAX_NESTING + 1),
    ],
)
def test_not_json(payload: bytes) -> None:
    assert len(payload) <= MAX_PAYLOAD_BYTES
    for kind in MessageKind:
        assert reason_of(decode(kind, payload, NOW)) == "not_json"


@pytest.mark.parametrize("payload", [b"[]", b'[{"timestamp": 1}]', b'"x"', b"1", b"1.5", b"null", b"true"])
def test_not_object(payload: bytes) -> None:
    for kind in MessageKind:
        assert reason_of(decode(kind, payload, NOW)) == "not_object"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    # MAX_NESTING containers in all: the top-level object and MAX_NESTING - 1 lists.
    deep: JsonValue = []
    for _ in range(MAX_NESTING - 2):
        deep = [deep]
    result = decode(MessageKind.TELEMETRY, enc({"j": deep}), NOW)
    assert isinstance(result, Telemetry)
    assert result.values == {"j": deep}
    too_deep = decode(MessageKind.TELEMETRY, enc({"j": [deep]}), NOW)
    assert reason_of(too_deep) == "not_json"


def test_duplicate_keys_keep_the_last_value() -> None:
    result = decode(MessageKind.TELEMETRY, b'{"a": 1, "a": 2}', NOW)
    assert isinstance(result, Telemetry)
    assert result.values == {"a": 2}


# --- timestamp -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000.25, 1_700_000_000.25),
        (0, 0.0),
        (1e308, 1e308),
    ],
)
def test_timestamp_accepted(raw: object, expected: float) -> None:
    result = decode(MessageKind.TELEMETRY, enc({"timestamp": raw}), NOW)
    assert isinstance(result, Telemetry)
    assert result.timestamp == expected
    assert type(result.timestamp) is float


@pytest.mark.parametrize("obj", [{}, {"timestamp": None}])
def test_missing_timestamp_is_receive_time(obj: dict[str, Any]) -> None:
    for kind, extra in KIND_MINIMAL.items():
        result = decode(kind, enc({**extra, **obj}), NOW)
        assert not isinstance(result, PayloadError), result
        if not isinstance(result, CommandResponse):  # command responses carry no time
            assert result.timestamp == NOW


@pytest.mark.parametrize("raw", [True, False, "1700000000", -1, -0.5, [1], {"s": 1}, 10**400, 2**1024])
def test_bad_timestamp(raw: object) -> None:
    for kind in (MessageKind.TELEMETRY, MessageKind.PROPERTIES, MessageKind.LOGS):
        result = decode(kind, enc({**KIND_MINIMAL[kind], "timestamp": raw}), NOW)
        assert reason_of(result) == "bad_timestamp"


# --- telemetry -----------------------------------------------------------------------------------


def test_telemetry_as_the_sdk_sends_it() -> None:
    payload = (
        b'{"timestamp": 1700000000, "alerts": null, "r1": false, "charge_percent": 81.5, "secsleft": null}'
    )
    assert decode(MessageKind.TELEMETRY, payload, NOW) == Telemetry(
        timestamp=1_700_000_000.0,
        values={"r1": False, "charge_percent": 81.5, "secsleft": None},
        alerts=None,
    )


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, None),
        ({"alerts": None}, None),
        ({"alerts": []}, ()),
        ({"alerts": ["gather_data_error"]}, ("gather_data_error",)),
        ({"alerts": ["a", "b", "a"]}, ("a", "b", "a")),
    ],
)
def test_telemetry_alerts(obj: dict[str, Any], expected: tuple[str, ...] | None) -> None:
    result = decode(MessageKind.TELEMETRY, enc({"timestamp": 1, **obj, "v": 1}), NOW)
    assert isinstance(result, Telemetry)
    assert result.alerts == expected
    assert result.values == {"v": 1}


@pytest.mark.parametrize("alerts", ["gather_data_error", [1], ["a", None], {"a": True}, True, 0])
def test_telemetry_bad_alerts(alerts: object) -> None:
    assert reason_of(decode(MessageKind.TELEMETRY, enc({"alerts": alerts}), NOW)) == "bad_alerts"


def test_telemetry_keeps_any_json_value() -> None:
    values = {"s": "x", "n": -3, "f": 0.5, "b": True, "z": None, "l": ["a", 1], "j": {"k": [{}]}}
    result = decode(MessageKind.TELEMETRY, enc(values), NOW)
    assert isinstance(result, Telemetry)
    assert result.values == values


# --- properties ----------------------------------------------------------------------------------


def test_integers_beyond_64_bits_are_kept_exactly_in_flat_and_nested_payloads() -> None:
    flat = b'{"a": 18446744073709551616, "b": -9223372036854775809, "c": 1e19, "d": 18446744073709551615}'
    result = decode(MessageKind.TELEMETRY, flat, NOW)
    assert isinstance(result, Telemetry)
    assert result.values == {"a": 2**64, "b": -(2**63) - 1, "c": 1e19, "d": 2**64 - 1}
    assert [type(value) for value in result.values.values()] == [int, int, float, int]
    nested = decode(MessageKind.TELEMETRY, b'{"a": [18446744073709551616], "alerts": []}', NOW)
    assert isinstance(nested, Telemetry)
    assert nested.values == {"a": [2**64]}


def test_properties_drop_only_the_timestamp() -> None:
    result = decode(
        MessageKind.PROPERTIES,
        b'{"timestamp": 1700000000, "vendor": "x", "model": "y", "alerts": ["a"]}',
        NOW,
    )
    assert result == Properties(
        timestamp=1_700_000_000.0, values={"vendor": "x", "model": "y", "alerts": ["a"]}
    )


def test_vucm_properties() -> None:
    result = decode(MessageKind.PROPERTIES, b'{"virtual": true, "lua_api_ver": 1}', NOW)
    assert result == Properties(timestamp=NOW, values={"virtual": True, "lua_api_ver": 1})


# --- logs ----------------------------------------------------------------------------------------


def test_log_as_the_sdk_sends_it() -> None:
    payload = b'{"timestamp": 1700000000, "message": "hello", "severity": "info", "persist": true}'
    assert decode(MessageKind.LOGS, payload, NOW) == LogEntry(
        timestamp=1_700_000_000.0, message="hello", severity=LogSeverity.INFO, persist=True
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("debug", LogSeverity.DEBUG),
        ("info", LogSeverity.INFO),
        ("warning", LogSeverity.WARNING),
        ("error", LogSeverity.ERROR),
        ("WARNING", LogSeverity.WARNING),
        ("Error", LogSeverity.ERROR),
    ],
)
def test_log_severity(name: str, expected: LogSeverity) -> None:
    result = decode(MessageKind.LOGS, enc({"message": "m", "severity": name}), NOW)
    assert isinstance(result, LogEntry)
    assert result.severity is expected


def test_log_persist_defaults_to_true_and_can_be_false() -> None:
    default = decode(MessageKind.LOGS, enc({"message": "m", "severity": "info"}), NOW)
    temporary = decode(MessageKind.LOGS, enc({"message": "m", "severity": "info", "persist": False}), NOW)
    assert isinstance(default, LogEntry)
    assert isinstance(temporary, LogEntry)
    assert default.persist is True
    assert temporary.persist is False


def test_log_message_may_be_empty() -> None:
    result = decode(MessageKind.LOGS, enc({"message": "", "severity": "debug"}), NOW)
    assert isinstance(result, LogEntry)
    assert result.message == ""


@pytest.mark.parametrize(
    "obj",
    [
        {"severity": "info"},
        {"message": None, "severity": "info"},
        {"message": 5, "severity": "info"},
        {"message": ["m"], "severity": "info"},
        {"message": "m"},
        {"message": "m", "severity": None},
        {"message": "m", "severity": "fatal"},
        {"message": "m", "severity": "warn"},
        {"message": "m", "severity": 3},
        {"message": "m", "severity": "info", "persist": "yes"},
        {"message": "m", "severity": "info", "persist": 1},
        {"message": "m", "severity": "info", "persist": None},
    ],
)
def test_log_bad_field(obj: dict[str, Any]) -> None:
    assert reason_of(decode(MessageKind.LOGS, enc(obj), NOW)) == "bad_field"


# --- command responses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("log", CommandResponseState.IN_PROGRESS),
        ("in_progress", CommandResponseState.IN_PROGRESS),
        ("progress", CommandResponseState.IN_PROGRESS),
        ("IN_PROGRESS", CommandResponseState.IN_PROGRESS),
        ("started", CommandResponseState.STARTED),
        ("Started", CommandResponseState.STARTED),
        ("completed", CommandResponseState.SUCCEEDED),
        ("succeeded", CommandResponseState.SUCCEEDED),
        ("success", CommandResponseState.SUCCEEDED),
        ("SUCCESS", CommandResponseState.SUCCEEDED),
        ("error", CommandResponseState.ERROR),
        ("failed", CommandResponseState.ERROR),
        ("ERROR", CommandResponseState.ERROR),
    ],
)
def test_command_response_states(state: str, expected: CommandResponseState) -> None:
    result = decode(MessageKind.COMMAND_RESPONSE, enc({"id": "e1", "state": state}), NOW)
    assert isinstance(result, CommandResponse)
    assert result.state is expected


def test_command_responses_as_the_sdk_sends_them() -> None:
    started = b'{"id": "6f1c", "state": "log", "payload": {"message": "Executing command..."}}'
    done = b'{"id": "6f1c", "state": "completed", "payload": {"result": {"ok": [1, 2]}}}'
    assert decode(MessageKind.COMMAND_RESPONSE, started, NOW) == CommandResponse(
        execution_id="6f1c",
        state=CommandResponseState.IN_PROGRESS,
        payload={"message": "Executing command..."},
    )
    assert decode(MessageKind.COMMAND_RESPONSE, done, NOW) == CommandResponse(
        execution_id="6f1c",
        state=CommandResponseState.SUCCEEDED,
        payload={"result": {"ok": [1, 2]}},
    )


@pytest.mark.parametrize("obj", [{}, {"payload": None}])
def test_command_response_payload_defaults_to_empty(obj: dict[str, Any]) -> None:
    # The old vucm may leave `payload` out (§1.3).
    result = decode(MessageKind.COMMAND_RESPONSE, enc({"id": "e", "state": "error", **obj}), NOW)
    assert isinstance(result, CommandResponse)
    assert result.payload == {}


@pytest.mark.parametrize(
    "obj",
    [
        {"state": "completed"},
        {"id": "", "state": "completed"},
        {"id": None, "state": "completed"},
        {"id": 7, "state": "completed"},
        {"id": "e"},
        {"id": "e", "state": None},
        {"id": "e", "state": "done"},
        {"id": "e", "state": 1},
        {"id": "e", "state": "completed", "payload": "ok"},
        {"id": "e", "state": "completed", "payload": [1]},
        {"id": "e", "state": "completed", "payload": 0},
    ],
)
def test_command_response_bad_field(obj: dict[str, Any]) -> None:
    assert reason_of(decode(MessageKind.COMMAND_RESPONSE, enc(obj), NOW)) == "bad_field"


# --- error details -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        (MessageKind.COMMAND_RESPONSE, {"id": "e", "state": "z" * 10_000}),
        (MessageKind.LOGS, {"message": "m", "severity": "q" * 10_000}),
        (MessageKind.TELEMETRY, {"alerts": "a" * 10_000}),
        (MessageKind.TELEMETRY, {"alerts": [["x" * 10_000]]}),
        (MessageKind.LOGS, {"message": "m", "severity": "info", "persist": {"k": "p" * 10_000}}),
        (MessageKind.TELEMETRY, {"timestamp": "t" * 10_000}),
    ],
)
def test_detail_quotes_little_of_the_payload(kind: MessageKind, obj: dict[str, Any]) -> None:
    result = decode(kind, enc(obj), NOW)
    assert isinstance(result, PayloadError)
    assert len(result.detail) < 200
    assert result.detail


def test_not_json_detail_is_short() -> None:
    result = decode(MessageKind.TELEMETRY, b'{"a": "' + b"x" * 50_000, NOW)
    assert reason_of(result) == "not_json"
    assert isinstance(result, PayloadError)
    assert len(result.detail) < 200


# --- properties ----------------------------------------------------------------------------------

# A field set per kind that passes its checks, so generated extras exercise the other rules.
KIND_MINIMAL: dict[MessageKind, dict[str, Any]] = {
    MessageKind.TELEMETRY: {},
    MessageKind.PROPERTIES: {},
    MessageKind.LOGS: {"message": "m", "severity": "info"},
    MessageKind.COMMAND_RESPONSE: {"id": "e", "state": "completed"},
}

JSON_VALUES: st.SearchStrategy[JsonValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(
    ["timestamp", "alerts", "message", "severity", "persist", "id", "state", "payload"]
) | st.text(max_size=10)


def is_plain_json(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(is_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_json(v) for k, v in value.items())
    return False


@given(kind=st.sampled_from(MessageKind), payload=st.binary(max_size=300))
def test_any_bytes_give_a_message_or_an_error(kind: MessageKind, payload: bytes) -> None:
    assert isinstance(decode(kind, payload, NOW), (*DEVICE_MESSAGE_TYPES, PayloadError))


@given(
    kind=st.sampled_from(MessageKind),
    use_minimal=st.booleans(),
    fields=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6),
)
def test_any_object_gives_a_message_or_an_error(
    kind: MessageKind, use_minimal: bool, fields: dict[str, JsonValue]
) -> None:
    obj = {**KIND_MINIMAL[kind], **fields} if use_minimal else fields
    result = decode(kind, enc(obj), NOW)
    assert isinstance(result, (*DEVICE_MESSAGE_TYPES, PayloadError))
    if isinstance(result, Telemetry | Properties):
        assert is_plain_json(dict(result.values))
    elif isinstance(result, CommandResponse):
        assert is_plain_json(dict(result.payload))
    elif isinstance(result, PayloadError):
        assert result.reason in {"bad_timestamp", "bad_alerts", "bad_field"}


TELEMETRY_VALUES = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in ("timestamp", "alerts")), JSON_VALUES, max_size=8
)


@given(
    values=TELEMETRY_VALUES,
    timestamp=st.none() | st.integers(0, 2**40) | st.floats(0, 1e12),
    alerts=st.none() | st.lists(st.text(max_size=10), max_size=4),
)
def test_valid_telemetry_round_trips(
    values: dict[str, JsonValue], timestamp: float | None, alerts: list[str] | None
) -> None:
    message = {"timestamp": timestamp, "alerts": alerts, **values}
    result = decode(MessageKind.TELEMETRY, enc(message), NOW)
    assert result == Telemetry(
        timestamp=NOW if timestamp is None else float(timestamp),
        values=values,
        alerts=None if alerts is None else tuple(alerts),
    )
    assert isinstance(result, Telemetry)
    assert is_plain_json(dict(result.values))


@pytest.mark.parametrize(
    "payload",
    [
        rb'{"timestamp": 1, "s": "a\ud800"}',
        rb'{"timestamp": 1, "\uDC00": 1}',
        rb'{"timestamp": 1, "a": ["x", "\udfff"]}',
    ],
)
def test_lone_surrogates_are_refused(payload: bytes) -> None:
    """SQLite cannot store them; one in a batch would fail the whole batch."""
    result = decode(MessageKind.TELEMETRY, payload, 1.0)
    assert isinstance(result, PayloadError)
    assert result.reason == "not_json"


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    result = decode(MessageKind.TELEMETRY, rb'{"timestamp": 1, "s": "\ud83d\ude00", "b": "\\ud800"}', 1.0)
    assert isinstance(result, Telemetry)
    assert result.values == {"s": "\U0001f600", "b": "\\ud800"}


# JSON text built from the grammar, with the fields each kind reads, so that most examples are
# nearly valid messages; its leaves include what strict JSON refuses: NaN, Infinity, overflowing
# numbers, lone surrogate escapes, too many digits, nesting deeper than MAX_NESTING.
JSON_KEYS = st.sampled_from(
    [
        *('"timestamp"', '"alerts"', '"message"', '"severity"', '"persist"', '"id"', '"state"'),
        *('"payload"', '"v"', '"\\udc00"', '"\\ud83d\\ude00"'),
    ]
)
JSON_LEAVES = st.sampled_from(
    [
        *("1", "-0.5", "1700000000", "1e3", "true", "false", "null", '""', '"x"'),
        *('"info"', '"WARNING"', '"completed"', '"log"', '"\\ud83d\\ude00"', "[]", "{}"),
        *("NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"', '"a\\udfff"', "9" * 5000),
        *("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "tru", '"unterminated', "01"),
    ]
)
JSON_TEXTS = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(JSON_KEYS, children), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}"
        )
    ),
    max_leaves=8,
)
PAYLOAD_TEXTS = st.lists(st.tuples(JSON_KEYS, JSON_TEXTS), max_size=5).map(
    lambda pairs: "{" + ", ".join(f"{key}: {value}" for key, value in pairs) + "}"
)


@settings(max_examples=200)
@given(kind=st.sampled_from(MessageKind), text=PAYLOAD_TEXTS | JSON_TEXTS)
def test_json_like_payloads_give_a_storable_message_or_an_error(kind: MessageKind, text: str) -> None:
    result = decode(kind, text.encode(), NOW)
    assert isinstance(result, (*DEVICE_MESSAGE_TYPES, PayloadError))
    if isinstance(result, PayloadError):
        assert result.reason in {"not_json", "not_object", "bad_timestamp", "bad_alerts", "bad_field"}
        assert 0 < len(result.detail) < 200
        return
    # What the store and the HTTP API do with it must work: strict JSON, UTF-8, a finite time.
    if isinstance(result, Telemetry | Properties):
        assert math.isfinite(result.timestamp)
        json.dumps(dict(result.values), allow_nan=False, ensure_ascii=False).encode()
    elif isinstance(result, CommandResponse):
        json.dumps(dict(result.payload), allow_nan=False, ensure_ascii=False).encode()
    else:
        result.message.encode()
