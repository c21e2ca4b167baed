"""Starting, stopping and the command line, as an operator meets them."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import aiomqtt
import httpx

from gateway.cli import EX_CONFIG, EX_UNAVAILABLE
from gateway.store.store import DATABASE_FILE
from tests.gateway_process import REPO, GatewayProcess, gateway_command, provision, write_config


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gateway_command(*args), capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )


def test_check_config_accepts_the_example_and_names_the_broken_key(tmp_path: Path) -> None:
    assert run_cli("check-config", str(REPO / "config.example.toml")).returncode == 0
    broken = tmp_path / "broken.toml"
    broken.write_text('[api]\nport = "eighty"\n[mqtt]\nprot = 1\n')
    result = run_cli("check-config", str(broken))
    assert result.returncode == EX_CONFIG
    assert "api.port" in result.stderr
    assert "mqtt.prot" in result.stderr


def test_run_with_a_bad_config_exits_78(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[gateway]\ntimezone = 'Mars/Olympus'\n")
    result = run_cli("run", "--config", str(broken))
    assert result.returncode == EX_CONFIG
    assert "gateway.timezone" in result.stderr


def test_missing_mosquitto_says_how_to_install_it(tmp_path: Path) -> None:
    config, _, _ = write_config(tmp_path, {"mqtt": {"mosquitto": "/nonexistent/mosquitto"}})
    result = run_cli("run", "--config", str(config))
    assert result.returncode == EX_UNAVAILABLE
    assert "apt-get install mosquitto" in result.stderr


def test_token_create_works_without_the_daemon_and_stores_only_a_hash(tmp_path: Path) -> None:
    config, _, _ = write_config(tmp_path)
    result = run_cli("token", "create", "--role", "readonly", "--name", "ci", "--config", str(config))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("egw_")
    database = tmp_path / "state" / DATABASE_FILE
    assert token.encode() not in database.read_bytes()
    assert (database.stat().st_mode & 0o077) == 0


def test_requests_without_or_with_a_bad_token(gateway: GatewayProcess, installer_token: str) -> None:
    url = f"{gateway.base_url}/v3/devices"
    missing = httpx.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.json()["errors"][0]["code"] == "missing_header"
    bad = httpx.get(url, headers={"X-Enapter-Auth-Token": "egw_nope"}, timeout=5)
    assert bad.status_code == 403
    assert bad.json()["errors"][0]["message"] == "Authentication token is invalid."
    unknown = httpx.get(
        f"{gateway.base_url}/v3/devices/no-such-device",
        headers={"X-Enapter-Auth-Token": installer_token},
        timeout=5,
    )
    assert unknown.status_code == 404
    assert unknown.headers["Content-Type"] == "application/json"
    assert unknown.json()["errors"][0]["code"] == "not_found"
    readonly = gateway.create_token("READONLY")
    denied = httpx.post(
        f"{gateway.base_url}/v3/provisioning/standalone",
        json={"name": "x"},
        headers={"X-Enapter-Auth-Token": readonly},
        timeout=5,
    )
    assert denied.status_code == 403


def test_mqtts_is_refused_clearly_when_the_tls_listener_is_off(
    gateway: GatewayProcess, installer_token: str
) -> None:
    headers = {"X-Enapter-Auth-Token": installer_token}
    created = httpx.post(
        f"{gateway.base_url}/v3/provisioning/standalone",
        json={"name": "tls"},
        headers=headers,
        timeout=5,
    ).json()
    response = httpx.post(
        f"{gateway.base_url}/v3/devices/{created['device_id']}/generate_config",
        content=json.dumps({"protocol": "MQTTS"}),  # the CLI sends no Content-Type
        headers=headers,
        timeout=5,
    )
    assert response.status_code == 422
    assert "MQTTS" in response.json()["errors"][0]["message"]


async def test_sigterm_during_ingest_exits_0_with_an_intact_database(tmp_path: Path) -> None:
    config, api_port, mqtt_port = write_config(tmp_path)
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    gateway.start()
    try:
        device = await provision(gateway, gateway.create_token(), "Busy")
        topic = f"v1/from/{device.hardware_id}/s/v1/telemetry"
        sent = 0
        process = gateway.process
        assert process is not None
        # The broker goes away under the publisher once the daemon stops it.
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(
                "127.0.0.1", mqtt_port, username=device.hardware_id, password=device.password
            ) as publisher:
                for sent in range(1, 2001):
                    await publisher.publish(topic, json.dumps({"timestamp": sent, "n": sent}))
                    if sent == 1000:
                        process.send_signal(signal.SIGTERM)  # while messages still flow in
    finally:
        status = gateway.stop()
    assert status == 0, gateway.log()
    assert "Traceback" not in gateway.log()
    with sqlite3.connect(tmp_path / "state" / DATABASE_FILE) as database:
        assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (stored,) = database.execute(
            "SELECT count(*) FROM telemetry_raw JOIN telemetry_series ON id = series_id WHERE device_id = ?",
            (device.device_id,),
        ).fetchone()
    assert 0 < stored <= sent
