"""Device and API security against the running daemon: wills, deletion, the admin account, secrets, tokens.

`test_ingest_faults` already covers publishing and subscribing across devices, wrong passwords and
regenerated credentials; this module covers what a device or a caller could still try around them.
Wills are sent with CONNECT packets built by hand, so the test decides every byte and how the
connection ends (no DISCONNECT, which is what makes a broker publish the will).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path

import aiomqtt
import httpx
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from gateway.cli import EX_DATAERR
from gateway.store.store import DATABASE_FILE
from gateway.tokens import RANDOM_BYTES, format_token
from tests.e2e.test_ingest_faults import connect_once, device_client, properties_of, wait_until_dropped
from tests.gateway_process import (
    GatewayProcess,
    ProvisionedDevice,
    eventually,
    provision,
)

TOKEN_HEADER = "X-Enapter-Auth-Token"
# MQTT 3.1.1 §3.2.2.3: CONNACK return codes.
CONNACK_ACCEPTED = 0
CONNACK_NOT_AUTHORISED = 5
ADMIN_USERNAME = "gateway-admin"


def _mqtt_string(text: str) -> bytes:
    """A length-prefixed UTF-8 string (MQTT 3.1.1 §1.5.3)."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(length: int) -> bytes:
    """The variable-length integer of the fixed header (MQTT 3.1.1 §2.2.3)."""
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def connect_packet(client_id: str, username: str, password: str, will_topic: str, will: bytes) -> bytes:
    """An MQTT 3.1.1 CONNECT with credentials and a QoS 1 will (§3.1)."""
    # username, password, will QoS 1, will flag, clean session (§3.1.2.3).
    flags = 0x80 | 0x40 | 0x08 | 0x04 | 0x02
    variable_header = _mqtt_string("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big")
    payload = (
        _mqtt_string(client_id)
        + _mqtt_string(will_topic)
        + len(will).to_bytes(2, "big")
        + will
        + _mqtt_string(username)
        + _mqtt_string(password)
    )
    body = variable_header + payload
    return b"\x10" + _remaining_length(len(body)) + body


