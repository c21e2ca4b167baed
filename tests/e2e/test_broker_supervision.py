"""The managed Mosquitto is a supervised child: killed, it comes back, and so do the devices."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import enapter
import httpx
from enapter.http.api.devices import DeviceConnectivityStatus, MQTTProtocol

from gateway.api.v3.provisioning import STANDALONE_CHANNEL
from tests.e2e.test_ingest_faults import device_client
from tests.gateway_process import (
    REPO,
    GatewayProcess,
    ProvisionedDevice,
    eventually,
    gateway_command,
    listening,
    provision,
    write_config,
)
from tests.peers.process import start_peer, stop_peer

# The SDK retries a lost connection every 5 s; the supervisor restarts within its first backoff.
RECOVERY_S = 25.0


def broker_pid(gateway: GatewayProcess) -> int:
    """The pid of the daemon's mosquitto child."""
    assert gateway.process is not None
    children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children")
    for pid in children.read_text().split():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "mosquitto":
            return int(pid)
    raise AssertionError("the daemon has no mosquitto child")


@contextlib.contextmanager
def port_taken_after_kill(gateway: GatewayProcess) -> Iterator[None]:
    """SIGKILL the managed Mosquitto and hold its MQTT port, so that every restart fails until the
    block ends (the supervisor's first restart comes at least 0.25 s after the death)."""
    os.kill(broker_pid(gateway), signal.SIGKILL)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 0.2
        while True:
            try:
                squatter.bind(("127.0.0.1", gateway.mqtt_port))
                break
            except OSError:  # the dying broker still holds it
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        squatter.listen()
        yield


async def test_killed_broker_is_restarted_and_devices_reconnect(
    gateway: GatewayProcess, installer_token: str
) -> None:
    api = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with enapter.http.api.Client(config=api) as client:
        device = await client.devices.create_standalone(name="Survivor")
        config = await client.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
        blob = base64.b64encode(json.dumps(config.to_dto()).encode()).decode()
        peer = start_peer(blob)
        try:

            async def connections() -> float | None:
                value = gateway.metrics()["gateway_devices_connected"]
                return value if value == 1 else None

            await eventually(connections, 20)
            first = broker_pid(gateway)
            os.kill(first, signal.SIGKILL)

            async def restarted() -> bool:
                return gateway.metrics()["gateway_broker_restarts_total"] == 1

            await eventually(restarted, 10)
            assert broker_pid(gateway) != first
            # The device's accounts were written back from SQLite: it logs in again by itself.
            await eventually(connections, RECOVERY_S)
            found = await client.devices.get(device.id, expand_connectivity=True)
            assert found.connectivity is not None
            assert found.connectivity.status is DeviceConnectivityStatus.ONLINE
            assert peer.poll() is None

            # The device's timeline tells the outage apart from the device leaving.
            async def outage_on_timeline() -> list[tuple[str, object]] | None:
                async with httpx.AsyncClient(timeout=5) as http:
                    response = await http.get(
                        f"{gateway.base_url}/v3/devices/{device.id}/timeline",
                        params={"type.in": "connected,disconnected"},
                        headers={"X-Enapter-Auth-Token": installer_token},
                    )
                events = [(event["type"], event["details"]) for event in response.json()["events"]]
                return events if len(events) >= 3 else None

            assert await eventually(outage_on_timeline, 10) == [
                ("connected", {}),
                ("disconnected", {"reason": "broker restarted"}),
                ("connected", {}),
            ]
        finally:
            stop_peer(peer)
    assert "mosquitto exited" in gateway.log()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_sigkilled_daemon_takes_its_broker_along_and_starts_again(tmp_path: Path) -> None:
    config, api_port, mqtt_port = write_config(tmp_path)
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    gateway.start()
    mosquitto = broker_pid(gateway)
    try:
        assert gateway.stop(signal.SIGKILL) == -signal.SIGKILL
        # The parent-death signal: no orphan holding the ports.
        assert _wait_gone(mosquitto, 5.0), "mosquitto outlived the daemon"
        gateway.start()
        assert broker_pid(gateway) != mosquitto
    finally:
        gateway.stop()
        if _running(mosquitto):
            os.kill(mosquitto, signal.SIGKILL)


