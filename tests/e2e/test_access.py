"""Who may call what, over HTTP against the running daemon: every route, every role, and rate limits.

The expected minimum roles are written out here from `enapter-http-api.md` §2 rather than read from
the code, and the route table must match this list exactly: a new endpoint fails this test until
someone decides who may call it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.api.app import endpoints
from gateway.blueprints.archive import write_archive
from gateway.model import Role
from tests.gateway_process import GatewayProcess, write_config

READ, OWNER, INSTALLER = Role.READONLY, Role.OWNER, Role.INSTALLER
DEVICES = "/api/v3/devices"
SITE_DEVICES = "/api/v3/sites/{site_id}/devices"

EXPECTED: dict[tuple[str, str], Role | None] = {
    ("GET", DEVICES): READ,
    ("GET", DEVICES + "/{device}"): READ,
    ("PATCH", DEVICES + "/{device}"): OWNER,
    ("DELETE", DEVICES + "/{device}"): OWNER,
    ("POST", DEVICES + "/{device}/assign_blueprint"): OWNER,
    ("GET", DEVICES + "/{device}/manifest"): READ,
    ("POST", DEVICES + "/{device}/generate_config"): OWNER,
    ("GET", DEVICES + "/"): READ,  # the monitor WebSocket (a plain GET is a 400)
    ("GET", DEVICES + "/{device}/telemetry"): READ,
    ("GET", DEVICES + "/{device}/logs"): READ,
    # Commands: each command's own access_level is checked inside (tests/e2e/test_blueprints.py).
    ("POST", DEVICES + "/{device}/execute_command"): READ,
    ("POST", DEVICES + "/{device}/command_executions"): READ,
    ("GET", DEVICES + "/{device}/command_executions"): READ,
    ("GET", DEVICES + "/{device}/command_executions/{execution_id}"): READ,
    ("GET", DEVICES + "/{device}/timeline"): READ,
    ("POST", DEVICES + "/{device}/events"): Role.USER,
    ("POST", DEVICES + "/{device}/clear_data"): OWNER,
    ("GET", SITE_DEVICES): READ,
    ("GET", SITE_DEVICES + "/{device}"): READ,
    ("PATCH", SITE_DEVICES + "/{device}"): OWNER,
    ("DELETE", SITE_DEVICES + "/{device}"): OWNER,
    ("POST", SITE_DEVICES + "/{device}/assign_blueprint"): OWNER,
    ("GET", SITE_DEVICES + "/{device}/manifest"): READ,
    ("POST", SITE_DEVICES + "/{device}/generate_config"): OWNER,
    ("GET", SITE_DEVICES + "/"): READ,
    ("GET", SITE_DEVICES + "/{device}/telemetry"): READ,
    ("GET", SITE_DEVICES + "/{device}/logs"): READ,
    ("POST", SITE_DEVICES + "/{device}/execute_command"): READ,
    ("POST", SITE_DEVICES + "/{device}/command_executions"): READ,
    ("GET", SITE_DEVICES + "/{device}/command_executions"): READ,
    ("GET", SITE_DEVICES + "/{device}/command_executions/{execution_id}"): READ,
    ("GET", SITE_DEVICES + "/{device}/timeline"): READ,
    ("POST", SITE_DEVICES + "/{device}/events"): Role.USER,
    ("POST", SITE_DEVICES + "/{device}/clear_data"): OWNER,
    ("GET", "/api/v3/site"): READ,
    ("GET", "/api/v3/site/events"): READ,  # the event stream WebSocket (a plain GET is a 400)
    ("PATCH", "/api/v3/site"): OWNER,
    ("GET", "/api/v3/sites"): READ,
    ("POST", "/api/v3/sites"): OWNER,
    ("GET", "/api/v3/users/me/sites"): READ,
    ("GET", "/api/v3/site/stats"): READ,
    ("GET", "/api/v3/sites/{site_id}/stats"): READ,
    ("GET", "/api/v3/sites/{site_id}"): READ,
    ("PATCH", "/api/v3/sites/{site_id}"): OWNER,
    ("DELETE", "/api/v3/sites/{site_id}"): OWNER,
    ("POST", "/api/v3/provisioning/standalone"): INSTALLER,
    ("POST", "/api/v3/provisioning/vucm"): INSTALLER,
    ("POST", "/api/v3/provisioning/ucm"): INSTALLER,
    ("POST", "/api/v3/provisioning/lua_device"): INSTALLER,
    ("POST", "/api/v3/blueprints/upload"): OWNER,
    ("POST", "/api/v3/blueprints/validate"): None,
    ("POST", "/api/v3/blueprints/upload_device_profiles"): OWNER,
    ("GET", "/api/v3/blueprints/device_profiles/download"): READ,
    ("GET", "/api/v3/blueprints/download_device_profiles"): READ,
    ("GET", "/api/v3/blueprints/enapter/{name}/{tag}"): READ,
    ("GET", "/api/v3/blueprints/{blueprint_id}"): READ,
    ("GET", "/api/v3/blueprints/{blueprint_id}/zip"): None,
    ("GET", "/api/v3/telemetry/latest"): READ,
    ("POST", "/api/v3/telemetry/query_timeseries"): READ,
    ("GET", "/api/v3/sites/{site_id}/commands/executions"): READ,
    # Issue 8: tags and metadata (reads READONLY, changes OWNER like device changes).
    ("PUT", DEVICES + "/{device}/tags/{tag}"): OWNER,
    ("DELETE", DEVICES + "/{device}/tags/{tag}"): OWNER,
    ("PATCH", DEVICES + "/{device}/metadata"): OWNER,
    ("PUT", SITE_DEVICES + "/{device}/tags/{tag}"): OWNER,
    ("DELETE", SITE_DEVICES + "/{device}/tags/{tag}"): OWNER,
    ("PATCH", SITE_DEVICES + "/{device}/metadata"): OWNER,
    ("GET", "/api/v3/tags"): READ,
    ("POST", "/api/v3/tags"): OWNER,
    ("GET", "/api/v3/tags/{tag}"): READ,
    ("PATCH", "/api/v3/tags/{tag}"): OWNER,
    ("DELETE", "/api/v3/tags/{tag}"): OWNER,
    ("GET", "/api/v3/metadata_fields"): READ,
    ("POST", "/api/v3/metadata_fields"): OWNER,
    ("GET", "/api/v3/metadata_fields/{field}"): READ,
    ("PATCH", "/api/v3/metadata_fields/{field}"): OWNER,
    ("DELETE", "/api/v3/metadata_fields/{field}"): OWNER,
    ("GET", "/api/assets/v1/devices"): READ,
    ("GET", "/api/assets/v1/devices/{device}"): READ,
    ("GET", "/assets/v1/devices"): READ,
    ("GET", "/assets/v1/devices/{device}"): READ,
    ("GET", "/api/telemetry/v1/now"): READ,
    ("GET", "/telemetry/v1/now"): READ,
    ("POST", "/api/commands/v1/execute"): READ,
    ("POST", "/commands/v1/execute"): READ,
    ("POST", "/api/telemetry/v1/timeseries"): READ,
    ("POST", "/telemetry/v1/timeseries"): READ,
    ("GET", "/api/blueprints/v1/download"): READ,
    ("GET", "/blueprints/v1/download"): READ,
    ("GET", "/api/health"): None,
    ("GET", "/metrics"): None,
    ("GET", "/api/openapi.json"): None,
    ("GET", "/api/docs"): None,
}
ROLES = (Role.READONLY, Role.USER, Role.OWNER, Role.INSTALLER, Role.VENDOR)


def start_gateway(tmp_path: Path, rate_limit: dict[str, object]) -> GatewayProcess:
    config, api_port, mqtt_port = write_config(tmp_path, {"api.rate_limit": rate_limit})
    gateway = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    gateway.start()
    return gateway


@pytest.fixture
def unlimited(tmp_path: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(tmp_path, {"requests": 0, "anonymous_requests": 0, "auth_failures": 0})
    try:
        yield gateway
    finally:
        assert gateway.stop() == 0, gateway.log()


def token_ids(gateway: GatewayProcess) -> dict[str, str]:
    """`token list` as {token name: id}."""
    listing = gateway.cli("token", "list", check=True).stdout
    rows = [line.split() for line in listing.splitlines()[1:]]
    return {row[-1]: row[0] for row in rows}


def test_the_route_table_is_the_expected_one() -> None:
    assert {(endpoint.method, endpoint.path): endpoint.minimum_role for endpoint in endpoints()} == EXPECTED


def test_every_route_for_no_token_a_revoked_token_and_each_role(unlimited: GatewayProcess) -> None:
    gateway = unlimited
    tokens = {role: gateway.create_token(role.value, name=role.value) for role in ROLES}
    revoked = gateway.create_token("VENDOR", name="revoked")
    assert gateway.cli("token", "revoke", token_ids(gateway)["revoked"]).returncode == 0
    base = f"http://127.0.0.1:{gateway.api_port}"
    with httpx.Client(base_url=base, timeout=10) as http:
        auth = {"X-Enapter-Auth-Token": tokens[READ]}
        site_id = http.get("/api/v3/site", headers=auth).json()["site"]["id"]
        listed = http.get(DEVICES, headers=auth).json()["devices"]
        # Requests that pass the role check touch only the gateway's own device, which can be
        # neither deleted nor given MQTT credentials: the table runs without side effects.
        (own,) = [device["id"] for device in listed if device["type"] == "GATEWAY"]
        # The archive download needs no token: it must answer 200 for a blueprint that exists.
        uploaded = http.post(
            "/api/v3/blueprints/upload",
            content=write_archive({"manifest.yml": b"blueprint_spec: device/1.0\ndisplay_name: Access\n"}),
            headers={"X-Enapter-Auth-Token": tokens[OWNER]},
        )
        blueprint_id = uploaded.json()["blueprint"]["id"]

        def call(method: str, path: str, token: str | None) -> httpx.Response:
            url = path.replace("{site_id}", site_id).replace("{device}", own)
            url = url.replace("{blueprint_id}", blueprint_id)
            # No such tag or metadata field: past the role check these answer 404 and change nothing.
            url = url.replace("{tag}", "no-such-tag").replace("{field}", "no_such_field")
            headers = {} if token is None else {"X-Enapter-Auth-Token": token}
            body = b"{}" if method == "POST" else None
            return http.request(method, url, headers=headers, content=body)

        for (method, path), minimum in EXPECTED.items():
            where = f"{method} {path}"
            anonymous = call(method, path, None)
            if minimum is None:
                assert anonymous.status_code == 200, where
                continue
            assert anonymous.status_code == 401, where
            assert anonymous.json()["errors"][0]["code"] == "missing_header", where
            refused = call(method, path, revoked)
            assert refused.status_code == 403, where
            assert refused.json()["errors"][0]["code"] == "invalid_header", where
            for role, token in tokens.items():
                response = call(method, path, token)
                if role.at_least(minimum):
                    assert response.status_code not in (401, 403, 429), (where, role, response.text)
                    assert response.status_code < 500, (where, role, response.text)
                else:
                    assert response.status_code == 403, (where, role)
                    assert response.json()["errors"][0]["code"] == "forbidden", (where, role)
        # Each token sees its own role in the objects it reads.
        for role, token in tokens.items():
            assert call("GET", "/api/v3/site", token).json()["site"]["authorized_role"] == role.value
            device = call("GET", DEVICES + "/{device}", token).json()["device"]
            assert device["authorized_role"] == role.value
        # A path that does not exist tells strangers nothing either.
        assert call("GET", "/api/v3/nothing-here", None).status_code == 401
        assert call("GET", "/api/v3/nothing-here", tokens[READ]).status_code == 404


def headers_of(response: httpx.Response) -> tuple[int, int, int]:
    limit = int(response.headers["X-RateLimit-Limit"])
    remaining = int(response.headers["X-RateLimit-Remaining"])
    reset = int(response.headers["X-RateLimit-Reset"])
    return limit, remaining, reset


def wait_for_reset(response: httpx.Response) -> None:
    time.sleep(int(response.headers["Retry-After"]) + 0.2)


def test_rate_limits_per_token_per_address_and_for_failed_logins(tmp_path: Path) -> None:
    limits: dict[str, object] = {"window": 2.0, "requests": 5, "anonymous_requests": 3, "auth_failures": 3}
    gateway = start_gateway(tmp_path, limits)
    try:
        token = gateway.create_token("READONLY")
        base = f"http://127.0.0.1:{gateway.api_port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            auth = {"X-Enapter-Auth-Token": token}
            # Per token: five requests, each told what is left, then 429 until the window ends.
            for left in range(4, -1, -1):
                ok = http.get("/api/v3/site", headers=auth)
                assert ok.status_code == 200
                limit, remaining, reset = headers_of(ok)
                assert (limit, remaining) == (5, left)
                assert 0 <= reset <= 2
            over = http.get("/api/v3/site", headers=auth)
            assert over.status_code == 429
            assert over.json()["errors"][0]["code"] == "too_many_requests"
            assert headers_of(over)[:2] == (5, 0)
            assert 1 <= int(over.headers["Retry-After"]) <= 2
            wait_for_reset(over)
            again = http.get("/api/v3/site", headers=auth)
            assert again.status_code == 200
            assert headers_of(again)[:2] == (5, 4)

            # Per address, without a token (public /metrics and 401s share the budget).
            assert http.get("/metrics").status_code == 200
            assert http.get("/api/v3/site").status_code == 401
            assert http.get("/metrics").status_code == 200
            crowded = http.get("/metrics")
            assert crowded.status_code == 429
            assert headers_of(crowded)[:2] == (3, 0)
            wait_for_reset(crowded)

            # Failed logins: after three wrong tokens even the right one is not looked at.
            for attempt in range(3):
                wrong = http.get("/api/v3/site", headers={"X-Enapter-Auth-Token": f"egw_wrong{attempt}"})
                assert wrong.status_code == 403
            locked = http.get("/api/v3/site", headers=auth)
            assert locked.status_code == 429
            assert "Retry-After" in locked.headers
            wait_for_reset(locked)
            assert http.get("/api/v3/site", headers=auth).status_code == 200
    finally:
        assert gateway.stop() == 0, gateway.log()
