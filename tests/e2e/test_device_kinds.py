"""The site, device management and every device kind, through the Enapter SDK's HTTP client; a
UCM publishing for its Lua device with a `device/3.0` blueprint over real MQTT."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiomqtt
import enapter
import httpx
import pytest
from enapter.http.api.devices import DeviceType, MQTTProtocol
from enapter.http.api.devices.time_sync_protocol import TimeSyncProtocol
from enapter.http.api.sites import Location

from tests.blueprint_files import write_blueprint
from tests.gateway_process import GatewayProcess, eventually, running_gateway

LUA_MANIFEST = """\
blueprint_spec: device/3.0
display_name: Inverter on a UCM
implements: [energy.inverter]
runtime:
  type: lua
  options:
    file: main.lua
properties:
  fw_ver: {display_name: Firmware, type: string}
telemetry:
  voltage: {display_name: Voltage, type: float, unit: V}
  mode:
    display_name: Mode
    type: string
    enum:
      "off": {display_name: "Off"}
      "on": {display_name: "On"}
  conn_alerts: {display_name: Connection alerts, type: alerts}
alerts:
  overheat: {display_name: Overheat, severity: warning}
  comm_lost: {display_name: Communication lost, severity: info}
command_groups:
  control: {display_name: Control}
commands:
  reboot: {display_name: Reboot, group: control}
