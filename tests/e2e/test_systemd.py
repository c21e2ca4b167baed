"""The daemon under a supervisor that speaks systemd's notify protocol, as `Type=notify` with
`WatchdogSec=` runs it: READY=1 once the API serves, WATCHDOG=1 pings from the event loop, then
STOPPING=1 on SIGTERM; and journald-style log lines (no timestamps of our own)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway_process import REPO, gateway_command, write_config

pytestmark = pytest.mark.e2e

WATCHDOG_USEC = 400_000  # pings every 0.2 s
DEADLINE_S = 30.0


def receive_until(notify: socket.socket, wanted: str, seen: list[str]) -> None:
    """Append every notification to `seen` until `wanted` arrives (or fail at the deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            continue
        seen.append(message)
        if message == wanted:
            return
    raise AssertionError(f"no {wanted} within {DEADLINE_S} s; got {seen}")


def test_ready_watchdog_pings_and_stopping(tmp_path: Path) -> None:
    config, api_port, _ = write_config(tmp_path)
    notify_path = tmp_path / "notify.sock"
    log_path = tmp_path / "gateway.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, log_path.open("wb") as log:
        notify.bind(str(notify_path))
        notify.settimeout(0.5)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "NOTIFY_SOCKET": str(notify_path),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "JOURNAL_STREAM": "8:12345",  # what systemd sets when stderr is the journal
        }
        process = subprocess.Popen(
            gateway_command("run", "--config", str(config)), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            seen: list[str] = []
            receive_until(notify, "READY=1", seen)
            # READY=1 means the API serves.
            assert httpx.get(f"http://127.0.0.1:{api_port}/api/v3/site", timeout=5).status_code == 401
            pings: list[str] = []
            started = time.monotonic()
            while time.monotonic() - started < 1.5:
                receive_until(notify, "WATCHDOG=1", pings)
            assert pings.count("WATCHDOG=1") >= 4, pings
            process.send_signal(signal.SIGTERM)
            after: list[str] = []
            receive_until(notify, "STOPPING=1", after)
            assert process.wait(DEADLINE_S) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = log_path.read_text().splitlines()
    assert any("gateway ready" in line for line in lines)
    # journald stamps each line; the daemon adds no date of its own.
    assert all(re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line) for line in lines if line), lines[:5]
