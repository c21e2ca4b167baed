"""The Enapter Python SDK's own command line (`python -m enapter http api ...`) against the daemon.

Every subcommand runs as its own process, configured only by `ENAPTER_HTTP_API_BASE_URL` and
`ENAPTER_HTTP_API_TOKEN`, as an operator would use it; what it claims to have done is read back
from the gateway (with the CLI itself or over plain HTTP).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.blueprint_files import write_blueprint
from tests.gateway_process import GatewayProcess

CLI_TIMEOUT_S = 60

CLI_MANIFEST = """\
blueprint_spec: "device/1.0"
display_name: "CLI blueprint"
communication_module:
  product: ENP-VIRTUAL
telemetry:
  temperature:
    display_name: Temperature
    type: float
    unit: celsius
commands:
  reboot:
    display_name: Reboot
"""

LUA_MANIFEST = """\
blueprint_spec: device/3.0
display_name: CLI Lua device
runtime:
  type: lua
  options:
    file: main.lua
telemetry:
  voltage: {display_name: Voltage, type: float, unit: V}
command_groups:
  control: {display_name: Control}
commands:
  restart: {display_name: Restart, group: control}
"""

LUA_SCRIPT = "function main() end\n"


def enapter_cli(
    gateway: GatewayProcess, token: str, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m enapter http api <args>` against `gateway`, authenticated with `token`."""
    env = {
        **os.environ,
        "ENAPTER_HTTP_API_BASE_URL": gateway.base_url,
        "ENAPTER_HTTP_API_TOKEN": token,
    }
    return subprocess.run(
        [sys.executable, "-m", "enapter", "http", "api", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env,
        cwd=cwd,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a CLI run that must have exited 0 and logged no error."""
    detail = f"{result.args}\nexit {result.returncode}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout}"
    assert result.returncode == 0, detail
    assert error_records(result) == [], detail
    return result.stdout


def error_records(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The ERROR records of the SDK's JSON logging (one object a line on stderr)."""
    records: list[dict[str, Any]] = []
    for line in result.stderr.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("level") == "ERRO":
            records.append(record)
    return records


def one_object(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The single JSON object a successful `get`/`update`/`create` subcommand prints."""
    value = json.loads(succeeded(result))
    assert isinstance(value, dict), value
    return value


def object_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON object a line that a successful `list` subcommand prints."""
    return [json.loads(line) for line in succeeded(result).splitlines() if line.strip()]


def zip_blueprint(path: Path, manifest: str, **files: str) -> Path:
    """A blueprint zip file at `path`: `manifest.yml` and the given extra files."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.yml", manifest)
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def api(gateway: GatewayProcess, token: str) -> httpx.Client:
    """A plain HTTP client on the gateway's API, to read state back without the SDK."""
    return httpx.Client(base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": token}, timeout=10)


def test_site_get_and_update(gateway: GatewayProcess, installer_token: str, tmp_path: Path) -> None:
    """`site get` (with and without an id) and `site update` of name, timezone and location."""
    site = one_object(enapter_cli(gateway, installer_token, tmp_path, "site", "get"))
    assert site["name"] == "Test Site"
    assert one_object(enapter_cli(gateway, installer_token, tmp_path, "site", "get", site["id"])) == site

    updated = one_object(
        enapter_cli(
            gateway,
            installer_token,
            tmp_path,
            "site",
            "update",
            "--name",
            "CLI Plant",
            "--timezone",
            "Europe/Berlin",
            "--location",
            "Berlin,52.52,13.405",
        )
    )
    assert (updated["id"], updated["name"], updated["timezone"]) == (site["id"], "CLI Plant", "Europe/Berlin")
    assert updated["location"] == {"name": "Berlin", "latitude": 52.52, "longitude": 13.405}
    # Only the name, by id: the rest stays.
    renamed = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "site", "update", site["id"], "-n", "CLI Plant 2")
    )
    assert (renamed["name"], renamed["timezone"]) == ("CLI Plant 2", "Europe/Berlin")
    with api(gateway, installer_token) as http:
        stored = http.get("/v3/site").json()["site"]
    assert (stored["name"], stored["timezone"]) == ("CLI Plant 2", "Europe/Berlin")
    assert stored["location"] == {"name": "Berlin", "latitude": 52.52, "longitude": 13.405}


def test_standalone_devices_list_get_update_delete(
    gateway: GatewayProcess, installer_token: str, tmp_path: Path
) -> None:
    """`device create-standalone`, `device list`, `device get`, `device update` and `device delete`."""
    first = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "device", "create-standalone", "-n", "CLI first")
    )
    second = one_object(
        enapter_cli(
            gateway,
            installer_token,
            tmp_path,
            "device",
            "create-standalone",
            "-n",
            "CLI second",
            "--slug",
            "cli_second",
        )
    )
    assert (first["type"], first["name"]) == ("STANDALONE", "CLI first")
    assert (second["name"], second["slug"]) == ("CLI second", "cli_second")

    listed = object_lines(enapter_cli(gateway, installer_token, tmp_path, "device", "list"))
    by_id = {device["id"]: device for device in listed}
    assert {first["id"], second["id"]} <= set(by_id)
    assert by_id[first["id"]]["name"] == "CLI first"
    with api(gateway, installer_token) as http:
        assert {device["id"] for device in http.get("/v3/devices").json()["devices"]} == set(by_id)
    limited = object_lines(enapter_cli(gateway, installer_token, tmp_path, "device", "list", "--limit", "1"))
    assert len(limited) == 1

    # By slug, with communication expanded.
    got = one_object(enapter_cli(gateway, installer_token, tmp_path, "device", "get", "cli_second", "-u"))
    assert got["id"] == second["id"]
    assert got["communication"] is not None
    assert got["manifest"] is None  # not asked for

    renamed = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "device", "update", first["id"], "-n", "CLI renamed")
    )
    assert (renamed["name"], renamed["slug"]) == ("CLI renamed", first["slug"])
    moved = one_object(
        enapter_cli(
            gateway, installer_token, tmp_path, "device", "update", first["id"], "--slug", "cli_boiler"
        )
    )
    assert (moved["name"], moved["slug"]) == ("CLI renamed", "cli_boiler")
    with api(gateway, installer_token) as http:
        stored = http.get("/v3/devices/cli_boiler").json()["device"]
        assert (stored["id"], stored["name"]) == (first["id"], "CLI renamed")

        succeeded(enapter_cli(gateway, installer_token, tmp_path, "device", "delete", "cli_second"))
        assert http.get(f"/v3/devices/{second['id']}").status_code == 404
    remaining = {
        d["id"] for d in object_lines(enapter_cli(gateway, installer_token, tmp_path, "device", "list"))
    }
    assert second["id"] not in remaining
    assert first["id"] in remaining


