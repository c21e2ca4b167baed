"""Device timelines against the running daemon: a device run by the real Enapter SDK connects,
raises and clears an alert and disconnects (cleanly, then killed); the timeline shows it with the
broker's reasons, and a WebSocket client on the site event stream sees each change within 2 s.
Also user events with filters and paging, and clearing a device's data."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import aiomqtt
import enapter
import httpx
import pytest
from enapter.http.api.devices import MQTTProtocol

from tests.gateway_process import GatewayProcess, eventually, provision
from tests.peers.process import start_peer, stop_peer

# The bound: a WebSocket client sees a change within 2 s.
LIVE_WITHIN_S = 2.0
# Starting a Python process with the SDK takes a while on a loaded machine.
START_TIMEOUT_S = 30.0
TOKEN_HEADER = "X-Enapter-Auth-Token"


async def sdk_device(gateway: GatewayProcess, token: str, name: str) -> tuple[str, str]:
    """Provision a standalone device with the SDK's HTTP client: (device id, config blob)."""
    api = enapter.http.api.Config(base_url=gateway.base_url, token=token)
    async with enapter.http.api.Client(config=api) as client:
        device = await client.devices.create_standalone(name=name)
        config = await client.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
    return device.id, base64.b64encode(json.dumps(config.to_dto()).encode()).decode()


@asynccontextmanager
async def http_client(gateway: GatewayProcess, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers={TOKEN_HEADER: token}, timeout=10
    ) as http:
        yield http


async def frame(ws: aiohttp.ClientWebSocketResponse, within_s: float) -> dict[str, object]:
    message = await ws.receive(timeout=within_s)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    body: dict[str, object] = json.loads(message.data)
    return body


async def set_alerts(http: httpx.AsyncClient, device_id: str, names: list[str]) -> None:
    response = await http.post(
        f"/v3/devices/{device_id}/execute_command", json={"name": "set_alerts", "arguments": {"names": names}}
    )
    assert response.json()["execution"]["state"] == "SUCCESS", response.text


def connections_from(gateway: GatewayProcess, before: float) -> Callable[[], Awaitable[bool]]:
    """A condition: the SDK device's two connections (publisher and commands) were accepted."""

    async def up() -> bool:
        return gateway.metrics()["gateway_device_connects_total"] >= before + 2

    return up


def ended(peer: subprocess.Popen[bytes]) -> float:
    """Wait for the peer process to end; when it had (monotonic)."""
    peer.wait(timeout=10)
    return time.monotonic()


