"""The managed Mosquitto is a supervised child: killed, it comes back, and so do the devices."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import enapter
from enapter.http.api.devices import DeviceConnectivityStatus, MQTTProtocol

from tests.gateway_process import REPO, GatewayProcess, eventually, gateway_command, write_config
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
        finally:
            stop_peer(peer)
    assert "mosquitto exited" in gateway.log()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


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
        while not _listening(mqtt_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _listening(mqtt_port)
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
