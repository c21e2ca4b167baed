"""Finding devices, tags and metadata against the running daemon (issue 8).

One gateway with a handful of devices of several kinds, tags, metadata values, a blueprint, and one
device connected over MQTT that raises an alert; then a table of device list queries (each filter,
combinations, orders, pages with `total_count`, and the 400s), on both device list paths. Enapter's
own clients (the SDK's HTTP client and `python -m enapter http api device list`) must see the same
devices as before, none of the additions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import enapter
import httpx

from gateway.blueprints.archive import write_archive
from tests.e2e.test_sdk_cli import enapter_cli, object_lines
from tests.gateway_process import GatewayProcess, ProvisionedDevice, eventually, provision

WITHIN_S = 20.0
BLUEPRINT = b"blueprint_spec: device/1.0\ndisplay_name: Search blueprint\n"


@asynccontextmanager
async def api(gateway: GatewayProcess, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-Enapter-Auth-Token": token}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as http:
        yield http


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, (response.request.url, response.text)
    body: dict[str, Any] = response.json()
    return body


def refused(response: httpx.Response, status: int, parameter: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    (error,) = response.json()["errors"]
    if parameter is not None:
        assert error["details"] == {"parameter": parameter}, error
        assert error["message"].startswith(parameter + ": "), error
    return dict(error)


async def create(http: httpx.AsyncClient, kind: str, name: str) -> dict[str, Any]:
    body = ok(await http.post(f"/v3/provisioning/{kind}", json={"name": name}))
    return dict(ok(await http.get(f"/v3/devices/{body['device_id']}"))["device"])


async def find(http: httpx.AsyncClient, path: str, **params: str) -> tuple[list[str], int]:
    body = ok(await http.get(path, params=params))
    return [device["name"] for device in body["devices"]], body["total_count"]


@asynccontextmanager
async def connected(gateway: GatewayProcess, device: ProvisionedDevice) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", gateway.mqtt_port, username=device.hardware_id, password=device.password, timeout=5
    ) as client:
        yield client


async def test_find_devices_by_text_filters_order_and_pages(
    gateway: GatewayProcess, installer_token: str
) -> None:
    async with api(gateway, installer_token) as http:
        site_id = ok(await http.get("/v3/site"))["site"]["id"]
        hot = await provision(gateway, installer_token, "Pump North")
        south = await create(http, "standalone", "pump south")
        boundary = time.time()
        await asyncio.sleep(0.05)  # created_at of the devices below is after `boundary`
        boiler = await create(http, "standalone", "Boiler")
        edge = await create(http, "vucm", "Edge UCM")

        blueprint = ok(
            await http.post("/v3/blueprints/upload", content=write_archive({"manifest.yml": BLUEPRINT}))
        )
        blueprint_id = blueprint["blueprint"]["id"]
        ok(
            await http.post(
                f"/v3/devices/{boiler['id']}/assign_blueprint", json={"blueprint_id": blueprint_id}
            )
        )

        roof = ok(await http.post("/v3/tags", json={"name": "Roof"}))["tag"]
        ok(await http.post("/v3/tags", json={"name": "cellar"}))
        ok(await http.put(f"/v3/devices/{hot.device_id}/tags/{roof['id']}"))
        ok(await http.put(f"/v3/devices/{south['id']}/tags/roof"))  # by name, any case
        tagged = ok(await http.put(f"/v3/devices/{boiler['id']}/tags/CELLAR"))["device"]
        assert [tag["name"] for tag in tagged["tags"]] == ["cellar"]

        ok(await http.post("/v3/metadata_fields", json={"name": "serial_number", "type": "text"}))
        ok(
            await http.post(
                "/v3/metadata_fields",
                json={
                    "name": "phase",
                    "type": "enum",
                    "options": ["L1", "L2", "L3"],
                    "required": True,
                    "default": "L1",
                },
            )
        )
        ok(await http.post("/v3/metadata_fields", json={"name": "position", "type": "location"}))
        changed = ok(
            await http.patch(
                f"/v3/devices/{edge['id']}/metadata",
                json={
                    "values": {
                        "serial_number": "EDGE-7731",
                        "position": {"latitude": 52.5, "longitude": 13.4, "name": "Mast"},
                    }
                },
            )
        )["device"]
        assert changed["metadata"] == {
            "phase": "L1",  # the default
            "position": {"latitude": 52.5, "longitude": 13.4, "name": "Mast"},
            "serial_number": "EDGE-7731",
        }
        ok(await http.patch(f"/v3/devices/{south['id']}/metadata", json={"values": {"phase": "L3"}}))

        async with connected(gateway, hot) as mqtt:
            now = int(time.time())
            payload = json.dumps({"timestamp": now, "power": 5, "alerts": ["overheat"]})
            await mqtt.publish(f"v1/from/{hot.hardware_id}/s/v1/telemetry", payload, qos=1)

            async def alert_stored() -> bool:
                names, _ = await find(http, "/v3/devices", **{"raised_alert_names.in": "overheat"})
                return names == ["Pump North"]

            await eventually(alert_stored, WITHIN_S)

            all_by_name = ["Boiler", "Edge UCM", "Gateway", "Pump North", "pump south"]
            table: list[tuple[dict[str, str], list[str], int]] = [
                ({}, [], 5),  # by id: checked below
                ({"order": "NAME_ASC"}, all_by_name, 5),
                ({"order": "name_desc"}, all_by_name[::-1], 5),
                ({"q": "pump", "order": "NAME_ASC"}, ["Pump North", "pump south"], 2),
                ({"q": "UMP SOU"}, ["pump south"], 1),  # every word, any case
                ({"q": hot.hardware_id[3:12].lower()}, ["Pump North"], 1),  # hardware id
                ({"q": "edge-77"}, ["Edge UCM"], 1),  # a metadata value
                ({"q": "mast"}, ["Edge UCM"], 1),  # a location's name
                ({"q": 'pump" NEAR "boiler'}, [], 0),  # plain text, never FTS syntax
                ({"q": "pump*"}, [], 0),
                ({"type.in": "VIRTUAL_UCM,gateway", "order": "NAME_ASC"}, ["Edge UCM", "Gateway"], 2),
                ({"connectivity.in": "ONLINE", "order": "NAME_ASC"}, ["Gateway", "Pump North"], 2),
                (
                    {"connectivity.in": "UNKNOWN", "order": "NAME_ASC"},
                    ["Boiler", "Edge UCM", "pump south"],
                    3,
                ),
                ({"connectivity.in": "OFFLINE"}, [], 0),
                ({"tag.in": "roof", "order": "NAME_ASC"}, ["Pump North", "pump south"], 2),
                (
                    {"tag.in": f"{roof['id']},Cellar", "order": "NAME_ASC"},
                    ["Boiler", "Pump North", "pump south"],
                    3,
                ),
                ({"tag.in": "nowhere"}, [], 0),
                ({"blueprint_id.in": blueprint_id}, ["Boiler"], 1),
                (
                    {"created_at.lt": str(boundary), "order": "NAME_ASC"},
                    ["Gateway", "Pump North", "pump south"],
                    3,
                ),
                ({"created_at.gte": str(boundary), "order": "CREATED_AT_DESC"}, ["Edge UCM", "Boiler"], 2),
                ({"raised_alert_names.in": "overheat,frost"}, ["Pump North"], 1),
                # Combinations are AND.
                ({"q": "pump", "connectivity.in": "UNKNOWN"}, ["pump south"], 1),
                ({"tag.in": "roof", "created_at.gte": str(boundary)}, [], 0),
                (
                    {"type.in": "STANDALONE", "tag.in": "roof,cellar", "order": "NAME_DESC"},
                    ["pump south", "Pump North", "Boiler"],
                    3,
                ),
                # Pages of the filtered, ordered set; total_count counts the whole set.
                ({"order": "NAME_ASC", "limit": "2"}, all_by_name[:2], 5),
                ({"order": "NAME_ASC", "limit": "2", "offset": "2"}, all_by_name[2:4], 5),
                ({"order": "NAME_ASC", "limit": "2", "offset": "4"}, all_by_name[4:], 5),
                (
                    {"type.in": "STANDALONE", "order": "CREATED_AT_ASC", "offset": "1", "limit": "1"},
                    ["pump south"],
                    3,
                ),
                ({"order": "NAME_ASC", "offset": "9"}, [], 5),
                # What Enapter's clients send still works.
                ({"expand": "", "offset": "0", "limit": "50", "order": "NAME_ASC"}, all_by_name, 5),
            ]
            for params, names, total in table:
                for path in ("/v3/devices", f"/v3/sites/{site_id}/devices"):
                    found_names, found_total = await find(http, path, **params)
                    if params:
                        assert (found_names, found_total) == (names, total), (path, params)
                    else:
                        assert (sorted(found_names), found_total) == (sorted(all_by_name), total)

            # Devices never seen sort as the oldest; the one that spoke is the newest.
            by_seen, _ = await find(
                http, "/v3/devices", order="LAST_SEEN_AT_DESC", **{"type.in": "STANDALONE"}
            )
            assert by_seen[0] == "Pump North"
            # The filter agrees with what each device shows.
            listed = ok(
                await http.get(
                    "/v3/devices", params={"expand": "connectivity,tags,metadata,raised_alert_names"}
                )
            )
            shown = {d["name"]: d for d in listed["devices"]}
            for status in ("ONLINE", "OFFLINE", "UNKNOWN"):
                names, _ = await find(http, "/v3/devices", **{"connectivity.in": status})
                assert sorted(names) == sorted(
                    n for n, d in shown.items() if d["connectivity"]["status"] == status
                )
            assert [t["name"] for t in shown["pump south"]["tags"]] == ["Roof"]
            assert shown["pump south"]["metadata"] == {"phase": "L3"}
            assert shown["Gateway"]["tags"] == []
            assert shown["Gateway"]["metadata"] == {"phase": "L1"}
            assert shown["Pump North"]["raised_alert_names"] == ["overheat"]

        async def offline() -> bool:
            names, _ = await find(http, "/v3/devices", **{"connectivity.in": "OFFLINE"})
            return names == ["Pump North"]

        await eventually(offline, WITHIN_S)

        for params, parameter in [
            ({"foo.in": "x"}, "foo.in"),
            ({"name.gte": "a"}, "name.gte"),
            ({"type.in": "TOASTER"}, "type.in"),
            ({"connectivity.in": "SOMETIMES"}, "connectivity.in"),
            ({"created_at.gte": "last week"}, "created_at.gte"),
            ({"created_at.lt": "2025-01-01T00:00:00"}, "created_at.lt"),
            ({"order": "COLOUR_ASC"}, "order"),
            ({"q": "ab"}, "q"),
            ({"q": "pump x"}, "q"),
            ({"expand": "tags,colour"}, "expand"),
            ({"limit": "0"}, "limit"),
        ]:
            for path in ("/v3/devices", f"/v3/sites/{site_id}/devices"):
                refused(await http.get(path, params=params), 400, parameter)


async def test_tags_and_metadata_fields_lifecycle(gateway: GatewayProcess, installer_token: str) -> None:
    async with api(gateway, installer_token) as http:
        device = await create(http, "standalone", "Meter")
        site_id = ok(await http.get("/v3/site"))["site"]["id"]
        tag = ok(await http.post("/v3/tags", json={"name": "Roof"}))["tag"]
        assert (tag["name"], tag["device_count"]) == ("Roof", 0)
        refused(await http.post("/v3/tags", json={"name": "ROOF"}), 409)
        refused(await http.post("/v3/tags", json={"name": "a,b"}), 400, "name")
        refused(await http.post("/v3/tags", json={}), 400, "name")
        scoped = f"/v3/sites/{site_id}/devices/{device['slug']}/tags/roof"
        assert [t["id"] for t in ok(await http.put(scoped))["device"]["tags"]] == [tag["id"]]
        assert ok(await http.get("/v3/tags/roof"))["tag"]["device_count"] == 1
        renamed = ok(await http.patch(f"/v3/tags/{tag['id']}", json={"name": "Attic"}))["tag"]
        assert (renamed["id"], renamed["name"]) == (tag["id"], "Attic")
        other = ok(await http.post("/v3/tags", json={"name": "Cellar"}))["tag"]
        refused(await http.patch(f"/v3/tags/{other['id']}", json={"name": "attic"}), 409)
        listing = ok(await http.get("/v3/tags", params={"limit": "1"}))
        assert ([t["name"] for t in listing["tags"]], listing["total_count"]) == (["Attic"], 2)
        got = ok(await http.get(f"/v3/devices/{device['id']}", params={"expand": "tags"}))["device"]
        assert got["tags"] == [{"id": tag["id"], "name": "Attic"}]
        # Deleting a tag takes it off every device.
        assert ok(await http.delete("/v3/tags/attic")) == {}
        refused(await http.get(f"/v3/tags/{tag['id']}"), 404)
        got = ok(await http.get(f"/v3/devices/{device['id']}", params={"expand": "tags"}))["device"]
        assert got["tags"] == []
        refused(await http.put(f"/v3/devices/{device['id']}/tags/attic"), 404)
        assert ok(await http.delete(f"/v3/devices/{device['id']}/tags/cellar"))["device"]["tags"] == []

        # Metadata fields: definitions checked, values checked with their path, required = default.
        refused(
            await http.post("/v3/metadata_fields", json={"name": "zone", "type": "text", "required": True}),
            400,
            "default",
        )
        refused(await http.post("/v3/metadata_fields", json={"name": "Zone", "type": "text"}), 400, "name")
        refused(await http.post("/v3/metadata_fields", json={"name": "zone", "type": "colour"}), 400, "type")
        zone = ok(
            await http.post(
                "/v3/metadata_fields", json={"name": "zone", "type": "enum", "options": ["A", "B"]}
            )
        )
        assert zone["metadata_field"]["options"] == ["A", "B"]
        refused(await http.post("/v3/metadata_fields", json={"name": "zone", "type": "text"}), 409)
        ok(await http.post("/v3/metadata_fields", json={"name": "place", "type": "location"}))
        ok(await http.post("/v3/metadata_fields", json={"name": "power", "type": "number"}))
        path = f"/v3/devices/{device['id']}/metadata"
        patches: list[tuple[dict[str, Any], str]] = [
            ({"zone": "C"}, "metadata.zone"),
            ({"power": "100 W"}, "metadata.power"),
            ({"power": True}, "metadata.power"),
            ({"place": {"latitude": 120, "longitude": 0}}, "metadata.place.latitude"),
            ({"place": {"latitude": 1}}, "metadata.place.longitude"),
            ({"colour": "red"}, "metadata.colour"),
        ]
        for values, where in patches:
            refused(await http.patch(path, json={"values": {"zone": "A", **values}}), 400, where)
        refused(await http.patch(path, json={"values": "A"}), 400, "values")
        # Nothing of a refused patch was applied.
        got = ok(await http.get(f"/v3/devices/{device['id']}", params={"expand": "metadata"}))["device"]
        assert got["metadata"] == {}
        set_ = ok(await http.patch(path, json={"values": {"zone": "B", "power": 2.5}}))["device"]
        assert set_["metadata"] == {"power": 2.5, "zone": "B"}
        same = ok(await http.patch(path, json={"values": {}}))["device"]
        assert (same["metadata"], same["updated_at"]) == (set_["metadata"], set_["updated_at"])
        refused(await http.patch("/v3/metadata_fields/zone", json={"options": ["A"]}), 409)
        refused(await http.patch("/v3/metadata_fields/zone", json={"type": "text"}), 400, "type")
        required = ok(await http.patch("/v3/metadata_fields/zone", json={"required": True, "default": "A"}))
        assert required["metadata_field"]["required"] is True
        removed = ok(await http.patch(path, json={"values": {"zone": None}}))["device"]
        assert removed["metadata"] == {"power": 2.5, "zone": "A"}  # the default shows
        fields = ok(await http.get("/v3/metadata_fields"))
        assert [f["name"] for f in fields["metadata_fields"]] == ["place", "power", "zone"]
        assert ok(await http.delete("/v3/metadata_fields/power")) == {}
        refused(await http.get("/v3/metadata_fields/power"), 404)
        got = ok(await http.get(f"/v3/devices/{device['id']}", params={"expand": "metadata"}))["device"]
        assert got["metadata"] == {"zone": "A"}

        # Odd text is searched as text (or refused), never an error of the index.
        refused(await http.get("/v3/devices", params={"q": "abc\x00def"}), 400, "q")
        for q in ("☃☃☃", "x'); DROP TABLE devices; --x", '"""', "abc)(*:^"):
            response = await http.get("/v3/devices", params={"q": q})
            assert response.status_code == 200, (q, response.text)
            assert response.json()["total_count"] == 0, q

        readonly = gateway.create_token("READONLY", name="reader")
        async with api(gateway, readonly) as reader:
            ok(await reader.get("/v3/metadata_fields"))
            refused(await reader.patch(path, json={"values": {"zone": "B"}}), 403)
            refused(await reader.post("/v3/tags", json={"name": "x"}), 403)