"""


def client(gateway: GatewayProcess, token: str) -> enapter.http.api.Client:
    return enapter.http.api.Client(config=enapter.http.api.Config(base_url=gateway.base_url, token=token))


async def test_site_get_update_and_refusals(gateway: GatewayProcess) -> None:
    owner = gateway.create_token("OWNER", name="owner")
    async with client(gateway, owner) as api:
        site = await api.sites.get(None)
        assert site.location is None
        berlin = Location(name="Berlin", latitude=52.52, longitude=13.405)
        updated = await api.sites.update(None, name="Plant", timezone="Europe/Berlin", location=berlin)
        assert (updated.name, updated.timezone, updated.location) == ("Plant", "Europe/Berlin", berlin)
        # python-sdk sends null for what it leaves alone.
        renamed = await api.sites.update(site.id, name="Plant 2")
        assert (renamed.name, renamed.timezone, renamed.location) == ("Plant 2", "Europe/Berlin", berlin)
        assert await api.sites.get(site.id) == renamed
        async with api.sites.list() as listed:
            assert [found.id async for found in listed] == [site.id]
        with pytest.raises(enapter.http.api.Error) as bad_zone:
            await api.sites.update(None, timezone="Mars/Olympus_Mons")
        assert "timezone" in bad_zone.value.message
        with pytest.raises(enapter.http.api.Error) as second:
            await api.sites.create("Another", "UTC")
        assert second.value.code == "conflict"
    async with httpx.AsyncClient(base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": owner}) as http:
        mine = (await http.get("/v3/users/me/sites")).json()
        assert mine["total_count"] == 1
        assert mine["sites"][0]["location"] == {"name": "Berlin", "latitude": 52.52, "longitude": 13.405}
        wrong = await http.patch("/v3/site", json={"location": {"name": "X", "latitude": 91}})
        assert wrong.status_code == 400
        assert "location.latitude" in wrong.json()["errors"][0]["message"]
    user = gateway.create_token("USER", name="user")
    async with client(gateway, user) as api:
        with pytest.raises(enapter.http.api.Error) as forbidden:
            await api.sites.update(None, name="Nope")
        assert forbidden.value.code == "forbidden"


async def test_device_update_and_delete(gateway: GatewayProcess, installer_token: str) -> None:
    async with client(gateway, installer_token) as api:
        first = await api.devices.create_standalone(name="First")
        second = await api.devices.create_standalone(name="Second")
        renamed = await api.devices.update(first.id, name="Renamed")
        assert (renamed.name, renamed.slug) == ("Renamed", "first")
        moved = await api.devices.update(first.id, slug="boiler_1")
        assert (moved.name, moved.slug) == ("Renamed", "boiler_1")
        assert (await api.devices.get("boiler_1")).id == first.id
        with pytest.raises(enapter.http.api.Error) as taken:
            await api.devices.update(second.id, slug="boiler_1")
        assert taken.value.code == "conflict"
        with pytest.raises(enapter.http.api.Error) as invalid:
            await api.devices.update(second.id, slug="Not A Slug")
        assert "slug" in invalid.value.message
        await api.devices.delete(second.id)
        with pytest.raises(enapter.http.api.Error) as gone:
            await api.devices.get(second.id)
        assert gone.value.code == "not_found"
    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": installer_token}
    ) as http:
        # The newest CLI sends "" for what it leaves alone.
        unchanged = await http.patch(
            f"/v3/sites/{first.site_id}/devices/{first.id}", json={"name": "", "slug": ""}
        )
        assert unchanged.json()["device"]["slug"] == "boiler_1"


async def test_vucm_lua_device_and_ucm(gateway: GatewayProcess, installer_token: str, tmp_path: Path) -> None:
    blueprint_dir = write_blueprint(
        tmp_path / "inverter", LUA_MANIFEST, **{"main.lua": "function main() end\n"}
    )
    async with client(gateway, installer_token) as api:
        vucm = await api.devices.create_vucm(name="Virtual UCM")
        assert vucm.type is DeviceType.VIRTUAL_UCM
        assert vucm.communication is not None
        hardware_id = vucm.communication.hardware_id
        assert hardware_id is not None
        assert hardware_id.startswith("V")
        assert len(hardware_id) == 33
        assert vucm.communication.channel_id == "ucm"
        # The same hardware id again: the same device.
        again = await api.devices.create_vucm(name="Virtual UCM", hardware_id=hardware_id)
        assert again.id == vucm.id

        blueprint = await api.blueprints.upload_directory(blueprint_dir)
        lua = await api.devices.create_lua(vucm.id, blueprint.id, name="Inverter")
        assert lua.type is DeviceType.LUA
        assert lua.blueprint_id == blueprint.id
        lua = await api.devices.get(lua.id, expand_communication=True, expand_manifest=True)
        assert lua.communication is not None
        assert lua.communication.type.value == "UCM_LUA"
        assert lua.communication.upstream_id == vucm.id
        assert lua.communication.hardware_id == hardware_id
        assert lua.manifest is not None
        assert lua.manifest["blueprint_spec"] == "device/3.0"
        assert (await api.devices.create_lua(vucm.id, blueprint.id, name="Inverter")).id == lua.id

        with pytest.raises(enapter.http.api.Error) as busy:
            await api.devices.delete(vucm.id)
        assert busy.value.code == "conflict"
        assert "inverter" in busy.value.message

        # The UCM connects for its Lua device: its messages come under the Lua device's channel.
        config = await api.devices.generate_communication_config(vucm.id, MQTTProtocol.MQTT)
        password = config.to_dto()["mqtt_credentials"]["password"]
        channel = lua.communication.channel_id
        now = int(time.time())
        async with aiomqtt.Client(
            "127.0.0.1", gateway.mqtt_port, username=hardware_id, password=password, timeout=5
        ) as ucm:
            await ucm.publish(
                f"v1/from/{hardware_id}/{channel}/v1/telemetry",
                json.dumps(
                    {
                        "timestamp": now,
                        "alerts": ["overheat"],
                        "conn_alerts": ["comm_lost", "modbus_timeout"],
                        "voltage": "high",
                        "mode": "on",
                    }
                ),
            )

        async def raised() -> list[str] | None:
            found = await api.devices.get(lua.id, expand_raised_alert_names=True)
            return found.raised_alert_names or None

        assert sorted(await eventually(raised, 10)) == ["comm_lost", "modbus_timeout", "overheat"]
        latest = await api.telemetry.latest({lua.id: ["voltage", "mode"]})
        voltage = latest[lua.id]["voltage"]
        assert voltage is not None
        assert voltage.value == "high"  # kept, though not a float

    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": installer_token}
    ) as http:
        body = (
            await http.get(f"/v3/devices/{lua.id}", params={"expand": "raised_alerts,manifest_mismatches"})
        ).json()["device"]
        severities = {alert["name"]: alert["severity"] for alert in body["raised_alerts"]}
        assert severities == {"overheat": "warning", "comm_lost": "info", "modbus_timeout": "error"}
        assert body["implemented_profiles"] == ["energy.inverter"]
        assert [(m["section"], m["attribute"]) for m in body["manifest_mismatches"]] == [
            ("telemetry", "voltage")
        ]
        manifest = (await http.get(f"/v3/devices/{lua.id}/manifest")).json()["manifest"]
        assert manifest["commands"]["reboot"]["group"] == "control"

        # A hardware UCM gets its config with the device; provisioning it again, new credentials.
        provisioned = await http.post(
            "/v3/provisioning/ucm", json={"hardware_id": "UCM0001", "protocol": "MQTT"}
        )
        assert provisioned.status_code == 200, provisioned.text
        first = provisioned.json()
        assert first["config"]["hardware_id"] == "UCM0001"
        assert first["config"]["channel_id"] == "ucm"
        repeat = (
            await http.post("/v3/provisioning/ucm", json={"hardware_id": "UCM0001", "protocol": "MQTT"})
        ).json()
        assert repeat["device_id"] == first["device_id"]
        assert (
            repeat["config"]["mqtt_credentials"]["password"]
            != first["config"]["mqtt_credentials"]["password"]
        )
        device = (await http.get(f"/v3/devices/{first['device_id']}")).json()["device"]
        assert device["type"] == "HARDWARE_UCM"
        bad = await http.post("/v3/provisioning/vucm", json={"name": "x", "hardware_id": "V123"})
        assert bad.status_code == 400

    async with client(gateway, installer_token) as api:
        await api.devices.delete(lua.id)
        await api.devices.delete(vucm.id)
        async with api.devices.list() as listed:
            remaining = {device.id async for device in listed}
        assert vucm.id not in remaining
        assert lua.id not in remaining


async def test_generated_configs_name_the_configured_time_source(tmp_path: Path) -> None:
    time_source = {"protocol": "http", "host": "time.plant.lan", "port": 8123}
    with running_gateway(tmp_path, {"time_sync": time_source}) as gateway:
        async with client(gateway, gateway.create_token("INSTALLER")) as api:
            device = await api.devices.create_standalone(name="Clocked")
            config = await api.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
    assert config.time_sync_protocol is TimeSyncProtocol.HTTP
    assert (config.time_sync_host, config.time_sync_port) == ("time.plant.lan", 8123)


async def test_the_default_time_source_is_ntp_on_the_gateway(
    gateway: GatewayProcess, installer_token: str
) -> None:
    async with client(gateway, installer_token) as api:
        device = await api.devices.create_standalone(name="Clocked")
        config = await api.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
    assert config.time_sync_protocol is TimeSyncProtocol.NTP
    # The host devices are sent to for the broker (the test config's mqtt.advertised_host).
    assert (config.time_sync_host, config.time_sync_port) == (config.mqtt_host, 123)
