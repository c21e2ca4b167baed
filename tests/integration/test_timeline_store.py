"""The device timeline in a real store: events written with the changes they describe, alert
changes found by the batch writer, command outcomes, connectivity, clearing data, reads, retention."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gateway.events import ConnectivityRecorder
from gateway.model import (
    CommandResponse,
    CommandResponseState,
    CommunicationType,
    Device,
    DeviceType,
    ExecutionResponse,
    ExecutionState,
    JsonValue,
    LogEntry,
    LogSeverity,
    Properties,
    Telemetry,
)
from gateway.store.store import Ingested, Store
from gateway.timeline import CONNECTIVITY, ConnectivityChange, DeviceEvent, EventType, NewEvent


class Clock:
    """A settable clock for the store."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def add_device(store: Store, name: str = "Meter", hardware_id: str = "HW1") -> Device:
    site = await store.ensure_site(name="Home", timezone="UTC")
    return await store.create_device(
        site_id=site.id,
        name=name,
        slug=None,
        type=DeviceType.STANDALONE,
        communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
        hardware_id=hardware_id,
        channel_id="s",
    )


def kinds(events: Sequence[DeviceEvent]) -> list[tuple[str, dict[str, JsonValue]]]:
    return [(event.type.value, dict(event.details)) for event in events]


async def oldest_first(store: Store, device: Device) -> list[DeviceEvent]:
    return await store.timeline_events([device.id], None, None, None)


def telemetry(device: Device, ts: float, alerts: tuple[str, ...] | None, received_at: float) -> Ingested:
    return Ingested(
        device.id, Telemetry(timestamp=ts, values={"v": ts}, alerts=alerts), received_at=received_at
    )


async def test_device_changes_land_on_the_timeline_and_reach_listeners(tmp_path: Path) -> None:
    clock = Clock()
    heard: list[DeviceEvent] = []
    async with Store.open(tmp_path / "db", clock=clock) as store:
        store.event_listeners.append(heard.extend)
        device = await add_device(store)
        clock.now = 1001.0
        await store.set_credential(device_id=device.id, protocol="MQTT", username="HW1", secret="a")
        clock.now = 1002.0
        await store.set_credential(device_id=device.id, protocol="MQTTS", username="HW1", secret="b")
        clock.now = 1003.0
        await store.update_device(device.id, name="Boiler", slug=None)
        clock.now = 1004.0
        await store.update_device(device.id, name="Boiler", slug=None)  # no change: no event
        blueprint = await store.create_blueprint(digest="d", name="meter", archive=b"z", manifest={})
        clock.now = 1005.0
        await store.assign_blueprint(device.id, blueprint.id)
        clock.now = 1006.0
        await store.delete_credential(device.id)
        events = await oldest_first(store, device)
    assert kinds(events) == [
        ("provisioned", {"name": "Meter", "slug": "meter", "type": "STANDALONE"}),
        ("config_generated", {"protocol": "MQTT"}),
        ("config_revoked", {"protocol": "MQTT", "reason": "replaced"}),
        ("config_generated", {"protocol": "MQTTS"}),
        ("renamed", {"old_name": "Meter", "new_name": "Boiler", "old_slug": "meter", "new_slug": "meter"}),
        ("blueprint_assigned", {"blueprint_id": blueprint.id, "blueprint_name": "meter"}),
        ("config_revoked", {"protocol": "MQTTS", "reason": "removed"}),
    ]
    assert [event.timestamp for event in events] == [1000.0, 1001.0, 1002.0, 1002.0, 1003.0, 1005.0, 1006.0]
    assert heard == events


