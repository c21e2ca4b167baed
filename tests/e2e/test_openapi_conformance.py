"""The OpenAPI document against the running daemon: real answers validated against it, then
schemathesis over every operation.

1. A real SDK device (telemetry, properties, logs, commands) feeds a gateway; the main endpoints'
   real responses, errors included, are checked against the document served at
   `/api/openapi.json`: the status must be documented for the operation, the Content-Type must be
   one it declares, and a JSON body must validate against its schema (JSON Schema 2020-12 with
   formats, `$ref`s resolved in the document's components). WebSocket frames are checked against
   the frame schemas the 101 answers name.
2. schemathesis (its CLI, as CI would run it) generates requests for every operation from the
   document, with the real ids of a seeded gateway put into the path parameters, and checks that
   no answer is a 5xx and every answer conforms (status code, Content-Type, headers, body schema).
   Deleting devices is allowed: the ids offered to the delete operations are a device made to be
   deleted, a UCM that still runs a Lua device (409) and the gateway's own device (422), so every
   other operation keeps real devices to work on.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import httpx
import pytest
from jsonschema import Draft202012Validator

from gateway.blueprints.archive import write_archive
from tests.gateway_process import GatewayProcess, eventually, provision, running_gateway
from tests.peers.process import start_peer, stop_peer
from tests.peers.sdk_device import PROPERTIES

Doc = dict[str, Any]
TOKEN = "X-Enapter-Auth-Token"
UNLIMITED = {"api.rate_limit": {"requests": 0, "anonymous_requests": 0, "auth_failures": 0}}
# The SDK peer's telemetry and the commands the tests run (`tests.peers.sdk_device`).
MANIFEST = b"""blueprint_spec: device/1.0
display_name: Conformance Peer
telemetry:
  counter:
    display_name: Counter
    type: integer
  healthy:
    display_name: Healthy
    type: boolean
commands:
  add:
    display_name: Add
    arguments:
      a:
        display_name: A
        type: float
      b:
        display_name: B
        type: float
  say:
    display_name: Say
    arguments:
      message:
        display_name: Message
        type: string
      severity:
        display_name: Severity
        type: string
      persist:
        display_name: Persist
        type: boolean
"""
# schemathesis examples per operation; with every phase this keeps the run near half a minute.
MAX_EXAMPLES = 10
SEED = 20261123


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A running daemon without rate limits (the fuzzer sends thousands of requests)."""
    with running_gateway(tmp_path, UNLIMITED) as process:
        yield process


# --- Validating one answer against the document ----------------------------------------------


def resolve(doc: Doc, item: Mapping[str, Any]) -> Mapping[str, Any]:
    """A `#/components/...` reference followed; anything else as it is."""
    ref = item.get("$ref")
    if not isinstance(ref, str):
        return item
    target: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, Mapping)
    return target


