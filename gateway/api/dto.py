"""What the API emits: stored records -> the JSON shapes Enapter's clients parse.

Pure. Shapes and enum spellings follow `enapter-http-api.md` §3, §10 and the python-sdk `from_dto`
methods (which raise on a missing required key or an unknown enum value).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.blueprints.manifest import AlertSeverity, Manifest
from gateway.device_search import Tag
from gateway.metadata import MetadataField
from gateway.model import (
    Blueprint,
    CommandExecution,
    Connectivity,
    Device,
    DeviceType,
    ExecutionResponse,
    JsonObject,
    JsonValue,
    LatestValue,
    Location,
    LogEntry,
    Mismatch,
    MqttProtocol,
    Role,
    Site,
)
from gateway.timeline import DeviceEvent

_UTC = dt.UTC
_from_timestamp = dt.datetime.fromtimestamp


def rfc3339(timestamp: float) -> str:
    """Unix seconds -> `2025-08-04T07:22:07.988115Z` (python-sdk uses fromisoformat, Go RFC 3339)."""
    moment = _from_timestamp(timestamp, _UTC)
    # What strftime("%Y-%m-%dT%H:%M:%S.%fZ") gives, in a third of its time (this runs for every
    # timestamp of every device list); the year unpadded as glibc's %Y writes it before 1000.
    return "%d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (quicker than an f-string)
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


def site(record: Site, role: Role) -> JsonObject:
    """The site object."""
    return {
        "id": record.id,
        "name": record.name,
        "timezone": record.timezone,
        "version": "V3",
        "authorized_role": role.value,
        "archived": False,
        "location": None if record.location is None else location(record.location),
    }


def blueprint(record: Blueprint) -> JsonObject:
    """`{"id", "created_at"}`: all that Enapter's clients read of a blueprint (§3.4)."""
    return {"id": record.id, "created_at": rfc3339(record.created_at)}


