"""Commands end to end: the SDK's HTTP client executes commands on an SDK standalone device.

The peer (`tests.peers.sdk_device`) has a command that answers, one that raises and one that never
answers; the gateway runs with a 2 s command timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import enapter
import httpx
import pytest
from enapter.http.api.commands import ExecutionState, ListExecutionsOrder
from enapter.http.api.commands.response import ResponseState
from enapter.http.api.devices import DeviceConnectivityStatus, MQTTProtocol

from gateway.store.store import DATABASE_FILE
from tests.gateway_process import GatewayProcess, eventually, running_gateway
from tests.peers.process import start_peer, stop_peer

TIMEOUT_S = 2.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path, {"commands": {"timeout": TIMEOUT_S}}) as process:
        yield process


@dataclass(frozen=True, slots=True)
class Peer:
    client: enapter.http.api.Client
    device_id: str
    process: subprocess.Popen[bytes]


@pytest.fixture
async def peer(gateway: GatewayProcess) -> AsyncIterator[Peer]:
    """An online SDK device and an SDK HTTP client (USER token: enough to run commands)."""
    installer = gateway.create_token("INSTALLER")
    user = gateway.create_token("USER", name="user")
    async with enapter.http.api.Client(
        config=enapter.http.api.Config(base_url=gateway.base_url, token=installer)
    ) as admin:
        device = await admin.devices.create_standalone(name="Commander")
        config = await admin.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
    blob = base64.b64encode(json.dumps(config.to_dto()).encode()).decode()
    process = start_peer(blob)
    try:
        async with enapter.http.api.Client(
            config=enapter.http.api.Config(base_url=gateway.base_url, token=user)
        ) as client:

            async def online() -> bool:
                found = await client.devices.get(device.id, expand_connectivity=True)
                assert found.connectivity is not None
                return found.connectivity.status is DeviceConnectivityStatus.ONLINE

            await eventually(online, 20)
            yield Peer(client, device.id, process)
    finally:
        stop_peer(process)


async def test_success_error_and_timeout(peer: Peer) -> None:
    commands = peer.client.commands
    done = await commands.execute(peer.device_id, "add", {"a": 2, "b": 3.5}, expand_log=True)
    assert done.state is ExecutionState.SUCCESS
    assert done.request.name == "add"
    assert done.request.arguments == {"a": 2, "b": 3.5}
    assert done.response is not None
    assert done.response.state is ResponseState.SUCCEEDED
    assert done.response.payload == {"result": 5.5}
    # The log, newest first: the SDK's "Executing command..." progress, then the result.
    assert done.log is not None
    assert [entry.state for entry in done.log] == [ResponseState.SUCCEEDED, ResponseState.IN_PROGRESS]
    assert done.log[1].payload == {"message": "Executing command..."}

    failed = await commands.execute(peer.device_id, "fail", {"reason": "valve stuck"})
    assert failed.state is ExecutionState.ERROR
    assert failed.response is not None
    assert failed.response.state is ResponseState.ERROR
    assert "RuntimeError: valve stuck" in failed.response.payload["message"]
    assert failed.log is None  # only with expand=log

    unknown = await commands.execute(peer.device_id, "no_such_command")
    assert unknown.state is ExecutionState.ERROR
    assert unknown.response is not None
    assert unknown.response.payload == {"message": "Command handler not implemented."}

    started = time.monotonic()
    hung = await commands.execute(peer.device_id, "hang")
    assert TIMEOUT_S - 0.5 <= time.monotonic() - started < TIMEOUT_S + 2
    assert hung.state is ExecutionState.TIMEOUT
    assert hung.response is not None
    assert hung.response.state is ResponseState.IN_PROGRESS

    # Fire and forget, then poll.
    created = await commands.create_execution(peer.device_id, "add", {"a": 1, "b": 1})

    async def finished() -> enapter.http.api.commands.Execution | None:
        execution = await commands.get_execution(peer.device_id, created.id, expand_log=True)
        return execution if execution.state is ExecutionState.SUCCESS else None

    polled = await eventually(finished, 10)
    assert polled.response is not None
    assert polled.response.payload == {"result": 2}


async def test_listing_with_every_filter(peer: Peer, gateway: GatewayProcess) -> None:
    commands = peer.client.commands
    first = await commands.execute(peer.device_id, "add", {"a": 1, "b": 2})
    middle = await commands.execute(peer.device_id, "fail", {"reason": "x"})
    last = await commands.execute(peer.device_id, "add", {"a": 3, "b": 4})
    ids = [first.id, middle.id, last.id]

    async def listed(**filters: object) -> list[str]:
        async with commands.list_executions(device_id=peer.device_id, **filters) as stream:  # type: ignore[arg-type]
            return [execution.id async for execution in stream]

    assert await listed() == ids
    assert await listed(order=ListExecutionsOrder.CREATED_AT_DESC) == ids[::-1]
    assert await listed(state=ExecutionState.ERROR) == [middle.id]
    assert await listed(state=[ExecutionState.SUCCESS, ExecutionState.ERROR]) == ids
    assert await listed(name="add") == [first.id, last.id]
    assert await listed(name=["fail", "nothing"]) == [middle.id]
    assert await listed(created_at_gte=middle.created_at) == [middle.id, last.id]
    assert await listed(created_at_lt=middle.created_at) == [first.id]
    assert await listed(offset=1, limit=1) == [middle.id]

    site = await peer.client.sites.get(None)
    async with commands.list_executions(site_id=site.id, device_id=peer.device_id) as stream:
        assert [execution.id async for execution in stream] == ids

    # Ephemeral executions are hidden unless asked for; total_count counts the filtered set.
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        headers = {"X-Enapter-Auth-Token": gateway.create_token("USER", name="raw")}
        response = await http.post(
            f"/v3/devices/{peer.device_id}/execute_command",
            json={"name": "add", "arguments": {"a": 0, "b": 0}, "ephemeral": True},
            headers=headers,
        )
        ephemeral = response.json()["execution"]
        assert (ephemeral["state"], ephemeral["ephemeral"]) == ("SUCCESS", True)
        url = f"/v3/devices/{peer.device_id}/command_executions"
        plain = (await http.get(url, headers=headers)).json()
        assert plain["total_count"] == 3
        assert ephemeral["id"] not in [item["id"] for item in plain["executions"]]
        every = (await http.get(url, params={"expand": "ephemeral"}, headers=headers)).json()
        assert every["total_count"] == 4
        bad = await http.get(url, params={"state.in": "DONE"}, headers=headers)
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["details"] == {"parameter": "state.in"}


async def test_an_offline_device_fails_fast(peer: Peer) -> None:
    stop_peer(peer.process)

    async def offline() -> bool:
        found = await peer.client.devices.get(peer.device_id, expand_connectivity=True)
        assert found.connectivity is not None
        return found.connectivity.status is DeviceConnectivityStatus.OFFLINE

    await eventually(offline, 15)
    started = time.monotonic()
    execution = await peer.client.commands.execute(peer.device_id, "add", {"a": 1, "b": 1})
    assert time.monotonic() - started < 1.0
    assert execution.state is ExecutionState.ERROR
    assert execution.response is not None
    assert "offline" in execution.response.payload["message"]


async def test_an_execution_in_flight_ends_after_a_restart(
    peer: Peer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    execution = await peer.client.commands.create_execution(peer.device_id, "hang")
    assert execution.state is ExecutionState.IN_PROGRESS
    assert gateway.stop() == 0
    database = tmp_path / "state" / DATABASE_FILE
    with sqlite3.connect(database) as db:
        (state,) = db.execute("SELECT state FROM command_executions WHERE id = ?", (execution.id,)).fetchone()
    assert state == "IN_PROGRESS"
    gateway.start()

    async def ended() -> enapter.http.api.commands.Execution | None:
        found = await peer.client.commands.get_execution(peer.device_id, execution.id)
        return found if found.state is not ExecutionState.IN_PROGRESS else None

    assert (await eventually(ended, 15)).state is ExecutionState.TIMEOUT


async def test_bad_requests(peer: Peer, gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        headers = {"X-Enapter-Auth-Token": gateway.create_token("USER", name="raw")}
        url = f"/v3/devices/{peer.device_id}/execute_command"
        for body, field in (
            ({}, "name"),
            ({"name": "add", "arguments": [1]}, "arguments"),
            ({"name": "add", "ephemeral": "yes"}, "ephemeral"),
        ):
            response = await http.post(url, json=body, headers=headers)
            assert response.status_code == 400, body
            assert response.json()["errors"][0]["details"] == {"parameter": field}
        missing = await http.get(f"/v3/devices/{peer.device_id}/command_executions/nope", headers=headers)
        assert missing.status_code == 404
        readonly = {"X-Enapter-Auth-Token": gateway.create_token("READONLY", name="reader")}
        assert (await http.post(url, json={"name": "add"}, headers=readonly)).status_code == 403


async def test_v1_execute_plain_and_with_progress(peer: Peer, gateway: GatewayProcess) -> None:
    device = await peer.client.devices.get(peer.device_id, expand_communication=True)
    assert device.communication is not None
    headers = {"X-Enapter-Auth-Token": gateway.create_token("USER", name="v1")}
    root = f"http://127.0.0.1:{gateway.api_port}"
    async with httpx.AsyncClient(timeout=10) as http:
        for path, key, value in (
            ("/commands/v1/execute", "device_id", peer.device_id),
            ("/api/commands/v1/execute", "hardware_id", device.communication.hardware_id),
        ):
            done = await http.post(
                root + path,
                json={key: value, "command_name": "add", "arguments": {"a": 4, "b": 5}},
                headers=headers,
            )
            assert done.json() == {"state": "succeeded", "payload": {"result": 9}}, path
        failed = await http.post(
            root + "/commands/v1/execute",
            json={"device_id": peer.device_id, "command_name": "fail", "arguments": {"reason": "no"}},
            headers=headers,
        )
        assert failed.json()["state"] == "error"
        assert "RuntimeError: no" in failed.json()["payload"]["message"]
        hung = await http.post(
            root + "/commands/v1/execute",
            json={"device_id": peer.device_id, "command_name": "hang"},
            headers=headers,
        )
        assert hung.json()["state"] == "platform_error"

        streamed = await http.post(
            root + "/commands/v1/execute",
            params={"show_progress": "true"},
            json={"device_id": peer.device_id, "command_name": "add", "arguments": {"a": 1, "b": 2}},
            headers=headers,
        )
        lines = [json.loads(line) for line in streamed.text.splitlines()]
        assert lines == [
            {"state": "started"},
            {"state": "device_in_progress", "payload": {"message": "Executing command..."}},
            {"state": "succeeded", "payload": {"result": 3}},
        ]
        nobody = await http.post(
            root + "/commands/v1/execute", json={"hardware_id": "S0", "command_name": "add"}, headers=headers
        )
        assert nobody.status_code == 404


async def test_sdk_logger_lines_are_listed_and_streamed(peer: Peer, gateway: GatewayProcess) -> None:
    """Logs the device writes with the SDK's logger: live on the WebSocket stream, then listed."""
    token = gateway.create_token("READONLY", name="logs")
    url = f"{gateway.base_url}/v3/devices/{peer.device_id}/logs"
    said = [("debug", "d1", False), ("info", "i1", True), ("warning", "w1", False), ("error", "e1", True)]
    async with (
        aiohttp.ClientSession(headers={"X-Enapter-Auth-Token": token}) as session,
        session.ws_connect(
            url.replace("http://", "ws://"), timeout=aiohttp.ClientWSTimeout(ws_close=5)
        ) as ws,
    ):
        for severity, message, persist in said:
            done = await peer.client.commands.execute(
                peer.device_id, "say", {"message": message, "severity": severity, "persist": persist}
            )
            assert done.state is ExecutionState.SUCCESS
        frames: list[dict[str, object]] = []
        while len(frames) < len(said):
            frame = await ws.receive_json(timeout=5)
            if frame["message"] != "peer device started":
                frames.append(frame)
        assert [(f["severity"], f["message"], f["persist"]) for f in frames] == said
        assert [f["log"] for f in frames] == [{"severity": s, "message": m} for s, m, _ in said]

        async with session.get(url, params={"severity": "warning", "order": "RECEIVED_AT_DESC"}) as response:
            listed = await response.json()
        assert [(e["severity"], e["message"]) for e in listed["logs"]] == [("error", "e1"), ("warning", "w1")]
        assert listed["total_count"] == 2
        async with session.get(url, params={"show": "TEMPORARY_ONLY"}) as response:
            temporary = [e["message"] for e in (await response.json())["logs"]]
        # The peer's own start-up line is temporary too (the SDK's default).
        assert temporary == ["peer device started", "d1", "w1"]


