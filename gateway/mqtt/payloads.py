"""Decode device message payloads into domain records.

Pure: no I/O, no clock (the receive time is passed in). Wire formats per
`enapter-device-protocol.md` §1.3. Every input gives either a `DeviceMessage` or a `PayloadError`;
nothing raises, so one bad device cannot stop ingestion.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from gateway.model import (
    CommandResponse,
    CommandResponseState,
    DeviceMessage,
    LogEntry,
    LogSeverity,
    Properties,
    Telemetry,
)
from gateway.mqtt.topics import MessageKind

# Real messages are a few hundred bytes; the bound keeps one misbehaving device from making the
# gateway parse and store megabytes.
MAX_PAYLOAD_BYTES = 64 * 1024

# Containers nested in one another, the top-level object included. Deeper values are refused:
# the store and the HTTP API re-serialise them with recursive encoders further down the call
# stack, where a value that only just parsed could hit the recursion limit.
MAX_NESTING = 64

# How much of an offending value a `PayloadError.detail` may quote.
_PREVIEW_CHARS = 60

_SEVERITIES = {severity.value: severity for severity in LogSeverity}

# §1.3: the current SDK sends `log` then `completed`/`error`; the old vucm and the Gateway 2.0 docs
# add the others. Matched case-insensitively.
_STATES = {
    "log": CommandResponseState.IN_PROGRESS,
    "in_progress": CommandResponseState.IN_PROGRESS,
    "progress": CommandResponseState.IN_PROGRESS,
    "started": CommandResponseState.STARTED,
    "completed": CommandResponseState.SUCCEEDED,
    "succeeded": CommandResponseState.SUCCEEDED,
    "success": CommandResponseState.SUCCEEDED,
    "error": CommandResponseState.ERROR,
    "failed": CommandResponseState.ERROR,
}


@dataclass(frozen=True, slots=True)
class PayloadError:
    """Why a payload was dropped.

    `reason` is a short stable label fit for a metric: `too_large`, `not_json`, `not_object`,
    `bad_timestamp`, `bad_alerts` or `bad_field`. `detail` is a sentence for the log; it quotes at
    most a short preview of the payload.
    """

    reason: str
    detail: str


class _Reject(Exception):
    """Internal: a field check failed; carries the `PayloadError` to return."""

    def __init__(self, error: PayloadError) -> None:
        super().__init__(error.detail)
        self.error = error


def decode(kind: MessageKind, payload: bytes, received_at: float) -> DeviceMessage | PayloadError:
    """Decode one device payload of the given kind.

    `received_at` (unix seconds) stands in for a missing or null `timestamp`.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return PayloadError("too_large", f"payload is {len(payload)} bytes, limit is {MAX_PAYLOAD_BYTES}")
    parsed = _parse_json(payload)
    if isinstance(parsed, PayloadError):
        return parsed
    if not isinstance(parsed, dict):
        return PayloadError("not_object", f"payload is a JSON {_json_type(parsed)}, not an object")
    try:
        return _DECODERS[kind](parsed, received_at)
    except _Reject as reject:
        return reject.error


def _parse_json(payload: bytes) -> object:
    """Strict JSON: UTF-8 only, no NaN/Infinity, numbers finite, bounded nesting.

    orjson reads almost every payload, several times faster than `json` (it is strict JSON and
    refuses all of the above by itself, lone surrogates included). What it refuses is read again by
    `json`, which says precisely why. So is a payload with a run of 19 digits: orjson would turn an
    integer beyond 64 bits into a float, and the gateway keeps such integers as sent.
    """
    # One object and no array, as telemetry almost always is: an integer beyond 64 bits shows in
    # what orjson made of it, a float of at least 2**63, so the search below is spared.
    flat = payload.count(b"{") == 1 and b"[" not in payload
    if not flat and _LONG_DIGITS.search(payload):
        return _parse_json_slowly(payload)
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _parse_json_slowly(payload)
    if flat:
        if isinstance(value, dict) and any(
            type(item) is float and not -_INT64_BOUND < item < _INT64_BOUND for item in value.values()
        ):
            return _parse_json_slowly(payload)
        return value
    if payload.count(b"{") + payload.count(b"[") <= MAX_NESTING:
        return value  # every level opens with one of these: it cannot nest deeper
    if _nesting_exceeds(value, MAX_NESTING):
        return PayloadError("not_json", f"payload nests deeper than {MAX_NESTING} levels")
    return value


