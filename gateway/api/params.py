"""Query parameters and request bodies: text in, typed values out, or a 400 naming the parameter.

Pure. Clients send more than the docs show (python-sdk always sends `expand=`, possibly empty; the CLI
sends `limit=50&offset=N`), see `enapter-http-api.md` §1.4-1.5.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar

from gateway import slugs, stats
from gateway.api.errors import bad_request, invalid_parameter
from gateway.device_search import DeviceFilter, DeviceOrder, SearchTextError, search_terms
from gateway.model import (
    Connectivity,
    DeviceType,
    ExecutionState,
    JsonObject,
    Location,
    LogSeverity,
    MqttProtocol,
)
from gateway.mqtt.payloads import finite_float, reject_constant
from gateway.timeline import MAX_USER_DESCRIPTION, USER_CODE, EventType

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_OFFSET = 10**9

DEVICE_EXPANDS = frozenset(
    {
        "manifest",
        "properties",
        "connectivity",
        "communication",
        "communication_info",
        "site",
        "raised_alert_names",
        # The gateway's own additions, which Enapter's clients never ask for: raised alerts with
        # their severity, and what the device sent that its manifest does not declare or allow.
        "raised_alerts",
        "manifest_mismatches",
        # Issue 8: the device's tags, and its metadata values (with the defaults it has no value for).
        "tags",
        "metadata",
    }
)
DEFAULT_STATS_WINDOW = "24h"
ASSET_EXPANDS = frozenset({"manifest", "properties", "connectivity"})

# Go's time.ParseDuration units, which Enapter's durations ("30s", "1m30s", "3600s") follow.
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
MAX_DURATION_S = 100 * 365 * 86400.0
DEFAULT_RELEVANCE_S = 30.0
# `devices[<device id or slug>]=a,b` (telemetry/latest); the brackets arrive percent-decoded.
_DEVICE_SELECTOR = re.compile(r"devices\[(.+)\]", re.DOTALL)
MAX_LATEST_DEVICES = 1000
ASSET_TYPES = frozenset({"endpoint", "ucm", "gateway"})
_INTEGER = re.compile(r"-?[0-9]+")
_MAX_INTEGER_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Page:
    offset: int
    limit: int


def _integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):
        raise invalid_parameter(name, f"expected an integer, got {raw[:40]!r}")
    # More significant digits than any bound has is out of range whatever they say; int() is not
    # asked to read them (it refuses more than 4300 digits).
    digits = raw.lstrip("-").lstrip("0") or "0"
    value = None if len(digits) > _MAX_INTEGER_DIGITS else int(digits) * (-1 if raw[0] == "-" else 1)
    if value is None or not low <= value <= high:
        raise invalid_parameter(name, f"must be between {low} and {high}, got {raw[:40]}")
    return value


def page(query: Mapping[str, str]) -> Page:
    """`offset` (default 0) and `limit` (default 50, at most 1000)."""
    return Page(
        offset=_integer(query, "offset", 0, 0, MAX_OFFSET),
        limit=_integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


def comma_list(raw: str) -> list[str]:
    """`a, b,,c` -> ["a", "b", "c"]."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def expand(query: Mapping[str, str], allowed: Collection[str]) -> frozenset[str]:
    """The `expand` values; an unknown one is a 400 that lists what is allowed."""
    values = frozenset(comma_list(query.get("expand", "")))
    unknown = sorted(values - frozenset(allowed))
    if unknown:
        raise invalid_parameter(
            "expand",
            f"unknown value(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
        )
    return values