def validate_json(doc: Doc, schema: Mapping[str, Any], value: object) -> None:
    """`value` against `schema`, whose `$ref`s point into the document's components."""
    validator = Draft202012Validator(
        {**schema, "components": doc["components"]}, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(value), key=lambda error: list(error.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def conforms(doc: Doc, method: str, path: str, response: httpx.Response) -> Any:
    """Fail unless `response` is one the document declares for `method path`; returns its JSON
    body (None for other media types)."""
    operation = doc["paths"][path][method.lower()]
    where = f"{method} {path} -> {response.status_code}: {response.text[:300]}"
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, f"undocumented status: {where}"
    content = resolve(doc, declared).get("content", {})
    media = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media in content, f"undocumented Content-Type {media!r}: {where}"
    if media != "application/json":
        return None
    body = response.json()
    try:
        validate_json(doc, content[media]["schema"], body)
    except AssertionError as exc:
        raise AssertionError(f"{where}\n{exc}") from None
    return body


def validate_frame(doc: Doc, path: str, frame: object) -> None:
    """A WebSocket frame against the schema the operation's 101 answer names."""
    schema = doc["paths"][path]["get"]["responses"]["101"]["x-websocket-frame"]
    validate_json(doc, schema, frame)


class Api:
    """Requests to the gateway, each answer checked against the document before it is returned."""

    def __init__(self, http: httpx.AsyncClient, doc: Doc, token: str) -> None:
        self.http = http
        self.doc = doc
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        token: str | None = "",
        path_values: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """`method path` (a template of the document, filled from `path_values`); the answer must
        have `status` and conform. `token=None` sends none; "" the default token."""
        url = path.format(**(path_values or {}))
        request = self.http.build_request(method, url, **kwargs)
        if token is None:
            del request.headers[TOKEN]
        else:
            request.headers[TOKEN] = token or self.token
        response = await self.http.send(request)
        assert response.status_code == status, f"{method} {url}: {response.status_code} {response.text[:300]}"
        body = conforms(self.doc, method, path, response)
        return response if body is None else body


# --- Seeding a gateway ------------------------------------------------------------------------


@asynccontextmanager
async def sdk_device(api: Api, gateway: GatewayProcess, device_id: str) -> AsyncIterator[None]:
    """The SDK peer device running with a freshly generated config, until it is ONLINE."""
    config = (
        await api.call(
            "POST",
            "/api/v3/devices/{device}/generate_config",
            path_values={"device": device_id},
            json={"protocol": "MQTT"},
        )
    )["config"]
    peer = start_peer(base64.b64encode(json.dumps(config).encode()).decode())
    try:

        async def online() -> bool:
            found = await api.http.get(
                f"/api/v3/devices/{device_id}", params={"expand": "connectivity,properties"}
            )
            device = found.json()["device"]
            return bool(device["connectivity"]["status"] == "ONLINE" and device["properties"] == PROPERTIES)

        await eventually(online, 20)
        yield
    finally:
        peer_log = stop_peer(peer)
    assert "Traceback" not in peer_log, peer_log


async def served_document(gateway: GatewayProcess) -> Doc:
    """`GET /api/openapi.json`, without a token."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{gateway.api_port}/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    doc: Doc = response.json()
    return doc


# --- 1. Real answers --------------------------------------------------------------------------


async def test_real_answers_conform_to_the_document(gateway: GatewayProcess) -> None:
    doc = await served_document(gateway)
    token = gateway.create_token("INSTALLER")
    readonly = gateway.create_token("READONLY", name="reader")
    base = f"http://127.0.0.1:{gateway.api_port}"
    assert doc["servers"][0]["url"] == base
    async with httpx.AsyncClient(base_url=base, headers={TOKEN: token}, timeout=20) as http:
        api = Api(http, doc, token)
        # Sites.
        site = (await api.call("GET", "/api/v3/site"))["site"]
        site_id = site["id"]
        ids = {"site_id": site_id}
        await api.call("GET", "/api/v3/sites", params={"name": "test", "limit": "5"})
        await api.call("GET", "/api/v3/users/me/sites")
        await api.call("GET", "/api/v3/sites/{site_id}", path_values=ids)
        changed = await api.call(
            "PATCH",
            "/api/v3/site",
            json={"location": {"name": "Lab", "latitude": 52.5, "longitude": None}},
        )
        assert changed["site"]["location"] == {"name": "Lab", "latitude": 52.5, "longitude": None}
        await api.call("PATCH", "/api/v3/sites/{site_id}", path_values=ids, json={"name": None})

        # Provisioning, every kind; a blueprint for the Lua device.
        archive = write_archive({"manifest.yml": MANIFEST})
        blueprint = (await api.call("POST", "/api/v3/blueprints/upload", content=archive))["blueprint"]
        peer = (await api.call("POST", "/api/v3/provisioning/standalone", json={"name": "Conformance Peer"}))[
            "device_id"
        ]
        ucm = await api.call("POST", "/api/v3/provisioning/vucm", json={"name": "Runtime"})
        await api.call("POST", "/api/v3/provisioning/ucm", json={"hardware_id": "HW-1", "protocol": "MQTT"})
        lua = await api.call(
            "POST",
            "/api/v3/provisioning/lua_device",
            json={"name": "Script", "runtime_id": ucm["device_id"], "blueprint_id": blueprint["id"]},
        )
        await api.call(
            "POST",
            "/api/v3/devices/{device}/assign_blueprint",
            path_values={"device": peer},
            json={"blueprint_id": blueprint["id"]},
        )
        device = {"device": peer}
        scoped = {"site_id": site_id, "device": peer}

        async with sdk_device(api, gateway, peer):
            # Devices, with each expand and all of them.
            expands = resolve(doc, {"$ref": "#/components/parameters/DeviceExpand"})["schema"]["items"][
                "enum"
            ]
            for expand in [*expands, ",".join(expands), ""]:
                got = await api.call(
                    "GET", "/api/v3/devices/{device}", path_values=device, params={"expand": expand}
                )
                for name in expand.split(","):
                    assert not name or name in got["device"], (name, got)
            listed = await api.call("GET", "/api/v3/devices", params={"expand": ",".join(expands)})
            assert listed["total_count"] == 5  # the gateway, the peer, two UCMs, the Lua device
            await api.call(
                "GET", "/api/v3/sites/{site_id}/devices", path_values=ids, params={"expand": "connectivity"}
            )
            await api.call("GET", "/api/v3/sites/{site_id}/devices/{device}", path_values=scoped)
            manifest = await api.call("GET", "/api/v3/devices/{device}/manifest", path_values=device)
            assert manifest["manifest"]["telemetry"]["counter"]["type"] == "integer"
            await api.call(
                "PATCH", "/api/v3/devices/{device}", path_values=device, json={"name": "", "slug": "the-peer"}
            )

            # Telemetry: latest (v3, per device, v1), and history as CSV.
            async def counted() -> bool:
                found = await http.get("/api/v3/telemetry/latest", params={"devices[the-peer]": "counter"})
                return "value" in found.json()["telemetry"]["the-peer"]["counter"]

            await eventually(counted, 10)
            latest = await api.call(
                "GET",
                "/api/v3/telemetry/latest",
                params={"devices[the-peer]": "counter,healthy,missing", "devices[nothing]": "x"},
            )
            assert latest["telemetry"]["nothing"]["x"] == {"warning": "Device is not found."}
            await api.call(
                "GET",
                "/api/v3/devices/{device}/telemetry",
                path_values=device,
                params={"relevance_interval": "1s"},
            )
            await api.call("GET", "/api/v3/sites/{site_id}/devices/{device}/telemetry", path_values=scoped)
            now = await api.call(
                "GET", "/api/telemetry/v1/now", params={"devices[the-peer]": "counter,missing"}
            )
            assert now["errors"][0]["code"] == "not_found"
            query = {
                "from": int(time.time()) - 60,
                "to": int(time.time()) + 60,
                "granularity": "10s",
                "aggregation": "last",
                "telemetry": [{"device": peer, "attribute": ["counter", "healthy"]}],
            }
            csv = await api.call(
                "POST", "/api/v3/telemetry/query_timeseries", json=query, headers={"Accept": "text/csv"}
            )
            assert csv.headers.get_list("X-Enapter-Timeseries-Data-Types") == ["integer", "boolean"]
            await api.call("POST", "/telemetry/v1/timeseries", json=query)

            # Logs (the SDK device logs at start).
            logs = await api.call("GET", "/api/v3/devices/{device}/logs", path_values=device)
            assert logs["total_count"] >= 1
            await api.call(
                "GET",
                "/api/v3/sites/{site_id}/devices/{device}/logs",
                path_values=scoped,
                params={"severity": "info", "order": "RECEIVED_AT_DESC", "show": "ALL"},
            )

            # Commands: run, send, list, read; v1 too.
            done = await api.call(
                "POST",
                "/api/v3/devices/{device}/execute_command",
                path_values=device,
                params={"expand": "log"},
                json={"name": "add", "arguments": {"a": 1, "b": 2}},
            )
            assert done["execution"]["state"] == "SUCCESS", done
            assert done["execution"]["log"]
            started = await api.call(
                "POST",
                "/api/v3/sites/{site_id}/devices/{device}/command_executions",
                path_values=scoped,
                json={"name": "add", "arguments": {"a": 2, "b": 2}, "ephemeral": True},
            )
            await api.call(
                "GET",
                "/api/v3/devices/{device}/command_executions",
                path_values=device,
                params={
                    "expand": "log,ephemeral",
                    "state.in": "SUCCESS,IN_PROGRESS",
                    "order": "CREATED_AT_DESC",
                },
            )
            await api.call(
                "GET",
                "/api/v3/devices/{device}/command_executions/{execution_id}",
                path_values={**device, "execution_id": started["execution_id"]},
                params={"expand": "log"},
            )
            await api.call(
                "GET",
                "/api/v3/sites/{site_id}/commands/executions",
                path_values=ids,
                params={"device_id.in": peer},
            )
            outcome = await api.call(
                "POST",
                "/commands/v1/execute",
                json={"device_id": peer, "command_name": "add", "arguments": {"a": 1, "b": 1}},
            )
            assert outcome["state"] == "succeeded"
            streamed = await http.post(
                "/api/commands/v1/execute",
                params={"show_progress": "true"},
                json={"device_id": peer, "command_name": "add", "arguments": {"a": 1, "b": 1}},
            )
            conforms(doc, "POST", "/api/commands/v1/execute", streamed)
            lines = [json.loads(line) for line in streamed.text.splitlines()]
            line_schema = doc["paths"]["/api/commands/v1/execute"]["post"]["responses"]["200"]["content"][
                "application/x-ndjson"
            ]["x-line-schema"]
            for line in lines:
                validate_json(doc, line_schema, line)
            assert (lines[0], lines[-1]["state"]) == ({"state": "started"}, "succeeded")
            validate_json(doc, {"$ref": "#/components/schemas/V1CommandOutcome"}, lines[-1])

            # WebSocket frames against the 101 answers' frame schemas.
            await check_streams(doc, gateway, token, peer)
            await check_timeline(api, gateway, peer, site_id)

            # Finding devices (issue 8): tags, metadata, the list's search and filters.
            tag = (await api.call("POST", "/api/v3/tags", json={"name": "Roof"}))["tag"]
            await api.call("POST", "/api/v3/tags", json={"name": "roof"}, status=409)
            await api.call(
                "PATCH", "/api/v3/tags/{tag}", path_values={"tag": tag["id"]}, json={"name": "Attic"}
            )
            await api.call("GET", "/api/v3/tags/{tag}", path_values={"tag": "attic"})
            await api.call("GET", "/api/v3/tags", params={"limit": "5"})
            tagged = {**scoped, "tag": "attic"}
            await api.call("PUT", "/api/v3/sites/{site_id}/devices/{device}/tags/{tag}", path_values=tagged)
            await api.call(
                "PUT", "/api/v3/devices/{device}/tags/{tag}", path_values={**tagged, "tag": "x"}, status=404
            )
            for definition in (
                {"name": "serial", "type": "text"},
                {"name": "phase", "type": "enum", "options": ["L1", "L2"], "required": True, "default": "L1"},
                {"name": "place", "type": "location", "description": "Where"},
                {"name": "rated", "type": "number"},
                {"name": "outdoor", "type": "boolean"},
            ):
                await api.call("POST", "/api/v3/metadata_fields", json=definition)
            await api.call(
                "POST",
                "/api/v3/metadata_fields",
                json={"name": "x", "type": "text", "required": True},
                status=400,
            )
            await api.call("GET", "/api/v3/metadata_fields")
            await api.call("GET", "/api/v3/metadata_fields/{field}", path_values={"field": "phase"})
            await api.call(
                "PATCH",
                "/api/v3/metadata_fields/{field}",
                path_values={"field": "phase"},
                json={"options": ["L1", "L2", "L3"]},
            )
            values = {
                "serial": "SN-1",
                "place": {"latitude": 1, "longitude": 2, "name": "Roof"},
                "rated": 5,
                "outdoor": True,
            }
            got = await api.call(
                "PATCH", "/api/v3/devices/{device}/metadata", path_values=device, json={"values": values}
            )
            assert got["device"]["metadata"]["phase"] == "L1"
            await api.call(
                "PATCH",
                "/api/v3/sites/{site_id}/devices/{device}/metadata",
                path_values=scoped,
                json={"values": {"rated": "x"}},
                status=400,
            )
            filters = {
                "q": "sn-1",
                "connectivity.in": "ONLINE",
                "tag.in": "attic",
                "order": "NAME_DESC",
                "expand": "tags,metadata",
            }
            found = await api.call("GET", "/api/v3/devices", params=filters)
            assert found["total_count"] == 1
            await api.call("GET", "/api/v3/devices", params={"foo.in": "x"}, status=400)
            # Site statistics, while a device is tagged, online and has run commands.
            stats = await api.call("GET", "/api/v3/site/stats", params={"window": "1h"})
            assert stats["stats"]["devices"]["by_tag"] == {"Attic": 1}
            assert peer in stats["stats"]["uptime_percent"]
            await api.call("GET", "/api/v3/sites/{site_id}/stats", path_values={"site_id": site_id})
            await api.call("GET", "/api/v3/site/stats", params={"window": "1y"}, status=400)
            await api.call("DELETE", "/api/v3/devices/{device}/tags/{tag}", path_values=tagged)
            await api.call("DELETE", "/api/v3/tags/{tag}", path_values={"tag": "attic"})
            await api.call("DELETE", "/api/v3/metadata_fields/{field}", path_values={"field": "outdoor"})

        # Assets API v1, both roots.
        for root in ("/api", ""):
            page = await api.call(
                "GET",
                root + "/assets/v1/devices",
                params={"expand": "manifest,properties,connectivity", "page_size": "2"},
            )
            assert page["next_page_token"] == "2"
            await api.call(
                "GET",
                root + "/assets/v1/devices",
                params={"page_token": page["next_page_token"], "filter[type_in]": "endpoint,ucm"},
            )
            await api.call(
                "GET",
                root + "/assets/v1/devices/{device}",
                path_values=device,
                params={"expand": "manifest,properties,connectivity"},
            )

        # Blueprints.
        await api.call(
            "GET", "/api/v3/blueprints/{blueprint_id}", path_values={"blueprint_id": blueprint["id"]}
        )
        await api.call(
            "GET",
            "/api/v3/blueprints/enapter/{name}/{tag}",
            path_values={"name": "conformance_peer", "tag": "latest"},
        )
        for view in ("ORIGINAL", "compiled"):
            await api.call(
                "GET",
                "/api/v3/blueprints/{blueprint_id}/zip",
                token=None,
                path_values={"blueprint_id": blueprint["id"]},
                params={"view": view},
            )
        await api.call("GET", "/api/blueprints/v1/download", params={"blueprint_id": blueprint["id"]})
        valid = await api.call("POST", "/api/v3/blueprints/validate", token=None, content=archive)
        assert valid == {"validation_errors": []}
        broken = write_archive({"manifest.yml": b"blueprint_spec: device/1.0\ntelemetry: 5\n"})
        invalid = await api.call(
            "POST",
            "/api/v3/blueprints/validate",
            token=None,
            files={"data": ("bp.zip", broken, "application/zip")},
        )
        assert invalid["validation_errors"]
        await api.call("POST", "/api/v3/blueprints/upload_device_profiles", content=archive)
        await api.call("GET", "/api/v3/blueprints/device_profiles/download")
        await api.call("GET", "/api/v3/blueprints/download_device_profiles")

        # Operations, without a token.
        await api.call("GET", "/api/health", token=None)
        await api.call("GET", "/metrics", token=None)
        await api.call("GET", "/metrics", token=None, headers={"Accept": "application/openmetrics-text"})
        await api.call("GET", "/api/openapi.json", token=None)
        page_html = await api.call("GET", "/api/docs", token=None)
        assert "/api/v3/devices/{device}/execute_command" in page_html.text

        # Errors: each status with the envelope.
        unknown = {"device": "no-such-device"}
        bad = await api.call("GET", "/api/v3/devices", status=400, params={"expand": "everything"})
        assert bad["errors"][0]["details"] == {"parameter": "expand"}
        await api.call(
            "POST", "/api/v3/devices/{device}/execute_command", status=400, path_values=device, content=b"[1]"
        )
        missing = await api.call("GET", "/api/v3/site", status=401, token=None)
        assert missing["errors"][0]["code"] == "missing_header"
        await api.call("GET", "/api/v3/site", status=403, token="egw_not-a-token")
        low = await api.call("PATCH", "/api/v3/site", status=403, token=readonly, json={})
        assert low["errors"][0]["code"] == "forbidden"
        await api.call("GET", "/api/v3/devices/{device}", status=404, path_values=unknown)
        await api.call("GET", "/api/v3/sites/{site_id}", status=404, path_values={"site_id": "elsewhere"})
        await api.call("POST", "/api/v3/sites", status=409)
        await api.call("DELETE", "/api/v3/sites/{site_id}", status=409, path_values=ids)
        await api.call(
            "DELETE", "/api/v3/devices/{device}", status=409, path_values={"device": ucm["device_id"]}
        )
        await api.call(
            "POST",
            "/api/v3/provisioning/standalone",
            status=409,
            json={"name": "Another", "slug": "the-peer"},
        )
        refused = await api.call(
            "POST",
            "/api/v3/devices/{device}/generate_config",
            status=422,
            path_values={"device": lua["device_id"]},
            json={"protocol": "MQTT"},
        )
        assert refused["errors"][0]["code"] == "unprocessable_entity"
        undeclared = await api.call(
            "POST",
            "/api/v3/devices/{device}/execute_command",
            status=422,
            path_values=device,
            json={"name": "launch"},
        )
        assert undeclared["errors"][0]["code"] == "command_not_declared"
        await api.call(
            "POST", "/api/v3/telemetry/query_timeseries", status=422, json={**query, "granularity": "0.5s"}
        )
        await api.call(
            "POST",
            "/api/v3/telemetry/query_timeseries",
            status=404,
            json={**query, "telemetry": [{"device": peer, "attribute": "nothing"}]},
        )
        await api.call("POST", "/api/v3/blueprints/upload", status=422, content=b"not a zip")
        # A form without a boundary (schemathesis found it answered 500).
        unparsed = await api.call(
            "POST",
            "/api/v3/blueprints/validate",
            status=400,
            token=None,
            content=b"--x\r\n",
            headers={"Content-Type": "multipart/form-data"},
        )
        assert unparsed["errors"][0]["code"] == "bad_request"
        # An upgrade request that is not a WebSocket handshake is refused before streaming.
        await api.call(
            "GET",
            "/api/v3/devices/{device}/logs",
            status=400,
            path_values=device,
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )
        await api.call("PATCH", "/api/v3/site", status=413, content=b" " * (1024**2 + 1))
        await api.call("DELETE", "/api/v3/devices/{device}", path_values={"device": lua["device_id"]})


async def check_streams(doc: Doc, gateway: GatewayProcess, token: str, device_id: str) -> None:
    """One frame from each stream (the SDK device sends telemetry, properties and logs)."""
    base = f"ws://127.0.0.1:{gateway.api_port}"
    async with aiohttp.ClientSession(headers={TOKEN: token}) as session:
        telemetry = await session.ws_connect(f"{base}/api/v3/devices/{device_id}/telemetry")
        frame = json.loads((await telemetry.receive(timeout=10)).data)
        validate_frame(doc, "/api/v3/devices/{device}/telemetry", frame)
        assert "counter" in frame
        await telemetry.close()
        monitor = await session.ws_connect(f"{base}/api/v3/devices/", params={"id.in": device_id})
        kinds: set[str] = set()
        while not {"telemetry", "properties"} <= kinds:
            frame = json.loads((await monitor.receive(timeout=10)).data)
            validate_frame(doc, "/api/v3/devices/", frame)
            kinds |= {"telemetry", "properties", "log"} & set(frame)
        await monitor.close()
        logs = await session.ws_connect(f"{base}/api/v3/devices/{device_id}/logs")
        # The `say` command logs through the SDK's logger.
        url = f"http://127.0.0.1:{gateway.api_port}/api/v3/devices/{device_id}/command_executions"
        said = await session.post(
            url, json={"name": "say", "arguments": {"message": "hi", "severity": "warning", "persist": False}}
        )
        assert said.status == 200, await said.text()
        frame = json.loads((await logs.receive(timeout=10)).data)
        validate_frame(doc, "/api/v3/devices/{device}/logs", frame)
        assert (frame["message"], frame["persist"]) == ("hi", False)
        await logs.close()


async def check_timeline(api: Api, gateway: GatewayProcess, peer: str, site_id: str) -> None:
    """User events, the timeline, the event stream's frames and clearing data (last: it deletes the
    peer's telemetry, logs and executions)."""
    device = {"device": peer}
    scoped = {"site_id": site_id, "device": peer}
    url = f"ws://127.0.0.1:{gateway.api_port}/api/v3/site/events"
    async with aiohttp.ClientSession(headers={TOKEN: api.token}) as session:
        events = await session.ws_connect(url, params={"device_id.in": peer, "type.in": "user,data_cleared"})
        posted = await api.call(
            "POST",
            "/api/v3/devices/{device}/events",
            path_values=device,
            json={"code": "checked", "description": "ok"},
        )
        await api.call(
            "POST", "/api/v3/sites/{site_id}/devices/{device}/events", path_values=scoped, json={"code": "x"}
        )
        frames = [json.loads((await events.receive(timeout=10)).data) for _ in range(2)]
        for frame in frames:
            validate_frame(api.doc, "/api/v3/site/events", frame)
        assert frames[0] == posted["event"]
        assert frames[1]["details"] == {"code": "x", "description": None}
        listed = await api.call(
            "GET",
            "/api/v3/devices/{device}/timeline",
            path_values=device,
            params={"type.in": "user,connected,alert_raised", "timestamp.gte": "0", "limit": "10"},
        )
        assert listed["total_count"] >= 3  # two user events, a connection
        everything = await api.call(
            "GET", "/api/v3/sites/{site_id}/devices/{device}/timeline", path_values=scoped
        )
        assert {"provisioned", "config_generated", "blueprint_assigned", "renamed", "command_executed"} <= {
            event["type"] for event in everything["events"]
        }
        await api.call("POST", "/api/v3/devices/{device}/clear_data", path_values=device)
        await api.call("POST", "/api/v3/sites/{site_id}/devices/{device}/clear_data", path_values=scoped)
        for _ in range(2):
            frame = json.loads((await events.receive(timeout=10)).data)
            validate_frame(api.doc, "/api/v3/site/events", frame)
            assert frame["type"] == "data_cleared"
        await events.close()


# --- 2. schemathesis ----------------------------------------------------------------------------


async def seed(gateway: GatewayProcess, doc: Doc, token: str) -> dict[str, str]:
    """Devices of each kind, a blueprint, stored telemetry, a log and an execution; their ids."""
    base = f"http://127.0.0.1:{gateway.api_port}"
    async with httpx.AsyncClient(base_url=base, headers={TOKEN: token}, timeout=20) as http:
        api = Api(http, doc, token)
        site_id = (await api.call("GET", "/api/v3/site"))["site"]["id"]
        listed = (await api.call("GET", "/api/v3/devices"))["devices"]
        (own,) = [device["id"] for device in listed if device["type"] == "GATEWAY"]
        peer = await provision(gateway, token, "Conformance Peer")
        async with aiomqtt.Client(
            "127.0.0.1", gateway.mqtt_port, username=peer.hardware_id, password=peer.password, timeout=5
        ) as mqtt:
            topic = f"v1/from/{peer.hardware_id}/s"
            now = int(time.time())
            await mqtt.publish(f"{topic}/v1/telemetry", json.dumps({"timestamp": now, "counter": 1}), qos=1)
            await mqtt.publish(f"{topic}/v1/register", json.dumps({"timestamp": now, **PROPERTIES}), qos=1)
            log = {"timestamp": now, "severity": "info", "message": "seeded", "persist": True}
            await mqtt.publish(f"{topic}/v3/logs", json.dumps(log), qos=1)
        blueprint = (
            await api.call(
                "POST", "/api/v3/blueprints/upload", content=write_archive({"manifest.yml": MANIFEST})
            )
        )["blueprint"]["id"]
        ucm = (await api.call("POST", "/api/v3/provisioning/vucm", json={"name": "Runtime"}))["device_id"]
        lua = await api.call(
            "POST",
            "/api/v3/provisioning/lua_device",
            json={"name": "Script", "runtime_id": ucm, "blueprint_id": blueprint},
        )
        doomed = await api.call("POST", "/api/v3/provisioning/standalone", json={"name": "Doomed"})
        execution = await api.call(
            "POST",
            "/api/v3/devices/{device}/command_executions",
            path_values={"device": peer.device_id},
            json={"name": "anything"},
        )

        async def stored() -> bool:
            logs = await http.get(f"/api/v3/devices/{peer.device_id}/logs")
            return bool(logs.json()["total_count"] == 1)

        await eventually(stored, 10)
    return {
        "site": site_id,
        "own": own,
        "peer": peer.device_id,
        "ucm": ucm,
        "lua": lua["device_id"],
        "doomed": doomed["device_id"],
        "blueprint": blueprint,
        "execution": execution["execution_id"],
    }


def with_real_ids(doc: Doc, ids: Mapping[str, str]) -> Doc:
    """The document with each path parameter limited to real values (else nearly every generated
    request would be a 404). Deletes get ids of their own: one device made to go, a UCM that runs
    a Lua device (409) and the gateway's own device (422)."""

    def only(*choices: str) -> Doc:
        return {"type": "string", "enum": list(choices)}

    patched = copy.deepcopy(doc)
    parameters = patched["components"]["parameters"]
    parameters["Device"]["schema"] = only(ids["peer"], ids["ucm"], ids["lua"], ids["own"])
    parameters["SiteId"]["schema"] = only(ids["site"])
    parameters["ExecutionId"]["schema"] = only(ids["execution"])
    parameters["BlueprintId"]["schema"] = only(ids["blueprint"])
    deletable = {**parameters["Device"], "schema": only(ids["doomed"], ids["ucm"], ids["own"])}
    for item in patched["paths"].values():
        operation = item.get("delete", {})
        operation["parameters"] = [
            deletable if parameter == {"$ref": "#/components/parameters/Device"} else parameter
            for parameter in operation.get("parameters", [])
        ]
    name, tag = patched["paths"]["/api/v3/blueprints/enapter/{name}/{tag}"]["get"]["parameters"]
    name["schema"] = only("conformance_peer")
    tag["schema"] = only("latest", ids["blueprint"])
    for root in ("/api", ""):
        (blueprint_id,) = patched["paths"][root + "/blueprints/v1/download"]["get"]["parameters"]
        blueprint_id["schema"] = only(ids["blueprint"])
    # Latest telemetry of the seeded device, by its id, besides whatever else is generated.
    for path in ("/api/v3/telemetry/latest", "/api/telemetry/v1/now", "/telemetry/v1/now"):
        for parameter in patched["paths"][path]["get"]["parameters"]:
            if parameter.get("name") == "devices":
                parameter["schema"] = {
                    "type": "object",
                    "properties": {ids["peer"]: only("counter", "", "counter,missing")},
                    "required": [ids["peer"]],
                    "additionalProperties": {"type": "string"},
                }
    # Bodies that name devices and blueprints.
    bodies = patched["components"]["schemas"]
    bodies["LuaDeviceRequest"]["properties"]["runtime_id"] = only(ids["ucm"])
    bodies["LuaDeviceRequest"]["properties"]["blueprint_id"] = only(ids["blueprint"])
    bodies["BlueprintAssignment"]["properties"]["blueprint_id"] = only(ids["blueprint"])
    bodies["V1CommandRequest"]["properties"]["device_id"] = only(ids["peer"], ids["own"])
    selector = bodies["TimeseriesSelector"]["properties"]
    selector["device"] = only(ids["peer"])
    selector["attribute"] = {
        "oneOf": [only("counter", "missing"), {"type": "array", "items": only("counter"), "minItems": 1}]
    }
    return patched


def test_schemathesis_finds_no_server_error_and_no_nonconformance(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    doc = asyncio.run(served_document(gateway))
    token = gateway.create_token("INSTALLER")
    ids = asyncio.run(seed(gateway, doc, token))
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(with_real_ids(doc, ids)))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            str(schema),
            "--url",
            f"http://127.0.0.1:{gateway.api_port}",
            "--header",
            f"{TOKEN}: {token}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_headers_conformance,response_schema_conformance",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        # schemathesis and hypothesis keep their state (.hypothesis/) in the working directory.
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = run.stdout[-20000:] + run.stderr[-5000:]
    assert run.returncode == 0, report
    operations = sum(len(item) for item in doc["paths"].values())
    assert f"Tested: {operations}\n" in report, report
    # The error middleware logs every 500 it renders.
    assert "unhandled error" not in gateway.log(), gateway.log()