async def test_alert_changes_are_found_by_the_batch_writer(tmp_path: Path) -> None:
    path = tmp_path / "db"
    heard: list[DeviceEvent] = []
    async with Store.open(path) as store:
        store.event_listeners.append(heard.extend)
        device = await add_device(store)
        store.enqueue(telemetry(device, 10.0, None, 100.0))  # no alerts: nothing changes
        store.enqueue(telemetry(device, 11.0, ("overheat",), 101.0))
        await store.flush()
        store.enqueue(telemetry(device, 12.0, ("overheat", "low_gas"), 102.0))
        # Both in one batch: only the newest (by device timestamp) counts.
        store.enqueue(telemetry(device, 14.0, ("low_gas",), 104.0))
        store.enqueue(telemetry(device, 13.0, ("ignored",), 103.0))
        await store.flush()
        store.enqueue(telemetry(device, 9.0, ("late",), 105.0))  # older than what is stored
        await store.flush()
    alerts = [e for e in heard if e.type in (EventType.ALERT_RAISED, EventType.ALERT_CLEARED)]
    assert kinds(alerts) == [
        ("alert_raised", {"alert": "overheat"}),
        ("alert_cleared", {"alert": "overheat"}),
        ("alert_raised", {"alert": "low_gas"}),
    ]
    # Stamped with the arrival of the device's newest message in the batch.
    assert [event.timestamp for event in alerts] == [101.0, 104.0, 104.0]
    # After a restart the stored alerts are read back, not taken for none.
    async with Store.open(path) as store:
        (device,) = [d for d in (await store.list_devices(offset=0, limit=10))[0] if d.name == "Meter"]
        store.enqueue(telemetry(device, 20.0, ("low_gas",), 200.0))
        store.enqueue(telemetry(device, 21.0, (), 201.0))
        await store.flush()
        newest, total = await store.timeline(device.id, offset=0, limit=1, types={EventType.ALERT_CLEARED})
    assert total == 2
    assert kinds(newest) == [("alert_cleared", {"alert": "low_gas"})]


async def test_command_outcomes_land_on_the_timeline(tmp_path: Path) -> None:
    clock = Clock()
    async with Store.open(tmp_path / "db", clock=clock) as store:
        device = await add_device(store)

        async def start(name: str) -> str:
            execution = await store.create_execution(
                device_id=device.id, name=name, manifest_name=name, arguments={}, ephemeral=False
            )
            await store.advance_execution(execution, ExecutionState.IN_PROGRESS)
            return execution.id

        answered, failed, timed_out = await start("reboot"), await start("stop"), await start("start")
        for state in (
            CommandResponseState.IN_PROGRESS,
            CommandResponseState.SUCCEEDED,
            CommandResponseState.ERROR,
        ):
            response = CommandResponse(execution_id=answered, state=state, payload={})
            store.enqueue(Ingested(device.id, response, received_at=1100.0))
        await store.flush()
        execution = await store.execution(device.id, failed)
        assert execution is not None
        error = ExecutionResponse(CommandResponseState.ERROR, {"message": "offline"}, 1200.0)
        clock.now = 1200.0
        await store.advance_execution(execution, ExecutionState.ERROR, error)
        clock.now = 1300.0
        assert await store.time_out_executions([timed_out, answered]) == 1
        events, total = await store.timeline(
            device.id, offset=0, limit=10, types={EventType.COMMAND_EXECUTED}
        )
    assert total == 3
    assert [(e.timestamp, e.details) for e in reversed(events)] == [
        (1100.0, {"execution_id": answered, "command": "reboot", "state": "SUCCESS"}),
        (1200.0, {"execution_id": failed, "command": "stop", "state": "ERROR"}),
        (1300.0, {"execution_id": timed_out, "command": "start", "state": "TIMEOUT"}),
    ]


