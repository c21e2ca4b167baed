"""WebSocket streams against the running daemon (`enapter-http-api.md` §7.4): device logs, device
telemetry and the monitor, with a device publishing over MQTT; auth on the upgrade, slow consumers
dropped, and a clean stop with a stream open."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import aiohttp
import aiomqtt
import httpx
import pytest

from gateway.live import DEFAULT_MAX_SUBSCRIPTIONS
from tests.gateway_process import GatewayProcess, ProvisionedDevice, eventually, provision

FRAME_TIMEOUT_S = 10.0


@asynccontextmanager
async def device_client(gateway: GatewayProcess, device: ProvisionedDevice) -> AsyncIterator[aiomqtt.Client]:
    """The device's own MQTT connection, with the credentials the gateway generated."""
    async with aiomqtt.Client(
        "127.0.0.1", gateway.mqtt_port, username=device.hardware_id, password=device.password, timeout=5
    ) as client:
        yield client


async def send(client: aiomqtt.Client, device: ProvisionedDevice, kind: str, body: dict[str, object]) -> None:
    """Publish one message as the device (`kind`: v1/telemetry, v1/register, v3/logs)."""
    await client.publish(f"v1/from/{device.hardware_id}/s/{kind}", json.dumps(body), qos=1)


def log(message: str, severity: str = "info", *, persist: bool = True) -> dict[str, object]:
    return {"timestamp": 1_700_000_000, "severity": severity, "message": message, "persist": persist}


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    message = await ws.receive(timeout=FRAME_TIMEOUT_S)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    frame: dict[str, object] = json.loads(message.data)
    return frame


async def quiet(ws: aiohttp.ClientWebSocketResponse, within_s: float = 0.5) -> bool:
    """True if no frame arrives within `within_s`."""
    try:
        message = await ws.receive(timeout=within_s)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected frame {message}")


