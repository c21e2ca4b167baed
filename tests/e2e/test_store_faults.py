"""The database under faults: a damaged file at start, a daemon killed mid-ingest, a full disk."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from gateway.store.store import DATABASE_FILE
from tests.gateway_process import GatewayProcess, write_config


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