def test_an_orphaned_broker_from_an_earlier_run_is_stopped_at_start(tmp_path: Path) -> None:
    config, api_port, mqtt_port = write_config(tmp_path)
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    gateway.start()
    gateway.stop()
    # An orphan as a crash could leave one (not our child: started through a shell that exits),
    # on the gateway's own broker config and ports, its pid in the pid file.
    broker_dir = gateway.state_dir / "broker"
    spawn = f"mosquitto -c {broker_dir / 'mosquitto.conf'} >/dev/null 2>&1 & echo $!"
    orphan = int(subprocess.run(["sh", "-c", spawn], capture_output=True, text=True, check=True).stdout)
    try:
        (broker_dir / "mosquitto.pid").write_text(f"{orphan}\n")
        # Wait until it listens on the MQTT port (the admin socket's file may be left from the
        # daemon's own broker, so its presence says nothing about the orphan).
        deadline = time.monotonic() + 10
        while not listening(mqtt_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listening(mqtt_port)
        gateway.start()
        assert _wait_gone(orphan, 1.0)
        assert "left running by an earlier run of the gateway" in gateway.log()
        assert broker_pid(gateway) != orphan
    finally:
        gateway.stop()
        if _running(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_second_daemon_on_the_same_state_directory_refuses_to_start(gateway: GatewayProcess) -> None:
    broker = broker_pid(gateway)
    assert gateway.process is not None
    second = subprocess.run(
        gateway_command("run", "--config", str(gateway.config)),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=gateway.directory,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert second.returncode == 75, second.stderr
    assert f"another enapter-gateway daemon (pid {gateway.process.pid}) is running on" in second.stderr
    # It left the first daemon's broker alone (it would have taken it for an orphan).
    assert broker_pid(gateway) == broker
    assert gateway.metrics()["gateway_broker_restarts_total"] == 0


OUTAGE_S = 4.0
# Ingest's reconnect delays (gateway.mqtt.ingest): jittered in [b/2, b], b doubling from 0.2 s to 5 s.
INGEST_BACKOFF_CAP_S = 5.0


async def publish_through_outages(
    gateway: GatewayProcess, device: ProvisionedDevice, stop: asyncio.Event, sent: list[int]
) -> None:
    """Telemetry with a growing `seq` every 0.1 s; after a lost connection, reconnect (jittered)."""
    topic = f"v1/from/{device.hardware_id}/{STANDALONE_CHANNEL}/v1/telemetry"
    while not stop.is_set():
        try:
            async with device_client(gateway, device.hardware_id, device.password) as client:
                while not stop.is_set():
                    await client.publish(topic, json.dumps({"timestamp": time.time(), "seq": len(sent)}))
                    sent.append(len(sent))
                    await asyncio.sleep(0.1)
        except aiomqtt.MqttError:
            await asyncio.sleep(random.uniform(0.3, 0.6))


async def connectivity(gateway: GatewayProcess, token: str, device_id: str) -> str:
    api = enapter.http.api.Config(base_url=gateway.base_url, token=token)
    async with enapter.http.api.Client(config=api) as client:
        found = await client.devices.get(device_id, expand_connectivity=True)
    assert found.connectivity is not None
    return str(found.connectivity.status.value)


async def test_a_broker_outage_leaves_no_ghost_online_no_duplicates_and_no_reconnect_storm(
    gateway: GatewayProcess, installer_token: str
) -> None:
    survivor = await provision(gateway, installer_token, "Survivor")
    leaver = await provision(gateway, installer_token, "Leaver")
    stop = asyncio.Event()
    sent: list[int] = []
    publishing = asyncio.create_task(publish_through_outages(gateway, survivor, stop, sent))
    try:
        # The leaver goes away while the broker is down (its client finds the broker gone on the
        # way out): no disconnect notice will ever say so.
        with contextlib.suppress(aiomqtt.MqttError):
            async with device_client(gateway, leaver.hardware_id, leaver.password):

                async def both_connected() -> bool:
                    return gateway.metrics()["gateway_devices_connected"] == 2

                await eventually(both_connected, 10)
                outage_log_start = len(gateway.log())
                with port_taken_after_kill(gateway):
                    await asyncio.sleep(OUTAGE_S)

        async def restarted() -> bool:
            return gateway.metrics()["gateway_broker_restarts_total"] >= 1

        await eventually(restarted, 20)
        before = len(sent)

        async def publishing_again() -> bool:
            return len(sent) > before + 10

        await eventually(publishing_again, 10)

        # No ghost: the leaver's connection died with the broker; once its last message is older
        # than the online window (3 s in these tests) it is OFFLINE, while the survivor is ONLINE.
        async def leaver_offline() -> bool:
            return await connectivity(gateway, installer_token, leaver.device_id) == "OFFLINE"

        await eventually(leaver_offline, 10)
        assert await connectivity(gateway, installer_token, survivor.device_id) == "ONLINE"
    finally:
        stop.set()
        await publishing

    # Nothing stored twice: every stored seq once, in order (the outage may have lost some).
    async def all_sent_stored() -> list[int] | None:
        stored = [int(str(value)) for _, value in gateway.stored_telemetry(survivor.device_id, "seq")]
        return stored if stored and stored[-1] == sent[-1] else None

    stored = await eventually(all_sent_stored, 10)
    assert stored == sorted(set(stored))
    assert len(stored) > len(sent) - OUTAGE_S / 0.1 - 10

    # No storm: ingest retried with growing, jittered delays, a handful of times in the outage.
    outage_log = gateway.log()[outage_log_start:]
    delays = [
        float(d) for d in re.findall(r"ingest lost the broker .*; reconnecting in ([0-9.]+) s", outage_log)
    ]
    assert 2 <= len(delays) <= 8, delays
    assert all(delay <= INGEST_BACKOFF_CAP_S for delay in delays)
    assert delays[-1] > delays[0]
    # ...and did not wait out its last delay once the broker was back: it subscribed at once.
    lines = outage_log.splitlines()
    (back,) = [line for line in lines if " started (pid " in line]
    subscribed = next(line for line in lines[lines.index(back) :] if "ingest subscribed" in line)
    assert logged_at(subscribed) - logged_at(back) < 1.0, (back, subscribed)


def logged_at(line: str) -> float:
    """Seconds of the day at which the daemon logged `line` ("2024-05-02 10:11:12,345 ...")."""
    clock = line.split()[1]
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds.replace(",", "."))
