"""Domain values shared by every layer: enums with their wire spellings and frozen records.

Pure: no I/O. The enum values are exactly what Enapter's clients parse (python-sdk raises on
anything else), see `enapter-http-api.md` §2-3.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = dict[str, "JsonValue"]

# Devices without a blueprint still need a `blueprint_id` string (python-sdk reads it as required).
NO_BLUEPRINT_ID = "00000000-0000-0000-0000-000000000000"


class Role(enum.StrEnum):
    """API access role, lowest first; a role has every right of the roles before it."""

    READONLY = "READONLY"
    USER = "USER"
    OWNER = "OWNER"
    INSTALLER = "INSTALLER"
    VENDOR = "VENDOR"
    SYSTEM = "SYSTEM"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


class DeviceType(enum.StrEnum):
    STANDALONE = "STANDALONE"
    GATEWAY = "GATEWAY"
    EMBEDDED_UCM = "EMBEDDED_UCM"
    HARDWARE_UCM = "HARDWARE_UCM"
    VIRTUAL_UCM = "VIRTUAL_UCM"
    LINK_MASTER_UCM = "LINK_MASTER_UCM"
    LINK_SLAVE_UCM = "LINK_SLAVE_UCM"
    LUA = "LUA"
    NATIVE = "NATIVE"
    CHILD = "CHILD"


class CommunicationType(enum.StrEnum):
    MQTT_V1_PLAINTEXT = "MQTT_V1_PLAINTEXT"
    MQTT_V1_TLS = "MQTT_V1_TLS"
    MQTT_V1_LOCALHOST = "MQTT_V1_LOCALHOST"
    UCM_LUA = "UCM_LUA"
    UCM_EMBEDDED = "UCM_EMBEDDED"
    LINK = "LINK"


class Connectivity(enum.StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"


class MqttProtocol(enum.StrEnum):
    MQTT = "MQTT"
    MQTTS = "MQTTS"


class LogSeverity(enum.StrEnum):
    """Least to most severe."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    def and_more_severe(self) -> frozenset[LogSeverity]:
        """This level and every more severe one: what a `severity=<level>` filter shows."""
        levels = list(LogSeverity)
        return frozenset(levels[levels.index(self) :])


class CommandResponseState(enum.StrEnum):
    """`execution.response.state` on the HTTP side."""

    STARTED = "STARTED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    ERROR = "ERROR"

    @property
    def execution_state(self) -> ExecutionState:
        """What a response in this state makes of its execution (`enapter-http-api.md` §6)."""
        if self is CommandResponseState.SUCCEEDED:
            return ExecutionState.SUCCESS
        if self is CommandResponseState.ERROR:
            return ExecutionState.ERROR
        return ExecutionState.IN_PROGRESS


class ExecutionState(enum.StrEnum):
    """`execution.state` (python-sdk `ExecutionState`)."""

    NEW = "NEW"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    UNSYNC = "UNSYNC"

    @property
    def terminal(self) -> bool:
        """No response changes an execution in this state any more."""
        return self not in (ExecutionState.NEW, ExecutionState.IN_PROGRESS)


class SeriesKind(enum.StrEnum):
    """The JSON type of a series' values, as `X-Enapter-Timeseries-Data-Types` words where possible."""

    FLOAT = "float"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"
    STRING_ARRAY = "string_array"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """One device endpoint on the MQTT side: `v1/from/<hardware_id>/<channel_id>/...`."""

    hardware_id: str
    channel_id: str


# --- Decoded device messages (output of `gateway.mqtt.payloads.decode`) -------------------------


@dataclass(frozen=True, slots=True)
class Telemetry:
    timestamp: float
    values: Mapping[str, JsonValue]
    # None = the message said nothing about alerts (`null` or absent): no alerts raised.
    alerts: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Properties:
    timestamp: float
    values: Mapping[str, JsonValue]


@dataclass(frozen=True, slots=True)
class LogEntry:
    timestamp: float
    message: str
    severity: LogSeverity
    persist: bool


@dataclass(frozen=True, slots=True)
class CommandResponse:
    execution_id: str
    state: CommandResponseState
    payload: Mapping[str, JsonValue]


DeviceMessage: TypeAlias = Telemetry | Properties | LogEntry | CommandResponse


# --- Stored records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """Where the site is; every part is optional (`enapter-http-api.md` §3.2)."""

    name: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    timezone: str
    updated_at: float
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Blueprint:
    """An uploaded blueprint: its compiled manifest as JSON (the archive is read on its own)."""

    id: str
    digest: str
    name: str
    manifest: JsonObject
    created_at: float


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A telemetry or properties value that its device's manifest does not declare or allow."""

    section: str  # "telemetry" | "properties"
    attribute: str
    reason: str


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    site_id: str
    name: str
    slug: str
    type: DeviceType
    blueprint_id: str
    communication_type: CommunicationType | None
    hardware_id: str | None
    channel_id: str | None
    upstream_id: str | None
    created_at: float
    updated_at: float

    @property
    def channel(self) -> ChannelRef | None:
        if self.hardware_id is None or self.channel_id is None:
            return None
        return ChannelRef(self.hardware_id, self.channel_id)


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The newest stored value of one telemetry attribute and the device's timestamp for it."""

    value: JsonValue
    timestamp: float


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResponse:
    """One response to a command execution, from the device or from the gateway itself."""

    state: CommandResponseState
    payload: Mapping[str, JsonValue]
    received_at: float


@dataclass(frozen=True, slots=True)
class CommandExecution:
    """A command sent to a device, with every response so far (oldest first)."""

    id: str
    device_id: str
    name: str
    # The canonical name from the manifest; the requested name until manifests are known.
    manifest_name: str
    arguments: Mapping[str, JsonValue]
    ephemeral: bool
    state: ExecutionState
    created_at: float
    responses: tuple[ExecutionResponse, ...] = ()


@dataclass(frozen=True, slots=True)
class Partial:
    """An aggregate of one or more stored values of one series (a raw value is one with count 1)."""

    start: float  # time of the value, or start of the rollup bucket
    count: int  # values of any type
    num_count: int  # numeric values (booleans as 0/1) among them
    total: float  # sum of the numeric values (0.0 if none)
    low: float | None  # min numeric value, None if num_count == 0
    high: float | None  # max numeric value
    last: JsonValue  # the newest value, decoded
    last_ts: float  # its timestamp