def _parse_json_slowly(payload: bytes) -> object:
    """`_parse_json` with the standard library, for what orjson refused."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return PayloadError("not_json", f"payload is not UTF-8 (bad byte at offset {exc.start})")
    try:
        value = json.loads(text, parse_constant=reject_constant, parse_float=finite_float)
    except RecursionError:
        return PayloadError("not_json", "payload nests too deeply")
    except ValueError as exc:
        # JSONDecodeError, our own rejections, and int() refusing more than 4300 digits.
        return PayloadError("not_json", f"payload is not valid JSON: {exc!s:.{_PREVIEW_CHARS}}")
    if _nesting_exceeds(value, MAX_NESTING):
        return PayloadError("not_json", f"payload nests deeper than {MAX_NESTING} levels")
    # Only a \u escape can make a lone surrogate (the text itself is valid UTF-8). SQLite cannot
    # store one, and a batch holding it would fail as a whole.
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        return PayloadError("not_json", "payload holds a lone UTF-16 surrogate (\\uD800-\\uDFFF)")
    return value


_LONG_DIGITS = re.compile(rb"[0-9]{19}")
# orjson keeps integers in [-2**63, 2**64) exactly and turns larger ones into floats this big.
_INT64_BOUND = float(2**63)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _nesting_exceeds(value: object, limit: int) -> bool:
    """True if containers nest more than `limit` deep (iterative: no recursion limit to hit)."""
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def reject_constant(name: str) -> NoReturn:
    """`json.loads(parse_constant=...)`: Python's json accepts NaN/Infinity/-Infinity by default;
    they are not JSON and could not be served back by the HTTP API."""
    raise ValueError(f"{name} is not a JSON value")


def finite_float(text: str) -> float:
    """`json.loads(parse_float=...)`: `1e999` is valid JSON syntax but overflows to inf, which is
    as unservable as `Infinity`."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _decode_telemetry(obj: dict[str, Any], received_at: float) -> Telemetry:
    timestamp = _timestamp(obj, received_at)
    alerts = obj.get("alerts")
    if alerts is not None and not (
        isinstance(alerts, list) and all(isinstance(alert, str) for alert in alerts)
    ):
        raise _Reject(
            PayloadError("bad_alerts", f"alerts must be a list of strings or null, got {_preview(alerts)}")
        )
    # `timestamp` and `alerts` are reserved names, never attributes (§1.3). The object was made
    # for this message alone: what is left of it are the values.
    obj.pop("timestamp", None)
    obj.pop("alerts", None)
    return Telemetry(
        timestamp=timestamp,
        values=obj,
        alerts=None if alerts is None else tuple(alerts),
    )


def _decode_properties(obj: dict[str, Any], received_at: float) -> Properties:
    timestamp = _timestamp(obj, received_at)
    return Properties(
        timestamp=timestamp, values={key: value for key, value in obj.items() if key != "timestamp"}
    )


def _decode_log(obj: dict[str, Any], received_at: float) -> LogEntry:
    timestamp = _timestamp(obj, received_at)
    message = obj.get("message")
    if not isinstance(message, str):
        raise _Reject(_bad_field("message", "a string", message))
    severity_name = obj.get("severity")
    severity = _SEVERITIES.get(severity_name.lower()) if isinstance(severity_name, str) else None
    if severity is None:
        raise _Reject(_bad_field("severity", "one of debug|info|warning|error", severity_name))
    persist = obj.get("persist", True)
    if not isinstance(persist, bool):
        raise _Reject(_bad_field("persist", "a boolean", persist))
    return LogEntry(timestamp=timestamp, message=message, severity=severity, persist=persist)


def _decode_command_response(obj: dict[str, Any], received_at: float) -> CommandResponse:
    execution_id = obj.get("id")
    if not isinstance(execution_id, str) or not execution_id:
        raise _Reject(_bad_field("id", "a non-empty string", execution_id))
    state_name = obj.get("state")
    state = _STATES.get(state_name.lower()) if isinstance(state_name, str) else None
    if state is None:
        raise _Reject(_bad_field("state", "a known command state", state_name))
    payload = obj.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise _Reject(_bad_field("payload", "an object or null", payload))
    return CommandResponse(execution_id=execution_id, state=state, payload=payload)


_DECODERS: dict[MessageKind, Callable[[dict[str, Any], float], DeviceMessage]] = {
    MessageKind.TELEMETRY: _decode_telemetry,
    MessageKind.PROPERTIES: _decode_properties,
    MessageKind.LOGS: _decode_log,
    MessageKind.COMMAND_RESPONSE: _decode_command_response,
}


def _timestamp(obj: dict[str, Any], received_at: float) -> float:
    """Unix seconds from `timestamp`; the SDK sends an int, users may send a float (§1.3)."""
    value = obj.get("timestamp")
    if value is None:
        return float(received_at)
    # bool is an int subclass, but `true` is not a time.
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    raise _Reject(
        PayloadError("bad_timestamp", f"timestamp must be non-negative unix seconds, got {_preview(value)}")
    )


def _bad_field(name: str, expected: str, got: object) -> PayloadError:
    return PayloadError("bad_field", f"{name} must be {expected}, got {_preview(got)}")


def _preview(value: object) -> str:
    """A JSON value as a short quote for `PayloadError.detail`.

    Containers are described, not dumped: they may be large or nested deep enough to hit the
    recursion limit in `json.dumps`.
    """
    match value:
        case None:
            return "null (or missing)"
        case list():
            return f"an array of {len(value)} items"
        case dict():
            return f"an object with {len(value)} keys"
        case _:
            text = json.dumps(value)
            return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "..."


def _json_type(value: object) -> str:
    match value:
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "object"
        case _:
            return "null"
