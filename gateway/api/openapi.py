"""The OpenAPI 3.1 document of every endpoint the gateway serves, and a docs page rendered from it.

`document()` and `render_html()` are pure: plain values in, a dict or an HTML string out. The two
handlers at the end are the thin shell that serves them at `GET /api/openapi.json` and
`GET /api/docs` (no token, like `/api/health`): the gateway runs offline on a LAN, so the page is
rendered here, with no CDN and no JavaScript.

OpenAPI 3.1 rather than 3.0.3: its schemas are JSON Schema 2020-12, so nullable fields are
`"type": [..., "null"]`, fixed values are `const`, and the tests validate real responses against
the very schemas below with a stock JSON Schema validator, with no 3.0 dialect to translate.

The shapes are written from the handlers and `gateway.api.dto` (what is sent, not what the
vendor docs show): objects the gateway builds itself have `additionalProperties: false`, so a field
added without documenting it fails the conformance tests; maps whose keys come from devices
(properties, manifests, telemetry) say `additionalProperties` and what the values are. Enum values
come from `gateway.model`, so they cannot drift from what is emitted. The minimum role of each
operation comes from the route table (`gateway.api.app`), passed in as `roles`.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.api.auth import ACCESS, TOKEN_HEADER
from gateway.api.dto import ATTRIBUTE_NOT_FOUND, ATTRIBUTE_OUTDATED
from gateway.api.params import (
    ASSET_EXPANDS,
    ASSET_TYPES,
    DEFAULT_LIMIT,
    DEFAULT_STATS_WINDOW,
    DEVICE_EXPANDS,
    EXECUTION_EXPANDS,
    MAX_LATEST_DEVICES,
    MAX_LIMIT,
    MAX_OFFSET,
)
from gateway.api.render import json_response
from gateway.api.timeseries import MAX_SELECTORS, Aggregation, DataType, GapFillingMethod
from gateway.api.v3.telemetry import DEVICE_NOT_FOUND
from gateway.blueprints.manifest import AlertSeverity
from gateway.device_search import MIN_TERM_LENGTH, DeviceOrder
from gateway.metadata import FieldType
from gateway.model import (
    CommandResponseState,
    CommunicationType,
    Connectivity,
    DeviceType,
    ExecutionState,
    LogSeverity,
    MqttProtocol,
    Role,
)
from gateway.stats import WINDOWS
from gateway.timeline import MAX_USER_DESCRIPTION, EventType

OPENAPI_VERSION = "3.1.0"
DOCUMENT_PATH = "/api/openapi.json"
DOCS_PATH = "/api/docs"
SECURITY_SCHEME = "EnapterAuthToken"
# The extension naming each operation's lowest role (null: no token needed).
ROLE_EXTENSION = "x-minimum-role"

Doc = dict[str, Any]
# (HTTP method, path template) -> the lowest role that may call it; None: no token needed.
Roles = Mapping[tuple[str, str], Role | None]


# --- Schema building blocks ----------------------------------------------------------------------


def _ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _enum(values: Iterable[str], description: str = "") -> Doc:
    schema: Doc = {"type": "string", "enum": list(values)}
    if description:
        schema["description"] = description
    return schema


def _nullable(schema: Doc) -> Doc:
    """`schema` or null (JSON Schema 2020-12; a `$ref` cannot take a `type` list, so `oneOf`)."""
    if "$ref" in schema:
        return {"oneOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def _object(
    properties: Mapping[str, Doc],
    required: Sequence[str] | None = None,
    *,
    description: str = "",
    closed: bool = True,
) -> Doc:
    """An object with these properties; all required unless `required` says otherwise; `closed`:
    no other keys (the gateway builds it and sends nothing else)."""
    schema: Doc = {"type": "object", "properties": dict(properties)}
    schema["required"] = list(properties) if required is None else list(required)
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _string(description: str = "", **extra: Any) -> Doc:
    schema: Doc = {"type": "string", **extra}
    if description:
        schema["description"] = description
    return schema


def _integer(description: str = "", **extra: Any) -> Doc:
    schema: Doc = {"type": "integer", **extra}
    if description:
        schema["description"] = description
    return schema


_TIME = _string("RFC 3339, UTC, with microseconds: `2025-08-04T07:22:07.988115Z`.", format="date-time")
_ANY_JSON: Doc = {"description": "Any JSON value."}
_FREE_OBJECT: Doc = {"type": "object", "additionalProperties": True}
_NULLABLE_STRING: Doc = {"type": ["string", "null"]}
# What `params.optional_string` takes for a required name: 1-200 characters, not all blank.
_NAME = _string(minLength=1, maxLength=200, pattern=r"\S")
# `gateway.slugs.slug_problem`; "" and null mean "not given". (Not shaped like a device id, too.)
_SLUG: Doc = {
    "type": ["string", "null"],
    "pattern": "^([a-z0-9][a-z0-9_-]{0,63})?$",
    "description": "1-64 of `a-z 0-9 - _`, starting with a letter or digit, not shaped like a device "
    'id; "" or null: not given.',
}
# `gateway.api.timeseries._label`: what fits a CSV label cell `device=<d> telemetry=<a>`.
_LABEL = _string(minLength=1, maxLength=256, pattern=r"^[^\s=,]+$")


def _free_object(description: str) -> Doc:
    return {**_FREE_OBJECT, "description": description}


# --- Components ----------------------------------------------------------------------------------


def _schemas() -> Doc:
    """`components/schemas`: every shape sent or read, by name."""
    datapoint = _object(
        {"value": _ANY_JSON, "timestamp": {"type": "number", "description": "Unix seconds (device time)."}},
        description="The newest value of an attribute.",
    )
    return {
        **_finding_schemas(),
        # Errors (`enapter-http-api.md` §1.6).
        "Error": _object(
            {
                "code": _string("A stable code, e.g. `not_found`, `invalid_query_parameter`."),
                "message": _string("For humans."),
                "details": _free_object("Facts about the error (e.g. `parameter`, `header`); optional."),
            },
            ["code", "message"],
        ),
        "ErrorEnvelope": _object(
            {"errors": {"type": "array", "items": _ref("Error"), "minItems": 1}},
            description="Every 4xx and 5xx answer of the API (not of `/api/health`).",
        ),
        # Enums, exactly as emitted.
        "Role": _enum((role.value for role in Role), "API roles, lowest first."),
        "DeviceType": _enum(t.value for t in DeviceType),
        "CommunicationType": _enum(t.value for t in CommunicationType),
        "ConnectivityStatus": _enum(c.value for c in Connectivity),
        "MqttProtocol": _enum(p.value for p in MqttProtocol),
        "LogSeverity": _enum(s.value for s in LogSeverity),
        "ExecutionState": _enum(s.value for s in ExecutionState),
        "CommandResponseState": _enum(s.value for s in CommandResponseState),
        # Sites.
        "Location": _object(
            {
                "name": _NULLABLE_STRING,
                "latitude": {"type": ["number", "null"], "minimum": -90, "maximum": 90},
                "longitude": {"type": ["number", "null"], "minimum": -180, "maximum": 180},
            }
        ),
        "Site": _object(
            {
                "id": _string(),
                "name": _string(),
                "timezone": _string("An IANA time zone name."),
                "version": {"const": "V3"},
                "authorized_role": {**_ref("Role"), "description": "The caller's role."},
                "archived": {"type": "boolean", "description": "Always false: the gateway's one site."},
                "location": _nullable(_ref("Location")),
            }
        ),
        "SiteEnvelope": _object({"site": _ref("Site")}),
        "SiteStatsEnvelope": _object({"stats": _ref("SiteStats")}),
        "SiteStats": _site_stats_schema(),
        "SiteList": _object(
            {"sites": {"type": "array", "items": _ref("Site")}, "total_count": _integer(minimum=0)}
        ),
        "SiteChanges": _object(
            {
                "name": {**_NULLABLE_STRING, "maxLength": 200, "pattern": r"^$|\S"},
                "timezone": {**_NULLABLE_STRING, "maxLength": 64, "description": "An IANA time zone name."},
                "location": _nullable(
                    _object(
                        {
                            "name": {**_NULLABLE_STRING, "maxLength": 200},
                            "latitude": {
                                "type": ["number", "string", "null"],
                                "description": "Degrees, -90 to 90 (a numeric string is read too).",
                            },
                            "longitude": {
                                "type": ["number", "string", "null"],
                                "description": "Degrees, -180 to 180 (a numeric string is read too).",
                            },
                        },
                        [],
                    )
                ),
            },
            [],
            description="Null, absent or empty leaves a field as it is (python-sdk sends null). "
            "Other keys are ignored.",
            closed=False,
        ),
        # Devices.
        "Communication": _object(
            {
                "type": _nullable(_ref("CommunicationType")),
                "upstream_id": {**_NULLABLE_STRING, "description": "The UCM a Lua device runs on."},
                "hardware_id": _NULLABLE_STRING,
                "channel_id": _NULLABLE_STRING,
            }
        ),
        "CommunicationInfo": _object(
            {"communication_type": _nullable(_ref("CommunicationType")), "upstream_id": _NULLABLE_STRING},
            description="The older name of `communication` (`expand=communication_info`).",
        ),
        "RaisedAlert": _object(
            {
                "name": _string(),
                "severity": _enum(s.value for s in AlertSeverity),
                "display_name": _string(),
                "declared": {
                    "type": "boolean",
                    "description": "False for an alert the manifest does not declare (counted as error).",
                },
            }
        ),
        "ManifestMismatch": _object(
            {
                "section": _enum(("telemetry", "properties")),
                "attribute": _string(),
                "reason": _string(),
                "count": _integer(minimum=1),
                "last_seen_at": _TIME,
            }
        ),
        "Manifest": _free_object(
            "The blueprint's compiled manifest as JSON (`description`, `vendor`, `properties`, "
            "`telemetry`, `alerts`, `commands`, ...): its keys are the manifest's."
        ),
        "Device": _object(
            {
                "id": _string(),
                "blueprint_id": _string(
                    "`00000000-0000-0000-0000-000000000000` for a device without a blueprint."
                ),
                "name": _string(),
                "site_id": _string(),
                "updated_at": _TIME,
                "slug": _string(),
                "type": _ref("DeviceType"),
                "authorized_role": {**_ref("Role"), "description": "The caller's role."},
                "implemented_profiles": {"type": "array", "items": _string()},
                "manifest": {**_nullable(_ref("Manifest")), "description": "`expand=manifest`."},
                "properties": _free_object(
                    "`expand=properties`: the device's last properties, as it sent them, without those "
                    "the caller's role may not read."
                ),
                "connectivity": {
                    **_object({"status": _ref("ConnectivityStatus")}),
                    "description": "`expand=connectivity`.",
                },
                "communication": {**_ref("Communication"), "description": "`expand=communication`."},
                "communication_info": _ref("CommunicationInfo"),
                "site": {**_ref("Site"), "description": "`expand=site`."},
                "raised_alert_names": {
                    "type": "array",
                    "items": _string(),
                    "description": "`expand=raised_alert_names`.",
                },
                "raised_alerts": {
                    "type": "array",
                    "items": _ref("RaisedAlert"),
                    "description": "`expand=raised_alerts` (the gateway's own addition).",
                },
                "manifest_mismatches": {
                    "type": "array",
                    "items": _ref("ManifestMismatch"),
                    "description": "`expand=manifest_mismatches` (the gateway's own addition).",
                },
                "tags": {
                    "type": "array",
                    "items": _ref("TagRef"),
                    "description": "`expand=tags`: the device's tags by name.",
                },
                "metadata": {
                    "type": "object",
                    "additionalProperties": _ref("MetadataValue"),
                    "description": "`expand=metadata`: field name -> the device's value, or the field's "
                    "default where the device has none.",
                },
            },
            [
                "id",
                "blueprint_id",
                "name",
                "site_id",
                "updated_at",
                "slug",
                "type",
                "authorized_role",
                "implemented_profiles",
            ],
            description="Each optional key is present exactly when its `expand` value was asked for.",
        ),
        "DeviceEnvelope": _object({"device": _ref("Device")}),
        "DeviceList": _object(
            {"devices": {"type": "array", "items": _ref("Device")}, "total_count": _integer(minimum=0)}
        ),
        "ManifestEnvelope": _object(
            {"manifest": {**_nullable(_ref("Manifest")), "description": "Null without a blueprint."}}
        ),
        "DeviceChanges": _object(
            {
                "name": {**_NULLABLE_STRING, "maxLength": 200, "pattern": r"^$|\S"},
                "device_name": {
                    **_NULLABLE_STRING,
                    "maxLength": 200,
                    "description": "The older docs' name for `name`.",
                },
                "slug": {**_SLUG, "description": _SLUG["description"] + " A taken one is 409."},
            },
            [],
            description='Null, absent or "" leaves a field as it is. Other keys are ignored.',
            closed=False,
        ),
        "BlueprintAssignment": _object(
            {"blueprint_id": _string(minLength=1)}, description="Other keys are ignored.", closed=False
        ),
        "ProtocolChoice": _object(
            {"protocol": {**_ref("MqttProtocol"), "description": "Any letter case."}},
            description="Other keys are ignored.",
            closed=False,
        ),
        "PasswordCredentials": _object(
            {"protocol": {"const": "MQTT"}, "username": _string(), "password": _string()}
        ),
        "CertificateCredentials": _object(
            {
                "protocol": {"const": "MQTTS"},
                "private_key": _string("PEM."),
                "certificate": _string("PEM."),
                "ca_chain": _string("PEM: the gateway's CA."),
            }
        ),
        "CommunicationConfig": _object(
            {
                "mqtt_host": _string(),
                "mqtt_port": _integer(minimum=1, maximum=65535),
                "mqtt_protocol": _ref("MqttProtocol"),
                "mqtt_credentials": {"oneOf": [_ref("PasswordCredentials"), _ref("CertificateCredentials")]},
                "time_sync_protocol": _enum(("NTP", "HTTP")),
                "time_sync_host": _string(),
                "time_sync_port": _integer(minimum=1, maximum=65535),
                "hardware_id": _string(),
                "channel_id": _string(),
            },
            description="What a device needs to connect; base64 of its JSON is the SDK's "
            "`ENAPTER_STANDALONE_COMMUNICATION_CONFIG`.",
        ),
        "ConfigEnvelope": _object({"config": _ref("CommunicationConfig")}),
        "Empty": {"type": "object", "maxProperties": 0, "description": "`{}`."},
        # Provisioning.
        "StandaloneRequest": _object(
            {
                "name": _string(maxLength=200),
                "slug": {
                    **_NULLABLE_STRING,
                    "maxLength": 64,
                    "description": "Derived from the name if absent.",
                },
                "site_id": {**_NULLABLE_STRING, "description": "Optional; must be the gateway's site."},
            },
            ["name"],
            closed=False,
        ),
        "VucmRequest": _object(
            {
                "name": _NAME,
                "hardware_id": {
                    **_NULLABLE_STRING,
                    "pattern": "^V[0-9A-F]{32}$",
                    "description": "Generated if absent.",
                },
                "site_id": _NULLABLE_STRING,
            },
            ["name"],
            closed=False,
        ),
        "UcmRequest": _object(
            {
                "hardware_id": _string(pattern="^[0-9A-Za-z_-]{1,64}$"),
                "name": {
                    **_NULLABLE_STRING,
                    "maxLength": 200,
                    "description": "`UCM <hardware_id>` if absent.",
                },
                "protocol": {
                    "type": ["string", "null"],
                    "enum": [*(p.value for p in MqttProtocol), None],
                    "description": "MQTTS if absent; any letter case.",
                },
                "site_id": _NULLABLE_STRING,
            },
            ["hardware_id"],
            closed=False,
        ),
        "LuaDeviceRequest": _object(
            {
                "name": _NAME,
                "runtime_id": _string("The UCM (id or slug) the Lua device runs on.", minLength=1),
                "blueprint_id": _string(minLength=1),
                "slug": _SLUG,
                "site_id": _NULLABLE_STRING,
            },
            ["name", "runtime_id", "blueprint_id"],
            closed=False,
        ),
        "ProvisionedDevice": _object({"device_id": _string(), "slug": _string()}),
        "ProvisionedUcm": _object(
            {"config": _ref("CommunicationConfig"), "device_id": _string(), "slug": _string()}
        ),
        # Commands.
        "CommandRequest": _object(
            {
                "name": {**_NAME, "description": "The command's name or an alias from the manifest."},
                "arguments": _nullable(_free_object("The command's arguments; null or absent is `{}`.")),
                "ephemeral": {"type": ["boolean", "null"], "description": "Hidden from lists by default."},
            },
            ["name"],
            closed=False,
        ),
        "ExecutionResponse": _object(
            {
                "state": _ref("CommandResponseState"),
                "payload": _free_object("What the device answered (or the gateway's `message`)."),
                "received_at": _TIME,
            }
        ),
        "Execution": _object(
            {
                "id": _string(),
                "device_id": _string(),
                "state": _ref("ExecutionState"),
                "ephemeral": {"type": "boolean"},
                "created_at": _TIME,
                "request": _object(
                    {
                        "name": _string("As the caller sent it (maybe an alias)."),
                        "arguments": _FREE_OBJECT,
                        "manifest_name": _string("The command's name in the manifest."),
                    }
                ),
                "response": {**_nullable(_ref("ExecutionResponse")), "description": "The newest one."},
                "log": {
                    "type": "array",
                    "items": _ref("ExecutionResponse"),
                    "description": "`expand=log`: every response, newest first.",
                },
            },
            ["id", "device_id", "state", "ephemeral", "created_at", "request", "response"],
        ),
        "ExecutionEnvelope": _object({"execution": _ref("Execution")}),
        "ExecutionList": _object(
            {"executions": {"type": "array", "items": _ref("Execution")}, "total_count": _integer(minimum=0)}
        ),
        "ExecutionCreated": _object({"execution_id": _string()}),
        # Logs.
        "LogEntry": _object(
            {
                "timestamp": _integer("Unix seconds (device time)."),
                "received_at": _TIME,
                "severity": _ref("LogSeverity"),
                "message": _string(),
                "persist": {"type": "boolean", "description": "False for a temporary log."},
            }
        ),
        "LogList": _object(
            {"logs": {"type": "array", "items": _ref("LogEntry")}, "total_count": _integer(minimum=0)}
        ),
        # Telemetry.
        "Datapoint": datapoint,
        "AttributeWarning": _object(
            {"warning": _enum((ATTRIBUTE_NOT_FOUND, ATTRIBUTE_OUTDATED, DEVICE_NOT_FOUND))},
            description="No current value: python-sdk reads an entry without `timestamp` as none.",
        ),
        "LatestAttributes": {
            "type": "object",
            "additionalProperties": {"oneOf": [_ref("Datapoint"), _ref("AttributeWarning")]},
            "description": "Attribute name -> its newest value, or a warning.",
        },
        "LatestTelemetry": _object(
            {
                "telemetry": {
                    "type": "object",
                    "additionalProperties": _ref("LatestAttributes"),
                    "description": "Keyed by the device id or slug as the caller wrote it.",
                }
            }
        ),
        "DeviceTelemetry": _object({"telemetry": _ref("LatestAttributes")}),
        "V1Now": _object(
            {
                "devices": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "additionalProperties": _ref("Datapoint")},
                    "description": "Device -> attribute -> newest value, however old.",
                },
                "errors": {
                    "type": "array",
                    "items": _ref("Error"),
                    "description": "Devices and attributes that were not found (only when some were not).",
                },
            },
            ["devices"],
        ),
        "Aggregation": _enum(
            (a.value for a in Aggregation), "Read in any letter case; `auto` picks by the data type."
        ),
        "Duration": {
            "anyOf": [
                _string(
                    pattern=r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))*$"
                ),
                _string(pattern="^[0-9]{1,12}$"),
                {"type": "number", "minimum": 0},
            ],
            "description": 'A Go-style duration (`"60s"`, `"1m30s"`, `"1h"`) or a number of seconds.',
        },
        "Moment": {
            "anyOf": [
                _string(format="date-time"),
                _string(pattern=r"^[0-9]+(\.[0-9]+)?$"),
                {"type": "number"},
            ],
            "description": "RFC 3339 with a zone (upper-case `T` and `Z`; no leap second) or unix seconds.",
        },
        "GapFilling": _object(
            {
                "method": {
                    "type": ["string", "null"],
                    "enum": [*(m.value for m in GapFillingMethod), None],
                    "description": "`locf`: an empty bucket takes the last earlier value within "
                    "`look_around`.",
                },
                "look_around": _nullable(_ref("Duration")),
            },
            [],
            closed=False,
        ),
        "TimeseriesSelector": _object(
            {
                "device": {**_LABEL, "description": "A device id or slug."},
                "attribute": {
                    "oneOf": [
                        _LABEL,
                        {"type": "array", "items": _LABEL, "minItems": 1},
                    ],
                    "description": "One attribute, or a list (python-sdk); one column each. No "
                    "whitespace, `=` or `,`.",
                },
                "aggregation": _nullable(_ref("Aggregation")),
                "gap_filling": _nullable(_ref("GapFilling")),
            },
            ["device", "attribute"],
            closed=False,
        ),
        "TimeseriesQuery": _object(
            {
                "from": _ref("Moment"),
                "to": {**_ref("Moment"), "description": "Later than `from`."},
                "granularity": {**_ref("Duration"), "description": "Whole seconds, at least 1."},
                "aggregation": _nullable(_ref("Aggregation")),
                "telemetry": {
                    "type": "array",
                    "items": _ref("TimeseriesSelector"),
                    "minItems": 1,
                    "maxItems": MAX_SELECTORS,
                },
            },
            ["from", "to", "granularity", "telemetry"],
            description="Unknown keys are ignored. At most 500 columns and 100,000 buckets.",
            closed=False,
        ),
        # Blueprints.
        "Blueprint": _object({"id": _string(), "created_at": _TIME}),
        "BlueprintEnvelope": _object({"blueprint": _ref("Blueprint")}),
        "ValidationResult": _object(
            {
                "validation_errors": {
                    "type": "array",
                    "items": _string(),
                    "description": "Every problem with its path; empty when the blueprint is valid.",
                }
            }
        ),
        "ProfilesUploaded": _object({"files": _integer("Files in the archive.", minimum=0)}),
        "ZipUpload": {
            "type": "string",
            "contentMediaType": "application/zip",
            "description": "A zip of the blueprint directory (`manifest.yml` at its root); at most "
            "10 MiB, 1000 files, 50 MiB unpacked.",
        },
        "ZipArchive": {"type": "string", "contentMediaType": "application/zip"},
        # Assets API v1.
        "AssetDevice": _object(
            {
                "device_id": _string(),
                "type": _enum(sorted(ASSET_TYPES)),
                "updated_at": _TIME,
                "properties": _free_object("`expand=properties`."),
                "connectivity": {
                    **_object({"online": {"type": "boolean"}}),
                    "description": "`expand=connectivity`.",
                },
                "manifest": {**_nullable(_ref("Manifest")), "description": "`expand=manifest`."},
            },
            ["device_id", "type", "updated_at"],
        ),
        "AssetDeviceList": _object(
            {
                "devices": {"type": "array", "items": _ref("AssetDevice")},
                "next_page_token": {**_NULLABLE_STRING, "description": "Null on the last page."},
            }
        ),
        "AssetDeviceEnvelope": _object({"device": _ref("AssetDevice")}),
        # Commands API v1.
        "V1CommandRequest": _object(
            {
                "device_id": {**_NULLABLE_STRING, "description": "A device id or slug; or `hardware_id`."},
                "hardware_id": _NULLABLE_STRING,
                "command_name": _NAME,
                "arguments": _nullable(_FREE_OBJECT),
            },
            ["command_name"],
            closed=False,
        ),
        "V1CommandOutcome": _object(
            {
                "state": _enum(("succeeded", "error", "platform_error")),
                "payload": _free_object("The device's answer; for `platform_error`, a `message`."),
            }
        ),
        "V1CommandProgress": _object(
            {
                "state": _enum(("started", "device_in_progress", "succeeded", "error", "platform_error")),
                "payload": _free_object("Absent from `started`."),
            },
            ["state"],
            description="One line of a `show_progress` answer: `started`, then `device_in_progress` for "
            "each progress response, then the final state as in `V1CommandOutcome`.",
        ),
        # Operations.
        "HealthCheck": _object(
            {"ok": {"type": "boolean"}, "detail": _string("What is wrong (only when not ok).")}, ["ok"]
        ),
        "Health": _object(
            {
                "status": _enum(("ok", "unhealthy")),
                "checks": _object(
                    {
                        "store": _ref("HealthCheck"),
                        "broker": _ref("HealthCheck"),
                        "ingest": _ref("HealthCheck"),
                    }
                ),
            }
        ),
        # WebSocket frames (JSON text), for the stream operations' 101 answers.
        "LogFrame": _object(
            {
                "timestamp": _integer(),
                "received_at": _TIME,
                "severity": _ref("LogSeverity"),
                "message": _string(),
                "persist": {"type": "boolean"},
                "log": _object({"severity": _ref("LogSeverity"), "message": _string()}),
            },
            description="Flat fields (older CLI) and a nested `log` (newer CLI) in one frame.",
        ),
        "TelemetryFrame": {
            "type": "object",
            "properties": {
                "timestamp": _integer(),
                "alerts": {"type": ["array", "null"], "items": _string()},
            },
            "required": ["timestamp", "alerts"],
            "additionalProperties": _ANY_JSON,
            "description": "One telemetry message as the device sent it: its attributes are the other keys.",
        },
        "MonitorFrame": _object(
            {
                "device_id": _string(),
                "received_at": _TIME,
                "timestamp": _integer(),
                "telemetry": _free_object("Attributes, and `alerts`."),
                "properties": _FREE_OBJECT,
                "log": _object({"severity": _ref("LogSeverity"), "message": _string()}),
            },
            ["device_id", "received_at", "timestamp"],
            description="Exactly one of `telemetry`, `properties` and `log`.",
        ),
        # The timeline (the gateway's own addition); also the frames of the site event stream.
        "TimelineEvent": _object(
            {
                "id": _integer("Grows with insertion."),
                "device_id": _string(),
                "type": _enum((t.value for t in EventType), "What happened."),
                "timestamp": _TIME,
                "details": _free_object(
                    "By type: `connected` {}; `disconnected` {reason} as the broker gave it (`disconnected`: "
                    "a clean DISCONNECT; `closed its connection`: the socket closed without one, e.g. a "
                    "killed process; `exceeded timeout`; `session taken over`; `broker restarted`; `gateway "
                    "stopped`, recorded at the next start); "
                    "`provisioned` {name, slug, type}; `config_generated` {protocol}; `config_revoked` "
                    "{protocol, reason: replaced|removed}; `blueprint_assigned` {blueprint_id, "
                    "blueprint_name}; `renamed` {old_name, new_name, old_slug, new_slug}; `alert_raised` "
                    "and `alert_cleared` {alert}; `command_executed` {execution_id, command, state}; "
                    "`data_cleared` {}; `user` {code, description}."
                ),
            },
            description="A device stays connected from its first open broker connection to the end of "
            "its last (the SDK holds several).",
        ),
        "TimelineList": _object(
            {
                "events": {"type": "array", "items": _ref("TimelineEvent")},
                "total_count": _integer(minimum=0),
            }
        ),
        "TimelineEventEnvelope": _object({"event": _ref("TimelineEvent")}),
        "UserEvent": _object(
            {
                "code": _string(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"),
                "description": {**_NULLABLE_STRING, "maxLength": MAX_USER_DESCRIPTION},
            },
            ["code"],
            description="A user-triggered event: `code` an identifier, `description` optional text.",
            closed=False,
        ),
    }


_ERRORS: dict[str, tuple[str, str]] = {
    # status: (component name, description)
    "400": ("BadRequest", "The request could not be parsed; `details.parameter` names a bad parameter."),
    "401": ("Unauthorized", f"No `{TOKEN_HEADER}` header (code `missing_header`)."),
    "403": ("Forbidden", "An unknown or revoked token (`invalid_header`), or too low a role (`forbidden`)."),
    "404": ("NotFound", "Not found (the device, site, blueprint, ...)."),
    "409": ("Conflict", "Conflicts with what exists (a taken slug, the one site, ...)."),
    "413": ("PayloadTooLarge", "The body is over the limit (1 MiB; blueprint archives 10 MiB)."),
    "422": ("Unprocessable", "Understood, but cannot be done; the message says why."),
    "429": ("TooManyRequests", "Over a rate limit; `Retry-After` says when to come back."),
    "503": ("ServiceUnavailable", "Something the request needs is down (the broker) or busy."),
}

_RATE_HEADERS: Doc = {
    "X-RateLimit-Limit": {"schema": {"type": "integer"}, "description": "Requests per window."},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "Left in this window."},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "Seconds until it ends."},
}


def _responses() -> Doc:
    """`components/responses`: each error status with the envelope."""
    responses: Doc = {}
    for _status, (name, description) in _ERRORS.items():
        response: Doc = {"description": description, "content": _json_content(_ref("ErrorEnvelope"))}
        if name == "TooManyRequests":
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."},
                **_RATE_HEADERS,
            }
        responses[name] = response
    return responses


def _parameter(name: str, where: str, schema: Doc, description: str, *, required: bool = False) -> Doc:
    parameter: Doc = {"name": name, "in": where, "description": description, "schema": schema}
    if required or where == "path":
        parameter["required"] = True
    return parameter


def _comma_list(name: str, values: Iterable[str], description: str) -> Doc:
    """A query parameter holding a comma-separated list of these values (`expand=a,b`)."""
    return {
        **_parameter(
            name, "query", {"type": "array", "items": _enum(sorted(values)), "uniqueItems": True}, description
        ),
        "style": "form",
        "explode": False,
    }


def _parameters() -> Doc:
    """`components/parameters`: those many operations share."""
    text = {"type": "string", "minLength": 1}
    return {
        "Device": _parameter("device", "path", text, "The device's id or slug."),
        "SiteId": _parameter("site_id", "path", text, "The gateway's site id (any other is 404)."),
        "ExecutionId": _parameter("execution_id", "path", text, "The command execution's id."),
        "BlueprintId": _parameter("blueprint_id", "path", text, "The blueprint's id."),
        "Offset": _parameter(
            "offset", "query", _integer(minimum=0, maximum=MAX_OFFSET, default=0), "Items to skip."
        ),
        "Limit": _parameter(
            "limit",
            "query",
            _integer(minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
            "Page size.",
        ),
        "DeviceExpand": _comma_list(
            "expand",
            DEVICE_EXPANDS,
            "Optional parts of each device, comma-separated; an unknown value is 400. "
            "`communication_info` is the older name of `communication`.",
        ),
        "RelevanceInterval": _parameter(
            "relevance_interval",
            "query",
            {"type": "string", "default": "30s"},
            'A duration (`"30s"`, `"5m"`): older values are answered with a warning instead.',
        ),
    }


def _json_content(schema: Doc) -> Doc:
    return {"application/json": {"schema": schema}}


# --- Operations ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    """One documented operation: what `paths[path][method]` holds, before roles are added."""

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    description: str = ""
    parameters: tuple[Doc, ...] = ()
    body: Doc | None = None
    # status -> response object, for the answers that are not errors
    responses: Mapping[str, Doc] = field(default_factory=dict)
    # Error statuses (keys of `_ERRORS`) besides 401/403 (added unless public) and 429 (always).
    errors: tuple[str, ...] = ()


def _param(name: str) -> Doc:
    return {"$ref": f"#/components/parameters/{name}"}


def _ok(schema_name: str, description: str = "OK.") -> Doc:
    return {"200": {"description": description, "content": _json_content(_ref(schema_name))}}


def _json_body(schema_name: str, *, required: bool = False) -> Doc:
    return {
        "required": required,
        "description": "JSON; the Content-Type is not checked (the CLI sends none). An empty body is `{}`.",
        "content": _json_content(_ref(schema_name)),
    }


_ZIP_BODY: Doc = {
    "required": True,
    "description": "The zip as the raw body, with any Content-Type (python-sdk and the CLI send none, "
    "VS Code `application/zip`), or as multipart form data: the first file part (or a part named "
    "`data` or `file`).",
    "content": {
        "application/zip": {"schema": _ref("ZipUpload")},
        "application/octet-stream": {"schema": _ref("ZipUpload")},
        "multipart/form-data": {"schema": _object({"data": _ref("ZipUpload")}, ["data"], closed=False)},
    },
}

_ZIP_ANSWER: Doc = {
    "200": {
        "description": "The archive, as an attachment (`Content-Disposition`).",
        "content": {"application/zip": {"schema": _ref("ZipArchive")}},
    }
}

_WEBSOCKET_NOTE = (
    "With `Upgrade: websocket` (the token on the upgrade request) this path streams instead: "
    "101 Switching Protocols, then one JSON text frame per message (schema `{frame}`). The stream "
    "pings every 30 s; a client that falls behind or cannot take a frame within 5 s is closed with "
    "1008, and every stream is closed with 1001 when the gateway stops. At most 100 streams at once "
    "(then 503)."
)


def _switching(frame: str) -> Doc:
    return {
        "101": {
            "description": f"WebSocket upgrade accepted; frames are JSON text, schema `{frame}`.",
            "x-websocket-frame": _ref(frame),
        }
    }


def _execution_filters() -> tuple[Doc, ...]:
    """The query parameters of the command execution lists (`enapter-http-api.md` §6)."""
    return (
        _parameter(
            "order",
            "query",
            _enum(("CREATED_AT_ASC", "CREATED_AT_DESC"), "Any letter case."),
            "Default CREATED_AT_ASC.",
        ),
        _param("Offset"),
        _param("Limit"),
        _parameter("created_at.gte", "query", {"type": "string"}, "RFC 3339 (with a zone) or unix seconds."),
        _parameter("created_at.lt", "query", {"type": "string"}, "RFC 3339 (with a zone) or unix seconds."),
        _comma_list("state.in", (s.value for s in ExecutionState), "Only these states (any letter case)."),
        _parameter("name.in", "query", {"type": "string"}, "Only these command names, comma-separated."),
        _comma_list(
            "expand",
            EXECUTION_EXPANDS,
            "`log`: every response of each execution; `ephemeral`: list ephemeral executions too.",
        ),
    )


def _device_operations(prefix: str, scoped: bool) -> list[Operation]:
    """The device routes under `prefix` (`/api/v3` or `/api/v3/sites/{site_id}`)."""
    site = (_param("SiteId"),) if scoped else ()
    device = (*site, _param("Device"))
    suffix = "InSite" if scoped else ""
    devices = prefix + "/devices"
    one = devices + "/{device}"
    page = (_param("Offset"), _param("Limit"))
    log_filters = (
        _parameter("severity", "query", _enum(s.value for s in LogSeverity), "This level and more severe."),
        _parameter(
            "show",
            "query",
            _enum(("ALL", "PERSISTED_ONLY", "TEMPORARY_ONLY"), "Any letter case."),
            "Persisted or temporary logs only (default ALL).",
        ),
    )
    execution_filters = _execution_filters()
    return [
        Operation(
            "GET",
            devices,
            "listDevices" + suffix,
            "Devices",
            "List the devices",
            "Ordered by id unless `order` says otherwise, the gateway's own device (type GATEWAY, "
            "always ONLINE) included. `q` and the filters combine (AND); `total_count` counts what "
            "they select. Any other `<field>.<operator>` parameter is 400.",
            (*site, *page, _param("DeviceExpand"), *_device_search_parameters()),
            responses=_ok("DeviceList"),
            errors=("400", "404"),
        ),
        Operation(
            "GET",
            one,
            "getDevice" + suffix,
            "Devices",
            "Get a device",
            parameters=(*device, _param("DeviceExpand")),
            responses=_ok("DeviceEnvelope"),
            errors=("400", "404"),
        ),
        Operation(
            "PATCH",
            one,
            "updateDevice" + suffix,
            "Devices",
            "Rename a device or change its slug",
            parameters=device,
            body=_json_body("DeviceChanges"),
            responses=_ok("DeviceEnvelope"),
            errors=("400", "404", "409", "413"),
        ),
        Operation(
            "DELETE",
            one,
            "deleteDevice" + suffix,
            "Devices",
            "Delete a device",
            "Its credentials are revoked and its data deleted. A UCM that still runs Lua devices is "
            "409; the gateway's own device is 422. 503 when the broker did not confirm dropping its "
            "connections (the device is deleted all the same).",
            device,
            responses=_ok("Empty"),
            errors=("404", "409", "422", "503"),
        ),
        Operation(
            "POST",
            one + "/assign_blueprint",
            "assignBlueprint" + suffix,
            "Devices",
            "Make a device follow a blueprint",
            parameters=device,
            body=_json_body("BlueprintAssignment", required=True),
            responses=_ok("DeviceEnvelope"),
            errors=("400", "404", "413", "422"),
        ),
        Operation(
            "GET",
            one + "/manifest",
            "getDeviceManifest" + suffix,
            "Devices",
            "The manifest of a device's blueprint",
            "Grafana reads this; null for a device without a blueprint.",
            device,
            responses=_ok("ManifestEnvelope"),
            errors=("404",),
        ),
        Operation(
            "POST",
            one + "/generate_config",
            "generateConfig" + suffix,
            "Devices",
            "New MQTT credentials for a device",
            "The old credentials stop working. 422 for a device that does not connect itself "
            "(a Lua device, the gateway) or for MQTTS when the gateway issues no certificates; 503 "
            "when the broker did not confirm the change.",
            device,
            body=_json_body("ProtocolChoice", required=True),
            responses=_ok("ConfigEnvelope"),
            errors=("400", "404", "413", "422", "503"),
        ),
        Operation(
            "GET",
            devices + "/",
            "monitorDevices" + suffix,
            "Streams",
            "Device monitor (WebSocket)",
            "WebSocket only: telemetry, properties and log frames of the devices named by `id.in` "
            "(every device of the site when none is). A plain GET is 400. "
            + _WEBSOCKET_NOTE.format(frame="MonitorFrame"),
            (
                *site,
                _parameter(
                    "id.in",
                    "query",
                    {"type": "string"},
                    "Device ids or slugs, comma-separated; may repeat; at most 100.",
                ),
            ),
            responses=_switching("MonitorFrame"),
            errors=("400", "404", "503"),
        ),
        Operation(
            "GET",
            one + "/telemetry",
            "getDeviceTelemetry" + suffix,
            "Telemetry",
            "A device's latest telemetry (or its telemetry stream)",
            "Every attribute when `attribute.in` is absent; attributes the caller's role may not "
            "read are left out. " + _WEBSOCKET_NOTE.format(frame="TelemetryFrame"),
            (
                *device,
                _parameter("attribute.in", "query", {"type": "string"}, "Attribute names, comma-separated."),
                _param("RelevanceInterval"),
            ),
            responses={**_ok("DeviceTelemetry"), **_switching("TelemetryFrame")},
            errors=("400", "404", "503"),
        ),
        Operation(
            "GET",
            one + "/logs",
            "getDeviceLogs" + suffix,
            "Logs",
            "A device's logs (or its log stream)",
            "Ordered by arrival. The stream takes `severity` and `show` only. "
            + _WEBSOCKET_NOTE.format(frame="LogFrame"),
            (
                *device,
                _parameter("received_at_from", "query", {"type": "string"}, "RFC 3339 or unix seconds."),
                _parameter("received_at_to", "query", {"type": "string"}, "RFC 3339 or unix seconds."),
                *log_filters,
                _parameter(
                    "order",
                    "query",
                    _enum(("RECEIVED_AT_ASC", "RECEIVED_AT_DESC"), "Any letter case."),
                    "Default RECEIVED_AT_ASC.",
                ),
                *page,
            ),
            responses={**_ok("LogList"), **_switching("LogFrame")},
            errors=("400", "404", "503"),
        ),
        Operation(
            "POST",
            one + "/execute_command",
            "executeCommand" + suffix,
            "Commands",
            "Run a command and wait for its end",
            "Blocks until the execution ends or times out (state TIMEOUT). The command must be "
            "declared in the device's blueprint (or be an alias): else 422 `command_not_declared`; "
            "arguments that do not fit are 422 `invalid_command_arguments`; the caller's role must "
            "reach the command's `access_level` (USER when the manifest says nothing), else 403. "
            "An offline device gives an ERROR execution at once.",
            (*device, _comma_list("expand", ("log",), "`log`: every response.")),
            body=_json_body("CommandRequest", required=True),
            responses=_ok("ExecutionEnvelope"),
            errors=("400", "404", "413", "422"),
        ),
        Operation(
            "POST",
            one + "/command_executions",
            "createCommandExecution" + suffix,
            "Commands",
            "Send a command without waiting",
            "Checked like `execute_command`; poll the execution with GET.",
            device,
            body=_json_body("CommandRequest", required=True),
            responses=_ok("ExecutionCreated"),
            errors=("400", "404", "413", "422"),
        ),
        Operation(
            "GET",
            one + "/command_executions",
            "listCommandExecutions" + suffix,
            "Commands",
            "A device's command executions",
            parameters=(*device, *execution_filters),
            responses=_ok("ExecutionList"),
            errors=("400", "404"),
        ),
        Operation(
            "GET",
            one + "/command_executions/{execution_id}",
            "getCommandExecution" + suffix,
            "Commands",
            "One command execution",
            parameters=(
                *device,
                _param("ExecutionId"),
                _comma_list("expand", EXECUTION_EXPANDS, "`log`: every response (`ephemeral` is ignored)."),
            ),
            responses=_ok("ExecutionEnvelope"),
            errors=("400", "404"),
        ),
        *_timeline_operations(one, device, suffix),
    ]


def _timeline_operations(one: str, device: tuple[Doc, ...], suffix: str) -> list[Operation]:
    """A device's timeline, user events and clearing its data (the gateway's own additions)."""
    time_note = "RFC 3339 (with a zone) or unix seconds."
    return [
        Operation(
            "GET",
            one + "/timeline",
            "getDeviceTimeline" + suffix,
            "Timeline",
            "A device's timeline",
            "What happened to the device, newest first (by timestamp, then id): connectivity with the "
            "broker's reasons, provisioning, configuration, blueprint, renames, alerts, command "
            "outcomes, cleared data and user events. Kept for `retention.timeline`.",
            (
                *device,
                _comma_list("type.in", (t.value for t in EventType), "Only these types; may repeat."),
                _parameter("timestamp.gte", "query", {"type": "string"}, "From this time on. " + time_note),
                _parameter("timestamp.lt", "query", {"type": "string"}, "Before this time. " + time_note),
                _param("Offset"),
                _param("Limit"),
            ),
            responses=_ok("TimelineList"),
            errors=("400", "404"),
        ),
        Operation(
            "POST",
            one + "/events",
            "createDeviceEvent" + suffix,
            "Timeline",
            "Add a user event to a device's timeline",
            "Returns the event as stored (type `user`).",
            device,
            body=_json_body("UserEvent", required=True),
            responses=_ok("TimelineEventEnvelope"),
            errors=("400", "404", "413"),
        ),
        Operation(
            "POST",
            one + "/clear_data",
            "clearDeviceData" + suffix,
            "Timeline",
            "Delete a device's data, keep the device",
            "Deletes its telemetry (latest values, history, rollups), raised alerts, manifest "
            "mismatches, logs and finished command executions. Keeps the device, its credentials "
            "(it stays connected), blueprint, properties and timeline, and executions still in "
            "progress (they end normally). Returns the `data_cleared` event; 422 for the gateway's "
            "own device.",
            device,
            responses=_ok("TimelineEventEnvelope"),
            errors=("404", "422"),
        ),
    ]


def _site_events_operation() -> Operation:
    return Operation(
        "GET",
        "/api/v3/site/events",
        "streamSiteEvents",
        "Streams",
        "Timeline events as they happen (WebSocket)",
        "WebSocket only: each timeline event (connectivity, alerts, provisioning, configuration, "
        "...) once recorded, of the devices named by `device_id.in` (every device when none is) and "
        "the types in `type.in` (every type when none is). A plain GET is 400. "
        + _WEBSOCKET_NOTE.format(frame="TimelineEvent"),
        (
            _parameter(
                "device_id.in",
                "query",
                {"type": "string"},
                "Device ids or slugs, comma-separated; may repeat; at most 100.",
            ),
            _comma_list("type.in", (t.value for t in EventType), "Only these types; may repeat."),
        ),
        responses=_switching("TimelineEvent"),
        errors=("400", "404", "503"),
    )


def _site_operations() -> list[Operation]:
    site_id = (_param("SiteId"),)
    site_listing = (
        _param("Offset"),
        _param("Limit"),
        _parameter("name", "query", {"type": "string"}, "Only sites whose name contains this (any case)."),
    )
    sites_description = "The gateway's one site, paged like every list."
    return [
        Operation(
            "GET", "/api/v3/site", "getSite", "Sites", "The gateway's site", responses=_ok("SiteEnvelope")
        ),
        Operation(
            "PATCH",
            "/api/v3/site",
            "updateSite",
            "Sites",
            "Change the site",
            "A time zone that is not an IANA name is 400.",
            body=_json_body("SiteChanges"),
            responses=_ok("SiteEnvelope"),
            errors=("400", "413"),
        ),
        Operation(
            "GET",
            "/api/v3/sites",
            "listSites",
            "Sites",
            "List the sites",
            sites_description,
            site_listing,
            responses=_ok("SiteList"),
            errors=("400",),
        ),
        Operation(
            "POST",
            "/api/v3/sites",
            "createSite",
            "Sites",
            "Create a site (always 409)",
            "A gateway holds exactly one site, made at its first start; change it with PATCH.",
            responses={},
            errors=("409",),
        ),
        Operation(
            "GET",
            "/api/v3/users/me/sites",
            "listMySites",
            "Sites",
            "List the caller's sites",
            sites_description,
            site_listing,
            responses=_ok("SiteList"),
            errors=("400",),
        ),
        Operation(
            "GET",
            "/api/v3/sites/{site_id}",
            "getSiteById",
            "Sites",
            "Get the site by id",
            parameters=site_id,
            responses=_ok("SiteEnvelope"),
            errors=("404",),
        ),
        Operation(
            "PATCH",
            "/api/v3/sites/{site_id}",
            "updateSiteById",
            "Sites",
            "Change the site, by id",
            parameters=site_id,
            body=_json_body("SiteChanges"),
            responses=_ok("SiteEnvelope"),
            errors=("400", "404", "413"),
        ),
        Operation(
            "DELETE",
            "/api/v3/sites/{site_id}",
            "deleteSite",
            "Sites",
            "Delete the site (always 409)",
            "The gateway's site cannot be deleted; delete its devices instead.",
            site_id,
            responses={},
            errors=("404", "409"),
        ),
    ]


def _site_stats_schema() -> Doc:
    counts = {"type": "object", "additionalProperties": _integer(minimum=0)}
    timestamp = _string("RFC 3339, UTC.", format="date-time")
    return _object(
        {
            "window": _enum(WINDOWS),
            "from": timestamp,
            "to": timestamp,
            "devices": _object(
                {
                    "total": _integer("Every device of the site, the gateway included.", minimum=0),
                    "by_type": {**counts, "description": "Device type -> devices."},
                    "by_connectivity": {**counts, "description": "ONLINE, OFFLINE, UNKNOWN -> devices, now."},
                    "by_blueprint": {**counts, "description": "Blueprint id -> devices."},
                    "by_tag": {**counts, "description": "Tag name -> devices carrying it (every tag)."},
                    "provisioned": _integer("Devices created in the window.", minimum=0),
                }
            ),
            "uptime_percent": {
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100},
                "description": "Device id -> the part of the window it was connected, in percent, from "
                "its timeline's connected and disconnected events (from its creation if that is later; "
                "a device on a UCM counts its UCM's connection). Only devices that connect to the broker.",
            },
            "telemetry": _object(
                {"data_points": _integer("Telemetry values stored in the window (whole minutes).", minimum=0)}
            ),
            "messages": _object(
                {
                    "dropped": _integer("Device messages lost in the window.", minimum=0),
                    "dropped_by_reason": {**counts, "description": "Why -> messages."},
                    "counted_since": {
                        **timestamp,
                        "description": "Drops are counted in memory: from the daemon's start when that is "
                        "later than the window's start.",
                    },
                }
            ),
            "commands": _object(
                {
                    "total": _integer("Command executions created in the window.", minimum=0),
                    "by_outcome": {**counts, "description": "Execution state -> executions."},
                }
            ),
        }
    )


def _site_stats_operations() -> list[Operation]:
    window = _parameter(
        "window",
        "query",
        {"type": "string", "enum": list(WINDOWS), "default": DEFAULT_STATS_WINDOW},
        "How far back the window reaches from now.",
    )
    description = (
        "Devices by type, connectivity, blueprint and tag now; in the window: each device's uptime, "
        "devices provisioned, telemetry values stored, device messages dropped (by reason) and "
        "command executions (by outcome)."
    )
    return [
        Operation(
            "GET",
            "/api/v3/site/stats",
            "getSiteStats",
            "Sites",
            "Site statistics (a gateway addition)",
            description,
            (window,),
            responses=_ok("SiteStatsEnvelope"),
            errors=("400",),
        ),
        Operation(
            "GET",
            "/api/v3/sites/{site_id}/stats",
            "getSiteStatsById",
            "Sites",
            "Site statistics, by site id (a gateway addition)",
            description,
            (_param("SiteId"), window),
            responses=_ok("SiteStatsEnvelope"),
            errors=("400", "404"),
        ),
    ]


def _site_executions_operation() -> Operation:
    return Operation(
        "GET",
        "/api/v3/sites/{site_id}/commands/executions",
        "listSiteCommandExecutions",
        "Commands",
        "Every device's command executions",
        parameters=(
            _param("SiteId"),
            *_execution_filters(),
            _parameter(
                "device_id.in", "query", {"type": "string"}, "Only these devices' (comma-separated ids)."
            ),
        ),
        responses=_ok("ExecutionList"),
        errors=("400", "404"),
    )


def _provisioning_operations() -> list[Operation]:
    common = "Provisioning again with the same arguments returns the device already there."
    return [
        Operation(
            "POST",
            "/api/v3/provisioning/standalone",
            "provisionStandalone",
            "Provisioning",
            "Create a standalone device",
            "Hardware id `S` + 32 hex digits, channel `s`; then `generate_config` for its credentials.",
            body=_json_body("StandaloneRequest", required=True),
            responses=_ok("ProvisionedDevice"),
            errors=("400", "404", "409", "413"),
        ),
        Operation(
            "POST",
            "/api/v3/provisioning/vucm",
            "provisionVirtualUcm",
            "Provisioning",
            "Create a virtual UCM",
            "Hardware id `V` + 32 hex digits (given or generated), channel `ucm`. " + common,
            body=_json_body("VucmRequest", required=True),
            responses=_ok("ProvisionedDevice"),
            errors=("400", "404", "409", "413"),
        ),
        Operation(
            "POST",
            "/api/v3/provisioning/ucm",
            "provisionUcm",
            "Provisioning",
            "Create a hardware UCM, with its config",
            "New credentials each time. " + common,
            body=_json_body("UcmRequest", required=True),
            responses=_ok("ProvisionedUcm"),
            errors=("400", "404", "409", "413", "422", "503"),
        ),
        Operation(
            "POST",
            "/api/v3/provisioning/lua_device",
            "provisionLuaDevice",
            "Provisioning",
            "Create a Lua device on a UCM",
            "Type LUA, communication UCM_LUA with `upstream_id` = the UCM; it has no credentials of its "
            "own. The same runtime, blueprint and name again returns the device already there.",
            body=_json_body("LuaDeviceRequest", required=True),
            responses=_ok("ProvisionedDevice"),
            errors=("400", "404", "409", "413", "422"),
        ),
    ]


def _blueprint_operations() -> list[Operation]:
    blueprint_id = (_param("BlueprintId"),)
    profiles = (
        "The zip `upload_device_profiles` stored, else one with a README (the gateway ships no profiles)."
    )
    return [
        Operation(
            "POST",
            "/api/v3/blueprints/upload",
            "uploadBlueprint",
            "Blueprints",
            "Upload a blueprint",
            "The same content again gives the same blueprint. An invalid one is 422 "
            "`invalid_blueprint` with every problem in `details.validation_errors`.",
            body=_ZIP_BODY,
            responses=_ok("BlueprintEnvelope"),
            errors=("400", "413", "422"),
        ),
        Operation(
            "POST",
            "/api/v3/blueprints/validate",
            "validateBlueprint",
            "Blueprints",
            "Check a blueprint without storing it",
            body=_ZIP_BODY,
            responses=_ok("ValidationResult", "Valid when `validation_errors` is empty."),
            errors=("400", "413"),
        ),
        Operation(
            "POST",
            "/api/v3/blueprints/upload_device_profiles",
            "uploadDeviceProfiles",
            "Blueprints",
            "Upload the device profiles archive",
            body=_ZIP_BODY,
            responses=_ok("ProfilesUploaded"),
            errors=("400", "413", "422"),
        ),
        Operation(
            "GET",
            "/api/v3/blueprints/device_profiles/download",
            "downloadDeviceProfiles",
            "Blueprints",
            "Download the device profiles (python-sdk's path)",
            profiles,
            responses=_ZIP_ANSWER,
        ),
        Operation(
            "GET",
            "/api/v3/blueprints/download_device_profiles",
            "downloadDeviceProfilesCli",
            "Blueprints",
            "Download the device profiles (the CLI's path)",
            profiles,
            responses=_ZIP_ANSWER,
        ),
        Operation(
            "GET",
            "/api/v3/blueprints/enapter/{name}/{tag}",
            "getNamedBlueprint",
            "Blueprints",
            "A blueprint by name",
            "`name` is the display name in snake case; tag `latest` is the newest upload with that name, "
            "any other tag a blueprint id.",
            (
                _parameter("name", "path", {"type": "string", "minLength": 1}, "Snake-case display name."),
                _parameter("tag", "path", {"type": "string", "minLength": 1}, "`latest` or a blueprint id."),
            ),
            responses=_ok("BlueprintEnvelope"),
            errors=("404",),
        ),
        Operation(
            "GET",
            "/api/v3/blueprints/{blueprint_id}",
            "getBlueprint",
            "Blueprints",
            "A blueprint",
            parameters=blueprint_id,
            responses=_ok("BlueprintEnvelope"),
            errors=("404",),
        ),
        Operation(
            "GET",
            "/api/v3/blueprints/{blueprint_id}/zip",
            "downloadBlueprint",
            "Blueprints",
            "Download a blueprint",
            "ORIGINAL: as uploaded; COMPILED: with the manifest's defaults filled in.",
            (
                *blueprint_id,
                _parameter(
                    "view",
                    "query",
                    _enum(("ORIGINAL", "COMPILED"), "Any letter case; default COMPILED."),
                    "Which archive.",
                ),
            ),
            responses=_ZIP_ANSWER,
            errors=("400", "404"),
        ),
    ]


def _csv_answer() -> Doc:
    """The `text/csv` answer of the time-series queries (`enapter-http-api.md` §7.2)."""
    return {
        "200": {
            "description": "CSV: a header row `ts,device=<d> telemetry=<a>,...`, then one row per bucket "
            "that has a value (unix-second `ts`; an empty cell is null; booleans `true`/`false`; "
            "string arrays as JSON). The header row is always there.",
            "headers": {
                "X-Enapter-Timeseries-Data-Types": {
                    "description": "The data type of a column; sent once per column, in order.",
                    "schema": _enum(d.value for d in DataType),
                }
            },
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }


def _latest_selectors() -> Doc:
    """`devices[<device>]=a,b`: a deepObject query parameter."""
    selectors = _parameter(
        "devices",
        "query",
        {"type": "object", "additionalProperties": {"type": "string"}},
        f"`devices[<device id or slug>]=a,b`: attributes per device (empty: every attribute); at least "
        f"one, at most {MAX_LATEST_DEVICES} devices.",
        required=True,
    )
    return {**selectors, "style": "deepObject", "explode": True}


def _telemetry_operations() -> list[Operation]:
    timeseries = (
        "Buckets are aligned to the epoch and whole. A column whose attribute does not exist stays "
        "empty; if none exists, 404 `telemetrypersistence/NO_TELEMETRY_ATTRIBUTES_FOUND`. A bad value "
        "is 422 `invalid_query_parameter_format` naming the field (`details.parameter`)."
    )
    return [
        Operation(
            "GET",
            "/api/v3/telemetry/latest",
            "latestTelemetry",
            "Telemetry",
            "Latest telemetry of several devices",
            "A device that does not exist gets a warning for each attribute instead of failing the "
            "request; attributes the caller's role may not read are answered as not found.",
            (_latest_selectors(), _param("RelevanceInterval")),
            responses=_ok("LatestTelemetry"),
            errors=("400",),
        ),
        Operation(
            "POST",
            "/api/v3/telemetry/query_timeseries",
            "queryTimeseries",
            "Telemetry",
            "Telemetry history as CSV",
            timeseries,
            body=_json_body("TimeseriesQuery", required=True),
            responses=_csv_answer(),
            errors=("400", "404", "413", "422"),
        ),
    ]


def _legacy_operations(root: str) -> list[Operation]:
    """The Gateway 2.x (v1) APIs under `root` (`/api`, or `` as the Go client calls them)."""
    suffix = "" if root else "AtRoot"
    alias = "" if root else " Served at the root too: the Go client drops the `/api` base path."
    asset_expand = _comma_list("expand", ASSET_EXPANDS, "Optional parts, comma-separated.")
    return [
        Operation(
            "GET",
            root + "/assets/v1/devices",
            "listAssetDevices" + suffix,
            "Assets API v1",
            "List the devices (v1)",
            "Paged by `page_token` (from `next_page_token`)." + alias,
            (
                _parameter("page_token", "query", {"type": "string"}, "Empty: the first page."),
                _parameter(
                    "page_size", "query", _integer(minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT), ""
                ),
                asset_expand,
                _comma_list("filter[type_in]", ASSET_TYPES, "Only these types (any letter case)."),
            ),
            responses=_ok("AssetDeviceList"),
            errors=("400",),
        ),
        Operation(
            "GET",
            root + "/assets/v1/devices/{device}",
            "getAssetDevice" + suffix,
            "Assets API v1",
            "Get a device (v1)",
            alias.strip(),
            (_param("Device"), asset_expand),
            responses=_ok("AssetDeviceEnvelope"),
            errors=("400", "404"),
        ),
        Operation(
            "GET",
            root + "/telemetry/v1/now",
            "telemetryNow" + suffix,
            "Legacy v1",
            "Latest telemetry (v1)",
            "The newest value however old; what does not exist is named in `errors`." + alias,
            (_latest_selectors(),),
            responses=_ok("V1Now"),
            errors=("400",),
        ),
        Operation(
            "POST",
            root + "/commands/v1/execute",
            "executeCommandV1" + suffix,
            "Legacy v1",
            "Run a command (v1)",
            "Checked like v3 `execute_command`. With `show_progress=true` the answer is one JSON object "
            'per line (`application/x-ndjson`): `{"state": "started"}`, `device_in_progress` with each '
            "progress payload, then the final state." + alias,
            (
                _parameter(
                    "show_progress",
                    "query",
                    {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
                    "Stream the progress (`true`, `1` or `yes`, any letter case).",
                ),
            ),
            body=_json_body("V1CommandRequest", required=True),
            responses={
                "200": {
                    "description": "The final state; with `show_progress`, each step on its own line.",
                    "content": {
                        "application/json": {"schema": _ref("V1CommandOutcome")},
                        "application/x-ndjson": {
                            "schema": {"type": "string"},
                            "x-line-schema": _ref("V1CommandProgress"),
                        },
                    },
                }
            },
            errors=("400", "403", "404", "413", "422"),
        ),
        Operation(
            "POST",
            root + "/telemetry/v1/timeseries",
            "timeseriesV1" + suffix,
            "Legacy v1",
            "Telemetry history as CSV (v1)",
            "The same query and answer as v3 `query_timeseries`." + alias,
            body=_json_body("TimeseriesQuery", required=True),
            responses=_csv_answer(),
            errors=("400", "404", "413", "422"),
        ),
        Operation(
            "GET",
            root + "/blueprints/v1/download",
            "downloadBlueprintV1" + suffix,
            "Legacy v1",
            "Download a blueprint as uploaded (v1)",
            alias.strip(),
            (_parameter("blueprint_id", "query", {"type": "string", "minLength": 1}, "", required=True),),
            responses=_ZIP_ANSWER,
            errors=("400", "404"),
        ),
    ]


def _operations_operations() -> list[Operation]:
    return [
        Operation(
            "GET",
            "/api/health",
            "health",
            "Operations",
            "Is the gateway healthy",
            "For monitors: the status code is the verdict. Not the error envelope: the body reports on "
            "the gateway. `Cache-Control: no-store`.",
            responses={
                "200": {"description": "Every check passed.", "content": _json_content(_ref("Health"))},
                "503": {
                    "description": "A check failed; its `detail` says why.",
                    "content": _json_content(_ref("Health")),
                },
            },
        ),
        Operation(
            "GET",
            "/metrics",
            "metrics",
            "Operations",
            "Prometheus metrics",
            "The Prometheus text format, or OpenMetrics when the `Accept` header asks for it.",
            responses={
                "200": {
                    "description": "The exposition.",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                }
            },
        ),
        Operation(
            "GET",
            DOCUMENT_PATH,
            "openapi",
            "Operations",
            "This OpenAPI document",
            responses={
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": _json_content({"type": "object", "required": ["openapi", "paths"]}),
                }
            },
        ),
        Operation(
            "GET",
            DOCS_PATH,
            "docs",
            "Operations",
            "This API's documentation as a web page",
            "Rendered on the gateway from the OpenAPI document; no scripts, nothing from the Internet.",
            responses={
                "200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}
            },
        ),
    ]


# --- Finding devices: search, tags, metadata (issue 8) -------------------------------------------


def _finding_schemas() -> Doc:
    """The schemas of tags, metadata fields and metadata values."""
    location = _object(
        {
            "latitude": {"type": "number", "minimum": -90, "maximum": 90},
            "longitude": {"type": "number", "minimum": -180, "maximum": 180},
            "name": _string(maxLength=200),
        },
        ["latitude", "longitude"],
        description="A `location` field's value.",
    )
    return {
        "TagRef": _object({"id": _string(), "name": _string()}),
        "Tag": _object(
            {
                "id": _string(),
                "name": _string(),
                "device_count": _integer(minimum=0),
                "created_at": _TIME,
                "updated_at": _TIME,
            }
        ),
        "TagEnvelope": _object({"tag": _ref("Tag")}),
        "TagList": _object(
            {"tags": {"type": "array", "items": _ref("Tag")}, "total_count": _integer(minimum=0)}
        ),
        "TagName": _object(
            {
                "name": _string(
                    "1-64 characters without `,` `/` `{` `}`, no surrounding whitespace; unique in "
                    "any letter case."
                )
            },
            closed=False,
        ),
        "MetadataLocation": location,
        "MetadataValue": {
            "oneOf": [
                {"type": "string", "description": "text or enum"},
                {"type": "number"},
                {"type": "boolean"},
                _ref("MetadataLocation"),
            ]
        },
        "MetadataField": _object(
            {
                "name": _string(pattern="^[a-z][a-z0-9_]{0,63}$"),
                "type": _enum(t.value for t in FieldType),
                "required": {
                    "type": "boolean",
                    "description": "Every device has a value: its own or the default (a required "
                    "field has one).",
                },
                "options": {"type": "array", "items": _string(), "description": "Enum fields only."},
                "default": _nullable(_ref("MetadataValue")),
                "description": _string(),
                "created_at": _TIME,
                "updated_at": _TIME,
            },
            ["name", "type", "required", "default", "description", "created_at", "updated_at"],
        ),
        "MetadataFieldEnvelope": _object({"metadata_field": _ref("MetadataField")}),
        "MetadataFieldList": _object(
            {
                "metadata_fields": {"type": "array", "items": _ref("MetadataField")},
                "total_count": _integer(minimum=0),
            }
        ),
        "MetadataFieldDefinition": _object(
            {
                "name": _string(pattern="^[a-z][a-z0-9_]{0,63}$"),
                "type": _enum(t.value for t in FieldType),
                "required": {"type": "boolean", "default": False},
                "options": {"type": "array", "items": _string(), "minItems": 1, "maxItems": 100},
                "default": _nullable(_ref("MetadataValue")),
                "description": _nullable(_string(maxLength=500)),
            },
            ["name", "type"],
            description="`options` for enum fields only (and required for them); a required field "
            "needs a `default`.",
        ),
        "MetadataFieldChanges": _object(
            {
                "required": {"type": "boolean"},
                "options": {"type": "array", "items": _string(), "minItems": 1, "maxItems": 100},
                "default": _nullable(_ref("MetadataValue")),
                "description": _nullable(_string(maxLength=500)),
            },
            [],
            description="Absent: unchanged; `default: null` removes the default. Name and type never change.",
        ),
        "MetadataValues": _object(
            {
                "values": {
                    "type": "object",
                    "additionalProperties": _nullable(_ref("MetadataValue")),
                    "description": "field name -> value; null removes the device's own value.",
                }
            },
            ["values"],
        ),
    }


def _device_search_parameters() -> tuple[Doc, ...]:
    """`q`, the filters and `order` of the device list."""
    moment = {"type": "string"}
    return (
        _parameter(
            "q",
            "query",
            {"type": "string"},
            "Words that must all occur, each as a substring in any letter case, in the name, slug, "
            f"hardware id or a metadata value. Each word needs at least {MIN_TERM_LENGTH} characters "
            "(400 otherwise): the index is a trigram index. Plain text; nothing is an operator.",
        ),
        _comma_list("type.in", (t.value for t in DeviceType), "Only these device types."),
        _comma_list(
            "connectivity.in",
            (c.value for c in Connectivity),
            "Only devices with this connectivity now (the same as `expand=connectivity` shows).",
        ),
        _parameter("tag.in", "query", {"type": "string"}, "Devices with any of these tags (ids or names)."),
        _parameter("blueprint_id.in", "query", {"type": "string"}, "Only these blueprints, comma-separated."),
        _parameter(
            "created_at.gte", "query", moment, "Created at or after: RFC 3339 (with a zone) or unix seconds."
        ),
        _parameter(
            "created_at.lt", "query", moment, "Created before: RFC 3339 (with a zone) or unix seconds."
        ),
        _parameter(
            "raised_alert_names.in",
            "query",
            {"type": "string"},
            "Devices raising any of these alerts now, comma-separated.",
        ),
        _parameter(
            "order",
            "query",
            _enum((o.value for o in DeviceOrder), "Any letter case."),
            "Default: by id. Ties are broken by id; names compare in any letter case; devices never "
            "seen sort as the oldest.",
        ),
    )


def _device_finding_operations(prefix: str, scoped: bool) -> list[Operation]:
    """Tags and metadata values on one device, under `prefix`."""
    site = (_param("SiteId"),) if scoped else ()
    device = (*site, _param("Device"))
    suffix = "InSite" if scoped else ""
    one = prefix + "/devices/{device}"
    tag = _parameter("tag", "path", {"type": "string", "minLength": 1}, "The tag's id or name.")
    return [
        Operation(
            "PUT",
            one + "/tags/{tag}",
            "attachTag" + suffix,
            "Tags",
            "Put a tag on a device",
            "Again is fine. Answers the device with `tags`.",
            (*device, tag),
            responses=_ok("DeviceEnvelope"),
            errors=("404",),
        ),
        Operation(
            "DELETE",
            one + "/tags/{tag}",
            "detachTag" + suffix,
            "Tags",
            "Take a tag off a device",
            "Whether it carried it or not. Answers the device with `tags`.",
            (*device, tag),
            responses=_ok("DeviceEnvelope"),
            errors=("404",),
        ),
        Operation(
            "PATCH",
            one + "/metadata",
            "updateDeviceMetadata" + suffix,
            "Metadata",
            "Set or remove a device's metadata values",
            "All or none: a value that does not fit its field is 400 naming its path "
            "(`metadata.serial_number`, `metadata.position.latitude`), and so is an unknown field. "
            "Answers the device with `metadata`.",
            device,
            body=_json_body("MetadataValues", required=True),
            responses=_ok("DeviceEnvelope"),
            errors=("400", "404", "409", "413"),
        ),
    ]


def _finding_operations() -> list[Operation]:
    """Tags and metadata field definitions."""
    tag = _parameter("tag", "path", {"type": "string", "minLength": 1}, "The tag's id or name.")
    field_name = _parameter("field", "path", {"type": "string", "minLength": 1}, "The field's name.")
    return [
        Operation(
            "GET",
            "/api/v3/tags",
            "listTags",
            "Tags",
            "List the tags",
            "By name, each with how many devices carry it.",
            (_param("Offset"), _param("Limit")),
            responses=_ok("TagList"),
            errors=("400",),
        ),
        Operation(
            "POST",
            "/api/v3/tags",
            "createTag",
            "Tags",
            "Create a tag",
            "409 when a tag has the name in any letter case.",
            body=_json_body("TagName", required=True),
            responses=_ok("TagEnvelope"),
            errors=("400", "409", "413"),
        ),
        Operation(
            "GET",
            "/api/v3/tags/{tag}",
            "getTag",
            "Tags",
            "Get a tag",
            parameters=(tag,),
            responses=_ok("TagEnvelope"),
            errors=("404",),
        ),
        Operation(
            "PATCH",
            "/api/v3/tags/{tag}",
            "renameTag",
            "Tags",
            "Rename a tag",
            "Devices keep it under the new name.",
            (tag,),
            body=_json_body("TagName", required=True),
            responses=_ok("TagEnvelope"),
            errors=("400", "404", "409", "413"),
        ),
        Operation(
            "DELETE",
            "/api/v3/tags/{tag}",
            "deleteTag",
            "Tags",
            "Delete a tag",
            "It is taken off every device.",
            (tag,),
            responses=_ok("Empty"),
            errors=("404",),
        ),
        Operation(
            "GET",
            "/api/v3/metadata_fields",
            "listMetadataFields",
            "Metadata",
            "List the metadata fields",
            "By name; at most 200 exist.",
            responses=_ok("MetadataFieldList"),
        ),
        Operation(
            "POST",
            "/api/v3/metadata_fields",
            "createMetadataField",
            "Metadata",
            "Define a metadata field",
            "Types: text (at most 500 characters), number, boolean, enum (one of `options`), location "
            "(`latitude`, `longitude`, optional `name`). A required field needs a `default`: devices "
            "without a value of their own show it.",
            body=_json_body("MetadataFieldDefinition", required=True),
            responses=_ok("MetadataFieldEnvelope"),
            errors=("400", "409", "413", "422"),
        ),
        Operation(
            "GET",
            "/api/v3/metadata_fields/{field}",
            "getMetadataField",
            "Metadata",
            "Get a metadata field",
            parameters=(field_name,),
            responses=_ok("MetadataFieldEnvelope"),
            errors=("404",),
        ),
        Operation(
            "PATCH",
            "/api/v3/metadata_fields/{field}",
            "updateMetadataField",
            "Metadata",
            "Change a metadata field",
            "`required`, `options`, `default`, `description`. Taking away enum options that devices "
            "hold is 409.",
            (field_name,),
            body=_json_body("MetadataFieldChanges", required=True),
            responses=_ok("MetadataFieldEnvelope"),
            errors=("400", "404", "409", "413"),
        ),
        Operation(
            "DELETE",
            "/api/v3/metadata_fields/{field}",
            "deleteMetadataField",
            "Metadata",
            "Delete a metadata field",
            "Every device's value for it goes too.",
            (field_name,),
            responses=_ok("Empty"),
            errors=("404",),
        ),
    ]


def operations() -> list[Operation]:
    """Every documented operation, in the order of the docs page."""
    return [
        *_site_operations(),
        *_site_stats_operations(),
        *_device_operations("/api/v3", False),
        *_device_operations("/api/v3/sites/{site_id}", True),
        *_device_finding_operations("/api/v3", False),
        *_device_finding_operations("/api/v3/sites/{site_id}", True),
        *_finding_operations(),
        _site_executions_operation(),
        _site_events_operation(),
        *_provisioning_operations(),
        *_telemetry_operations(),
        *_blueprint_operations(),
        *_legacy_operations("/api"),
        *_legacy_operations(""),
        *_operations_operations(),
    ]


_TAGS: tuple[tuple[str, str], ...] = (
    ("Sites", "The gateway holds exactly one site."),
    ("Devices", "Every device path is served under `/api/v3/devices` and `/api/v3/sites/{site_id}/devices`."),
    ("Commands", "Command executions: run, send, list."),
    ("Logs", "Device logs."),
    ("Streams", "WebSocket streams (GET with `Upgrade: websocket`)."),
    ("Timeline", "What happened to each device, and user events (the gateway's own addition)."),
    ("Provisioning", "Creating devices of every kind."),
    ("Telemetry", "Latest values and history."),
    ("Blueprints", "Blueprint archives, manifests and device profiles."),
    ("Assets API v1", "Gateway 2.x clients."),
    ("Legacy v1", "Gateway 2.x telemetry, commands and blueprint APIs."),
    ("Operations", "Monitoring and this documentation; no token needed."),
    ("Tags", "Labels on devices, to group and find them (`tag.in=` on the device list)."),
    ("Metadata", "Typed, site-wide metadata fields and each device's values for them."),
)


def _operation_object(operation: Operation, roles: Roles) -> Doc:
    key = (operation.method, operation.path)
    role = roles.get(key)
    public = key in roles and role is None
    description = operation.description
    if public:
        needs = "No token needed."
    elif role is not None:
        needs = f"Needs the {role.value} role or higher."
    else:
        needs = ""
    responses: Doc = {status: dict(response) for status, response in operation.responses.items()}
    statuses = list(operation.errors)
    if not public:
        statuses += ["401", "403"]
    statuses.append("429")
    for status in sorted(set(statuses)):
        responses.setdefault(status, {"$ref": f"#/components/responses/{_ERRORS[status][0]}"})
    body: Doc = {
        "operationId": operation.operation_id,
        "tags": [operation.tag],
        "summary": operation.summary,
        "description": " ".join(part for part in (description, needs) if part),
    }
    if operation.parameters:
        body["parameters"] = list(operation.parameters)
    if operation.body is not None:
        body["requestBody"] = operation.body
    body["responses"] = dict(sorted(responses.items()))
    if public:
        body["security"] = []
    if key in roles:
        body[ROLE_EXTENSION] = None if role is None else role.value
    return body


def document(*, version: str, server_url: str, roles: Roles) -> Doc:
    """The OpenAPI 3.1 document: every operation, each with the lowest role that `roles` (the
    route table) gives it; `server_url` is the gateway's origin (`http://host:port`)."""
    paths: Doc = {}
    for operation in operations():
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation_object(operation, roles)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "enapter-gateway API",
            "version": version,
            "description": (
                "The Enapter HTTP API v3 and the Gateway 2.x (v1) APIs as this gateway serves them, "
                "for Enapter's own clients (python-sdk, the enapter3 CLI, Grafana, VS Code, MCP).\n\n"
                f"Send the token in `{TOKEN_HEADER}`: no token is 401, an unknown or revoked one 403, "
                "and so is too low a role (`READONLY < USER < OWNER < INSTALLER < VENDOR`). Each "
                f"operation names its lowest role in `{ROLE_EXTENSION}`.\n\n"
                "Every success is 200 with a JSON body (deletes answer `{}`); every error is "
                '`{"errors": [{"code", "message", "details"?}]}`. Requests are rate limited per token '
                "and per client address (429 with `Retry-After`; limited answers carry "
                "`X-RateLimit-Limit`, `-Remaining` and `-Reset`). Every GET also answers HEAD."
            ),
        },
        "servers": [{"url": server_url, "description": "This gateway."}],
        "tags": [{"name": name, "description": text} for name, text in _TAGS],
        "security": [{SECURITY_SCHEME: []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": TOKEN_HEADER,
                    "description": "An API token made with `enapter-gateway token create --role ROLE`.",
                }
            },
            "schemas": _schemas(),
            "parameters": _parameters(),
            "responses": _responses(),
        },
    }


