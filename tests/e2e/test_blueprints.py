"""Blueprints end to end, through the Enapter SDK's HTTP client and an SDK standalone device.

A blueprint for the test peer (`tests.peers.sdk_device`) is written in the SDK examples' format,
zipped by the SDK itself (`upload_directory`), uploaded, validated, downloaded in both views and
assigned; then the device's commands, telemetry and properties follow the manifest.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import enapter
import httpx
import pytest
import yaml
from enapter.http.api.commands import ExecutionState
from enapter.http.api.devices import DeviceConnectivityStatus, MQTTProtocol

from tests.blueprint_files import write_blueprint
from tests.gateway_process import GatewayProcess, eventually, running_gateway
from tests.peers.process import start_peer, stop_peer

# The peer sends properties vendor/model/serial_number and telemetry counter/healthy; `model` is
# left out on purpose (kept, but flagged), `serial_number` and `healthy` need higher roles.
PEER_MANIFEST = """\
blueprint_spec: "device/1.0"
display_name: "SDK test peer"
description: "The standalone device of the gateway's test suite."
vendor: "enapter-gateway-tests"
communication_module:
  product: ENP-VIRTUAL
properties:
  vendor:
    display_name: Vendor
    type: string
  serial_number:
    display_name: Serial number
    type: string
    access_level: owner
telemetry:
  counter:
    display_name: Counter
    type: integer
  healthy:
    display_name: Healthy
    type: boolean
    access_level: installer
alerts:
  overheat:
    display_name: Overheat
    severity: warning
commands:
  add:
    display_name: Add two numbers
    aliases: [plus]
    arguments:
      a:
        display_name: A
        type: float
        required: true
      b:
        display_name: B
        type: float
        required: true
  fail:
    display_name: Fail on purpose
    access_level: owner
    arguments:
      reason:
        display_name: Reason
        type: string
  say:
    display_name: Write a log line
    access_level: readonly
    arguments:
      message: {display_name: Message, type: string, required: true}
      severity: {display_name: Severity, type: string, enum: [debug, info, warning, error]}
      persist: {display_name: Persist, type: boolean}
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    (tmp_path / "gw").mkdir()
    with running_gateway(tmp_path / "gw", {"commands": {"timeout": 5.0}}) as process:
        yield process


@dataclass(frozen=True, slots=True)
class Clients:
    installer: enapter.http.api.Client
    user: enapter.http.api.Client
    gateway: GatewayProcess


@pytest.fixture
async def clients(gateway: GatewayProcess) -> AsyncIterator[Clients]:
    installer = gateway.create_token("INSTALLER")
    user = gateway.create_token("USER", name="user")

    def client(token: str) -> enapter.http.api.Client:
        return enapter.http.api.Client(config=enapter.http.api.Config(base_url=gateway.base_url, token=token))

    async with client(installer) as as_installer, client(user) as as_user:
        yield Clients(as_installer, as_user, gateway)