async def test_sdk_device_connectivity_and_alerts_on_the_timeline_and_the_event_stream(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device_id, blob = await sdk_device(gateway, installer_token, "Timeline peer")
    watched = "connected,disconnected,alert_raised,alert_cleared"
    async with (
        http_client(gateway, installer_token) as http,
        aiohttp.ClientSession(headers={TOKEN_HEADER: installer_token}) as session,
        session.ws_connect(
            f"{gateway.base_url}/v3/site/events", params={"device_id.in": device_id, "type.in": watched}
        ) as ws,
    ):
        # 1. Connected: one event although the SDK opens several connections.
        peer = start_peer(blob)
        try:
            connected = await frame(ws, START_TIMEOUT_S)
            assert (connected["type"], connected["device_id"], connected["details"]) == (
                "connected",
                device_id,
                {},
            )

            await eventually(connections_from(gateway, 0), 10)

            # 2. An alert raised, then cleared, through the device's telemetry `alerts` field.
            changed = time.monotonic()
            await set_alerts(http, device_id, ["overheat"])
            raised = await frame(ws, LIVE_WITHIN_S)
            assert time.monotonic() - changed < LIVE_WITHIN_S
            assert (raised["type"], raised["details"]) == ("alert_raised", {"alert": "overheat"})
            changed = time.monotonic()
            await set_alerts(http, device_id, [])
            cleared = await frame(ws, LIVE_WITHIN_S)
            assert time.monotonic() - changed < LIVE_WITHIN_S
            assert (cleared["type"], cleared["details"]) == ("alert_cleared", {"alert": "overheat"})

            # 3. A clean stop (SIGINT: the SDK closes its connections with DISCONNECT).
            peer.send_signal(signal.SIGINT)
            gone = ended(peer)
            disconnected = await frame(ws, LIVE_WITHIN_S)
            assert time.monotonic() - gone < LIVE_WITHIN_S
            assert (disconnected["type"], disconnected["details"]) == (
                "disconnected",
                {"reason": "disconnected"},
            )
        finally:
            stop_peer(peer)

        # 4. Again, and this time the process is killed: the broker sees the sockets close.
        before = gateway.metrics()["gateway_device_connects_total"]
        peer = start_peer(blob)
        try:
            assert (await frame(ws, START_TIMEOUT_S))["type"] == "connected"
            await eventually(connections_from(gateway, before), 10)
            peer.kill()
            gone = ended(peer)
            killed = await frame(ws, LIVE_WITHIN_S)
            assert time.monotonic() - gone < LIVE_WITHIN_S
            assert (killed["type"], killed["details"]) == (
                "disconnected",
                {"reason": "closed its connection"},
            )
        finally:
            stop_peer(peer)

        # The timeline has it all, newest first; the stream's type filter left the commands out.
        response = await http.get(
            f"/v3/devices/{device_id}/timeline", params={"type.in": "connected,disconnected"}
        )
        body = response.json()
        assert body["total_count"] == 4
        assert [(event["type"], event["details"]) for event in body["events"]] == [
            ("disconnected", {"reason": "closed its connection"}),
            ("connected", {}),
            ("disconnected", {"reason": "disconnected"}),
            ("connected", {}),
        ]
        everything = (await http.get(f"/v3/devices/{device_id}/timeline", params={"limit": 100})).json()
        types = [event["type"] for event in reversed(everything["events"])]
        assert types[:2] == ["provisioned", "config_generated"]
        assert types.count("command_executed") == 2
        assert types.index("alert_raised") < types.index("alert_cleared")
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)  # nothing else of the watched types happened


async def test_user_events_with_filters_and_paging(gateway: GatewayProcess, installer_token: str) -> None:
    device = await provision(gateway, installer_token, "Pump")
    user_token = gateway.create_token("USER", name="user")
    async with http_client(gateway, user_token) as http:
        site_id = (await http.get("/v3/site")).json()["site"]["id"]
        posted = []
        for n in range(5):
            response = await http.post(
                f"/v3/devices/{device.device_id}/events",
                json={"code": f"maintenance.{n}", "description": f"#{n}"},
            )
            assert response.status_code == 200, response.text
            posted.append(response.json()["event"])
        assert posted[0]["type"] == "user"
        assert posted[0]["details"] == {"code": "maintenance.0", "description": "#0"}
        # Through the site-scoped path and the slug too.
        scoped = await http.post(f"/v3/sites/{site_id}/devices/pump/events", json={"code": "note"})
        assert scoped.json()["event"]["details"] == {"code": "note", "description": None}

        timeline = f"/v3/devices/{device.device_id}/timeline"
        page = (await http.get(timeline, params={"type.in": "user", "offset": 1, "limit": 2})).json()
        assert page["total_count"] == 6
        assert [event["details"]["code"] for event in page["events"]] == ["maintenance.4", "maintenance.3"]
        since = posted[2]["timestamp"]
        until = posted[4]["timestamp"]
        window = (
            await http.get(
                timeline, params={"type.in": "user", "timestamp.gte": since, "timestamp.lt": until}
            )
        ).json()
        assert [event["id"] for event in window["events"]] == [posted[3]["id"], posted[2]["id"]]
        both = (
            await http.get(timeline, params=[("type.in", "provisioned"), ("type.in", "config_generated")])
        ).json()
        assert [event["type"] for event in both["events"]] == ["config_generated", "provisioned"]
        assert both["total_count"] == 2
        scoped_list = (
            await http.get(f"/v3/sites/{site_id}/devices/pump/timeline", params={"limit": 1})
        ).json()
        assert scoped_list["total_count"] == 8
        assert scoped_list["events"][0]["details"]["code"] == "note"

        for params, parameter in (
            ({"type.in": "exploded"}, "type.in"),
            ({"timestamp.gte": "yesterday"}, "timestamp.gte"),
            ({"limit": "0"}, "limit"),
        ):
            refused = await http.get(timeline, params=params)
            assert refused.status_code == 400
            assert refused.json()["errors"][0]["details"]["parameter"] == parameter
        for body, field in (({"description": "no code"}, "code"), ({"code": "a b"}, "code")):
            refused = await http.post(f"/v3/devices/{device.device_id}/events", json=body)
            assert refused.status_code == 400
            assert refused.json()["errors"][0]["details"]["parameter"] == field
        assert (await http.get("/v3/devices/nope/timeline")).status_code == 404
        # The event stream is WebSocket only; clearing data needs OWNER.
        assert (await http.get("/v3/site/events")).status_code == 400
        assert (await http.post(f"/v3/devices/{device.device_id}/clear_data")).status_code == 403


