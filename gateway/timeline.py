"""Device timeline events: what happened to a device, as stored and as shown.

Pure: values and the rules that turn state changes into events; no I/O, no clock. The store writes
events in the same transaction as the change they describe (provisioning, renames, credentials,
blueprints, alerts, command outcomes, clearing data); connectivity events come from the broker's
notices through `gateway.events`. Every event has a `type` (the wire spelling below), a
`timestamp` (gateway clock) and type-specific `details`:

| type | details |
|---|---|
| `connected` | `{}` (an identity went from no open connection to one or more) |
| `disconnected` | `{"reason"}`: the broker's reason for the last connection's end (below) |
| `provisioned` | `{"name", "slug", "type"}` |
| `config_generated` | `{"protocol"}`: new credentials (`MQTT` or `MQTTS`) |
| `config_revoked` | `{"protocol", "reason"}`: `replaced` by new ones, or `removed` |
| `blueprint_assigned` | `{"blueprint_id", "blueprint_name"}` |
| `renamed` | `{"old_name", "new_name", "old_slug", "new_slug"}` |
| `alert_raised`, `alert_cleared` | `{"alert"}`: one event per alert name |
| `command_executed` | `{"execution_id", "command", "state"}` with the final state |
| `data_cleared` | `{}` |
| `user` | `{"code", "description"}` (description may be null), posted by a user |

Disconnect reasons are Mosquitto's (`gateway.mqtt.notices`): `disconnected` (a clean DISCONNECT),
`closed its connection` (the socket closed without one, e.g. a killed process), `exceeded timeout`,
`session taken over`, ...; `broker restarted` when the managed broker went down, and `gateway
stopped` for the connections a stopped daemon's managed broker took along (recorded at the next
start, stamped with the device's last message).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from gateway.model import JsonObject


class EventType(enum.StrEnum):
    """What happened; the value is the wire spelling (the `type` field and the `type.in` filter)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    PROVISIONED = "provisioned"
    CONFIG_GENERATED = "config_generated"
    CONFIG_REVOKED = "config_revoked"
    BLUEPRINT_ASSIGNED = "blueprint_assigned"
    RENAMED = "renamed"
    ALERT_RAISED = "alert_raised"
    ALERT_CLEARED = "alert_cleared"
    COMMAND_EXECUTED = "command_executed"
    DATA_CLEARED = "data_cleared"
    USER = "user"


CONNECTIVITY: frozenset[EventType] = frozenset({EventType.CONNECTED, EventType.DISCONNECTED})
"""The events an uptime computation reads."""

BROKER_RESTARTED = "broker restarted"
"""The `reason` of the disconnections a broker restart causes (no notice tells of them)."""

GATEWAY_STOPPED = "gateway stopped"
"""The `reason` recorded at start for devices the previous run left connected: the managed broker
stopped with it, and took their connections along."""

# A user event's `code`: a short identifier, like Blynk's event codes.
USER_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_USER_DESCRIPTION = 1000


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to record for a device (the store gives it an id)."""

    device_id: str
    type: EventType
    timestamp: float
    details: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A recorded timeline event; ids grow with insertion."""

    id: int
    device_id: str
    type: EventType
    timestamp: float
    details: JsonObject


@dataclass(frozen=True, slots=True)
class ConnectivityChange:
    """A broker identity (a credential's username) came online or went offline.

    `reason` is None for `connected`. The store resolves the identity to the device holding that
    credential; an identity without one (e.g. a deleted device) gives no event.
    """

    identity: str
    online: bool
    timestamp: float
    reason: str | None = None

    def event_for(self, device_id: str) -> NewEvent:
        """The timeline event of this change for the device holding the identity."""
        if self.online:
            return NewEvent(device_id, EventType.CONNECTED, self.timestamp)
        return NewEvent(device_id, EventType.DISCONNECTED, self.timestamp, {"reason": self.reason or ""})


def alert_changes(
    device_id: str, before: Collection[str], after: Iterable[str], timestamp: float
) -> list[NewEvent]:
    """One `alert_cleared` per alert no longer raised, then one `alert_raised` per new alert."""
    now = list(dict.fromkeys(after))
    cleared = [name for name in dict.fromkeys(before) if name not in now]
    raised = [name for name in now if name not in before]
    return [NewEvent(device_id, EventType.ALERT_CLEARED, timestamp, {"alert": name}) for name in cleared] + [
        NewEvent(device_id, EventType.ALERT_RAISED, timestamp, {"alert": name}) for name in raised
    ]


def renamed(device_id: str, old: tuple[str, str], new: tuple[str, str], timestamp: float) -> NewEvent | None:
    """A `renamed` event for a (name, slug) change, or None when neither changed."""
    if old == new:
        return None
    details: JsonObject = {"old_name": old[0], "new_name": new[0], "old_slug": old[1], "new_slug": new[1]}
    return NewEvent(device_id, EventType.RENAMED, timestamp, details)