async def test_a_device_deleted_while_its_command_runs(peer: Peer, gateway: GatewayProcess) -> None:
    """v3 and v1 (plain and streamed) answer "not found" / a platform error, never a 500."""
    owner = {"X-Enapter-Auth-Token": gateway.create_token("OWNER", name="owner")}
    root = f"http://127.0.0.1:{gateway.api_port}"
    body = {"device_id": peer.device_id, "command_name": "hang", "arguments": {}}
    async with httpx.AsyncClient(timeout=10, headers=owner) as http:
        v3 = asyncio.create_task(
            http.post(
                f"{gateway.base_url}/v3/devices/{peer.device_id}/execute_command", json={"name": "hang"}
            )
        )
        v1 = asyncio.create_task(http.post(root + "/commands/v1/execute", json=body))
        streamed = asyncio.create_task(
            http.post(root + "/commands/v1/execute", params={"show_progress": "true"}, json=body)
        )
        await asyncio.sleep(0.5)  # all three are waiting for the device
        deleted = await http.delete(f"{gateway.base_url}/v3/devices/{peer.device_id}")
        assert deleted.status_code == 200
        assert (await v3).status_code == 404
        assert (await v1).status_code == 404
        lines = [json.loads(line) for line in (await streamed).text.splitlines()]
        assert lines[0] == {"state": "started"}
        assert lines[-1] == {"state": "platform_error", "payload": {"message": "The device was deleted."}}
    assert "unhandled error" not in gateway.log()