async def test_clear_data_keeps_the_device_and_its_credentials(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device_id, blob = await sdk_device(gateway, installer_token, "Cleared peer")
    async with http_client(gateway, installer_token) as http:
        devices = f"/v3/devices/{device_id}"

        async def online() -> bool:
            found = (await http.get(devices, params={"expand": "connectivity"})).json()["device"]
            values = gateway.stored_telemetry(device_id, "counter")
            return found["connectivity"]["status"] == "ONLINE" and bool(values)

        peer = start_peer(blob)
        try:
            await eventually(online, START_TIMEOUT_S)
            answered = await http.post(
                devices + "/execute_command", json={"name": "add", "arguments": {"a": 1, "b": 2}}
            )
            assert answered.json()["execution"]["state"] == "SUCCESS"
            hanging = await http.post(devices + "/command_executions", json={"name": "hang"})
            hanging_id = hanging.json()["execution_id"]
        finally:
            stop_peer(peer)
        logs = (await http.get(devices + "/logs")).json()
        assert logs["total_count"] >= 1

        cleared = await http.post(devices + "/clear_data")
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["event"]["type"] == "data_cleared"

        assert gateway.stored_telemetry(device_id, "counter") == []
        assert (await http.get(devices + "/telemetry")).json()["telemetry"] == {}
        assert (await http.get(devices + "/logs")).json()["total_count"] == 0
        executions = (await http.get(devices + "/command_executions")).json()
        # Only the one still in progress is kept, and it ends as any other would.
        assert [execution["id"] for execution in executions["executions"]] == [hanging_id]

        async def timed_out() -> bool:
            execution = (await http.get(f"{devices}/command_executions/{hanging_id}")).json()["execution"]
            return bool(execution["state"] == "TIMEOUT")

        await eventually(timed_out, 10)
        device = (await http.get(devices, params={"expand": "properties"})).json()["device"]
        assert device["name"] == "Cleared peer"
        assert device["properties"]  # properties describe the device: kept

        # The same credentials still work: the device comes back and new data is stored.
        peer = start_peer(blob)
        try:
            await eventually(online, START_TIMEOUT_S)
        finally:
            stop_peer(peer)
        types = [
            event["type"]
            for event in (await http.get(devices + "/timeline", params={"limit": 100})).json()["events"]
        ]
        assert types.count("data_cleared") == 1
        assert types.index("data_cleared") > types.index("connected")  # newest first: reconnected after
        gateway_device = next(
            d for d in (await http.get("/v3/devices")).json()["devices"] if d["type"] == "GATEWAY"
        )
        assert (await http.post(f"/v3/devices/{gateway_device['id']}/clear_data")).status_code == 422


async def test_a_device_left_connected_by_a_stopped_gateway_is_disconnected_at_the_next_start(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device = await provision(gateway, installer_token, "Sleeper")
    timeline = f"/v3/devices/{device.device_id}/timeline"
    connectivity = {"type.in": "connected,disconnected"}
    async with http_client(gateway, installer_token) as http:

        async def connected() -> bool:
            return bool((await http.get(timeline, params=connectivity)).json()["total_count"] == 1)

        # Leaving the client fails once the broker is gone with the gateway.
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(
                "127.0.0.1",
                gateway.mqtt_port,
                username=device.hardware_id,
                password=device.password,
                timeout=5,
            ):
                await eventually(connected, 10)
                assert gateway.stop() == 0  # the managed broker goes with it
        gateway.start()
        events = (await http.get(timeline, params=connectivity)).json()["events"]
    assert [(event["type"], event["details"]) for event in events] == [
        ("disconnected", {"reason": "gateway stopped"}),
        ("connected", {}),
    ]