async def test_upload_validate_get_download(clients: Clients, tmp_path: Path) -> None:
    blueprints = clients.installer.blueprints
    directory = write_blueprint(tmp_path / "peer", PEER_MANIFEST)
    uploaded = await blueprints.upload_directory(directory)
    # The same content, zipped again (other timestamps), is the same blueprint.
    again = await blueprints.upload_directory(directory)
    assert again.id == uploaded.id
    assert again.created_at == uploaded.created_at
    assert (await blueprints.get(uploaded.id)).id == uploaded.id
    await blueprints.validate_directory(directory)

    original = await blueprints.download(uploaded.id, enapter.http.api.blueprints.BlueprintView.ORIGINAL)
    with zipfile.ZipFile(io.BytesIO(original)) as archive:
        assert archive.read("manifest.yml").decode() == PEER_MANIFEST
    compiled = await blueprints.download(uploaded.id, enapter.http.api.blueprints.BlueprintView.COMPILED)
    with zipfile.ZipFile(io.BytesIO(compiled)) as archive:
        manifest = yaml.safe_load(archive.read("manifest.yml"))
    # Compiled: defaults filled in.
    assert manifest["telemetry"]["counter"]["access_level"] == "readonly"
    assert manifest["commands"]["add"]["access_level"] == "user"
    assert manifest["telemetry"]["healthy"]["access_level"] == "installer"

    broken = write_blueprint(
        tmp_path / "broken",
        PEER_MANIFEST.replace("type: integer", "type: int").replace('display_name: "SDK test peer"\n', ""),
    )
    with pytest.raises(enapter.http.api.MultiError) as raised:
        await blueprints.validate_directory(broken)
    messages = [error.message for error in raised.value.errors]
    assert any("telemetry.counter.type" in message for message in messages), messages
    assert any("display_name" in message for message in messages), messages
    # Uploading it is refused with the same problems.
    with pytest.raises(enapter.http.api.Error) as refused:
        await blueprints.upload_directory(broken)
    assert refused.value.code == "invalid_blueprint"
    assert refused.value.details is not None
    assert len(refused.value.details["validation_errors"]) == len(messages)

    async with httpx.AsyncClient(base_url=clients.gateway.base_url) as http:
        # Validation and the archive download need no token (enapter-http-api.md §8).
        empty = await http.post("/v3/blueprints/validate", content=b"not a zip")
        assert empty.status_code == 200
        assert empty.json()["validation_errors"] == ["not a zip archive"]
        assert (await http.get(f"/v3/blueprints/{uploaded.id}/zip?view=ORIGINAL")).content == original
        # The docs' multipart form upload gives the same blueprint.
        token = clients.gateway.create_token("OWNER", name="owner")
        form = await http.post(
            "/v3/blueprints/upload",
            files={"data": ("peer.zip", original, "application/zip")},
            headers={"X-Enapter-Auth-Token": token},
        )
        assert form.status_code == 200, form.text
        assert form.json()["blueprint"]["id"] == uploaded.id
        named = await http.get(
            "/v3/blueprints/enapter/sdk_test_peer/latest", headers={"X-Enapter-Auth-Token": token}
        )
        assert named.json()["blueprint"]["id"] == uploaded.id
        for path in ("/v3/blueprints/device_profiles/download", "/v3/blueprints/download_device_profiles"):
            profiles = await http.get(path, headers={"X-Enapter-Auth-Token": token})
            assert profiles.headers["Content-Type"] == "application/zip"
            with zipfile.ZipFile(io.BytesIO(profiles.content)) as archive:
                assert archive.namelist() == ["README.txt"]
        # Uploaded profiles are what both paths serve from then on.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("energy/battery.yml", "id: energy.battery\n")
        stored = await http.post(
            "/v3/blueprints/upload_device_profiles",
            content=buffer.getvalue(),
            headers={"X-Enapter-Auth-Token": token},
        )
        assert stored.json() == {"files": 1}
        for path in ("/v3/blueprints/device_profiles/download", "/v3/blueprints/download_device_profiles"):
            profiles = await http.get(path, headers={"X-Enapter-Auth-Token": token})
            with zipfile.ZipFile(io.BytesIO(profiles.content)) as archive:
                assert archive.read("energy/battery.yml") == b"id: energy.battery\n"


@dataclass(frozen=True, slots=True)
class Peer:
    device_id: str
    blueprint_id: str


@pytest.fixture
async def peer(clients: Clients, tmp_path: Path) -> AsyncIterator[Peer]:
    """The SDK peer, online, with the blueprint above assigned."""
    admin = clients.installer
    device = await admin.devices.create_standalone(name="Blueprinted")
    config = await admin.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
    blueprint = await admin.blueprints.upload_directory(write_blueprint(tmp_path / "peer", PEER_MANIFEST))
    assigned = await admin.devices.assign_blueprint(device.id, blueprint.id)
    assert assigned.blueprint_id == blueprint.id
    process = start_peer(base64.b64encode(json.dumps(config.to_dto()).encode()).decode())
    try:

        async def online() -> bool:
            found = await admin.devices.get(device.id, expand_connectivity=True, expand_properties=True)
            assert found.connectivity is not None
            latest = await admin.telemetry.latest({device.id: ["counter"]})
            return (
                found.connectivity.status is DeviceConnectivityStatus.ONLINE
                and bool(found.properties)
                and latest[device.id]["counter"] is not None
            )

        await eventually(online, 20)
        yield Peer(device.id, blueprint.id)
    finally:
        stop_peer(process)


