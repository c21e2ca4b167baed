"""Which manifest each device follows, kept in memory: ingest reads it for every message, the API
for every command and every telemetry or properties response.

Filled from the store at start-up and kept in step by the API when a blueprint is assigned or a
device deleted. Manifests are parsed once per blueprint and shared by its devices.
"""

from __future__ import annotations

import logging

from gateway.blueprints.manifest import Manifest, ManifestError, validate
from gateway.model import Blueprint
from gateway.store.store import Store

LOG = logging.getLogger("gateway.blueprints")


class ManifestCatalog:
    """device id -> the manifest of its blueprint (none: the device accepts everything)."""

    def __init__(self) -> None:
        self._by_blueprint: dict[str, Manifest | None] = {}
        self._by_device: dict[str, Manifest] = {}

    @classmethod
    async def load(cls, store: Store) -> ManifestCatalog:
        """The catalog of every device that has a stored blueprint."""
        catalog = cls()
        assigned = await store.blueprints_in_use()
        blueprints = await store.blueprints(set(assigned.values()))
        for device_id, blueprint_id in assigned.items():
            catalog.assign(device_id, blueprints[blueprint_id])
        return catalog

    def of(self, device_id: str) -> Manifest | None:
        """The device's manifest, if it has a blueprint."""
        return self._by_device.get(device_id)

    def assign(self, device_id: str, blueprint: Blueprint) -> None:
        """The device follows this blueprint from now on."""
        if blueprint.id not in self._by_blueprint:
            self._by_blueprint[blueprint.id] = self._parse(blueprint)
        manifest = self._by_blueprint[blueprint.id]
        if manifest is None:
            self._by_device.pop(device_id, None)
        else:
            self._by_device[device_id] = manifest

    def forget(self, device_id: str) -> None:
        """The device is gone."""
        self._by_device.pop(device_id, None)

    @staticmethod
    def _parse(blueprint: Blueprint) -> Manifest | None:
        try:
            return validate(blueprint.manifest)
        except ManifestError as exc:
            # Stored by an older version with other rules: the device then accepts everything.
            LOG.error("blueprint %s no longer validates, ignoring its manifest: %s", blueprint.id, exc)
            return None
