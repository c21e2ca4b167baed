"""The database under faults: a damaged file at start, a daemon killed mid-ingest, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
import pytest

from gateway.api.v3.provisioning import STANDALONE_CHANNEL
from gateway.store.store import DATABASE_FILE
from tests.e2e.test_ingest_faults import device_client
from tests.gateway_process import GatewayProcess, eventually, provision, write_config


def test_a_corrupt_database_at_start_is_moved_aside_and_reported_loudly(tmp_path: Path) -> None:
    config, api_port, mqtt_port = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    garbage = b"\x00not a database, whatever it once was\n" * 1000
    (state / DATABASE_FILE).write_bytes(garbage)
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    gateway.start()
    try:
        (moved,) = state.glob(DATABASE_FILE + ".corrupt-*")
        assert moved.read_bytes() == garbage
        log = gateway.log()
        assert "CRITICAL" in log
        assert f"THE DATABASE WAS UNUSABLE (file is not a database). It was moved to {moved}" in log
        # A fresh database serves: a token made now works, the site holds only the gateway itself.
        token = gateway.create_token("READONLY")
        response = httpx.get(
            f"{gateway.base_url}/v3/devices", headers={"X-Enapter-Auth-Token": token}, timeout=5
        )
        assert response.status_code == 200
        assert [device["type"] for device in response.json()["devices"]] == ["GATEWAY"]
        status = gateway.cli("status", "--json", check=True)
        store = json.loads(status.stdout)["store"]
        assert store["set_aside"] == str(moved)
        assert store["set_aside_problem"] == "file is not a database"
        assert "THE DATABASE WAS UNUSABLE AT START" in gateway.cli("status", check=True).stdout
    finally:
        assert gateway.stop() == 0, gateway.log()
    # The next start finds a sound database and sets nothing aside.
    gateway.start()
    try:
        assert len(list(state.glob(DATABASE_FILE + ".corrupt-*"))) == 1
        assert json.loads(gateway.cli("status", "--json", check=True).stdout)["store"]["set_aside"] == ""
    finally:
        assert gateway.stop() == 0, gateway.log()


# --- SIGKILL mid-ingest ----------------------------------------------------------------------------

# What the README promises a crash may lose: the batches not yet committed, "well under a second".
BATCH_WINDOW_S = 1.0
PUBLISH_INTERVAL_S = 0.002


def integrity(database: Path) -> str:
    """`PRAGMA integrity_check` on the file as it is on disk."""
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as db:
        return "\n".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))


async def answer_in_progress(client: aiomqtt.Client, topic: str) -> None:
    """Answer every command request with a `log` response: the execution stays IN_PROGRESS."""
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        request = json.loads(message.payload)
        response = {"id": request["id"], "state": "log", "payload": {"message": "working on it"}}
        await client.publish(topic, json.dumps(response))


async def execution_state(http: httpx.AsyncClient, device_id: str, execution_id: str) -> str:
    response = await http.get(f"/v3/devices/{device_id}/command_executions/{execution_id}")
    response.raise_for_status()
    state: str = response.json()["execution"]["state"]
    return state


async def test_a_daemon_killed_mid_ingest_keeps_a_sound_database_and_all_but_the_last_batch(
    tmp_path: Path,
) -> None:
    # Faster than a device may send by default: this is about the store, not about floods.
    config, api_port, mqtt_port = write_config(tmp_path, {"mqtt": {"device_rate_limit": 0}})
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    gateway.start()
    try:
        token = gateway.create_token("INSTALLER")
        device = await provision(gateway, token, "Busy")
        prefix = f"v1/from/{device.hardware_id}/{STANDALONE_CHANNEL}/v1"
        requests = f"v1/to/{device.hardware_id}/{STANDALONE_CHANNEL}/v1/command/requests"
        sent_at: list[float] = []  # monotonic time at which seq i was handed to the socket
        async with (
            httpx.AsyncClient(base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": token}) as http,
            device_client(gateway, device.hardware_id, device.password) as mqtt,
        ):
            await mqtt.subscribe(requests)
            answering = asyncio.create_task(answer_in_progress(mqtt, f"{prefix}/command/responses"))
            created = await http.post(
                f"/v3/devices/{device.device_id}/command_executions", json={"name": "work"}
            )
            execution_id: str = created.json()["execution_id"]

            async def in_progress() -> bool:
                return await execution_state(http, device.device_id, execution_id) == "IN_PROGRESS"

            await eventually(in_progress, 10)
            # Publish flat out for 3 s, then SIGKILL the daemon between two messages.
            kill_at = time.monotonic() + 3.0
            while time.monotonic() < kill_at:
                message = {"timestamp": time.time(), "seq": len(sent_at)}
                await mqtt.publish(f"{prefix}/telemetry", json.dumps(message))
                sent_at.append(time.monotonic())
                await asyncio.sleep(PUBLISH_INTERVAL_S)
            assert gateway.stop(signal.SIGKILL) == -signal.SIGKILL
            killed_at = time.monotonic()
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await answering

        database = gateway.state_dir / DATABASE_FILE
        assert integrity(database) == "ok"
        gateway.start()
        assert integrity(database) == "ok"
        stored = [value for _, value in gateway.stored_telemetry(device.device_id, "seq")]
        # In order, each once, with no hole: only a tail can be missing...
        assert stored == list(range(len(stored)))
        # ...and that tail is what was sent within the last batch window before the kill.
        safe = [seq for seq, at in enumerate(sent_at) if at <= killed_at - BATCH_WINDOW_S]
        assert len(safe) > 300
        assert len(stored) >= len(safe), (len(stored), len(safe), len(sent_at))

        async with httpx.AsyncClient(
            base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": token}
        ) as http:
            # Left IN_PROGRESS by the kill; the restarted daemon ends it rather than keep it open.
            async def ended() -> str | None:
                state = await execution_state(http, device.device_id, execution_id)
                return None if state == "IN_PROGRESS" else state

            assert await eventually(ended, 15) == "TIMEOUT"
    finally:
        assert gateway.stop() == 0, gateway.log()


# --- A full disk -----------------------------------------------------------------------------------

SMALL_FS_MB = 24
ATTRIBUTES_PER_MESSAGE = 50


@contextlib.contextmanager
def small_filesystem(path: Path) -> Iterator[None]:
    """A size-limited tmpfs mounted at `path` for the duration (needs root, as CI runs)."""
    path.mkdir(mode=0o700)
    options = f"size={SMALL_FS_MB}m,mode=0700"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not let the test mount a small filesystem: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem is full; returns it."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    assert shutil.disk_usage(directory).free < 1 << 12
    return ballast


def remove(path: Path) -> None:
    path.unlink()


async def test_a_full_disk_fails_batches_loudly_keeps_reads_and_ingest_resumes_when_space_returns(
    tmp_path: Path,
) -> None:
    config, api_port, mqtt_port = write_config(tmp_path, {"mqtt": {"device_rate_limit": 0}})
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    with small_filesystem(gateway.state_dir):
        gateway.start()
        try:
            token = gateway.create_token("INSTALLER")
            device = await provision(gateway, token, "Meter")
            topic = f"v1/from/{device.hardware_id}/{STANDALONE_CHANNEL}/v1/telemetry"
            headers = {"X-Enapter-Auth-Token": token}
            seq = 0

            async def send(mqtt: aiomqtt.Client) -> None:
                nonlocal seq
                seq += 1
                values: dict[str, object] = {f"a{i}": seq * 1000 + i for i in range(ATTRIBUTES_PER_MESSAGE)}
                await mqtt.publish(topic, json.dumps({"timestamp": time.time(), "seq": seq, **values}))

            async with (
                httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=5) as http,
                device_client(gateway, device.hardware_id, device.password) as mqtt,
            ):
                await send(mqtt)

                async def stored(wanted: int) -> bool:
                    return wanted in [value for _, value in gateway.stored_telemetry(device.device_id, "seq")]

                await eventually(lambda: stored(1), 10)
                ballast = fill(gateway.state_dir)

                async def failing() -> bool:
                    await send(mqtt)
                    return gateway.metrics()["gateway_store_batches_failed_total"] > 0

                await eventually(failing, 20, interval=0.05)
                assert "store batch of" in gateway.log()
                assert "database or disk is full" in gateway.log()
                # Reads go on, and health says what is wrong.
                found = await http.get(f"/v3/devices/{device.device_id}", params={"expand": "connectivity"})
                assert found.status_code == 200
                assert found.json()["device"]["connectivity"]["status"] == "ONLINE"
                latest = await http.get(
                    "/v3/telemetry/latest", params={f"devices[{device.device_id}]": "seq"}
                )
                assert latest.status_code == 200
                assert latest.json()["telemetry"][device.device_id]["seq"]["value"] >= 1
                health = await http.get("/health")
                assert health.status_code == 503
                assert health.json()["checks"]["store"]["ok"] is False

                remove(ballast)
                await send(mqtt)
                resumed = seq
                await eventually(lambda: stored(resumed), 10)
                assert (await http.get("/health")).status_code == 200
                assert "store batches are committing again" in gateway.log()
        finally:
            assert gateway.stop() == 0, gateway.log()
        assert integrity(gateway.state_dir / DATABASE_FILE) == "ok"
