"""`enapter-gateway backup` while devices send telemetry, and `restore` into another state directory.

The real SDK device runs against a gateway with MQTTS on; the backup is taken while its telemetry
is being ingested. The gateway is stopped and the backup restored under a new configuration whose
state directory is elsewhere (same ports, as on a replacement machine). The restored gateway has
the same devices, tokens, CA and history, and the same device configuration connects again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
from pathlib import Path

import enapter
import httpx
from enapter.http.api.devices import DeviceConnectivityStatus, MQTTProtocol

from gateway.backup import CONFIG_FROM_BACKUP
from gateway.cli import EX_DATAERR, EX_TEMPFAIL
from gateway.store.store import DATABASE_FILE
from tests.gateway_process import GatewayProcess, eventually, free_port, running_gateway, write_config
from tests.peers.process import start_peer, stop_peer

TELEMETRY_WITHIN_S = 20.0
# A batch is committed within a second of arrival; two leave room for a slow machine.
COMMITTED_AFTER_S = 2.5


def auth(token: str) -> dict[str, str]:
    return {"X-Enapter-Auth-Token": token}


async def latest_counter(gateway: GatewayProcess, token: str, device_id: str) -> dict[str, float] | None:
    """The newest `counter` telemetry of the device ({"value", "timestamp"}), if any."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{gateway.base_url}/v3/devices/{device_id}/telemetry", headers=auth(token))
    assert response.status_code == 200, response.text
    found: dict[str, float] | None = response.json()["telemetry"].get("counter")
    return found


async def history(gateway: GatewayProcess, token: str, device_id: str, start: int, end: int) -> str:
    """Every second of `counter` between `start` and `end`, as the time series CSV."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{gateway.base_url}/v3/telemetry/query_timeseries",
            json={
                "from": start,
                "to": end,
                "granularity": "1s",
                "telemetry": [{"device": device_id, "attribute": "counter", "aggregation": "max"}],
            },
            headers={**auth(token), "Accept": "text/csv"},
        )
    assert response.status_code == 200, response.text
    return response.text


async def devices(gateway: GatewayProcess, token: str) -> list[tuple[str, str, str]]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{gateway.base_url}/v3/devices", headers=auth(token))
    assert response.status_code == 200, response.text
    return [(item["id"], item["name"], item["slug"]) for item in response.json()["devices"]]


def token_id(gateway: GatewayProcess, name: str) -> str:
    listing = gateway.cli("token", "list", check=True).stdout.splitlines()
    (line,) = [line for line in listing if line.split()[-1] == name]
    return line.split()[0]


async def test_backup_during_ingest_restores_into_a_new_state_dir(tmp_path: Path) -> None:
    tls_port = free_port()
    (tmp_path / "old").mkdir()
    archive = tmp_path / "gateway-backup.tar.gz"
    with running_gateway(tmp_path / "old", {"mqtt": {"tls_port": tls_port}}) as old:
        token = old.create_token("INSTALLER")
        leaver_token = old.create_token("READONLY", name="leaver")
        old.cli("token", "revoke", token_id(old, "leaver"), check=True)
        api = enapter.http.api.Config(base_url=old.base_url, token=token)
        async with enapter.http.api.Client(config=api) as client:
            device = await client.devices.create_standalone(name="Meter One")
            config = await client.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
        blob = base64.b64encode(json.dumps(config.to_dto()).encode()).decode()
        started = int(time.time())
        peer = start_peer(blob)
        try:

            async def counted_a_few() -> bool:
                latest = await latest_counter(old, token, device.id)
                return latest is not None and latest["value"] >= 8

            await eventually(counted_a_few, TELEMETRY_WITHIN_S)
            until = int(time.time()) - 1
            await asyncio.sleep(COMMITTED_AFTER_S)
            before = await history(old, token, device.id, started - 5, until)
            assert len([line for line in before.splitlines()[1:] if line.split(",")[1]]) >= 2, before
            listed = await devices(old, token)

            saved = old.cli("backup", str(archive))  # the peer is still sending
            assert saved.returncode == 0, saved.stderr
            assert "Backed up 1 device(s)" in saved.stdout
            assert stat.S_IMODE(archive.stat().st_mode) == 0o600
            assert await latest_counter(old, token, device.id) is not None  # ingest went on
        finally:
            stop_peer(peer)

    new_dir = tmp_path / "new"
    new_dir.mkdir()
    new_config, _, _ = write_config(
        new_dir, {"api": {"port": old.api_port}, "mqtt": {"port": old.mqtt_port, "tls_port": tls_port}}
    )
    new = GatewayProcess(new_dir, new_config, old.api_port, old.mqtt_port)
    assert new.state_dir != old.state_dir

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    refused = new.cli("restore", str(truncated))
    assert refused.returncode == EX_DATAERR
    assert refused.stderr.strip().splitlines() == [
        f"restore refused: the archive {truncated} is truncated or corrupt"
        " (Compressed file ended before the end-of-stream marker was reached)"
    ]
    assert not new.state_dir.exists()

    restored = new.cli("restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "Restored 1 device(s)" in restored.stdout
    assert stat.S_IMODE(new.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((new.state_dir / DATABASE_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((new.state_dir / "pki" / "ca.key").stat().st_mode) == 0o600
    assert (new.state_dir / CONFIG_FROM_BACKUP).read_bytes() == old.config.read_bytes()

    new.start()
    try:
        busy = new.cli("restore", str(archive), "--force")
        assert busy.returncode == EX_TEMPFAIL
        assert "stop the gateway first" in busy.stderr

        assert await devices(new, token) == listed
        async with httpx.AsyncClient(timeout=5) as http:
            denied = await http.get(f"{new.base_url}/v3/devices", headers=auth(leaver_token))
        assert denied.status_code == 403
        assert await history(new, token, device.id, started - 5, until) == before
        # The CA came back: certificates issued before the backup still verify.
        assert (new.state_dir / "pki" / "ca.crt").read_bytes() == (
            old.state_dir / "pki" / "ca.crt"
        ).read_bytes()

        # The very same device configuration connects, and its telemetry is taken.
        reconnected_at = int(time.time())
        peer = start_peer(blob)
        try:

            async def fresh_telemetry() -> bool:
                latest = await latest_counter(new, token, device.id)
                return latest is not None and latest["timestamp"] >= reconnected_at

            await eventually(fresh_telemetry, TELEMETRY_WITHIN_S)
            api = enapter.http.api.Config(base_url=new.base_url, token=token)
            async with enapter.http.api.Client(config=api) as client:
                seen = await client.devices.get(device.id, expand_connectivity=True)
            assert seen.connectivity is not None
            assert seen.connectivity.status is DeviceConnectivityStatus.ONLINE
        finally:
            peer_log = stop_peer(peer)
        assert "not authorized" not in peer_log.lower(), peer_log
    finally:
        status = new.stop()
    assert status == 0, new.log()
