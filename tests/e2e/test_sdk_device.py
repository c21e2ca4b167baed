"""The foundation's acceptance path, driven only through Enapter's own SDK.

Provision a standalone device with the SDK's HTTP client, generate its MQTT config, run an SDK
standalone device with that config as a base64 blob, and watch it appear ONLINE with its properties
in /api/v3 and /api/assets/v1; then stop it and watch it go OFFLINE.
"""

from __future__ import annotations

import asyncio
import base64
import json

import enapter
import httpx
from enapter.http.api.devices import DeviceConnectivityStatus, DeviceType, MQTTProtocol

from tests.gateway_process import GatewayProcess, eventually
from tests.peers.process import start_peer, stop_peer
from tests.peers.sdk_device import PROPERTIES

ONLINE_TIMEOUT_S = 20.0


async def test_sdk_device_appears_online_with_properties(
    gateway: GatewayProcess, installer_token: str
) -> None:
    api = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with enapter.http.api.Client(config=api) as client:
        site = await client.sites.get(None)
        assert site.name == "Test Site"

        device = await client.devices.create_standalone(name="Peer One")
        assert device.type is DeviceType.STANDALONE
        assert device.slug == "peer-one"
        assert device.site_id == site.id

        config = await client.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
        assert config.mqtt_port == gateway.mqtt_port
        assert config.hardware_id.startswith("S")
        blob = base64.b64encode(json.dumps(config.to_dto()).encode()).decode()

        peer = start_peer(blob)
        try:

            async def online() -> enapter.http.api.devices.Device | None:
                found = await client.devices.get(device.id, expand_properties=True, expand_connectivity=True)
                assert found.connectivity is not None
                ready = (
                    found.connectivity.status is DeviceConnectivityStatus.ONLINE
                    and found.properties == PROPERTIES
                )
                return found if ready else None

            seen = await eventually(online, ONLINE_TIMEOUT_S)
            assert seen.properties == PROPERTIES

            # The SDK's own paginator (offset only, until an empty page) must terminate.
            async with client.devices.list(expand_connectivity=True, expand_properties=True) as stream:
                listed = [item async for item in stream]
            by_id = {item.id: item for item in listed}
            assert len(by_id) == len(listed) == 2
            assert by_id[device.id].properties == PROPERTIES
            (own,) = [item for item in listed if item.type is DeviceType.GATEWAY]
            assert own.connectivity is not None
            assert own.connectivity.status is DeviceConnectivityStatus.ONLINE

            # The same through the site-scoped path the newest CLI uses; and a slug is an id.
            async with client.devices.list(site_id=site.id) as scoped:
                assert {item.id async for item in scoped} == set(by_id)
            assert (await client.devices.get("peer-one")).id == device.id

            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.get(
                    f"{gateway.base_url}/assets/v1/devices",
                    params={"expand": "connectivity,properties"},
                    headers={"X-Enapter-Auth-Token": installer_token},
                )
            assets = response.json()
            asset = {item["device_id"]: item for item in assets["devices"]}[device.id]
            assert asset["connectivity"] == {"online": True}
            assert asset["properties"] == PROPERTIES
            assert asset["type"] == "endpoint"
            assert assets["next_page_token"] is None

            # The SDK opens two connections (publisher + command subscription); they must stay
            # up, not reconnect in a loop.
            async def both_connected() -> bool:
                return gateway.metrics()["gateway_device_connects_total"] == 2

            await eventually(both_connected, 10)
            await asyncio.sleep(3)
            assert gateway.metrics()["gateway_device_connects_total"] == 2
            assert gateway.metrics()["gateway_devices_connected"] == 1
            assert peer.poll() is None
        finally:
            peer_log = stop_peer(peer)
        assert "failed" not in peer_log.lower(), peer_log

        # Stopped: OFFLINE within the configured online_window (3 s in the test config).
        async def offline() -> bool:
            found = await client.devices.get(device.id, expand_connectivity=True)
            assert found.connectivity is not None
            return found.connectivity.status is DeviceConnectivityStatus.OFFLINE

        await eventually(offline, 3.0 + 3.0)
