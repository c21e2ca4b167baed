"""mqtt.mode = "external": the daemon uses a Mosquitto it does not run.

The broker here is set up the way a user would: `mosquitto_ctrl dynsec init` for the admin account,
`log_dest topic` + `connection_messages true` for connectivity notices.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
import pytest

from gateway.cli import EX_CONFIG
from gateway.mqtt.broker import find_dynsec_plugin
from tests.gateway_process import (
    GatewayProcess,
    eventually,
    free_port,
    listening,
    provision,
    write_config,
)

ADMIN_PASSWORD = "external-admin-secret"


@pytest.fixture
def external_broker(tmp_path: Path) -> Iterator[int]:
    """A user-run Mosquitto with dynsec on a free loopback port; yields the port."""
    directory = tmp_path / "external"
    directory.mkdir()
    dynsec_file = directory / "dynsec.json"
    ctrl = shutil.which("mosquitto_ctrl")
    assert ctrl is not None, "mosquitto_ctrl ships with Debian's mosquitto package"
    subprocess.run(
        [ctrl, "dynsec", "init", str(dynsec_file), "admin", ADMIN_PASSWORD],
        check=True,
        capture_output=True,
        timeout=30,
    )
    port = free_port()
    (directory / "mosquitto.conf").write_text(
        "\n".join(
            [
                "user root",
                "allow_anonymous false",
                "persistence false",
                "connection_messages true",
                "log_dest topic",
                f"plugin {find_dynsec_plugin('')}",
                f"plugin_opt_config_file {dynsec_file}",
                f"listener {port} 127.0.0.1",
                "",
            ]
        )
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(directory / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        broker.terminate()
        broker.wait(10)


async def test_external_broker_mode(tmp_path: Path, external_broker: int) -> None:
    password_file = tmp_path / "admin-password"
    password_file.write_text(ADMIN_PASSWORD + "\n")
    config, api_port, _ = write_config(
        tmp_path,
        {
            "mqtt": {
                "mode": "external",
                "port": external_broker,  # devices connect to the external broker too
                "tls_port": free_port(),  # set, yet MQTTS needs a broker the gateway controls
            },
            "mqtt.external": {
                "host": "127.0.0.1",
                "port": external_broker,
                "username": "admin",
                "password_file": str(password_file),
            },
        },
    )
    gateway = GatewayProcess(tmp_path, config, api_port, external_broker)
    gateway.start()
    try:
        token = gateway.create_token()
        device = await provision(gateway, token, "Elsewhere")
        assert device.mqtt_port == external_broker
        async with aiomqtt.Client(
            "127.0.0.1", external_broker, username=device.hardware_id, password=device.password
        ) as device_client:
            await device_client.publish(
                f"v1/from/{device.hardware_id}/s/v1/register", json.dumps({"where": "external"})
            )

            async def online_with_properties() -> dict[str, object] | None:
                async with httpx.AsyncClient(timeout=5) as http:
                    response = await http.get(
                        f"{gateway.base_url}/v3/devices/{device.device_id}",
                        params={"expand": "properties,connectivity"},
                        headers={"X-Enapter-Auth-Token": token},
                    )
                body: dict[str, object] = response.json()["device"]
                ready = body["properties"] == {"where": "external"} and body["connectivity"] == {
                    "status": "ONLINE"
                }
                return body if ready else None

            await eventually(online_with_properties, 10)
            assert gateway.metrics()["gateway_devices_connected"] == 1

        async with httpx.AsyncClient(timeout=5) as http:
            refused = await http.post(
                f"{gateway.base_url}/v3/devices/{device.device_id}/generate_config",
                json={"protocol": "MQTTS"},
                headers={"X-Enapter-Auth-Token": token},
            )
        assert refused.status_code == 422
        assert 'mqtt.mode = "managed"' in refused.json()["errors"][0]["message"]
    finally:
        status = gateway.stop()
    assert status == 0, gateway.log()


def test_unreadable_external_password_file_is_a_config_error(tmp_path: Path) -> None:
    config, api_port, mqtt_port = write_config(
        tmp_path,
        {
            "mqtt": {"mode": "external"},
            "mqtt.external": {"username": "admin", "password_file": str(tmp_path / "missing")},
        },
    )
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    with pytest.raises(RuntimeError, match=r"mqtt\.external\.password_file"):
        gateway.start()
    assert gateway.stop() == EX_CONFIG
