"""Device messages against their manifest: what is flagged, which alerts are raised, what a role
may read (`enapter-device-protocol.md` §1.3 and §4, `enapter-http-api.md` §2).

Pure. Nothing is dropped here: values the manifest does not declare or allow are kept and only
reported as `Mismatch`es, because real devices send extras and manifests lag behind firmware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Literal, TypeVar

from gateway.blueprints.manifest import Manifest, check_value
from gateway.model import JsonValue, Mismatch, Properties, Role, Telemetry

Section = Literal["properties", "telemetry"]
UNDECLARED = "not declared in the manifest"

V = TypeVar("V")


def _mismatches(manifest: Manifest, section: Section, values: Mapping[str, JsonValue]) -> list[Mismatch]:
    found: list[Mismatch] = []
    for name, value in values.items():
        # A device on older firmware may still send an attribute under one of its aliases.
        attribute = manifest.attribute(section, name)
        reason = UNDECLARED if attribute is None else check_value(attribute, value)
        if reason is not None:
            found.append(Mismatch(section, name, reason))
    return found


def check_telemetry(manifest: Manifest, message: Telemetry) -> tuple[Telemetry, tuple[Mismatch, ...]]:
    """The message with the alerts of its `type: alerts` attributes added to `alerts`, and what
    does not match the manifest."""
    mismatches = _mismatches(manifest, "telemetry", message.values)
    flagged = {mismatch.attribute for mismatch in mismatches}
    extra: list[str] = []
    for name in manifest.alert_attributes():
        value = message.values.get(name)
        if isinstance(value, list) and name not in flagged:
            extra += [alert for alert in value if isinstance(alert, str)]
    if extra:
        alerts = tuple(dict.fromkeys([*(message.alerts or ()), *extra]))
        message = replace(message, alerts=alerts)
    return message, tuple(mismatches)


def check_properties(manifest: Manifest, message: Properties) -> tuple[Mismatch, ...]:
    """What in a properties message does not match the manifest."""
    return tuple(_mismatches(manifest, "properties", message.values))


def readable(
    manifest: Manifest | None, section: Section, values: Mapping[str, V], role: Role
) -> dict[str, V]:
    """Only the values `role` may read: declared ones need their `access_level`; undeclared ones
    and devices without a manifest are readable by everyone."""
    if manifest is None:
        return dict(values)
    return {name: value for name, value in values.items() if manifest.readable(section, name, role)}