def test_blueprint_upload_get_download_validate_assign(
    gateway: GatewayProcess, installer_token: str, tmp_path: Path
) -> None:
    """`blueprint upload` (directory and zip), `get`, `download` (both views), `validate`, and
    `device assign-blueprint` followed by `device get --manifest`."""
    directory = write_blueprint(tmp_path / "cli_blueprint", CLI_MANIFEST)
    from_directory = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "blueprint", "upload", str(directory))
    )
    archive = zip_blueprint(tmp_path / "cli_blueprint.zip", CLI_MANIFEST)
    from_zip = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "blueprint", "upload", str(archive))
    )
    # The same content, however it was packed, is the same blueprint.
    assert from_zip == from_directory
    blueprint_id = from_directory["id"]
    assert (
        one_object(enapter_cli(gateway, installer_token, tmp_path, "blueprint", "get", blueprint_id))
        == from_directory
    )

    original_dir, compiled_dir = tmp_path / "original", tmp_path / "compiled"
    original_dir.mkdir()
    compiled_dir.mkdir()
    succeeded(
        enapter_cli(
            gateway, installer_token, tmp_path, "blueprint", "download", blueprint_id, "-o", str(original_dir)
        )
    )
    succeeded(
        enapter_cli(
            gateway,
            installer_token,
            tmp_path,
            "blueprint",
            "download",
            blueprint_id,
            "--output",
            str(compiled_dir),
            "--view",
            "compiled",
        )
    )
    with zipfile.ZipFile(original_dir / f"{blueprint_id}.zip") as downloaded:
        assert downloaded.read("manifest.yml").decode() == CLI_MANIFEST
    with zipfile.ZipFile(compiled_dir / f"{blueprint_id}.zip") as downloaded:
        compiled = yaml.safe_load(downloaded.read("manifest.yml"))
    # Compiled: the defaults are filled in.
    assert compiled["telemetry"]["temperature"]["access_level"] == "readonly"
    assert compiled["commands"]["reboot"]["access_level"] == "user"

    # A valid blueprint validates (exit 0, nothing logged), as a directory and as a zip.
    succeeded(enapter_cli(gateway, installer_token, tmp_path, "blueprint", "validate", str(directory)))
    succeeded(enapter_cli(gateway, installer_token, tmp_path, "blueprint", "validate", str(archive)))
    broken = write_blueprint(
        tmp_path / "broken",
        CLI_MANIFEST.replace("type: float", "type: real").replace('display_name: "CLI blueprint"\n', ""),
    )
    refused = enapter_cli(gateway, installer_token, tmp_path, "blueprint", "validate", str(broken))
    assert refused.returncode != 0, refused.stdout
    # Both problems, each with its file and its path in the manifest.
    assert "manifest.yml: telemetry.temperature.type: must be one of" in refused.stderr, refused.stderr
    assert "manifest.yml: display_name: is required" in refused.stderr, refused.stderr

    device = one_object(
        enapter_cli(
            gateway, installer_token, tmp_path, "device", "create-standalone", "-n", "CLI blueprinted"
        )
    )
    assert device["blueprint_id"] != blueprint_id
    assigned = one_object(
        enapter_cli(
            gateway, installer_token, tmp_path, "device", "assign-blueprint", device["id"], "-b", blueprint_id
        )
    )
    assert assigned["blueprint_id"] == blueprint_id
    expanded = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "device", "get", device["id"], "--manifest")
    )
    assert expanded["blueprint_id"] == blueprint_id
    assert expanded["manifest"] is not None
    assert expanded["manifest"]["display_name"] == "CLI blueprint"
    assert set(expanded["manifest"]["telemetry"]) == {"temperature"}
    assert expanded["manifest"]["telemetry"]["temperature"]["type"] == "float"
    assert set(expanded["manifest"]["commands"]) == {"reboot"}


