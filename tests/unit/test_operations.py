"""Pure parts of operations: the health document, the recent-problems ring, the `status` rendering."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gateway.api.control import (
    MAX_MESSAGE_CHARS,
    BrokerStatus,
    RecentProblems,
    StatusDocument,
    missing_status_fields,
    render_status,
)
from gateway.api.health import Check, Health

# 2024-01-02T03:04:05Z
WHEN = 1704164645.0


def test_a_healthy_document_has_no_details() -> None:
    health = Health((Check("store"), Check("broker"), Check("ingest")))
    assert health.ok
    assert health.document() == {
        "status": "ok",
        "checks": {"store": {"ok": True}, "broker": {"ok": True}, "ingest": {"ok": True}},
    }


def test_an_unhealthy_document_names_each_failing_part() -> None:
    health = Health((Check("store"), Check("broker", "mosquitto is not running"), Check("ingest", "down")))
    assert not health.ok
    assert health.document() == {
        "status": "unhealthy",
        "checks": {
            "store": {"ok": True},
            "broker": {"ok": False, "detail": "mosquitto is not running"},
            "ingest": {"ok": False, "detail": "down"},
        },
    }


@pytest.fixture
def ring() -> Iterator[tuple[logging.Logger, RecentProblems]]:
    logger = logging.getLogger("tests.operations.ring")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    problems = RecentProblems(size=3)
    logger.addHandler(problems)
    try:
        yield logger, problems
    finally:
        logger.removeHandler(problems)
        logger.propagate = True


def test_the_ring_keeps_the_last_warnings_and_errors_only(
    ring: tuple[logging.Logger, RecentProblems],
) -> None:
    logger, problems = ring
    logger.info("not a problem")
    for n in range(5):
        logger.warning("warning %d of %s", n, "five")
    logger.debug("not either")
    logger.error("the end")
    kept = problems.problems()
    assert [p.message for p in kept] == ["warning 3 of five", "warning 4 of five", "the end"]
    assert [p.level for p in kept] == ["WARNING", "WARNING", "ERROR"]
    assert {p.logger for p in kept} == {"tests.operations.ring"}
    assert kept[0].time <= kept[-1].time


def test_the_ring_keeps_an_exception_in_one_line_and_cuts_long_messages(
    ring: tuple[logging.Logger, RecentProblems],
) -> None:
    logger, problems = ring
    try:
        raise OSError("disk full")
    except OSError:
        logger.exception("store batch failed")
    logger.error("x" * (MAX_MESSAGE_CHARS * 2))
    failed, long = problems.problems()
    assert failed.message == "store batch failed (OSError: disk full)"
    assert len(long.message) == MAX_MESSAGE_CHARS
    assert long.message.endswith("…")


def status(**changes: object) -> StatusDocument:
    document: StatusDocument = {
        "version": "1.2.3",
        "pid": 42,
        "uptime_s": 3 * 3600 + 4 * 60 + 5.9,
        "devices": {"online": 2, "total": 5},
        "broker": {"mode": "managed", "running": True, "restarts": 1, "pid": 43, "detail": ""},
        "ingest": {"connected": True, "received": 10, "accepted": 9, "dropped": 1},
        "store": {
            "database_bytes": 3 * 1024 * 1024 + 512 * 1024,
            "queue_depth": 0,
            "committed": 9,
            "failed_batches": 0,
            "set_aside": "",
            "set_aside_problem": "",
        },
        "health": {
            "status": "ok",
            "checks": {"store": {"ok": True}, "broker": {"ok": True}, "ingest": {"ok": True}},
        },
        "mdns": {},
        "recent_problems": [],
    }
    document.update(changes)  # type: ignore[typeddict-item]
    return document


def test_a_status_document_of_this_version_has_every_field() -> None:
    assert missing_status_fields(status()) == []


def test_a_status_from_a_daemon_of_another_version_names_what_it_lacks() -> None:
    older = status()
    del older["store"]["set_aside"]  # type: ignore[misc]
    assert missing_status_fields(older) == ["store.set_aside"]
    assert missing_status_fields({"version": "0.0.1", "store": "?"}) == [
        "broker",
        "devices",
        "health",
        "ingest",
        "mdns",
        "pid",
        "recent_problems",
        "store",
        "uptime_s",
    ]


def test_status_of_a_healthy_gateway() -> None:
    assert render_status(status()).splitlines() == [
        "enapter-gateway 1.2.3, up 3h 04m 05s (pid 42)",
        "health:   ok",
        "devices:  2 online of 5",
        "broker:   managed, running (pid 43), restarted 1 times",
        "ingest:   connected, 10 messages received, 9 accepted, 1 dropped",
        "database: 3.5 MiB, 9 messages stored, 0 queued, 0 failed batches",
        "recent warnings and errors: none",
    ]


def test_status_of_a_gateway_with_problems() -> None:
    broker: BrokerStatus = {
        "mode": "external",
        "running": False,
        "restarts": 0,
        "pid": None,
        "detail": "[Errno 111] Connection refused",
    }
    text = render_status(
        status(
            uptime_s=2 * 86400 + 5 * 3600 + 7 * 60,
            broker=broker,
            ingest={"connected": False, "received": 0, "accepted": 0, "dropped": 0},
            store={
                "database_bytes": 900,
                "queue_depth": 3,
                "committed": 0,
                "failed_batches": 2,
                "set_aside": "/var/lib/g/gateway.sqlite3.corrupt-20240102T030405Z",
                "set_aside_problem": "file is not a database",
            },
            health={
                "status": "unhealthy",
                "checks": {
                    "store": {"ok": True},
                    "broker": {"ok": False, "detail": "the external broker is not reachable"},
                    "ingest": {"ok": False, "detail": "ingest is not connected to the broker"},
                },
            },
            mdns={"hostname": "enapter-gateway-2.local", "alias": True},
            recent_problems=[
                {"time": WHEN, "level": "ERROR", "logger": "gateway.store", "message": "disk full"},
                {"time": WHEN + 1, "level": "WARNING", "logger": "gateway.ingest", "message": "lost it"},
            ],
        )
    )
    assert text.splitlines() == [
        "enapter-gateway 1.2.3, up 2d 5h 07m (pid 42)",
        "health:   UNHEALTHY: broker (the external broker is not reachable);"
        " ingest (ingest is not connected to the broker)",
        "devices:  2 online of 5",
        "broker:   external, DOWN: [Errno 111] Connection refused, restarted 0 times",
        "ingest:   NOT CONNECTED, 0 messages received, 0 accepted, 0 dropped",
        "database: 900 B, 0 messages stored, 3 queued, 2 failed batches",
        "          THE DATABASE WAS UNUSABLE AT START (file is not a database) and was moved to"
        " /var/lib/g/gateway.sqlite3.corrupt-20240102T030405Z; this one started empty",
        "mdns:     hostname: enapter-gateway-2.local, alias: True",
        "recent warnings and errors (oldest first):",
        "  2024-01-02T03:04:05Z ERROR   gateway.store: disk full",
        "  2024-01-02T03:04:06Z WARNING gateway.ingest: lost it",
    ]


@pytest.mark.parametrize(
    ("uptime", "shown"),
    [(0.4, "0s"), (59.9, "59s"), (61, "1m 01s"), (3600, "1h 00m 00s"), (86400 + 59, "1d 0h 00m")],
)
def test_uptime_is_shown_in_the_largest_units(uptime: float, shown: str) -> None:
    assert (
        render_status(status(uptime_s=uptime)).splitlines()[0]
        == f"enapter-gateway 1.2.3, up {shown} (pid 42)"
    )