async def test_manifest_shapes_commands_and_reads(clients: Clients, peer: Peer) -> None:
    device = await clients.user.devices.get(peer.device_id, expand_manifest=True, expand_properties=True)
    assert device.manifest is not None
    assert set(device.manifest["telemetry"]) == {"counter", "healthy"}
    assert device.manifest["commands"]["add"]["aliases"] == ["plus"]
    # USER may not read serial_number (owner) but sees the undeclared `model`, which is kept.
    assert device.properties is not None
    assert device.properties["vendor"] == "enapter-gateway-tests"
    assert device.properties["model"] == "sdk-peer"
    assert "serial_number" not in device.properties
    as_installer = await clients.installer.devices.get(peer.device_id, expand_properties=True)
    assert as_installer.properties is not None
    assert as_installer.properties["serial_number"] == "PEER-0001"

    # `healthy` (installer) is left out for USER, as if it did not exist.
    latest = await clients.user.telemetry.latest({peer.device_id: ["counter", "healthy"]})
    assert latest[peer.device_id]["counter"] is not None
    assert latest[peer.device_id]["healthy"] is None
    latest = await clients.installer.telemetry.latest({peer.device_id: ["healthy"]})
    healthy = latest[peer.device_id]["healthy"]
    assert healthy is not None
    assert healthy.value is True

    commands = clients.user.commands
    done = await commands.execute(peer.device_id, "add", {"a": 2, "b": 3})
    assert done.state is ExecutionState.SUCCESS
    assert done.response is not None
    assert done.response.payload == {"result": 5}
    # An alias runs the declared command; the request keeps the name the caller used.
    aliased = await commands.execute(peer.device_id, "plus", {"a": 1, "b": 1})
    assert aliased.state is ExecutionState.SUCCESS
    assert aliased.request.name == "plus"
    assert aliased.request.manifest_name == "add"
    with pytest.raises(enapter.http.api.Error) as undeclared:
        await commands.execute(peer.device_id, "hang", {})
    assert undeclared.value.code == "command_not_declared"
    with pytest.raises(enapter.http.api.Error) as too_low:
        await commands.execute(peer.device_id, "fail", {"reason": "x"})
    assert too_low.value.code == "forbidden"
    with pytest.raises(enapter.http.api.Error) as bad_arguments:
        await commands.execute(peer.device_id, "add", {"a": "two"})
    assert bad_arguments.value.code == "invalid_command_arguments"
    assert bad_arguments.value.details is not None
    assert sorted(bad_arguments.value.details["problems"]) == [
        "arguments.a: must be a number",
        "arguments.b: is required",
    ]
    # A READONLY token may run what the manifest opens to readonly, and nothing else.
    reader = clients.gateway.create_token("READONLY", name="reader")
    async with enapter.http.api.Client(
        config=enapter.http.api.Config(base_url=clients.gateway.base_url, token=reader)
    ) as as_reader:
        said = await as_reader.commands.execute(
            peer.device_id, "say", {"message": "hi", "severity": "info", "persist": False}
        )
        assert said.state is ExecutionState.SUCCESS
        with pytest.raises(enapter.http.api.Error) as not_for_readers:
            await as_reader.commands.execute(peer.device_id, "add", {"a": 1, "b": 2})
        assert not_for_readers.value.code == "forbidden"
    # Refused commands never reached the device: no execution was recorded for them.
    async with commands.list_executions(peer.device_id) as executions:
        names = [execution.request.name async for execution in executions]
    assert names == ["add", "plus", "say"]


async def test_mismatches_are_kept_and_flagged(clients: Clients, peer: Peer) -> None:
    async with httpx.AsyncClient(base_url=clients.gateway.base_url) as http:
        token = clients.gateway.create_token("READONLY", name="reader")
        response = await http.get(
            f"/v3/devices/{peer.device_id}",
            params={"expand": "manifest_mismatches,properties"},
            headers={"X-Enapter-Auth-Token": token},
        )
    body = response.json()["device"]
    assert body["properties"]["model"] == "sdk-peer"
    flagged = {(item["section"], item["attribute"]): item for item in body["manifest_mismatches"]}
    assert set(flagged) == {("properties", "model")}
    assert flagged[("properties", "model")]["reason"] == "not declared in the manifest"
    assert flagged[("properties", "model")]["count"] >= 1
    assert clients.gateway.metrics()['gateway_manifest_mismatches_total{section="properties"}'] >= 1


async def test_manifests_survive_a_restart(clients: Clients, tmp_path: Path) -> None:
    """The device -> manifest catalog is rebuilt from the store at start-up."""
    admin = clients.installer
    device = await admin.devices.create_standalone(name="Restarted")
    blueprint = await admin.blueprints.upload_directory(write_blueprint(tmp_path / "peer", PEER_MANIFEST))
    await admin.devices.assign_blueprint(device.id, blueprint.id)
    gateway = clients.gateway
    assert gateway.stop() == 0
    gateway.start()
    token = gateway.create_token("USER", name="after-restart")
    async with enapter.http.api.Client(
        config=enapter.http.api.Config(base_url=gateway.base_url, token=token)
    ) as as_user:
        with pytest.raises(enapter.http.api.Error) as undeclared:
            await as_user.commands.execute(device.id, "hang", {})
        assert undeclared.value.code == "command_not_declared"
        # Declared, so it is sent; the device is offline, so the execution says so.
        offline = await as_user.commands.execute(device.id, "plus", {"a": 1, "b": 2})
        assert offline.state is ExecutionState.ERROR
        assert offline.request.manifest_name == "add"
        found = await as_user.devices.get(device.id, expand_manifest=True)
        assert found.blueprint_id == blueprint.id
        assert found.manifest is not None
        assert "add" in found.manifest["commands"]
