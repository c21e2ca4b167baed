"""The managed Mosquitto is a supervised child: killed, it comes back, and so do the devices."""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path

import enapter
from enapter.http.api.devices import DeviceConnectivityStatus, MQTTProtocol

from tests.gateway_process import GatewayProcess, eventually
from tests.peers.process import start_peer, stop_peer

# The SDK retries a lost connection every 5 s; the supervisor restarts within its first backoff.
RECOVERY_S = 25.0


def broker_pid(gateway: GatewayProcess) -> int:
    """The pid of the daemon's mosquitto child."""
    assert gateway.process is not None
    children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children")
    for pid in children.read_text().split():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "mosquitto":
            return int(pid)
    raise AssertionError("the daemon has no mosquitto child")


async def test_killed_broker_is_restarted_and_devices_reconnect(
    gateway: GatewayProcess, installer_token: str
) -> None:
    api = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with enapter.http.api.Client(config=api) as client:
        device = await client.devices.create_standalone(name="Survivor")
        config = await client.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
        blob = base64.b64encode(json.dumps(config.to_dto()).encode()).decode()
        peer = start_peer(blob)
        try:

            async def connections() -> float | None:
                value = gateway.metrics()["gateway_devices_connected"]
                return value if value == 1 else None

            await eventually(connections, 20)
            first = broker_pid(gateway)
            os.kill(first, signal.SIGKILL)

            async def restarted() -> bool:
                return gateway.metrics()["gateway_broker_restarts_total"] == 1

            await eventually(restarted, 10)
            assert broker_pid(gateway) != first
            # The device's accounts were written back from SQLite: it logs in again by itself.
            await eventually(connections, RECOVERY_S)
            found = await client.devices.get(device.id, expand_connectivity=True)
            assert found.connectivity is not None
            assert found.connectivity.status is DeviceConnectivityStatus.ONLINE
            assert peer.poll() is None
        finally:
            stop_peer(peer)
    assert "mosquitto exited" in gateway.log()
