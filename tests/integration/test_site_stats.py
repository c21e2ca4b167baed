"""Uptime over a window, from the timeline in a real store (`gateway.api.v3.stats.online_fractions`):
the part of an hour each device was connected, with events at chosen times (the daemon's clock
cannot be moved in an end-to-end test; tests/e2e/test_site_stats.py measures a live SDK device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.api.v3.stats import online_fractions
from gateway.model import CommunicationType, DeviceType
from gateway.store.store import Store
from gateway.timeline import ConnectivityChange
from tests.integration.test_timeline_store import Clock, add_device

START, END = 3600.0, 7200.0


async def test_uptime_over_a_window_from_connected_and_disconnected_events(tmp_path: Path) -> None:
    clock = Clock(0.0)
    async with Store.open(tmp_path / "db", clock=clock) as store:
        before = await add_device(store, "Before", "HW1")  # online before the window, gone halfway
        twice = await add_device(store, "Twice", "HW2")  # two stays of 15 minutes
        never = await add_device(store, "Never", "HW3")
        lua = await store.create_device(
            site_id=before.site_id,
            name="Lua",
            slug=None,
            type=DeviceType.LUA,
            communication_type=CommunicationType.UCM_LUA,
            hardware_id="HW1",
            channel_id="lua",
            upstream_id=before.id,
        )
        for device in (before, twice, never):
            assert device.hardware_id is not None
            await store.set_credential(
                device_id=device.id, protocol="MQTT", username=device.hardware_id, secret="s"
            )
        clock.now = 5000.0
        late = await add_device(store, "Late", "HW4")  # created inside the window, online since 6100
        await store.set_credential(device_id=late.id, protocol="MQTT", username="HW4", secret="s")
        await store.record_connectivity(
            [
                ConnectivityChange("HW1", True, 1000.0),
                ConnectivityChange("HW2", True, 4000.0),
                ConnectivityChange("HW2", False, 4900.0, "closed its connection"),
                ConnectivityChange("HW1", False, 5400.0, "exceeded timeout"),
                ConnectivityChange("HW4", True, 6100.0),
                ConnectivityChange("HW2", True, 6300.0),
            ]
        )
        devices, _ = await store.list_devices(offset=0, limit=100)
        fractions = await online_fractions(store, devices, START, END)
    assert fractions == {
        before.id: pytest.approx(0.5),
        twice.id: pytest.approx(0.5),
        never.id: 0.0,
        lua.id: pytest.approx(0.5),  # its UCM's connection
        late.id: pytest.approx(1100 / 2200),
    }  # and nothing for the gateway's own device