async def test_connectivity_goes_to_the_device_holding_the_identity(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        device = await add_device(store)
        other = await add_device(store, "Other", hardware_id="HW2")  # no credential: no events
        await store.set_credential(device_id=device.id, protocol="MQTT", username="HW1", secret="a")
        written = await store.record_connectivity(
            [
                ConnectivityChange("HW1", True, 10.0),
                ConnectivityChange("HW2", True, 11.0),
                ConnectivityChange("nobody", False, 12.0, "disconnected"),
                ConnectivityChange("HW1", False, 13.0, "closed its connection"),
            ]
        )
        assert await store.record_connectivity([]) == []
        assert [(e.device_id, e.type, e.timestamp, e.details) for e in written] == [
            (device.id, EventType.CONNECTED, 10.0, {}),
            (device.id, EventType.DISCONNECTED, 13.0, {"reason": "closed its connection"}),
        ]
        assert await store.timeline_events([other.id], CONNECTIVITY, None, None) == []


async def test_connections_left_open_by_a_stopped_run_are_ended_at_start(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        left = await add_device(store, "A", hardware_id="A")
        quiet = await add_device(store, "B", hardware_id="B")
        gone = await add_device(store, "C", hardware_id="C")
        for device in (left, quiet, gone):
            await store.set_credential(device_id=device.id, protocol="MQTT", username=device.name, secret="s")
        await store.record_connectivity(
            [
                ConnectivityChange("A", True, 10.0),
                ConnectivityChange("B", True, 10.0),
                ConnectivityChange("C", True, 10.0),
                ConnectivityChange("C", False, 12.0, "disconnected"),
            ]
        )
        store.enqueue(telemetry(left, 1.0, None, 50.0))  # A spoke last at 50
        await store.flush()
        ended = await store.end_open_connections("gateway stopped")
        assert {(e.device_id, e.timestamp) for e in ended} == {(left.id, 50.0), (quiet.id, 10.0)}
        assert all(e.details == {"reason": "gateway stopped"} for e in ended)
        assert await store.end_open_connections("gateway stopped") == []


async def test_clearing_data_keeps_the_device_and_an_open_execution(tmp_path: Path) -> None:
    clock = Clock()
    async with Store.open(tmp_path / "db", clock=clock) as store:
        device = await add_device(store)
        await store.set_credential(device_id=device.id, protocol="MQTT", username="HW1", secret="a")
        log = LogEntry(timestamp=1.0, message="hi", severity=LogSeverity.INFO, persist=True)
        for item in (
            telemetry(device, 10.0, ("overheat",), 10.0),
            Ingested(device.id, Properties(timestamp=1.0, values={"model": "X"}), received_at=10.0),
            Ingested(device.id, log, received_at=10.0),
        ):
            store.enqueue(item)
        done = await store.create_execution(
            device_id=device.id, name="a", manifest_name="a", arguments={}, ephemeral=False
        )
        await store.advance_execution(done, ExecutionState.SUCCESS)
        running = await store.create_execution(
            device_id=device.id, name="b", manifest_name="b", arguments={}, ephemeral=False
        )
        await store.advance_execution(running, ExecutionState.IN_PROGRESS)
        progress = CommandResponse(
            execution_id=running.id, state=CommandResponseState.IN_PROGRESS, payload={"n": 1}
        )
        store.enqueue(Ingested(device.id, progress, received_at=11.0))
        await store.flush()
        clock.now = 2000.0
        event = await store.clear_device_data(device.id)
        assert (event.type, event.timestamp, event.device_id) == (EventType.DATA_CLEARED, 2000.0, device.id)
        assert await store.latest_telemetry(device.id) == {}
        assert await store.series(device.id, ["v"]) == {}
        assert await store.raised_alerts([device.id]) in ({}, {device.id: []})
        assert (await store.logs(device.id, offset=0, limit=10))[1] == 0
        assert await store.execution(device.id, done.id) is None
        assert await store.get_device(device.id) == device
        assert await store.credential(device.id) is not None
        assert await store.properties([device.id]) == {device.id: {"model": "X"}}
        # The execution in progress is still there, with its progress, and still ends normally.
        completed = CommandResponse(execution_id=running.id, state=CommandResponseState.SUCCEEDED, payload={})
        store.enqueue(Ingested(device.id, completed, received_at=2001.0))
        # New telemetry starts new series after the clear (the cached series ids were dropped).
        store.enqueue(telemetry(device, 20.0, ("overheat",), 2001.0))
        await store.flush()
        kept = await store.execution(device.id, running.id)
        assert kept is not None
        assert kept.state is ExecutionState.SUCCESS
        assert len(kept.responses) == 2
        assert (await store.latest_telemetry(device.id))["v"].value == 20.0
        assert await store.raised_alerts([device.id]) == {device.id: ["overheat"]}
        types = [e.type for e in await oldest_first(store, device)]
    assert types[-3] is EventType.DATA_CLEARED
    assert set(types[-2:]) == {EventType.COMMAND_EXECUTED, EventType.ALERT_RAISED}
    assert types.count(EventType.ALERT_RAISED) == 2  # raised again: clearing forgot it


async def test_timeline_reads_filter_page_and_count(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        device = await add_device(store)
        other = await add_device(store, "Other", hardware_id="HW2")
        for n in range(10):
            event_type = EventType.CONNECTED if n % 2 == 0 else EventType.DISCONNECTED
            await store.add_event(NewEvent(device.id, event_type, 100.0 + n))
        await store.add_event(NewEvent(other.id, EventType.CONNECTED, 104.5))
        await store.add_event(NewEvent(device.id, EventType.USER, 105.0, {"code": "x", "description": None}))
        page, total = await store.timeline(
            device.id, offset=1, limit=2, types=CONNECTIVITY, since=102.0, until=108.0
        )
        assert total == 6  # 102 .. 107
        assert [e.timestamp for e in page] == [106.0, 105.0]  # newest first, after one skipped
        _, everything = await store.timeline(device.id, offset=0, limit=1)
        assert everything == 12  # provisioned, ten, the user event
        window = await store.timeline_events([device.id, other.id], CONNECTIVITY, 104.0, 106.0)
        assert [(e.device_id, e.timestamp) for e in window] == [
            (device.id, 104.0),
            (other.id, 104.5),
            (device.id, 105.0),
        ]
        before = await store.last_events_before([device.id, other.id], CONNECTIVITY, 104.0)
        assert set(before) == {device.id}
        assert (before[device.id].type, before[device.id].timestamp) == (EventType.DISCONNECTED, 103.0)


async def test_retention_deletes_the_oldest_events_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with Store.open(path) as store:
        device = await add_device(store)
        for n in range(25):
            await store.add_event(NewEvent(device.id, EventType.USER, float(n), {"code": f"e{n}"}))
        assert await store.purge_timeline(20.0, chunk=7) == 20  # e0..e19; provisioned (at 1000) stays
        left = await oldest_first(store, device)
        assert [e.details.get("code") for e in left[:5]] == ["e20", "e21", "e22", "e23", "e24"]
        assert await store.purge_timeline(20.0, chunk=7) == 0
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT count(*) FROM device_events").fetchone()
    assert count == 6


async def test_events_go_with_their_device(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        device = await add_device(store)
        await store.add_event(NewEvent(device.id, EventType.USER, 1.0, {"code": "x"}))
        assert await store.delete_device(device.id)
        assert await store.timeline_events(None, None, None, None) == []


async def test_the_connectivity_recorder_is_bounded_and_writes_in_batches(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        device = await add_device(store)
        await store.set_credential(device_id=device.id, protocol="MQTT", username="HW1", secret="a")
        heard: list[DeviceEvent] = []
        store.event_listeners.append(heard.extend)
        recorder = ConnectivityRecorder(store, Clock(50.0), queue_size=3)
        recorder.record(ConnectivityChange("HW1", True, 10.0))
        recorder.broker_restarted(["HW1", "HW2"])  # HW2 holds no credential: skipped when written
        recorder.record(ConnectivityChange("HW1", True, 60.0))  # over the bound: dropped
        assert (recorder.pending, recorder.dropped) == (3, 1)
        await recorder.write_pending()
        assert recorder.pending == 0
        assert recorder.recorded == 2
    assert [(e.type, e.timestamp, e.details) for e in heard] == [
        (EventType.CONNECTED, 10.0, {}),
        (EventType.DISCONNECTED, 50.0, {"reason": "broker restarted"}),
    ]
