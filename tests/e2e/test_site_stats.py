"""Site statistics end to end: `GET /api/v3/site/stats` against devices that publish, misbehave,
connect (the real SDK device of tests.peers.sdk_device) and run commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import aiohttp
import pytest

from gateway.api.v3.provisioning import STANDALONE_CHANNEL
from tests.e2e.test_ingest_faults import device_client
from tests.e2e.test_timeline import START_TIMEOUT_S, http_client, sdk_device
from tests.gateway_process import GatewayProcess, eventually, provision
from tests.peers.process import start_peer, stop_peer


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
    async with http_client(gateway, installer_token) as http:
        for tag in ("roof", "unused"):
            assert (await http.post("/v3/tags", json={"name": tag})).status_code == 200
        assert (await http.put(f"/v3/devices/{talker.device_id}/tags/roof")).status_code == 200
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
    assert devices["by_tag"] == {"roof": 1, "unused": 0}
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


async def test_uptime_comes_from_the_timeline_and_commands_count_by_outcome(
    gateway: GatewayProcess, installer_token: str
) -> None:
    # A device created, then connected (the real SDK) only once it has existed for a while: online
    # for about the second half of its life, which is the part of the window it existed in.
    device_id, blob = await sdk_device(gateway, installer_token, "Half")
    async with http_client(gateway, installer_token) as http:
        provisioned = await http.get(f"/v3/devices/{device_id}/timeline?type.in=provisioned")
        created = parse_time(provisioned.json()["events"][0])
        await asyncio.sleep(3)
        peer = start_peer(blob)
        try:

            async def connected_at() -> float | None:
                answer = (await http.get(f"/v3/devices/{device_id}/timeline?type.in=connected")).json()
                return parse_time(answer["events"][0]) if answer["total_count"] else None

            connected = await eventually(connected_at, START_TIMEOUT_S)
            await asyncio.sleep(max(0.0, connected + (connected - created) - time.time()))
            execution = await http.post(
                f"/v3/devices/{device_id}/execute_command",
                json={"name": "add", "arguments": {"a": 1, "b": 2}},
            )
            assert execution.json()["execution"]["state"] == "SUCCESS", execution.text
            status, body = await site_stats(gateway, installer_token, "?window=1h")
        finally:
            stop_peer(peer)
    assert status == 200, body
    stats = body["stats"]
    end = dt.datetime.fromisoformat(stats["to"]).timestamp()
    expected = 100 * (end - connected) / (end - created)
    assert stats["uptime_percent"][device_id] == pytest.approx(expected, abs=0.05)
    assert 35 < stats["uptime_percent"][device_id] < 65
    # The gateway does not connect to its own broker as a device: no uptime for it.
    assert list(stats["uptime_percent"]) == [device_id]
    assert stats["commands"] == {"total": 1, "by_outcome": {"SUCCESS": 1}}


def parse_time(event: Any) -> float:
    return dt.datetime.fromisoformat(event["timestamp"]).timestamp()
