"""Operations against the running daemon: `/metrics` after real traffic, `/api/health` through a broker
outage, and `enapter-gateway status` over the control socket.

The device is a raw aiomqtt client with the credentials the gateway generated, so the test knows
exactly what was sent; it also answers one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import httpx

from gateway import __version__
from gateway.api.control import socket_path
from tests.e2e.test_broker_supervision import port_taken_after_kill
from tests.gateway_process import GatewayProcess, eventually, provision, write_config

SENT = 20
EX_UNAVAILABLE = 69
# The series /metrics must expose here (histograms by their _count; mismatches need a manifest).
SERIES = (
    "gateway_build_info",
    "gateway_mqtt_messages_received_total",
    "gateway_mqtt_messages_accepted_total",
    "gateway_mqtt_messages_dropped_total",
    "gateway_ingest_connected",
    "gateway_store_items_committed_total",
    "gateway_store_items_dropped_total",
    "gateway_store_batches_total",
    "gateway_store_batches_failed_total",
    "gateway_store_queue_depth",
    "gateway_store_batch_duration_seconds_count",
    "gateway_database_size_bytes",
    "gateway_devices_connected",
    "gateway_device_connects_total",
    "gateway_broker_up",
    "gateway_broker_restarts_total",
    "gateway_streams_open",
    "gateway_event_streams_open",
    "gateway_timeline_events_dropped_total",
    "gateway_api_requests_total",
    "gateway_command_executions_total",
    "process_start_time_seconds",
)


def requests(method: str, route: str, status: int) -> str:
    """The name of one API request series, as `GatewayProcess.metrics` keys it."""
    return f'gateway_api_requests_total{{method="{method}",route="{route}",status="{status}"}}'


def series_names(metrics: dict[str, float]) -> set[str]:
    return {name.partition("{")[0] for name in metrics}


@contextlib.asynccontextmanager
async def answering_device(
    gateway: GatewayProcess, hardware_id: str, password: str
) -> AsyncIterator[aiomqtt.Client]:
    """A device connection that answers every command request with `completed`."""
    async with aiomqtt.Client(
        "127.0.0.1", gateway.mqtt_port, username=hardware_id, password=password, timeout=5
    ) as client:
        await client.subscribe(f"v1/to/{hardware_id}/s/v1/command/requests", qos=1)

        async def answer() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                request = json.loads(message.payload)
                response = {"id": request["id"], "state": "completed", "payload": {"pong": True}}
                await client.publish(
                    f"v1/from/{hardware_id}/s/v1/command/responses", json.dumps(response), qos=1
                )

        task = asyncio.create_task(answer())
        try:
            yield client
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_metrics_and_status_after_ingest_a_command_and_api_calls(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device = await provision(gateway, installer_token, "Metered")
    auth = {"X-Enapter-Auth-Token": installer_token}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.api_port}", headers=auth, timeout=10) as http,
        answering_device(gateway, device.hardware_id, device.password) as client,
    ):

        async def connected() -> bool:
            return gateway.metrics()["gateway_devices_connected"] == 1

        await eventually(connected, 10)
        telemetry = f"v1/from/{device.hardware_id}/s/v1/telemetry"
        for counter in range(SENT):
            await client.publish(telemetry, json.dumps({"counter": counter}), qos=1)
        # One message the gateway must drop and warn about: `status` shows the warning.
        await client.publish(telemetry, b"{not json", qos=1)
        before = gateway.metrics()
        answered = await http.post(
            f"/api/v3/devices/{device.device_id}/execute_command", json={"name": "ping", "arguments": {}}
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["execution"]["state"] == "SUCCESS"
        assert (await http.get(f"/api/v3/devices/{device.device_id}")).status_code == 200
        assert (await http.get("/api/v3/nothing-here")).status_code == 404

        async def stored() -> dict[str, float] | None:
            metrics = gateway.metrics()
            # SENT telemetry messages and the command's response.
            return metrics if metrics["gateway_store_items_committed_total"] >= SENT + 1 else None

        metrics = await eventually(stored, 10)
        check_metrics(gateway, before, metrics, device.device_id)
        check_status(gateway, device.hardware_id)


def check_metrics(
    gateway: GatewayProcess, before: dict[str, float], metrics: dict[str, float], device_id: str
) -> None:
    assert series_names(metrics) >= set(SERIES)
    assert metrics[f'gateway_build_info{{version="{__version__}"}}'] == 1
    assert metrics["gateway_mqtt_messages_received_total"] >= SENT + 2
    assert metrics["gateway_mqtt_messages_accepted_total"] >= SENT + 1
    assert metrics['gateway_mqtt_messages_dropped_total{reason="not_json"}'] == 1
    assert metrics["gateway_store_queue_depth"] >= 0
    assert metrics["gateway_store_batches_failed_total"] == 0
    batches = metrics["gateway_store_batch_duration_seconds_count"]
    assert batches >= 1
    assert metrics['gateway_store_batch_duration_seconds_bucket{le="+Inf"}'] == batches
    assert 0 < metrics["gateway_store_batch_duration_seconds_sum"] < 10 * batches
    assert metrics["gateway_database_size_bytes"] > 0
    assert metrics["gateway_device_connects_total"] >= 1
    assert metrics["gateway_broker_up"] == 1
    assert metrics["gateway_ingest_connected"] == 1
    assert metrics['gateway_command_executions_total{state="SUCCESS"}'] == 1
    assert metrics['gateway_command_executions_total{state="TIMEOUT"}'] == 0
    # The requests made since `before` (the SDK made some of its own while provisioning).
    for method, route, status in (
        ("GET", "/api/v3/devices/{device}", 200),
        ("POST", "/api/v3/devices/{device}/execute_command", 200),
        ("GET", "unmatched", 404),
    ):
        series = requests(method, route, status)
        assert metrics[series] - before.get(series, 0) == 1, series
    assert metrics[requests("GET", "/metrics", 200)] >= 1
    # Raw URLs never become labels.
    assert not [name for name in metrics if device_id in name]

    openmetrics = httpx.get(
        f"http://127.0.0.1:{gateway.api_port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def check_status(gateway: GatewayProcess, hardware_id: str) -> None:
    control = socket_path(gateway.state_dir)
    assert stat.S_IMODE(control.stat().st_mode) == 0o600
    status = gateway.cli("status")
    assert status.returncode == 0, status.stderr
    assert f"enapter-gateway {__version__}" in status.stdout
    assert "health:   ok" in status.stdout
    assert "devices:  1 online of 1" in status.stdout
    assert f"dropped a message from {hardware_id} (not_json)" in status.stdout
    document = json.loads(gateway.cli("status", "--json", check=True).stdout)
    assert document["devices"] == {"online": 1, "total": 1}
    assert document["broker"]["running"] is True
    assert document["store"]["committed"] >= SENT + 1
    assert document["mdns"] == {}
    (problem,) = [p for p in document["recent_problems"] if hardware_id in p["message"]]
    assert problem["level"] == "WARNING"
    assert problem["logger"] == "gateway.ingest"


async def test_health_turns_503_naming_the_broker_while_it_is_down(gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.api_port}", timeout=10) as http:
        await check_outage(gateway, http)


async def check_outage(gateway: GatewayProcess, http: httpx.AsyncClient) -> None:
    url = "/api/health"
    healthy = await http.get(url)
    assert healthy.status_code == 200
    assert healthy.json() == {
        "status": "ok",
        "checks": {"store": {"ok": True}, "broker": {"ok": True}, "ingest": {"ok": True}},
    }
    assert healthy.headers["Cache-Control"] == "no-store"
    with port_taken_after_kill(gateway):

        async def broker_failed() -> bool:
            # A restart has failed for the taken port: the outage is not a blink.
            return "mosquitto restart failed" in gateway.log()

        await eventually(broker_failed, 10, interval=0.05)
        down = await http.get(url)
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unhealthy"
        assert body["checks"]["store"] == {"ok": True}
        assert body["checks"]["broker"]["ok"] is False
        assert "mosquitto is not running" in body["checks"]["broker"]["detail"]
        assert gateway.metrics()["gateway_broker_up"] == 0
        status = gateway.cli("status")
        assert status.returncode == 0, status.stderr
        assert "health:   UNHEALTHY: broker (mosquitto is not running" in status.stdout
        assert "ERROR   gateway.broker: mosquitto restart failed" in status.stdout

    async def recovered() -> httpx.Response | None:
        response = await http.get(url)
        return response if response.status_code == 200 else None

    # The supervisor's backoff after failed restarts, then ingest's reconnect backoff.
    back = await eventually(recovered, 30)
    assert back.json()["status"] == "ok"
    assert gateway.metrics()["gateway_broker_restarts_total"] == 1
    # The daemon itself lived through the failed restarts.
    assert gateway.process is not None
    assert gateway.process.poll() is None


def test_status_without_a_daemon_exits_69(tmp_path: Path) -> None:
    config, _, _ = write_config(tmp_path)
    gateway = GatewayProcess(tmp_path, config, 0, 0)
    missing = gateway.cli("status")
    assert missing.returncode == EX_UNAVAILABLE
    assert "the gateway is not running" in missing.stderr
    assert missing.stdout == ""
    # A socket file left behind by a daemon that died is no daemon either.
    control = socket_path(gateway.state_dir)
    control.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(control))
    stale_run = gateway.cli("status")
    assert stale_run.returncode == EX_UNAVAILABLE
    assert "the gateway is not running" in stale_run.stderr