async def connect_with_will_and_vanish(
    gateway: GatewayProcess, device: ProvisionedDevice, client_id: str, will_topic: str, will: object
) -> int:
    """Connect as `device` with a will, then close the socket without DISCONNECT; the CONNACK code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.mqtt_port)
    try:
        packet = connect_packet(
            client_id, device.hardware_id, device.password, will_topic, json.dumps(will).encode()
        )
        writer.write(packet)
        await writer.drain()
        async with asyncio.timeout(5):
            connack = await reader.readexactly(4)
    finally:
        writer.close()
        # The broker may have closed first (after refusing); the socket is gone either way.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()
    assert connack[:2] == b"\x20\x02", connack
    return connack[3]


def register_topic(hardware_id: str) -> str:
    """Where a device publishes its properties (the SDK's channel)."""
    return f"v1/from/{hardware_id}/s/v1/register"


async def test_a_will_cannot_spoof_another_device_but_an_own_will_fires(
    gateway: GatewayProcess, installer_token: str
) -> None:
    a = await provision(gateway, installer_token, "Device A")
    b = await provision(gateway, installer_token, "Device B")
    now = int(time.time())

    spoof = await connect_with_will_and_vanish(
        gateway, a, "a-spoof", register_topic(b.hardware_id), {"timestamp": now, "spoofed": True}
    )
    # Refusing the CONNECT and accepting it but dropping the will are both safe; what matters is
    # that nothing reaches the daemon, checked below.
    assert spoof in (CONNACK_ACCEPTED, CONNACK_NOT_AUTHORISED)

    # Positive control, after the spoof on the same broker loop: an unclean close does fire a will.
    own = await connect_with_will_and_vanish(
        gateway, a, "a-own", register_topic(a.hardware_id), {"timestamp": now, "will": True}
    )
    assert own == CONNACK_ACCEPTED

    async def will_stored() -> bool:
        return await properties_of(gateway, installer_token, a.device_id) == {"will": True}

    await eventually(will_stored, 10)

    # B's own marker, sent after both wills: once it is stored, a spoof would have been too.
    async with device_client(gateway, b.hardware_id, b.password) as client:
        await client.publish(register_topic(b.hardware_id), json.dumps({"genuine": True}), qos=1)

    async def genuine_stored() -> dict[str, object] | None:
        properties = await properties_of(gateway, installer_token, b.device_id)
        return properties if "genuine" in properties else None

    assert await eventually(genuine_stored, 10) == {"genuine": True}
    # The daemon received A's own will and B's marker, nothing else.
    assert gateway.metrics()["gateway_mqtt_messages_received_total"] == 2


async def test_deleting_a_connected_device_drops_and_refuses_it(
    gateway: GatewayProcess, installer_token: str
) -> None:
    a = await provision(gateway, installer_token, "Device A")
    b = await provision(gateway, installer_token, "Device B")
    async with (
        httpx.AsyncClient(
            base_url=gateway.base_url, headers={TOKEN_HEADER: installer_token}, timeout=5
        ) as http,
        device_client(gateway, b.hardware_id, b.password) as b_session,
    ):
        async with device_client(gateway, a.hardware_id, a.password) as a_session:
            deleted = await http.delete(f"/v3/devices/{a.device_id}")
            assert deleted.status_code == 200, deleted.text
            assert deleted.json() == {}
            # wait_until_dropped times out (TimeoutError, not MqttError) after 5 s otherwise.
            with pytest.raises(aiomqtt.MqttError):
                await wait_until_dropped(a_session)
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            await connect_once(device_client(gateway, a.hardware_id, a.password))
        assert isinstance(refused.value.rc, ReasonCode)
        assert refused.value.rc.is_failure
        gone = await http.get(f"/v3/devices/{a.device_id}")
        assert gone.status_code == 404
        assert gone.json()["errors"][0]["code"] == "not_found"

        # B's session, open all along, still publishes and is still ingested.
        await b_session.publish(register_topic(b.hardware_id), json.dumps({"still": "here"}), qos=1)

        async def b_stored() -> bool:
            return await properties_of(gateway, installer_token, b.device_id) == {"still": "here"}

        await eventually(b_stored, 10)

        listed = (await http.get("/v3/devices")).json()["devices"]
        (own,) = [device for device in listed if device["type"] == "GATEWAY"]
        assert {device["id"] for device in listed} == {own["id"], b.device_id}
        refused_own = await http.delete(f"/v3/devices/{own['id']}")
        assert refused_own.status_code == 422
        assert refused_own.json()["errors"][0]["code"] == "unprocessable_entity"
        assert (await http.get(f"/v3/devices/{own['id']}")).status_code == 200

        for role in ("READONLY", "USER"):
            low = gateway.create_token(role)
            denied = await http.delete(f"/v3/devices/{b.device_id}", headers={TOKEN_HEADER: low})
            assert denied.status_code == 403, role
            assert denied.json()["errors"][0]["code"] == "forbidden"
        assert (await http.get(f"/v3/devices/{b.device_id}")).status_code == 200

        unknown = await http.delete(f"/v3/devices/{uuid.uuid4()}")
        assert unknown.status_code == 404
        assert unknown.json()["errors"][0]["code"] == "not_found"

        # OWNER is the lowest role that may delete.
        owner = gateway.create_token("OWNER")
        by_owner = await http.delete(f"/v3/devices/{b.device_id}", headers={TOKEN_HEADER: owner})
        assert by_owner.status_code == 200, by_owner.text
        with pytest.raises(aiomqtt.MqttError):
            await wait_until_dropped(b_session)


async def test_the_broker_admin_account_is_out_of_reach_of_the_device_listener(
    gateway: GatewayProcess, installer_token: str
) -> None:
    for password in (None, "", "x", ADMIN_USERNAME):
        client = aiomqtt.Client(
            "127.0.0.1", gateway.mqtt_port, username=ADMIN_USERNAME, password=password, timeout=5
        )
        with pytest.raises(aiomqtt.MqttCodeError):
            await connect_once(client)

    # Nor can a device grant itself the admin role, or create an account, through $CONTROL.
    a = await provision(gateway, installer_token, "Device A")
    commands = {
        "commands": [
            {"command": "addClientRole", "username": a.hardware_id, "rolename": ADMIN_USERNAME},
            {
                "command": "createClient",
                "username": "intruder",
                "password": "intruder",
                "roles": [{"rolename": ADMIN_USERNAME}],
            },
        ]
    }
    async with device_client(gateway, a.hardware_id, a.password) as client:
        (response_subscription,) = await client.subscribe("$CONTROL/dynamic-security/v1/response")
        await client.publish("$CONTROL/dynamic-security/v1", json.dumps(commands), qos=1)
    assert isinstance(response_subscription, ReasonCode)
    assert response_subscription.is_failure
    async with device_client(gateway, a.hardware_id, a.password) as client:
        (everything,) = await client.subscribe("#")
    assert isinstance(everything, ReasonCode)
    assert everything.is_failure
    intruder = aiomqtt.Client(
        "127.0.0.1", gateway.mqtt_port, username="intruder", password="intruder", timeout=5
    )
    with pytest.raises(aiomqtt.MqttCodeError):
        await connect_once(intruder)


def _files_holding(directory: Path, secrets: dict[str, str]) -> list[tuple[str, str]]:
    """(file, secret name) for every regular file under `directory` that contains a secret."""
    found: list[tuple[str, str]] = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file():  # the admin socket, directories
            continue
        content = path.read_bytes()
        found += [(path.name, name) for name, value in secrets.items() if value.encode() in content]
    return found


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """The names of the secrets that appear in `text`."""
    return [name for name, value in secrets.items() if value in text]


async def test_secrets_stay_out_of_logs_state_and_responses(
    gateway: GatewayProcess, installer_token: str
) -> None:
    a = await provision(gateway, installer_token, "Device A")
    b = await provision(gateway, installer_token, "Device B")
    wrong_token = format_token(os.urandom(RANDOM_BYTES))
    secrets = {
        "installer token": installer_token,
        "wrong token": wrong_token,
        "A's password": a.password,
        "B's first password": b.password,
    }
    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers={TOKEN_HEADER: installer_token}, timeout=5
    ) as http:
        regenerated = await http.post(f"/v3/devices/{b.device_id}/generate_config", json={"protocol": "MQTT"})
        assert regenerated.status_code == 200, regenerated.text
        b_password: str = regenerated.json()["config"]["mqtt_credentials"]["password"]
        assert b_password not in (b.password, a.password)
        secrets["B's password"] = b_password

        wrong = {TOKEN_HEADER: wrong_token}
        for method, path in (
            ("GET", "/v3/devices"),
            ("GET", f"/v3/devices/{a.device_id}"),
            ("POST", f"/v3/devices/{a.device_id}/generate_config"),
            ("DELETE", f"/v3/devices/{a.device_id}"),
        ):
            refused = await http.request(method, path, headers=wrong, json={"protocol": "MQTT"})
            assert refused.status_code == 403, (method, path)
            assert refused.json()["errors"][0]["code"] == "invalid_header"
            assert _leaks(refused.text + str(refused.headers), secrets) == []

        async with device_client(gateway, a.hardware_id, a.password) as client:
            await client.publish(register_topic(a.hardware_id), json.dumps({"model": "A"}), qos=1)
            await client.publish(f"v1/from/{a.hardware_id}/s/v1/telemetry", json.dumps({"power": 1.5}), qos=1)
        async with device_client(gateway, b.hardware_id, b_password) as client:
            await client.publish(register_topic(b.hardware_id), json.dumps({"model": "B"}), qos=1)

        async def both_stored() -> bool:
            a_properties = await properties_of(gateway, installer_token, a.device_id)
            b_properties = await properties_of(gateway, installer_token, b.device_id)
            return a_properties == {"model": "A"} and b_properties == {"model": "B"}

        await eventually(both_stored, 10)

        expand = "properties,connectivity,raised_alert_names,communication,communication_info,site"
        responses = [
            await http.get("/v3/devices", params={"expand": expand}),
            await http.get(f"/v3/devices/{a.device_id}", params={"expand": expand}),
            await http.get(f"/v3/devices/{b.device_id}", params={"expand": expand}),
            await http.get("/v3/site"),
            await http.get("/assets/v1/devices", params={"expand": "connectivity,properties"}),
        ]
        for response in responses:
            assert response.status_code == 200, response.request.url
            assert _leaks(response.text + str(response.headers), secrets) == [], response.request.url

    database = gateway.state_dir / DATABASE_FILE
    wal = database.with_name(DATABASE_FILE + "-wal")
    assert database.is_file()
    assert wal.is_file()  # the daemon runs in WAL mode: recent writes are in here
    assert _files_holding(gateway.state_dir, secrets) == []

    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        (token_id,) = db.execute("SELECT id FROM api_tokens WHERE role = 'INSTALLER'").fetchone()
    listing = gateway.cli("token", "list")
    assert listing.returncode == 0, listing.stderr
    assert _leaks(listing.stdout + listing.stderr, secrets) == []
    (row,) = [line for line in listing.stdout.splitlines() if token_id in line]
    assert row.split()[:2] == [token_id, "INSTALLER"]

    # The whole log, shutdown included; the daemon's state after a clean stop too.
    assert gateway.stop() == 0
    assert _leaks(gateway.log(), secrets) == []
    assert _files_holding(gateway.state_dir, secrets) == []


def test_a_token_revoked_from_the_cli_is_refused_at_once(gateway: GatewayProcess) -> None:
    token = gateway.create_token("OWNER")
    url = f"{gateway.base_url}/v3/devices"
    assert httpx.get(url, headers={TOKEN_HEADER: token}, timeout=5).status_code == 200

    listing = gateway.cli("token", "list")
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if " OWNER " in line]
    token_id = row.split()[0]
    revoked = gateway.cli("token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert token_id in revoked.stdout

    refused = httpx.get(url, headers={TOKEN_HEADER: token}, timeout=5)
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "invalid_header"

    unknown = gateway.cli("token", "revoke", str(uuid.uuid4()))
    assert unknown.returncode == EX_DATAERR
    assert "no token" in unknown.stderr