# --- The docs page (pure) ------------------------------------------------------------------------

_CODE = re.compile(r"`([^`]+)`")
_METHODS = ("get", "post", "put", "patch", "delete", "head")
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:0 1rem 4rem;color:#1d1d1f}
h1{margin-top:1.5rem}h2{border-bottom:2px solid #ddd;margin-top:2.5rem}
code{background:#f2f2f4;border-radius:3px;padding:0 .25em;font-size:90%}
table{border-collapse:collapse;margin:.4rem 0 .8rem;width:100%}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f7f7f9}.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.4rem .9rem}
.m{display:inline-block;min-width:4.2rem;font-weight:700;color:#fff;border-radius:4px;padding:0 .4rem;
text-align:center}.get{background:#2f7d32}.post{background:#1f5fbf}.patch{background:#b26a00}
.delete{background:#b3261e}.path{font-family:monospace;font-size:105%}.role{float:right;color:#555}
nav ul{columns:2}
"""


def _anchor(name: str) -> str:
    """An HTML id for a tag or schema name (ids have no spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def _text(value: object) -> str:
    """Escaped text with `code` spans."""
    return _CODE.sub(r"<code>\1</code>", html.escape(str(value)))


def _paragraphs(value: str) -> str:
    return "".join(f"<p>{_text(part)}</p>" for part in value.split("\n\n") if part.strip())


def _resolve(doc: Mapping[str, Any], item: Mapping[str, Any]) -> Mapping[str, Any]:
    """A `#/components/...` reference followed (once); anything else as it is."""
    ref = item.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return item
    target: Any = doc
    for part in ref[2:].split("/"):
        target = target[part]
    return dict(target)


def _type_text(schema: Mapping[str, Any]) -> str:
    """A schema as a short type expression in HTML, named schemas linked to their section."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{_anchor(name)}">{html.escape(name)}</a>'
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            return " | ".join(_type_text(option) for option in schema[combinator])
    if "const" in schema:
        return f"<code>{html.escape(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{html.escape(json.dumps(v))}</code>" for v in schema["enum"])
    kinds = schema.get("type")
    names = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    parts: list[str] = []
    for kind in names:
        if kind == "array":
            parts.append("array of " + _type_text(schema.get("items", {})))
        elif kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
            parts.append("map of " + _type_text(schema["additionalProperties"]))
        else:
            parts.append(html.escape(str(kind)))
    return " | ".join(parts) if parts else "any"


def _parameter_type(parameter: Mapping[str, Any]) -> str:
    """A parameter's type; `style: form, explode: false` arrays are written `a,b`."""
    schema = parameter.get("schema", {})
    if schema.get("type") == "array" and parameter.get("explode") is False:
        return "comma-separated, each " + _type_text(schema.get("items", {}))
    if parameter.get("style") == "deepObject":
        return f"<code>{html.escape(parameter['name'])}[key]=</code>" + _type_text(
            schema.get("additionalProperties", {})
        )
    return _type_text(schema)


def _schema_table(schema: Mapping[str, Any]) -> str:
    """The properties of an object schema as a table (empty for other schemas)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return ""
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code>{'' if name in required else ' (optional)'}</td>"
        f"<td>{_type_text(prop)}</td><td>{_text(prop.get('description', ''))}</td></tr>"
        for name, prop in properties.items()
    )
    return f"<table><tr><th>Field</th><th>Type</th><th>Notes</th></tr>{rows}</table>"


def _operation_html(doc: Mapping[str, Any], method: str, path: str, operation: Mapping[str, Any]) -> str:
    role = operation.get(ROLE_EXTENSION)
    who = "no token" if operation.get("security") == [] else f"role {role} or higher" if role else ""
    parts = [
        f'<div class="op" id="{_anchor(operation["operationId"])}">',
        f'<p><span class="m {method}">{method.upper()}</span> <span class="path">{html.escape(path)}</span>'
        f'<span class="role">{html.escape(who)}</span></p>',
        f"<p><strong>{_text(operation['summary'])}</strong></p>",
        _paragraphs(operation.get("description", "")),
    ]
    parameters = [_resolve(doc, p) for p in operation.get("parameters", ())]
    if parameters:
        cells = "".join(
            f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{html.escape(p['in'])}"
            f"{', required' if p.get('required') else ''}</td><td>{_parameter_type(p)}</td>"
            f"<td>{_text(p.get('description', ''))}</td></tr>"
            for p in parameters
        )
        parts.append(
            f"<table><tr><th>Parameter</th><th>In</th><th>Type</th><th>Notes</th></tr>{cells}</table>"
        )
    body = operation.get("requestBody")
    if isinstance(body, Mapping):
        kinds = ", ".join(
            f"<code>{html.escape(kind)}</code>: {_type_text(media.get('schema', {}))}"
            for kind, media in body.get("content", {}).items()
        )
        parts.append(f"<p>Body{' (required)' if body.get('required') else ''}: {kinds}</p>")
        if body.get("description"):
            parts.append(_paragraphs(body["description"]))
    rows: list[str] = []
    for status, raw in operation.get("responses", {}).items():
        response = _resolve(doc, raw)
        media = ", ".join(
            f"<code>{html.escape(kind)}</code>: {_type_text(item.get('schema', {}))}"
            for kind, item in response.get("content", {}).items()
        )
        if "x-websocket-frame" in response:
            media = "frames: " + _type_text(response["x-websocket-frame"])
        rows.append(
            f"<tr><td>{html.escape(status)}</td><td>{media}</td><td>{_text(response['description'])}</td></tr>"
        )
    parts.append(f"<table><tr><th>Status</th><th>Body</th><th>Meaning</th></tr>{''.join(rows)}</table>")
    parts.append("</div>")
    return "".join(parts)


def render_html(doc: Mapping[str, Any]) -> str:
    """The docs page: operations grouped by tag, with parameters, bodies, answers and the role
    each needs, then every schema. Self-contained: inline CSS, no scripts, no external links."""
    info = doc["info"]
    grouped: dict[str, list[str]] = {tag["name"]: [] for tag in doc.get("tags", ())}
    for path, item in doc["paths"].items():
        for method in _METHODS:
            if method in item:
                operation = item[method]
                grouped.setdefault(operation["tags"][0], []).append(
                    _operation_html(doc, method, path, operation)
                )
    descriptions = {tag["name"]: tag.get("description", "") for tag in doc.get("tags", ())}
    servers = ", ".join(f"<code>{html.escape(server['url'])}</code>" for server in doc.get("servers", ()))
    nav = "".join(
        f'<li><a href="#tag-{_anchor(name)}">{html.escape(name)}</a> ({len(items)})</li>'
        for name, items in grouped.items()
        if items
    )
    sections = "".join(
        f'<h2 id="tag-{_anchor(name)}">{html.escape(name)}</h2>{_paragraphs(descriptions.get(name, ""))}'
        + "".join(items)
        for name, items in grouped.items()
        if items
    )
    schemas = "".join(
        f'<h3 id="schema-{_anchor(name)}">{html.escape(name)}</h3>'
        f"{_paragraphs(schema.get('description', ''))}<p>{_type_text(schema)}</p>{_schema_table(schema)}"
        for name, schema in doc["components"]["schemas"].items()
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(info['title'])} {html.escape(info['version'])}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(info['title'])} <small>{html.escape(info['version'])}</small></h1>"
        f"{_paragraphs(info.get('description', ''))}"
        f'<p>Server: {servers}. Machine-readable: <a href="{DOCUMENT_PATH}">{DOCUMENT_PATH}</a> '
        f"(OpenAPI {html.escape(doc['openapi'])}).</p>"
        f'<nav><ul>{nav}<li><a href="#schemas">Schemas</a></li></ul></nav>'
        f'{sections}<h2 id="schemas">Schemas</h2>{schemas}</body></html>'
    )


# --- Handlers ------------------------------------------------------------------------------------


def served_roles(app: web.Application) -> dict[tuple[str, str], Role | None]:
    """The running application's route table as `roles`: (method, path template) -> lowest role
    (HEAD routes left out: each mirrors its GET)."""
    return {
        (route.method, route.resource.canonical): role
        for route, role in app[ACCESS].minimum_roles.items()
        if route.resource is not None and route.method != "HEAD"
    }


def _served_document(request: web.Request) -> Doc:
    return document(
        version=__version__,
        server_url=f"{request.scheme}://{request.host}",
        roles=served_roles(request.app),
    )


async def openapi_json(request: web.Request) -> web.Response:
    """GET /api/openapi.json: this gateway's OpenAPI document."""
    return json_response(_served_document(request))


async def docs_page(request: web.Request) -> web.Response:
    """GET /api/docs: the document as a web page."""
    return web.Response(text=render_html(_served_document(request)), content_type="text/html")
