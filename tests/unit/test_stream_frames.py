"""The WebSocket frame shapes and the log stream's filters (`enapter-http-api.md` §7.4)."""

from __future__ import annotations

from gateway.api.v3.streams import log_filter, monitor_frame, telemetry_frame
from gateway.model import CommandResponse, CommandResponseState, LogEntry, LogSeverity, Properties, Telemetry
from gateway.store.store import Ingested

RECEIVED = 1_735_689_600.25
RECEIVED_TEXT = "2025-01-01T00:00:00.250000Z"


def log(severity: LogSeverity, *, persist: bool = True) -> Ingested:
    entry = LogEntry(
        timestamp=1_735_689_599.9, message=f"{severity} line", severity=severity, persist=persist
    )
    return Ingested("dev", entry, RECEIVED)


def test_a_log_frame_carries_the_flat_and_the_nested_shape() -> None:
    frame = log_filter(None, None)(log(LogSeverity.WARNING, persist=False))
    assert frame == {
        "timestamp": 1_735_689_599,
        "received_at": RECEIVED_TEXT,
        "severity": "warning",
        "message": "warning line",
        "persist": False,
        "log": {"severity": "warning", "message": "warning line"},
    }


def test_log_filters_severity_at_least_and_persisted_or_temporary() -> None:
    items = [log(level, persist=level is not LogSeverity.ERROR) for level in LogSeverity]

    def shown(severity: LogSeverity | None, persisted: bool | None) -> list[object]:
        frame = log_filter(severity, persisted)
        return [body["severity"] for item in items if (body := frame(item)) is not None]

    assert shown(None, None) == ["debug", "info", "warning", "error"]
    assert shown(LogSeverity.WARNING, None) == ["warning", "error"]
    assert shown(LogSeverity.DEBUG, True) == ["debug", "info", "warning"]
    assert shown(None, False) == ["error"]
    assert shown(LogSeverity.ERROR, True) == []
    telemetry = Ingested("dev", Telemetry(timestamp=1.0, values={}, alerts=None), RECEIVED)
    assert log_filter(None, None)(telemetry) is None


def test_a_telemetry_frame_is_the_message_as_sent() -> None:
    message = Telemetry(timestamp=1_735_689_600.0, values={"voltage": 230.5, "on": True}, alerts=("hot",))
    assert telemetry_frame(message) == {
        "timestamp": 1_735_689_600,
        "voltage": 230.5,
        "on": True,
        "alerts": ["hot"],
    }
    quiet = Telemetry(timestamp=5.0, values={}, alerts=None)
    assert telemetry_frame(quiet) == {"timestamp": 5, "alerts": None}


def test_monitor_frames_for_telemetry_properties_and_logs() -> None:
    head = {"device_id": "dev", "received_at": RECEIVED_TEXT, "timestamp": 1_735_689_599}
    telemetry = Telemetry(timestamp=1_735_689_599.5, values={"v": 1}, alerts=None)
    assert monitor_frame(Ingested("dev", telemetry, RECEIVED)) == {
        **head,
        "telemetry": {"v": 1, "alerts": None},
    }
    properties = Properties(timestamp=1_735_689_599.0, values={"model": "X1"})
    assert monitor_frame(Ingested("dev", properties, RECEIVED)) == {**head, "properties": {"model": "X1"}}
    assert monitor_frame(log(LogSeverity.ERROR)) == {
        **head,
        "log": {"severity": "error", "message": "error line"},
    }
    response = CommandResponse(execution_id="e", state=CommandResponseState.SUCCEEDED, payload={})
    assert monitor_frame(Ingested("dev", response, RECEIVED)) is None
