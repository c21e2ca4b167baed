"""Hostile and broken devices against the running daemon: ACLs hold, bad input is counted, not fatal.

Devices here are raw aiomqtt clients using credentials the gateway generated, so the test controls
every byte they send.
"""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import enapter
import httpx
import pytest
from enapter.http.api.devices import MQTTProtocol
from paho.mqtt.reasoncodes import ReasonCode

from tests.gateway_process import GatewayProcess, eventually, provision


def device_client(gateway: GatewayProcess, hardware_id: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", gateway.mqtt_port, username=hardware_id, password=password, timeout=5)


async def connect_once(client: aiomqtt.Client) -> None:
    """Connect and disconnect; raises what the broker answered."""
    async with client:
        pass


async def wait_until_dropped(client: aiomqtt.Client) -> None:
    """Return when the broker closes `client`'s session (raises MqttError then), else time out."""
    async with asyncio.timeout(5):
        async for _ in client.messages:
            pass


async def properties_of(gateway: GatewayProcess, token: str, device_id: str) -> dict[str, object]:
    async with httpx.AsyncClient(headers={"X-Enapter-Auth-Token": token}, timeout=5) as http:
        response = await http.get(
            f"{gateway.base_url}/v3/devices/{device_id}", params={"expand": "properties"}
        )
    response.raise_for_status()
    properties: dict[str, object] = response.json()["device"]["properties"]
    return properties


async def test_a_device_cannot_publish_as_another(gateway: GatewayProcess, installer_token: str) -> None:
    a = await provision(gateway, installer_token, "Device A")
    b = await provision(gateway, installer_token, "Device B")
    a_id, a_hw, a_password, b_id, b_hw = a.device_id, a.hardware_id, a.password, b.device_id, b.hardware_id
    async with device_client(gateway, a_hw, a_password) as client:
        await client.publish(f"v1/from/{b_hw}/s/v1/register", json.dumps({"spoofed": True}))
        # Sent after the spoof on the same connection: once it is stored, the spoof had its chance.
        await client.publish(f"v1/from/{a_hw}/s/v1/register", json.dumps({"genuine": True}))

    async def a_stored() -> bool:
        return await properties_of(gateway, installer_token, a_id) == {"genuine": True}

    await eventually(a_stored, 10)
    assert await properties_of(gateway, installer_token, b_id) == {}
    # The broker dropped it: the daemon never even received it.
    assert gateway.metrics()["gateway_mqtt_messages_received_total"] == 1


async def test_a_device_cannot_subscribe_to_another_devices_commands(
    gateway: GatewayProcess, installer_token: str
) -> None:
    a = await provision(gateway, installer_token, "Device A")
    b = await provision(gateway, installer_token, "Device B")
    async with device_client(gateway, a.hardware_id, a.password) as client:
        (own,) = await client.subscribe(f"v1/to/{a.hardware_id}/s/v1/command/requests")
        (foreign,) = await client.subscribe(f"v1/to/{b.hardware_id}/s/v1/command/requests")
    # MQTT 3.1.1 refuses a subscription in the SUBACK (0x80), it does not disconnect.
    assert isinstance(own, ReasonCode)
    assert not own.is_failure
    assert isinstance(foreign, ReasonCode)
    assert foreign.is_failure


async def test_wrong_password_and_anonymous_are_refused(
    gateway: GatewayProcess, installer_token: str
) -> None:
    hardware_id = (await provision(gateway, installer_token, "Device A")).hardware_id
    for username, password in ((hardware_id, "wrong"), (None, None)):
        client = aiomqtt.Client(
            "127.0.0.1", gateway.mqtt_port, username=username, password=password, timeout=5
        )
        with pytest.raises(aiomqtt.MqttCodeError):
            await connect_once(client)


async def test_regenerating_the_config_revokes_the_old_password(
    gateway: GatewayProcess, installer_token: str
) -> None:
    provisioned = await provision(gateway, installer_token, "Device A")
    device_id, hardware_id, old_password = (
        provisioned.device_id,
        provisioned.hardware_id,
        provisioned.password,
    )
    api = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with device_client(gateway, hardware_id, old_password) as connected:
        async with enapter.http.api.Client(config=api) as client:
            await client.devices.generate_communication_config(device_id, MQTTProtocol.MQTT)
        # The old session is dropped by the broker.
        with pytest.raises(aiomqtt.MqttError):
            await wait_until_dropped(connected)
    with pytest.raises(aiomqtt.MqttCodeError):
        await connect_once(device_client(gateway, hardware_id, old_password))


async def test_malformed_payloads_are_counted_and_ingest_goes_on(
    gateway: GatewayProcess, installer_token: str
) -> None:
    sloppy = await provision(gateway, installer_token, "Sloppy")
    device_id, hardware_id, password = sloppy.device_id, sloppy.hardware_id, sloppy.password
    topic = f"v1/from/{hardware_id}/s/v1"
    async with device_client(gateway, hardware_id, password) as device:
        await device.publish(f"{topic}/telemetry", b"this is not json")
        await device.publish(f"{topic}/telemetry", b"[1, 2, 3]")
        await device.publish(f"{topic}/telemetry", json.dumps({"timestamp": "yesterday"}))
        await device.publish(f"{topic}/register", b"{" + b" " * (1024 * 1024) + b"}")
        await device.publish(f"v1/from/{hardware_id}/s/v9/whatever", b"{}")
        # Its own hardware id (the ACL allows it), but a channel no device has.
        await device.publish(f"v1/from/{hardware_id}/elsewhere/v1/telemetry", b"{}")
        await device.publish(f"{topic}/register", json.dumps({"timestamp": 1, "after": "garbage"}))

    async def stored() -> bool:
        return await properties_of(gateway, installer_token, device_id) == {"after": "garbage"}

    await eventually(stored, 10)
    dropped = {
        name: value
        for name, value in gateway.metrics().items()
        if name.startswith("gateway_mqtt_messages_dropped_total")
    }
    assert dropped == {
        'gateway_mqtt_messages_dropped_total{reason="not_json"}': 1,
        'gateway_mqtt_messages_dropped_total{reason="not_object"}': 1,
        'gateway_mqtt_messages_dropped_total{reason="bad_timestamp"}': 1,
        'gateway_mqtt_messages_dropped_total{reason="too_large"}': 1,
        'gateway_mqtt_messages_dropped_total{reason="unknown_suffix"}': 1,
        'gateway_mqtt_messages_dropped_total{reason="unknown_device"}': 1,
    }
    assert gateway.metrics()["gateway_mqtt_messages_received_total"] == 7
    log = gateway.log()
    assert "not_json" in log  # logged once, with its reason
    assert log.count("(not_json)") == 1