def test_vucm_and_lua_device(gateway: GatewayProcess, installer_token: str, tmp_path: Path) -> None:
    """`device create-vucm`, `device create-lua` on it with a `device/3.0` zip blueprint, and
    `device delete` refusing the vUCM while its Lua device exists."""
    vucm = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "device", "create-vucm", "-n", "CLI vUCM")
    )
    assert (vucm["type"], vucm["name"]) == ("VIRTUAL_UCM", "CLI vUCM")
    assert vucm["communication"] is not None
    hardware_id = vucm["communication"]["hardware_id"]
    assert hardware_id.startswith("V")

    archive = zip_blueprint(tmp_path / "lua.zip", LUA_MANIFEST, **{"main.lua": LUA_SCRIPT})
    blueprint = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "blueprint", "upload", str(archive))
    )
    lua = one_object(
        enapter_cli(
            gateway,
            installer_token,
            tmp_path,
            "device",
            "create-lua",
            "-r",
            vucm["id"],
            "-b",
            blueprint["id"],
            "-n",
            "CLI Lua",
            "-s",
            "cli_lua",
        )
    )
    assert (lua["type"], lua["name"], lua["slug"]) == ("LUA", "CLI Lua", "cli_lua")
    assert lua["blueprint_id"] == blueprint["id"]
    expanded = one_object(
        enapter_cli(gateway, installer_token, tmp_path, "device", "get", "cli_lua", "-u", "-m")
    )
    assert expanded["communication"] == {
        "type": "UCM_LUA",
        "upstream_id": vucm["id"],
        "hardware_id": hardware_id,
        "channel_id": expanded["communication"]["channel_id"],
    }
    assert expanded["manifest"]["runtime"]["options"]["file"] == "main.lua"
    assert set(expanded["manifest"]["telemetry"]) == {"voltage"}
    with api(gateway, installer_token) as http:
        stored_zip = http.get(f"/v3/blueprints/{blueprint['id']}/zip", params={"view": "ORIGINAL"}).content
    with zipfile.ZipFile(io.BytesIO(stored_zip)) as stored:
        assert stored.read("main.lua").decode() == LUA_SCRIPT

    # The vUCM still runs a Lua device: the gateway refuses, the SDK CLI logs the refusal.
    busy = enapter_cli(gateway, installer_token, tmp_path, "device", "delete", vucm["id"])
    errors = error_records(busy)
    assert len(errors) == 1, busy.stderr
    assert vucm["id"] in errors[0]["message"]
    assert "code=conflict" in errors[0]["message"]
    assert "cli_lua" in errors[0]["message"]  # names what is in the way
    with api(gateway, installer_token) as http:
        assert http.get(f"/v3/devices/{vucm['id']}").status_code == 200
        assert http.get(f"/v3/devices/{lua['id']}").status_code == 200

        # The Lua device first, then its vUCM, in one call.
        succeeded(enapter_cli(gateway, installer_token, tmp_path, "device", "delete", lua["id"], vucm["id"]))
        assert http.get(f"/v3/devices/{lua['id']}").status_code == 404
        assert http.get(f"/v3/devices/{vucm['id']}").status_code == 404
