"""Device logs: what a device sends on `v3/logs`, read back through /api/v3 with every filter."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import httpx

from tests.gateway_process import GatewayProcess, eventually, provision, write_config

SENT = [
    ("debug", "booting", True),
    ("info", "ready", True),
    ("warning", "hot", False),
    ("error", "overheated", True),
]


async def test_device_logs_filtered_ordered_and_paged(gateway: GatewayProcess, installer_token: str) -> None:
    device = await provision(gateway, installer_token, "Logger")
    started = time.time()
    async with aiomqtt.Client(
        "127.0.0.1", gateway.mqtt_port, username=device.hardware_id, password=device.password, timeout=5
    ) as publisher:
        for n, (severity, message, persist) in enumerate(SENT):
            entry = {
                "timestamp": 1_700_000_000 + n,
                "severity": severity,
                "message": message,
                "persist": persist,
            }
            await publisher.publish(f"v1/from/{device.hardware_id}/s/v3/logs", json.dumps(entry), qos=1)
            await asyncio.sleep(0.05)  # distinct arrival times, so the order is the sending order

    url = f"{gateway.base_url}/v3/devices/{device.device_id}/logs"
    async with httpx.AsyncClient(headers={"X-Enapter-Auth-Token": installer_token}, timeout=5) as http:

        async def get(**query: str) -> dict[str, object]:
            response = await http.get(url, params=query)
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body

        async def all_arrived() -> bool:
            return (await get())["total_count"] == len(SENT)

        await eventually(all_arrived, 10)

        def messages(body: dict[str, object]) -> list[str]:
            logs = body["logs"]
            assert isinstance(logs, list)
            return [entry["message"] for entry in logs]

        everything = await get()
        assert messages(everything) == ["booting", "ready", "hot", "overheated"]
        first = everything["logs"][0]  # type: ignore[index]
        assert first["timestamp"] == 1_700_000_000
        assert first["severity"] == "debug"
        received = datetime.fromisoformat(first["received_at"])
        assert received.tzinfo is not None
        assert started - 1 <= received.timestamp() <= time.time() + 1

        assert messages(await get(order="RECEIVED_AT_DESC")) == ["overheated", "hot", "ready", "booting"]
        assert messages(await get(severity="warning")) == ["hot", "overheated"]
        assert messages(await get(show="TEMPORARY_ONLY")) == ["hot"]
        assert messages(await get(show="PERSISTED_ONLY")) == ["booting", "ready", "overheated"]
        paged = await get(offset="1", limit="2")
        assert (messages(paged), paged["total_count"]) == (["ready", "hot"], 4)
        future = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat().replace("+00:00", "Z")
        assert messages(await get(received_at_from=future)) == []
        assert messages(await get(received_at_to=future, severity="ERROR")) == ["overheated"]

        for name, value in (("severity", "loud"), ("order", "sideways"), ("received_at_from", "yesterday")):
            bad = await http.get(url, params={name: value})
            assert bad.status_code == 400
            assert bad.json()["errors"][0]["details"] == {"parameter": name}


async def test_temporary_logs_are_deleted_after_their_retention(tmp_path: Path) -> None:
    config, api_port, mqtt_port = write_config(tmp_path, {"retention": {"temporary_logs": 1.0}})
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    gateway.start()
    try:
        token = gateway.create_token()
        device = await provision(gateway, token, "Chatty")
        async with aiomqtt.Client(
            "127.0.0.1", gateway.mqtt_port, username=device.hardware_id, password=device.password, timeout=5
        ) as publisher:
            for message, persist in (("kept", True), ("fleeting", False)):
                entry = {"timestamp": 1_700_000_000, "severity": "info", "message": message}
                entry["persist"] = persist
                topic = f"v1/from/{device.hardware_id}/s/v3/logs"
                await publisher.publish(topic, json.dumps(entry), qos=1)
        url = f"{gateway.base_url}/v3/devices/{device.device_id}/logs"
        async with httpx.AsyncClient(headers={"X-Enapter-Auth-Token": token}, timeout=5) as http:

            async def stored() -> list[str]:
                logs = (await http.get(url)).json()["logs"]
                return sorted(entry["message"] for entry in logs)

            async def both() -> bool:
                return await stored() == ["fleeting", "kept"]

            await eventually(both, 10)
            await asyncio.sleep(1.5)
            # The retention job runs at start and then every minute: a restart makes it run now.
            assert await asyncio.to_thread(gateway.stop) == 0
            await asyncio.to_thread(gateway.start)
            assert await stored() == ["kept"]
    finally:
        assert gateway.stop() == 0, gateway.log()