def location(record: Location) -> JsonObject:
    """`{"name", "latitude", "longitude"}`, each possibly null."""
    return {"name": record.name, "latitude": record.latitude, "longitude": record.longitude}


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device with the live facts an expanded device object may show."""

    device: Device
    properties: dict[str, JsonValue]
    connectivity: Connectivity
    raised_alert_names: list[str]
    # The compiled manifest of the device's blueprint; None without one.
    manifest: JsonObject | None = None
    implemented_profiles: tuple[str, ...] = ()
    alert_details: list[JsonObject] = field(default_factory=list)
    # (what, how many times, last received) for `expand=manifest_mismatches`
    mismatches: list[tuple[Mismatch, int, float]] = field(default_factory=list)
    # `expand=tags` and `expand=metadata` (own values, and defaults where the device has none).
    tags: list[Tag] = field(default_factory=list)
    metadata: JsonObject = field(default_factory=dict)


def device(view: DeviceView, *, role: Role, expand: frozenset[str], site_record: Site) -> JsonObject:
    """The v3 device object, with the `expand`ed keys only."""
    record = view.device
    body: JsonObject = {
        "id": record.id,
        "blueprint_id": record.blueprint_id,
        "name": record.name,
        "site_id": record.site_id,
        "updated_at": rfc3339(record.updated_at),
        "slug": record.slug,
        "type": record.type.value,
        "authorized_role": role.value,
        "implemented_profiles": list(view.implemented_profiles),
    }
    if "manifest" in expand:
        body["manifest"] = view.manifest
    if "properties" in expand:
        body["properties"] = dict(view.properties)
    if "connectivity" in expand:
        body["connectivity"] = {"status": view.connectivity.value}
    if "communication" in expand:
        body["communication"] = {
            "type": None if record.communication_type is None else record.communication_type.value,
            "upstream_id": record.upstream_id,
            "hardware_id": record.hardware_id,
            "channel_id": record.channel_id,
        }
    if "communication_info" in expand:
        # The older name of the same facts (enapter-http-api.md §3.1).
        body["communication_info"] = {
            "communication_type": (
                None if record.communication_type is None else record.communication_type.value
            ),
            "upstream_id": record.upstream_id,
        }
    if "site" in expand:
        body["site"] = site(site_record, role)
    if "raised_alert_names" in expand:
        body["raised_alert_names"] = list(view.raised_alert_names)
    if "raised_alerts" in expand:
        body["raised_alerts"] = list(view.alert_details)
    if "manifest_mismatches" in expand:
        body["manifest_mismatches"] = [
            {
                "section": mismatch.section,
                "attribute": mismatch.attribute,
                "reason": mismatch.reason,
                "count": count,
                "last_seen_at": rfc3339(last_seen),
            }
            for mismatch, count, last_seen in view.mismatches
        ]
    if "tags" in expand:
        body["tags"] = [{"id": tag.id, "name": tag.name} for tag in view.tags]
    if "metadata" in expand:
        body["metadata"] = dict(view.metadata)
    return body


def alert_details(manifest: Manifest | None, names: Sequence[str]) -> list[JsonObject]:
    """Raised alerts with their declared severity and display name; an undeclared alert counts
    as `error` under its own name (`enapter-device-protocol.md` §1.3)."""
    details: list[JsonObject] = []
    for name in names:
        declared = None if manifest is None else manifest.alerts.get(name)
        details.append(
            {
                "name": name,
                "severity": AlertSeverity.ERROR.value if declared is None else declared.severity.value,
                "display_name": name if declared is None else declared.display_name,
                "declared": declared is not None,
            }
        )
    return details


_UCM_TYPES = frozenset(
    {
        DeviceType.EMBEDDED_UCM,
        DeviceType.HARDWARE_UCM,
        DeviceType.VIRTUAL_UCM,
        DeviceType.LINK_MASTER_UCM,
        DeviceType.LINK_SLAVE_UCM,
    }
)


def asset_type(device_type: DeviceType) -> str:
    """Assets API v1 device type: `*_UCM` -> ucm, GATEWAY -> gateway, everything else -> endpoint."""
    if device_type in _UCM_TYPES:
        return "ucm"
    if device_type is DeviceType.GATEWAY:
        return "gateway"
    return "endpoint"


def asset_types_to_device_types(asset_types: frozenset[str]) -> frozenset[DeviceType]:
    """The v3 device types an Assets API `filter[type_in]` selects."""
    return frozenset(t for t in DeviceType if asset_type(t) in asset_types)


def asset_device(view: DeviceView, *, expand: frozenset[str]) -> JsonObject:
    """The Assets API v1 device object."""
    record = view.device
    body: JsonObject = {
        "device_id": record.id,
        "type": asset_type(record.type),
        "updated_at": rfc3339(record.updated_at),
    }
    if "properties" in expand:
        body["properties"] = dict(view.properties)
    if "connectivity" in expand:
        body["connectivity"] = {"online": view.connectivity is Connectivity.ONLINE}
    if "manifest" in expand:
        body["manifest"] = view.manifest
    return body


@dataclass(frozen=True, slots=True)
class TimeSync:
    protocol: str
    host: str
    port: int


def communication_config(
    *,
    host: str,
    port: int,
    protocol: MqttProtocol,
    credentials: JsonObject,
    hardware_id: str,
    channel_id: str,
    time_sync: TimeSync,
) -> JsonObject:
    """The `config` object of generate_config: also the device's base64 blob.

    The protocol goes both on top (python-sdk reads `mqtt_protocol`) and inside the credentials
    (the docs' shape), see `enapter-device-protocol.md` §1.6.
    """
    return {
        "mqtt_host": host,
        "mqtt_port": port,
        "mqtt_protocol": protocol.value,
        "mqtt_credentials": {"protocol": protocol.value, **credentials},
        "time_sync_protocol": time_sync.protocol,
        "time_sync_host": time_sync.host,
        "time_sync_port": time_sync.port,
        "hardware_id": hardware_id,
        "channel_id": channel_id,
    }


ATTRIBUTE_NOT_FOUND = "Telemetry attribute is not found."
ATTRIBUTE_OUTDATED = "Telemetry attribute value is outdated."


def unix_seconds(timestamp: float) -> int | float:
    """Whole seconds as an integer, as the reference shows; fractions are kept."""
    return int(timestamp) if float(timestamp).is_integer() else timestamp


def latest_telemetry(
    values: Mapping[str, LatestValue], attributes: Sequence[str], *, now: float, relevance: float
) -> JsonObject:
    """`{attribute: {"value", "timestamp"} | {"warning"}}` for `telemetry/latest` and device telemetry.

    An empty `attributes` means every attribute the device has sent. A value older than `relevance`
    seconds (by its device timestamp) is not current: python-sdk reads an entry without `timestamp`
    as "no value" (`enapter-http-api.md` §7.1).
    """
    body: JsonObject = {}
    for attribute in attributes or sorted(values):
        found = values.get(attribute)
        if found is None:
            body[attribute] = {"warning": ATTRIBUTE_NOT_FOUND}
        elif now - found.timestamp > relevance:
            body[attribute] = {"warning": ATTRIBUTE_OUTDATED}
        else:
            body[attribute] = _datapoint(found)
    return body


def _datapoint(found: LatestValue) -> JsonObject:
    return {"value": found.value, "timestamp": unix_seconds(found.timestamp)}


def current_values(values: Mapping[str, LatestValue], attributes: Sequence[str]) -> JsonObject:
    """`{attribute: {"value", "timestamp"}}` for the attributes that have a value (all when empty)."""
    return {name: _datapoint(values[name]) for name in attributes or sorted(values) if name in values}


def not_found_problem(message: str, **details: str) -> JsonObject:
    """An error-envelope item reported beside data (v1 APIs put `errors` next to what was found)."""
    return {"code": "not_found", "message": message, "details": dict(details)}


def log_entry(entry: LogEntry, received_at: float) -> JsonObject:
    """One device log line (`enapter-http-api.md` §7.3: the CLI reads `timestamp` as an integer)."""
    return {
        "timestamp": int(entry.timestamp),
        "received_at": rfc3339(received_at),
        "severity": entry.severity.value,
        "message": entry.message,
        "persist": entry.persist,
    }


def execution(record: CommandExecution, *, with_log: bool) -> JsonObject:
    """A command execution (`enapter-http-api.md` §3.3); `log` (newest first) only when asked."""
    responses = [execution_response(response) for response in reversed(record.responses)]
    body: JsonObject = {
        "id": record.id,
        "device_id": record.device_id,
        "state": record.state.value,
        "ephemeral": record.ephemeral,
        "created_at": rfc3339(record.created_at),
        "request": {
            "name": record.name,
            "arguments": dict(record.arguments),
            "manifest_name": record.manifest_name,
        },
        "response": responses[0] if responses else None,
    }
    if with_log:
        body["log"] = list(responses)
    return body


def execution_response(response: ExecutionResponse) -> JsonObject:
    """One response: `{"state", "payload", "received_at"}`."""
    return {
        "state": response.state.value,
        "payload": dict(response.payload),
        "received_at": rfc3339(response.received_at),
    }


@dataclass(frozen=True, slots=True)
class SiteStats:
    """What `GET /v3/site/stats` reports over one window."""

    window: str
    start: float
    end: float
    devices: Sequence[DeviceView]
    provisioned: int
    data_points: int
    executions_by_state: Mapping[str, int]
    dropped_by_reason: Mapping[str, int]
    dropped_since: float
    # tag name -> devices carrying it
    by_tag: Mapping[str, int]
    # device id -> the part of the window it was online, 0-1 (devices that connect at all)
    online_fractions: Mapping[str, float]


def _tally(keys: Sequence[str]) -> JsonObject:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return {key: counts[key] for key in sorted(counts)}


def site_stats(stats: SiteStats) -> JsonObject:
    """The `stats` object: counts over the site's devices now, and what happened in the window."""
    devices = [view.device for view in stats.devices]
    return {
        "window": stats.window,
        "from": rfc3339(stats.start),
        "to": rfc3339(stats.end),
        "devices": {
            "total": len(devices),
            "by_type": _tally([device.type.value for device in devices]),
            "by_connectivity": _tally([view.connectivity.value for view in stats.devices]),
            "by_blueprint": _tally([device.blueprint_id for device in devices]),
            "by_tag": {name: stats.by_tag[name] for name in sorted(stats.by_tag)},
            "provisioned": stats.provisioned,
        },
        "uptime_percent": {
            device_id: round(100 * stats.online_fractions[device_id], 2)
            for device_id in sorted(stats.online_fractions)
        },
        "telemetry": {"data_points": stats.data_points},
        "messages": {
            "dropped": sum(stats.dropped_by_reason.values()),
            "dropped_by_reason": {
                reason: stats.dropped_by_reason[reason] for reason in sorted(stats.dropped_by_reason)
            },
            # Drops are counted in memory: from the daemon's start when that is inside the window.
            "counted_since": rfc3339(stats.dropped_since),
        },
        "commands": {
            "total": sum(stats.executions_by_state.values()),
            "by_outcome": {
                state: stats.executions_by_state[state] for state in sorted(stats.executions_by_state)
            },
        },
    }


def tag(record: Tag) -> JsonObject:
    """A tag, with how many devices carry it."""
    return {
        "id": record.id,
        "name": record.name,
        "device_count": record.device_count,
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
    }


def metadata_field(record: MetadataField) -> JsonObject:
    """A metadata field definition; `options` only for enum fields, `default` null when none."""
    body: JsonObject = {
        "name": record.name,
        "type": record.type.value,
        "required": record.required,
        "default": record.default,
        "description": record.description,
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
    }
    if record.options:
        body["options"] = list(record.options)
    return body


def timeline_event(event: DeviceEvent) -> JsonObject:
    """A timeline event, as the timeline lists it and the event stream sends it:
    `{"id", "device_id", "type", "timestamp", "details"}` (`gateway.timeline` lists the details)."""
    return {
        "id": event.id,
        "device_id": event.device_id,
        "type": event.type.value,
        "timestamp": rfc3339(event.timestamp),
        "details": dict(event.details),
    }