async def test_enapter_clients_see_devices_with_tags_and_metadata_unchanged(
    gateway: GatewayProcess, installer_token: str, tmp_path: Path
) -> None:
    async with api(gateway, installer_token) as http:
        ids = {(await create(http, "standalone", f"Device {n}"))["id"] for n in range(3)}
        ok(await http.post("/v3/tags", json={"name": "roof"}))
        ok(await http.post("/v3/metadata_fields", json={"name": "serial", "type": "text"}))
        for device_id in ids:
            ok(await http.put(f"/v3/devices/{device_id}/tags/roof"))
            ok(await http.patch(f"/v3/devices/{device_id}/metadata", json={"values": {"serial": device_id}}))
        plain = ok(await http.get("/v3/devices"))
    config = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with enapter.http.api.Client(config=config) as client:
        async with client.devices.list() as stream:
            listed = [device async for device in stream]
        async with client.devices.list(expand_connectivity=True) as stream:
            expanded = [device async for device in stream]
    assert (
        {device.id for device in listed}
        == {device.id for device in expanded}
        == ids | {device["id"] for device in plain["devices"] if device["type"] == "GATEWAY"}
    )
    # Nothing new appears in what the clients read unless asked for.
    assert all("tags" not in device and "metadata" not in device for device in plain["devices"])
    lines = object_lines(enapter_cli(gateway, installer_token, tmp_path, "device", "list"))
    assert {line["id"] for line in lines} == {device.id for device in listed}
    assert all("tags" not in line and "metadata" not in line for line in lines)
