"""Hostile and broken devices against the running daemon: ACLs hold, bad input is counted, not fatal.

Devices here are raw aiomqtt clients using credentials the gateway generated, so the test controls
every byte they send.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import enapter
import httpx
import pytest
from enapter.http.api.devices import MQTTProtocol
from paho.mqtt.reasoncodes import ReasonCode

from gateway.api.v3.provisioning import STANDALONE_CHANNEL
from tests.gateway_process import GatewayProcess, ProvisionedDevice, eventually, provision, running_gateway
from tests.peers import raw_mqtt


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


# --- A flooding device -----------------------------------------------------------------------------

FLOOD_RATE = 20  # mqtt.device_rate_limit for the flood test
FLOOD_LOCKOUT_S = 6.0
CALM_DEVICES = 3
CALM_INTERVAL_S = 0.2
CALM_SECONDS = 5.0


@dataclass
class Flood:
    """What a flooding thread did: messages written, and when the broker cut it off."""

    sent: int = 0
    cut_off_after_s: float | None = None


def flood(gateway: GatewayProcess, device: ProvisionedDevice, until: threading.Event) -> Flood:
    """Write QoS 0 telemetry as fast as the socket takes it, until `until` or the broker hangs up."""
    outcome = Flood()
    topic = f"v1/from/{device.hardware_id}/{STANDALONE_CHANNEL}/v1/telemetry"
    started = time.monotonic()
    packets = [
        raw_mqtt.publish_packet(topic, json.dumps({"timestamp": started + i / 1e6, "n": i}).encode())
        for i in range(1_000)
    ]
    chunk = b"".join(packets)
    sock = raw_mqtt.connect("127.0.0.1", gateway.mqtt_port, device.hardware_id, device.password)
    try:
        while not until.is_set():
            try:
                sock.sendall(chunk)
            except OSError:
                outcome.cut_off_after_s = time.monotonic() - started
                break
            outcome.sent += len(packets)
    finally:
        raw_mqtt.disconnect(sock)
    return outcome


async def publish_calmly(gateway: GatewayProcess, device: ProvisionedDevice) -> list[int]:
    """Telemetry every CALM_INTERVAL_S for CALM_SECONDS, `seq` counting up; returns the seqs sent."""
    topic = f"v1/from/{device.hardware_id}/{STANDALONE_CHANNEL}/v1/telemetry"
    sent: list[int] = []
    async with device_client(gateway, device.hardware_id, device.password) as client:
        for seq in range(int(CALM_SECONDS / CALM_INTERVAL_S)):
            await client.publish(topic, json.dumps({"timestamp": time.time(), "seq": seq}))
            sent.append(seq)
            await asyncio.sleep(CALM_INTERVAL_S)
    return sent


async def test_a_flooding_device_is_shut_out_and_does_not_starve_the_others(tmp_path: Path) -> None:
    overrides = {"mqtt": {"device_rate_limit": FLOOD_RATE, "flood_lockout": FLOOD_LOCKOUT_S}}
    with running_gateway(tmp_path, overrides) as gateway:
        token = gateway.create_token("INSTALLER")
        flooder = await provision(gateway, token, "Flooder")
        calm = [await provision(gateway, token, f"Calm {i}") for i in range(CALM_DEVICES)]
        stop_flood = threading.Event()
        flooding = asyncio.ensure_future(asyncio.to_thread(flood, gateway, flooder, stop_flood))
        try:
            sent = await asyncio.gather(*(publish_calmly(gateway, device) for device in calm))
        finally:
            stop_flood.set()
            outcome = await flooding

        # The broker hung up on the flooder, within about a second, and refuses it for now.
        assert outcome.cut_off_after_s is not None, outcome
        assert outcome.cut_off_after_s < 3.0
        assert outcome.sent > FLOOD_RATE * 100
        with pytest.raises(raw_mqtt.ConnectRefusedError) as refused:
            raw_mqtt.connect("127.0.0.1", gateway.mqtt_port, flooder.hardware_id, flooder.password)
        assert refused.value.code == raw_mqtt.NOT_AUTHORIZED

        # Every message of every other device was stored, each once, soon after it was sent.
        async def all_calm_stored() -> bool:
            return all(
                [value for _, value in gateway.stored_telemetry(device.device_id, "seq")] == seqs
                for device, seqs in zip(calm, sent, strict=True)
            )

        await eventually(all_calm_stored, 3)
        # The flooder got no more than its budget for the seconds it flooded.
        kept = len(gateway.stored_telemetry(flooder.device_id, "n"))
        assert 0 < kept <= FLOOD_RATE * (math.ceil(outcome.cut_off_after_s) + 1)
        metrics = gateway.metrics()
        assert metrics['gateway_mqtt_messages_dropped_total{reason="rate_limited"}'] > 0
        assert "queue_full" not in str(metrics)
        assert f"device {flooder.hardware_id} sends more than its per-device message rate" in gateway.log()

        # After the lockout it may come back, with the credentials it has.
        async def let_back_in() -> bool:
            try:
                raw_mqtt.disconnect(
                    raw_mqtt.connect("127.0.0.1", gateway.mqtt_port, flooder.hardware_id, flooder.password)
                )
            except raw_mqtt.ConnectRefusedError:
                return False
            return True

        await eventually(let_back_in, FLOOD_LOCKOUT_S + 5, interval=0.5)