async def test_log_stream_delivers_new_logs_live_in_both_shapes_with_filters(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device = await provision(gateway, installer_token, "Logger")
    headers = {"X-Enapter-Auth-Token": installer_token}
    async with (
        device_client(gateway, device) as mqtt,
        httpx.AsyncClient(headers=headers, timeout=5) as http,
        aiohttp.ClientSession(headers=headers) as session,
    ):
        site_id = (await http.get(f"{gateway.base_url}/v3/site")).json()["site"]["id"]
        json_url = f"{gateway.base_url}/v3/devices/{device.device_id}/logs"
        # A log from before the stream opened is history, not news.
        await send(mqtt, device, "v3/logs", log("before"))

        async def stored() -> bool:
            return bool((await http.get(json_url)).json()["total_count"] == 1)

        await eventually(stored, 10)

        started = time.time()
        everything = await session.ws_connect(json_url)
        # The site-scoped form, by slug, with filters.
        scoped = f"{gateway.base_url}/v3/sites/{site_id}/devices/logger/logs"
        warnings = await session.ws_connect(scoped, params={"severity": "warning"})
        temporary = await session.ws_connect(scoped, params={"show": "TEMPORARY_ONLY"})
        persisted_errors = await session.ws_connect(
            json_url, params={"severity": "error", "show": "PERSISTED_ONLY"}
        )
        sent = [
            ("debug", "booting", True),
            ("info", "ready", True),
            ("warning", "hot", False),
            ("error", "gone", True),
        ]
        for severity, message, persist in sent:
            await send(mqtt, device, "v3/logs", log(message, severity, persist=persist))

        frames = [await next_frame(everything) for _ in sent]
        assert [frame["message"] for frame in frames] == ["booting", "ready", "hot", "gone"]
        hot = frames[2]
        assert hot["log"] == {"severity": "warning", "message": "hot"}
        assert (hot["timestamp"], hot["severity"], hot["persist"]) == (1_700_000_000, "warning", False)
        assert isinstance(hot["received_at"], str)
        received = datetime.fromisoformat(hot["received_at"])
        assert received.tzinfo is not None
        assert started - 1 <= received.timestamp() <= time.time() + 1

        assert [(await next_frame(warnings))["message"] for _ in range(2)] == ["hot", "gone"]
        assert (await next_frame(temporary))["message"] == "hot"
        assert (await next_frame(persisted_errors))["message"] == "gone"
        for ws in (everything, warnings, temporary, persisted_errors):
            assert await quiet(ws, 0.3)
        # The same path still answers plain GETs with JSON.
        assert (await http.get(json_url)).json()["total_count"] == 5

        # A bad filter is refused before the upgrade.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(json_url, params={"severity": "loud"})
        assert refused.value.status == 400
        # Closing from the client side ends the stream; the device and other streams go on.
        await everything.close()
        await send(mqtt, device, "v3/logs", log("after", "error"))
        assert (await next_frame(warnings))["message"] == "after"
        for ws in (warnings, temporary, persisted_errors):
            await ws.close()


async def test_telemetry_stream_delivers_each_telemetry_message(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device = await provision(gateway, installer_token, "Meter")
    headers = {"X-Enapter-Auth-Token": installer_token}
    url = f"{gateway.base_url}/v3/devices/{device.device_id}/telemetry"
    async with device_client(gateway, device) as mqtt, aiohttp.ClientSession(headers=headers) as session:
        async with session.ws_connect(url) as ws:
            now = int(time.time())
            await send(mqtt, device, "v3/logs", log("not telemetry"))
            await send(mqtt, device, "v1/register", {"timestamp": now, "model": "M1"})
            await send(mqtt, device, "v1/telemetry", {"timestamp": now, "voltage": 230.5, "on": True})
            await send(
                mqtt, device, "v1/telemetry", {"timestamp": now + 1, "voltage": 231, "alerts": ["hot"]}
            )
            assert await next_frame(ws) == {"timestamp": now, "voltage": 230.5, "on": True, "alerts": None}
            assert await next_frame(ws) == {"timestamp": now + 1, "voltage": 231, "alerts": ["hot"]}
            assert await quiet(ws)
        # A plain GET on the same path is the latest-values read.
        async with session.get(url) as response:
            assert response.status == 200
            body = await response.json()
        assert body["telemetry"]["voltage"] == {"value": 231, "timestamp": now + 1}


async def test_monitor_streams_the_chosen_devices_only(gateway: GatewayProcess, installer_token: str) -> None:
    watched = await provision(gateway, installer_token, "Watched")
    other = await provision(gateway, installer_token, "Other")
    headers = {"X-Enapter-Auth-Token": installer_token}
    async with (
        device_client(gateway, watched) as watched_mqtt,
        device_client(gateway, other) as other_mqtt,
        aiohttp.ClientSession(headers=headers) as session,
    ):
        async with session.get(f"{gateway.base_url}/v3/site") as response:
            site_id = (await response.json())["site"]["id"]
        monitor_url = f"{gateway.base_url}/v3/sites/{site_id}/devices/"
        # `id.in` repeated and comma-separated, by slug and by id, as the CLI sends it.
        one = await session.ws_connect(
            monitor_url, params=[("id.in", "watched"), ("id.in", watched.device_id)]
        )
        both = await session.ws_connect(
            f"{gateway.base_url}/v3/devices/", params={"id.in": f"watched,{other.device_id}"}
        )
        every = await session.ws_connect(f"{gateway.base_url}/v3/devices/")
        started = time.time()
        now = int(started)
        await send(other_mqtt, other, "v1/telemetry", {"timestamp": now, "x": 1})
        await send(
            watched_mqtt, watched, "v1/telemetry", {"timestamp": now, "voltage": 230, "alerts": ["hot"]}
        )
        await send(watched_mqtt, watched, "v1/register", {"timestamp": now, "model": "M1"})
        await send(watched_mqtt, watched, "v3/logs", log("hello", "warning"))

        frames = [await next_frame(one) for _ in range(3)]
        assert {frame["device_id"] for frame in frames} == {watched.device_id}
        for frame in frames:
            assert isinstance(frame["received_at"], str)
            assert started - 1 <= datetime.fromisoformat(frame["received_at"]).timestamp() <= time.time() + 1
        assert [{key: frame[key] for key in ("timestamp", "telemetry")} for frame in frames[:1]] == [
            {"timestamp": now, "telemetry": {"voltage": 230, "alerts": ["hot"]}}
        ]
        assert frames[1]["properties"] == {"model": "M1"}
        assert "telemetry" not in frames[1]
        assert frames[2]["log"] == {"severity": "warning", "message": "hello"}
        assert frames[2]["timestamp"] == 1_700_000_000
        assert await quiet(one)

        for ws in (both, every):
            seen = [await next_frame(ws) for _ in range(4)]
            assert seen[0] == {
                "device_id": other.device_id,
                "received_at": seen[0]["received_at"],
                "timestamp": now,
                "telemetry": {"x": 1, "alerts": None},
            }
            assert [frame["device_id"] for frame in seen[1:]] == [watched.device_id] * 3
        for ws in (one, both, every):
            await ws.close()

        # A plain GET on the monitor path is not an error of the server's; unknown devices are 404.
        async with session.get(monitor_url) as response:
            assert response.status == 400
            assert "WebSocket" in (await response.json())["errors"][0]["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as unknown:
            await session.ws_connect(monitor_url, params={"id.in": "watched,nobody"})
        assert unknown.value.status == 404


async def test_the_upgrade_needs_a_token(gateway: GatewayProcess, installer_token: str) -> None:
    device = await provision(gateway, installer_token, "Private")
    url = f"{gateway.base_url}/v3/devices/{device.device_id}/logs"
    async with aiohttp.ClientSession() as session:
        for headers, status in (({}, 401), ({"X-Enapter-Auth-Token": "egw_wrong"}, 403)):
            for target in (url, f"{gateway.base_url}/v3/devices/"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(target, headers=headers)
                assert refused.value.status == status
        readonly = gateway.create_token("READONLY", name="reader")
        async with session.ws_connect(url, headers={"X-Enapter-Auth-Token": readonly}) as ws:
            assert not ws.closed


async def test_open_streams_are_capped(gateway: GatewayProcess, installer_token: str) -> None:
    headers = {"X-Enapter-Auth-Token": installer_token}
    url = f"{gateway.base_url}/v3/devices/"
    # No client-side connection limit: the gateway's is the one under test.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        streams = [await session.ws_connect(url) for _ in range(DEFAULT_MAX_SUBSCRIPTIONS)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url)
        assert refused.value.status == 503
        metrics = gateway.metrics()
        assert metrics["gateway_streams_open"] == DEFAULT_MAX_SUBSCRIPTIONS
        assert metrics["gateway_streams_refused_total"] == 1
        await streams.pop().close()

        async def admitted() -> aiohttp.ClientWebSocketResponse | None:
            try:
                return await session.ws_connect(url)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status != 503:  # only "still full" is worth another try
                    raise
                return None

        streams.append(await eventually(admitted, 5))
        for ws in streams:
            await ws.close()


async def test_a_consumer_that_does_not_read_is_dropped(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device = await provision(gateway, installer_token, "Flood")
    headers = {"X-Enapter-Auth-Token": installer_token}
    url = f"{gateway.base_url}/v3/devices/{device.device_id}/logs"
    text = "x" * 40_000
    flood = 400  # 16 MB of frames: several times what the socket buffers on both ends hold
    async with device_client(gateway, device) as mqtt, aiohttp.ClientSession(headers=headers) as session:
        stalled = await session.ws_connect(url, heartbeat=None)  # and never reads, until asked to
        for n in range(flood):
            await send(mqtt, device, "v3/logs", log(f"{n} {text}"))

        async def dropped() -> bool:
            return "dropped a slow stream consumer" in gateway.log()

        # Once its socket is full the server cannot hand it a frame within the send deadline.
        await eventually(dropped, 20)
        # What reached the client before the drop is far less than what was sent, then the stream
        # ends (a close frame if it got through, else the connection is reset).
        delivered = 0
        while True:
            message = await stalled.receive(timeout=FRAME_TIMEOUT_S)
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            delivered += 1
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        if message.type is aiohttp.WSMsgType.CLOSE:
            assert message.data == aiohttp.WSCloseCode.POLICY_VIOLATION
            assert "slow" in str(message.extra).lower()
        assert delivered < flood
        await stalled.close()
        assert gateway.metrics()["gateway_streams_dropped_total"] == 1

        # The gateway is none the worse: a new stream works.
        async with session.ws_connect(url) as fresh:
            await send(mqtt, device, "v3/logs", log("still here"))
            assert (await next_frame(fresh))["message"] == "still here"


async def test_the_gateway_stops_cleanly_with_streams_open(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device = await provision(gateway, installer_token, "Steady")
    headers = {"X-Enapter-Auth-Token": installer_token}
    async with aiohttp.ClientSession(headers=headers) as session:
        logs = await session.ws_connect(f"{gateway.base_url}/v3/devices/{device.device_id}/logs")
        monitor = await session.ws_connect(f"{gateway.base_url}/v3/devices/")
        started = time.monotonic()
        assert await asyncio.to_thread(gateway.stop) == 0, gateway.log()
        assert time.monotonic() - started < 5
        for ws in (logs, monitor):
            message = await ws.receive(timeout=FRAME_TIMEOUT_S)
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert message.data == aiohttp.WSCloseCode.GOING_AWAY
            await ws.close()
