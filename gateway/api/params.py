"""Query parameters and request bodies: text in, typed values out, or a 400 naming the parameter.

Pure. Clients send more than the docs show (python-sdk always sends `expand=`, possibly empty; the CLI
sends `limit=50&offset=N`), see `enapter-http-api.md` §1.4-1.5.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from gateway.api.errors import bad_request, invalid_parameter
from gateway.model import JsonObject

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
    }
)
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


@dataclass(frozen=True, slots=True)
class Page:
    offset: int
    limit: int


def _integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.lstrip("-").isdigit():
        raise invalid_parameter(name, f"expected an integer, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise invalid_parameter(name, f"must be between {low} and {high}, got {value}")
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


def json_object(body: bytes) -> JsonObject:
    """A request body that must be a JSON object. Content-Type is not checked: the CLI sends none."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object.")
    return value


def optional_string(body: JsonObject, name: str, *, max_length: int = 200) -> str | None:
    """A string field that may be absent, null or empty (all meaning "not given")."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_parameter(name, "must be a string")
    if len(value) > max_length:
        raise invalid_parameter(name, f"must be at most {max_length} characters")
    return value
