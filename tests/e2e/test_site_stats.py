"""Site statistics end to end: `GET /api/v3/site/stats` against devices that publish, misbehave
and run commands (the command side with the SDK device of tests.peers.sdk_device)."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from gateway.api.v3.provisioning import STANDALONE_CHANNEL
from tests.e2e.test_ingest_faults import device_client
from tests.gateway_process import GatewayProcess, eventually, provision


async def site_stats(gateway: GatewayProcess, token: str, query: str = "") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gateway.base_url}/v3/site/stats{query}", headers={"X-Enapter-Auth-Token": token}
        ) as response,
    ):
        return response.status, await response.json()


async def test_stats_count_devices_data_points_and_drops(
    gateway: GatewayProcess, installer_token: str
) -> None:
    reader = gateway.create_token("READONLY", name="reader")
    talker = await provision(gateway, installer_token, "Talker")
    quiet = await provision(gateway, installer_token, "Quiet")
    topic = f"v1/from/{talker.hardware_id}/{STANDALONE_CHANNEL}/v1/telemetry"
    async with device_client(gateway, talker.hardware_id, talker.password) as client:
        for n in range(3):
            await client.publish(topic, json.dumps({"timestamp": time.time(), "a": n, "b": n * 1.5}), qos=1)
        await client.publish(topic, b"{not json", qos=1)
    # The quiet one connects once and leaves: seen, so OFFLINE once its connection is gone.
    async with device_client(gateway, quiet.hardware_id, quiet.password):
        pass

    async def settled() -> Any:
        status, body = await site_stats(gateway, reader, "?window=1h")
        assert status == 200, body
        stats = body["stats"]
        # The talker spoke within the online window; the quiet one's connection is closed.
        seen = (stats["telemetry"]["data_points"], stats["messages"]["dropped"])
        connectivity = stats["devices"]["by_connectivity"]
        return stats if seen == (6, 1) and connectivity == {"ONLINE": 2, "OFFLINE": 1} else None

    stats = await eventually(settled, 10)
    assert stats["window"] == "1h"
    devices = stats["devices"]
    assert devices["total"] == 3
    assert devices["by_type"] == {"GATEWAY": 1, "STANDALONE": 2}
    assert devices["provisioned"] == 2
    assert sum(devices["by_blueprint"].values()) == 3
    assert sum(stats["messages"]["dropped_by_reason"].values()) == 1
    assert stats["commands"] == {"total": 0, "by_outcome": {}}


async def test_a_window_it_does_not_know_is_refused_naming_the_parameter(
    gateway: GatewayProcess, installer_token: str
) -> None:
    status, body = await site_stats(gateway, installer_token, "?window=2h")
    assert status == 400
    (error,) = body["errors"]
    assert error["details"] == {"parameter": "window"}