def asset_page(query: Mapping[str, str]) -> Page:
    """Assets API v1 paging: an opaque `page_token` (empty = first page) and `page_size`."""
    token = query.get("page_token", "")
    if token and not (token.isascii() and token.isdigit() and len(token) <= 10):
        raise invalid_parameter("page_token", "not a token this gateway issued")
    return Page(
        offset=int(token) if token else 0,
        limit=_integer(query, "page_size", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


def asset_types(query: Mapping[str, str]) -> frozenset[str] | None:
    """`filter[type_in]=endpoint,ucm,gateway`; None when absent (no filtering)."""
    raw = query.get("filter[type_in]")
    if raw is None:
        return None
    values = frozenset(value.lower() for value in comma_list(raw))
    unknown = sorted(values - ASSET_TYPES)
    if unknown:
        raise invalid_parameter(
            "filter[type_in]",
            f"unknown type(s) {', '.join(unknown)}; allowed: endpoint, gateway, ucm",
        )
    return values


def duration(raw: str, name: str) -> float:
    """A Go-style duration (`30s`, `1m30s`, `1.5h`, `500ms`) in seconds; a bare number is seconds."""
    text = raw.strip()
    if text.isascii() and text.isdigit() and len(text) <= 12:
        seconds = float(text)
    else:
        parts = _DURATION_PART.findall(text)
        if not text or "".join(number + unit for number, unit in parts) != text:
            raise invalid_parameter(name, f'expected a duration such as "30s" or "5m", got {raw[:40]!r}')
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise invalid_parameter(name, f"is too long: {raw[:40]!r}")
    return seconds


def relevance_interval(query: Mapping[str, str]) -> float:
    """`relevance_interval` in seconds (default 30 s): older values do not count as current."""
    raw = query.get("relevance_interval")
    return DEFAULT_RELEVANCE_S if raw is None or raw == "" else duration(raw, "relevance_interval")


def latest_selectors(query: Mapping[str, str]) -> dict[str, list[str]]:
    """`devices[<device>]=a,b` pairs -> {device: [attributes]}; an empty list means every attribute."""
    selected: dict[str, list[str]] = {}
    for key, value in query.items():
        match = _DEVICE_SELECTOR.fullmatch(key)
        if match is None:
            continue
        selected.setdefault(match.group(1), []).extend(comma_list(value))
    if not selected:
        raise invalid_parameter("devices", "name at least one device: devices[<device id>]=<attribute>,...")
    if len(selected) > MAX_LATEST_DEVICES:
        raise invalid_parameter("devices", f"at most {MAX_LATEST_DEVICES} devices per request")
    return selected


# The seconds of an RFC 3339 time (`T23:59:60`, `t23:59:60.5`): the date part has no second colon.
_LEAP_SECOND = re.compile(r"(?<=[Tt ]\d\d:\d\d):60(?=[.,Zz+-]|$)")


def moment(raw: str, name: str) -> float:
    """An RFC 3339 time (`2025-01-01T00:00:00Z`, with any offset) or unix seconds, as unix seconds."""
    text = raw.strip()
    try:
        if text.isascii() and text.replace(".", "", 1).isdigit():
            seconds = float(text)
            # float() of a few hundred digits is inf, which is no time.
            if not math.isfinite(seconds):
                raise invalid_parameter(name, f"is out of range: {raw[:40]!r}")
            return seconds
        # RFC 3339 allows a lower-case `z` (fromisoformat does not) and a leap second, which
        # unix time does not have: 23:59:60 is read as the second after 23:59:59.
        text = text[:-1] + "Z" if text.endswith("z") else text
        leap = _LEAP_SECOND.search(text)
        if leap is not None:
            text = text[: leap.start()] + ":59" + text[leap.end() :]
        parsed = dt.datetime.fromisoformat(text) + dt.timedelta(seconds=1 if leap else 0)
    except (ValueError, OverflowError):
        raise invalid_parameter(
            name, f"expected an RFC 3339 time or unix seconds, got {raw[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        raise invalid_parameter(name, f"needs a time zone (e.g. a trailing Z), got {raw[:40]!r}")
    return parsed.timestamp()


def optional_moment(query: Mapping[str, str], name: str) -> float | None:
    """`moment` of the parameter `name`; None when it is absent or empty."""
    raw = query.get(name)
    return moment(raw, name) if raw else None


@dataclass(frozen=True, slots=True)
class LogQuery:
    """`GET /v3/devices/{id}/logs` filters (`enapter-http-api.md` §7.3)."""

    received_from: float | None
    received_to: float | None
    # The least severe level shown: `severity=warning` shows warnings and errors.
    severity: LogSeverity | None
    newest_first: bool
    persisted: bool | None  # None: both persisted and temporary logs
    page: Page


_LOG_ORDERS: dict[str, bool] = {"RECEIVED_AT_ASC": False, "RECEIVED_AT_DESC": True}
_LOG_SHOW: dict[str, bool | None] = {"ALL": None, "PERSISTED_ONLY": True, "TEMPORARY_ONLY": False}
T = TypeVar("T")


def _choice(query: Mapping[str, str], name: str, choices: Mapping[str, T], default: str) -> T:
    raw = query.get(name) or default
    if raw.upper() not in choices:
        raise invalid_parameter(name, f"must be one of {', '.join(choices)}, got {raw[:40]!r}")
    return choices[raw.upper()]


def log_query(query: Mapping[str, str]) -> LogQuery:
    """The log filters; every bad value is a 400 naming its parameter."""
    received_from = optional_moment(query, "received_at_from")
    received_to = optional_moment(query, "received_at_to")
    severity: LogSeverity | None = None
    if query.get("severity"):
        raw = query["severity"].strip().lower()
        if raw not in LogSeverity.__members__.values():
            allowed = ", ".join(level.value for level in LogSeverity)
            raise invalid_parameter("severity", f"must be one of {allowed}, got {raw[:40]!r}")
        severity = LogSeverity(raw)
    return LogQuery(
        received_from=received_from,
        received_to=received_to,
        severity=severity,
        newest_first=_choice(query, "order", _LOG_ORDERS, "RECEIVED_AT_ASC"),
        persisted=_choice(query, "show", _LOG_SHOW, "ALL"),
        page=page(query),
    )


def json_object(body: bytes) -> JsonObject:
    """A request body that must be a JSON object. Content-Type is not checked: the CLI sends none.

    Strict JSON: NaN, Infinity and numbers that overflow to them are not JSON (and would make the
    replies that echo them not JSON either); lone UTF-16 surrogates (from a `\\ud800` escape, or in
    a UTF-16 body) cannot be stored by SQLite. Both are refused like any other invalid body.
    """
    if not body.strip():
        return {}
    try:
        value = json.loads(body, parse_constant=reject_constant, parse_float=finite_float)
        json.dumps(value, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object.")
    return value


def optional_string(body: JsonObject, name: str, *, max_length: int = 200, parent: str = "") -> str | None:
    """A string field that may be absent, null or empty (all meaning "not given").

    `parent` is the path of `body` inside the request body (`"location."`), for the error.
    """
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_parameter(parent + name, "must be a string")
    if len(value) > max_length:
        raise invalid_parameter(parent + name, f"must be at most {max_length} characters")
    return value


@dataclass(frozen=True, slots=True)
class ExecutionQuery:
    """Command execution list filters (`enapter-http-api.md` §6)."""

    created_from: float | None
    created_before: float | None
    states: frozenset[ExecutionState] | None
    names: frozenset[str] | None
    # `device_id.in` on the site-wide list; None = every device.
    device_ids: frozenset[str] | None
    include_ephemeral: bool
    newest_first: bool
    with_log: bool
    page: Page


_EXECUTION_ORDERS: dict[str, bool] = {"CREATED_AT_ASC": False, "CREATED_AT_DESC": True}
EXECUTION_EXPANDS = frozenset({"log", "ephemeral"})


def execution_query(query: Mapping[str, str]) -> ExecutionQuery:
    """The execution list filters; every bad value is a 400 naming its parameter."""
    states: frozenset[ExecutionState] | None = None
    if query.get("state.in"):
        raw_states = {state.upper() for state in comma_list(query["state.in"])}
        unknown = raw_states - set(ExecutionState.__members__.values())
        if unknown:
            allowed = ", ".join(state.value for state in ExecutionState)
            raise invalid_parameter("state.in", f"must be among {allowed}, got {sorted(unknown)[0][:40]!r}")
        states = frozenset(ExecutionState(state) for state in raw_states)
    expands = expand(query, EXECUTION_EXPANDS)
    return ExecutionQuery(
        created_from=optional_moment(query, "created_at.gte"),
        created_before=optional_moment(query, "created_at.lt"),
        states=states,
        names=frozenset(comma_list(query["name.in"])) if query.get("name.in") else None,
        device_ids=frozenset(comma_list(query["device_id.in"])) if query.get("device_id.in") else None,
        include_ephemeral="ephemeral" in expands,
        newest_first=_choice(query, "order", _EXECUTION_ORDERS, "CREATED_AT_ASC"),
        with_log="log" in expands,
        page=page(query),
    )


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """The body of `execute_command` and `command_executions`."""

    name: str
    arguments: JsonObject
    ephemeral: bool


def command_request(body: JsonObject, *, name_field: str = "name") -> CommandRequest:
    """`{"name", "arguments"?, "ephemeral"?}`; `arguments` absent or null means `{}`."""
    name = optional_string(body, name_field)
    if name is None:
        raise invalid_parameter(name_field, "is required")
    arguments = body.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise invalid_parameter("arguments", "must be an object")
    ephemeral = body.get("ephemeral", False)
    if ephemeral is None:
        ephemeral = False
    if not isinstance(ephemeral, bool):
        raise invalid_parameter("ephemeral", "must be true or false")
    return CommandRequest(name=name, arguments=arguments, ephemeral=ephemeral)


def slug(body: JsonObject, name: str = "slug") -> str | None:
    """An optional device slug (absent, null or "" = not given) that follows the slug rules."""
    value = optional_string(body, name, max_length=slugs.MAX_SLUG_LENGTH)
    if value is not None:
        problem = slugs.slug_problem(value)
        if problem is not None:
            raise invalid_parameter(name, problem)
    return value


@dataclass(frozen=True, slots=True)
class DeviceChanges:
    """`PATCH /v3/devices/{device}`: None = unchanged (python-sdk sends null, the CLI "")."""

    name: str | None
    slug: str | None


def device_changes(body: JsonObject) -> DeviceChanges:
    """Parse a device PATCH body; `device_name` is the older docs' name for `name`."""
    name = optional_string(body, "name") or optional_string(body, "device_name")
    if name is not None and not name.strip():
        raise invalid_parameter("name", "must not be blank")
    return DeviceChanges(name=name, slug=slug(body))


@dataclass(frozen=True, slots=True)
class SiteChanges:
    """`PATCH /v3/site`: None = unchanged (python-sdk sends null for what it leaves alone)."""

    name: str | None
    timezone: str | None
    location: Location | None


def site_changes(body: JsonObject) -> SiteChanges:
    """Parse a site PATCH (or create) body. The time zone's existence is checked by the caller."""
    name = optional_string(body, "name")
    if name is not None and not name.strip():
        raise invalid_parameter("name", "must not be blank")
    timezone = optional_string(body, "timezone", max_length=64)
    raw = body.get("location")
    if raw is None:
        return SiteChanges(name=name, timezone=timezone, location=None)
    if not isinstance(raw, dict):
        raise invalid_parameter("location", "must be an object with name, latitude and longitude")
    unknown = sorted(set(raw) - {"name", "latitude", "longitude"})
    if unknown:
        raise invalid_parameter(f"location.{unknown[0]}", "is not a location field")
    location = Location(
        name=optional_string(raw, "name", parent="location."),
        latitude=_coordinate(raw, "latitude", 90.0),
        longitude=_coordinate(raw, "longitude", 180.0),
    )
    return SiteChanges(name=name, timezone=timezone, location=location)


def _coordinate(location: JsonObject, name: str, bound: float) -> float | None:
    """A latitude or longitude in degrees; one docs version had them as strings, so those parse too."""
    value = location.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise invalid_parameter(f"location.{name}", "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_parameter(f"location.{name}", "must be a number")
    if not -bound <= value <= bound:
        raise invalid_parameter(f"location.{name}", f"must be between {-bound:g} and {bound:g}")
    return float(value)


def mqtt_protocol(body: JsonObject) -> MqttProtocol:
    """`protocol`: "MQTT" or "MQTTS", in any case."""
    raw = body.get("protocol")
    if not isinstance(raw, str) or raw.upper() not in MqttProtocol.__members__:
        raise invalid_parameter("protocol", 'must be "MQTT" or "MQTTS"')
    return MqttProtocol(raw.upper())


def stats_window(query: Mapping[str, str]) -> tuple[str, float]:
    """`window` of the site statistics (default 24h): its name and length in seconds."""
    name = query.get("window") or DEFAULT_STATS_WINDOW
    seconds = stats.WINDOWS.get(name)
    if seconds is None:
        raise invalid_parameter("window", f"must be one of {', '.join(stats.WINDOWS)}, got {name[:40]!r}")
    return name, seconds


# --- finding devices (issue 8) -------------------------------------------------------------------

DEVICE_FILTERS = (
    "type.in",
    "connectivity.in",
    "tag.in",
    "blueprint_id.in",
    "created_at.gte",
    "created_at.lt",
    "raised_alert_names.in",
)
"""The device list's filter parameters; any other `<field>.<operator>` parameter is a 400."""
E = TypeVar("E", DeviceType, Connectivity)


def _enum_set(query: Mapping[str, str], name: str, kind: type[E]) -> frozenset[E] | None:
    if not query.get(name):
        return None
    allowed = {member.value: member for member in kind}
    chosen: set[E] = set()
    for raw in comma_list(query[name]):
        member = allowed.get(raw.upper())
        if member is None:
            raise invalid_parameter(name, f"must be among {', '.join(allowed)}, got {raw[:40]!r}")
        chosen.add(member)
    return frozenset(chosen)


def _text_set(query: Mapping[str, str], name: str) -> frozenset[str] | None:
    return frozenset(comma_list(query[name])) if query.get(name) else None


def device_filter(query: Mapping[str, str]) -> DeviceFilter:
    """`q`, the `DEVICE_FILTERS` and `order` of `GET /v3/devices`; absent or empty = not used.

    A parameter shaped like a filter (`foo.in`, `name.gte`) that is not one of them is a 400 naming
    it, so a typo never silently lists every device; other parameters are ignored as before
    (Enapter's clients send `expand`, `limit`, `offset`).
    """
    unknown = sorted(key for key in query if "." in key and key not in DEVICE_FILTERS)
    if unknown:
        raise invalid_parameter(
            unknown[0], f"is not a device filter; the filters: {', '.join(DEVICE_FILTERS)}"
        )
    try:
        terms = search_terms(query.get("q", ""))
    except SearchTextError as exc:
        raise invalid_parameter("q", str(exc)) from None
    order: DeviceOrder | None = None
    if query.get("order"):
        order = _choice(query, "order", {o.value: o for o in DeviceOrder}, "")
    return DeviceFilter(
        terms=terms,
        types=_enum_set(query, "type.in", DeviceType),
        connectivity=_enum_set(query, "connectivity.in", Connectivity),
        tags=_text_set(query, "tag.in"),
        blueprint_ids=_text_set(query, "blueprint_id.in"),
        created_from=optional_moment(query, "created_at.gte"),
        created_before=optional_moment(query, "created_at.lt"),
        raised_alert_names=_text_set(query, "raised_alert_names.in"),
        order=order,
    )


# --- Timeline (the gateway's own addition) -------------------------------------------------------


def event_types(query: Mapping[str, str]) -> frozenset[EventType] | None:
    """`type.in=connected,disconnected` (repeatable); None when absent (every type)."""
    getall = getattr(query, "getall", None)
    raws: list[str] = getall("type.in", []) if getall is not None else [query.get("type.in", "")]
    names = {name.lower() for raw in raws for name in comma_list(raw)}
    if not names:
        return None
    unknown = sorted(names - set(EventType.__members__.values()))
    if unknown:
        allowed = ", ".join(event_type.value for event_type in EventType)
        raise invalid_parameter("type.in", f"unknown type {unknown[0][:40]!r}; allowed: {allowed}")
    return frozenset(EventType(name) for name in names)


@dataclass(frozen=True, slots=True)
class TimelineQuery:
    """`GET /v3/devices/{device}/timeline` filters: types, `timestamp.gte` <= time < `timestamp.lt`."""

    types: frozenset[EventType] | None
    since: float | None
    until: float | None
    page: Page


def timeline_query(query: Mapping[str, str]) -> TimelineQuery:
    """The timeline filters; every bad value is a 400 naming its parameter."""
    since = optional_moment(query, "timestamp.gte")
    until = optional_moment(query, "timestamp.lt")
    return TimelineQuery(
        types=event_types(query),
        since=since,
        until=until,
        page=page(query),
    )


@dataclass(frozen=True, slots=True)
class UserEvent:
    """`POST /v3/devices/{device}/events`: a user-triggered timeline event."""

    code: str
    description: str | None


def user_event(body: JsonObject) -> UserEvent:
    """`{"code", "description"?}`: `code` an identifier (a letter, then letters, digits, `_`, `.`,
    `-`; at most 64), `description` optional text of at most 1000 characters."""
    code = body.get("code")
    if code is None or code == "":
        raise invalid_parameter("code", "is required")
    if not isinstance(code, str) or not USER_CODE.fullmatch(code):
        raise invalid_parameter(
            "code", "must be 1-64 characters: a letter, then letters, digits, '_', '.' or '-'"
        )
    description = optional_string(body, "description", max_length=MAX_USER_DESCRIPTION)
    return UserEvent(code=code, description=description)
