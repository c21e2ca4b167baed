"""Device topic names: parse what devices publish, build what the gateway publishes.

Pure: no I/O. Layout per `enapter-device-protocol.md` §1.2: every device topic is
`v1/{from|to}/<hardware_id>/<channel_id>/<path>`. The gateway subscribes to `v1/from/+/+/#` and
dispatches on `<path>`; unknown paths are reported, not rejected, because closed UCM firmware may
publish more than the SDK does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.model import ChannelRef

DEVICE_SUBSCRIPTION = "v1/from/+/+/#"

# Long enough for every id seen in the wild (`V`/`S` + 32 hex, `ucm`, `gio`), short enough to keep
# topics, log lines and metric labels bounded.
MAX_IDENTIFIER_LENGTH = 128

# Characters that would change the meaning of a topic level: level separator, MQTT wildcards, and
# NUL (forbidden in MQTT strings, MQTT 3.1.1 §1.5.3).
_FORBIDDEN_IN_IDENTIFIER = frozenset("/+#\x00")


class MessageKind(enum.StrEnum):
    """What a device-to-gateway message carries, decided by the topic suffix."""

    TELEMETRY = "telemetry"
    PROPERTIES = "properties"
    LOGS = "logs"
    COMMAND_RESPONSE = "command_response"


# Both property suffixes are live: the SDK publishes `v1/register`, the docs say `v1/properties`.
# Logs really are under `v3` (§1.2).
_SUFFIXES: dict[str, MessageKind] = {
    "v1/telemetry": MessageKind.TELEMETRY,
    "v1/register": MessageKind.PROPERTIES,
    "v1/properties": MessageKind.PROPERTIES,
    "v3/logs": MessageKind.LOGS,
    "v1/command/responses": MessageKind.COMMAND_RESPONSE,
}


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """A recognised device-to-gateway topic."""

    channel: ChannelRef
    kind: MessageKind


@dataclass(frozen=True, slots=True)
class UnknownTopic:
    """A topic the gateway does not handle.

    `reason` is a short stable label fit for a metric: `not_device_topic`, `bad_identifier` or
    `unknown_suffix`.
    """

    reason: str


def valid_identifier(value: str) -> bool:
    """True if `value` can be a hardware id or channel id, i.e. exactly one safe topic level."""
    return 0 < len(value) <= MAX_IDENTIFIER_LENGTH and _FORBIDDEN_IN_IDENTIFIER.isdisjoint(value)


def parse(topic: str) -> DeviceTopic | UnknownTopic:
    """Classify a topic received on `DEVICE_SUBSCRIPTION` (or any other topic: never raises)."""
    parts = topic.split("/", 4)
    # `v1/from/+/+/#` also matches `v1/from/<hw>/<ch>` itself (`#` includes the parent level), so
    # four levels is still a device topic, just one without a known suffix.
    if len(parts) < 4 or parts[0] != "v1" or parts[1] != "from":
        return UnknownTopic("not_device_topic")
    hardware_id, channel_id = parts[2], parts[3]
    if not (valid_identifier(hardware_id) and valid_identifier(channel_id)):
        return UnknownTopic("bad_identifier")
    kind = _SUFFIXES.get(parts[4]) if len(parts) == 5 else None
    if kind is None:
        return UnknownTopic("unknown_suffix")
    return DeviceTopic(ChannelRef(hardware_id, channel_id), kind)


def command_requests_topic(channel: ChannelRef) -> str:
    """The topic a device's SDK subscribes to for commands (§1.2).

    Raises ValueError if either id is not a `valid_identifier`: publishing with a `/`, `+` or `#`
    inside would reach other devices' topics (or be refused by the client library).
    """
    if not (valid_identifier(channel.hardware_id) and valid_identifier(channel.channel_id)):
        raise ValueError(f"not a valid channel for a topic: {channel!r:.160}")
    return f"v1/to/{channel.hardware_id}/{channel.channel_id}/v1/command/requests"
