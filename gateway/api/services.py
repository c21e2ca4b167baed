"""What the HTTP handlers may use: the store, live presence, ingest, device accounts.

Built once in `gateway.runtime` and attached to the aiohttp application.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from gateway.api.dto import DeviceView, TimeSync, alert_details
from gateway.blueprints.catalog import ManifestCatalog
from gateway.blueprints.conformance import readable
from gateway.commands import Commands
from gateway.events import ConnectivityRecorder
from gateway.live import EventFeed, LiveFeed
from gateway.metadata import effective_values
from gateway.model import Connectivity, Device, DeviceType, JsonValue, Role
from gateway.mqtt.accounts import DeviceAccounts
from gateway.mqtt.broker import ManagedBroker
from gateway.mqtt.ingest import Ingest
from gateway.presence import Presence
from gateway.stats import CounterHistory, Windowed
from gateway.store.store import Store


@dataclass(frozen=True, slots=True)
class DeviceEndpoint:
    """What generated device configs point at."""

    mqtt_host: str
    mqtt_port: int
    # None when this gateway does not issue client certificates.
    mqtts_port: int | None
    time_sync: TimeSync


def no_mdns() -> Mapping[str, JsonValue]:
    """The `mdns` part of `enapter-gateway status` when nothing is advertised."""
    return {}


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a handler may use (`broker` is None with an external broker)."""

    store: Store
    presence: Presence
    ingest: Ingest
    commands: Commands
    accounts: DeviceAccounts
    device_endpoint: DeviceEndpoint
    broker: ManagedBroker | None
    live: LiveFeed
    manifests: ManifestCatalog
    clock: Callable[[], float] = field(default=time.time)
    # What mDNS advertises (e.g. the name, whether an alias is in use), for `status`.
    mdns: Callable[[], Mapping[str, JsonValue]] = field(default=no_mdns)
    # time.monotonic() when the daemon was put together, for its uptime.
    started: float = field(default_factory=time.monotonic)
    # Timeline events live (the event stream), and the connectivity events' writer.
    events: EventFeed = field(default_factory=EventFeed)
    recorder: ConnectivityRecorder | None = None
    # Samples of the drop counters, for the site statistics' windows (`sample_drops`).
    drop_history: CounterHistory = field(default_factory=lambda: CounterHistory(time.time()))

    def dropped(self) -> dict[str, int]:
        """Device messages lost since the daemon started, by reason: refused by ingest, or
        lost by the store's writer."""
        counts = dict(self.ingest.dropped)
        store = self.store.stats
        for reason, count in (
            ("write_failed", store.dropped_write_failed),
            ("unknown_device", store.skipped_unknown_device),
        ):
            if count:
                counts[reason] = counts.get(reason, 0) + count
        return counts

    def sample_drops(self) -> None:
        """Remember the drop counters now (called every minute)."""
        self.drop_history.record(self.clock(), self.dropped())

    def drops_since(self, start: float) -> Windowed:
        """Device messages lost from `start` on, as far as the daemon counted them."""
        return self.drop_history.since(start, self.dropped())

    async def views(
        self,
        devices: Sequence[Device],
        expand: frozenset[str],
        role: Role,
        *,
        last_seen: Mapping[str, float] | None = None,
    ) -> list[DeviceView]:
        """Each device with its manifest, properties (those `role` may read), connectivity and
        raised alerts, as far as `expand` needs.

        `last_seen` (device id -> `Store.last_seen`) when the caller read it with the devices.
        """
        ids = [device.id for device in devices]
        properties = await self.store.properties(ids) if "properties" in expand else {}
        raised = (
            await self.store.raised_alerts(ids) if expand & {"raised_alert_names", "raised_alerts"} else {}
        )
        mismatches = await self.store.mismatches(ids) if "manifest_mismatches" in expand else {}
        if last_seen is None:
            last_seen = await self.store.last_seen(ids) if "connectivity" in expand else {}
        blueprints = (
            await self.store.blueprints({device.blueprint_id for device in devices})
            if "manifest" in expand
            else {}
        )
        tags = await self.store.device_tags(ids) if "tags" in expand else {}
        fields = await self.store.metadata_fields() if "metadata" in expand else {}
        own_metadata = await self.store.device_metadata(ids) if "metadata" in expand else {}
        now = self.clock()
        # What `expand` does not ask for stays empty: no call per device for it (a page is 50).
        with_properties = "properties" in expand
        with_alerts = "raised_alerts" in expand
        with_metadata = "metadata" in expand
        views: list[DeviceView] = []
        for device in devices:
            device_id = device.id
            manifest = self.manifests.of(device_id)
            blueprint = blueprints.get(device.blueprint_id) if blueprints else None
            names = raised.get(device_id, [])
            views.append(
                DeviceView(
                    device=device,
                    properties=(
                        readable(manifest, "properties", properties.get(device_id, {}), role)
                        if with_properties
                        else {}
                    ),
                    connectivity=self._connectivity(device, now, seen_before=device_id in last_seen),
                    raised_alert_names=names,
                    manifest=None if blueprint is None else blueprint.manifest,
                    implemented_profiles=() if manifest is None else manifest.implements,
                    alert_details=alert_details(manifest, names) if with_alerts else [],
                    mismatches=mismatches.get(device_id, []),
                    tags=tags.get(device_id, []),
                    metadata=(
                        effective_values(fields, own_metadata.get(device_id, {})) if with_metadata else {}
                    ),
                )
            )
        return views

    def connectivity_sets(self) -> tuple[frozenset[str], frozenset[str]]:
        """(identities ONLINE now, identities Presence saw): what `store.find_devices` needs to
        decide connectivity in SQL exactly as `_connectivity` does."""
        return self.presence.online_identities(self.clock()), self.presence.seen_identities()

    def _connectivity(self, device: Device, now: float, *, seen_before: bool) -> Connectivity:
        if device.type is DeviceType.GATEWAY:
            return Connectivity.ONLINE  # it is answering this request
        return self.presence.status(device.hardware_id, now, seen_before=seen_before)


SERVICES = web.AppKey("services", Services)
