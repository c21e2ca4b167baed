"""Blueprint packages (archive + manifest checked together) and messages against their manifest."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.blueprints.archive import read_archive, write_archive
from gateway.blueprints.conformance import UNDECLARED, check_properties, check_telemetry, readable
from gateway.blueprints.manifest import parse_manifest
from gateway.blueprints.package import BlueprintError, compiled_archive, load_package
from gateway.model import Mismatch, Properties, Role, Telemetry

LUA_MANIFEST = b"""\
blueprint_spec: device/3.0
display_name: "Heat Pump #2"
runtime:
  type: lua
  options:
    file: src/main.lua
properties:
  model: {display_name: Model, type: string}
  secret: {display_name: Secret, type: string, access_level: installer}
telemetry:
  temperature: {display_name: Temperature, type: float, aliases: [temp]}
  state: {display_name: State, type: string, enum: [idle, heating]}
  conn_alerts: {display_name: Connection alerts, type: alerts}
alerts:
  overheat: {display_name: Overheat, severity: warning}
"""


def zipped(files: dict[str, bytes]) -> bytes:
    return write_archive(files)


def test_a_lua_blueprint_with_its_file_loads() -> None:
    package = load_package(zipped({"manifest.yml": LUA_MANIFEST, "src/main.lua": b"-- lua"}))
    assert package.name == "heat_pump_2"
    assert set(package.files) == {"manifest.yml", "src/main.lua"}
    assert package.manifest.telemetry["state"].enum == ("idle", "heating")


def test_a_missing_lua_file_is_reported() -> None:
    with pytest.raises(BlueprintError) as raised:
        load_package(zipped({"manifest.yml": LUA_MANIFEST}))
    assert raised.value.problems == ("missed file src/main.lua",)


def test_manifest_problems_name_the_file_and_the_path() -> None:
    broken = LUA_MANIFEST.replace(b"type: float", b"type: double")
    with pytest.raises(BlueprintError) as raised:
        load_package(zipped({"manifest.yml": broken, "src/main.lua": b""}))
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("manifest.yml: telemetry.temperature.type:")


def test_archive_problems_come_through() -> None:
    with pytest.raises(BlueprintError) as raised:
        load_package(b"PK not really")
    assert raised.value.problems == ("not a zip archive",)


def test_the_same_files_zipped_differently_have_one_digest() -> None:
    files = {"manifest.yml": LUA_MANIFEST, "src/main.lua": b"-- lua"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in reversed(list(files)):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 5, 17, 1, 2, 3)), files[name])
    assert load_package(buffer.getvalue()).digest == load_package(zipped(files)).digest
    changed = dict(files, **{"src/main.lua": b"-- lub"})
    assert load_package(zipped(changed)).digest != load_package(zipped(files)).digest


def test_the_compiled_archive_is_an_uploadable_blueprint_with_defaults_filled() -> None:
    original = zipped({"manifest.yml": LUA_MANIFEST, "src/main.lua": b"-- lua"})
    package = load_package(original)
    compiled = compiled_archive(original, package.manifest.compiled)
    files = read_archive(compiled).files
    assert files["src/main.lua"] == b"-- lua"
    again = parse_manifest(files["manifest.yml"])
    assert again == package.manifest
    assert b"access_level: readonly" in files["manifest.yml"]
    assert load_package(compiled).manifest == package.manifest


@settings(max_examples=200, deadline=None)
@given(
    manifest=st.binary(max_size=2000),
    extra=st.dictionaries(st.sampled_from(["a.lua", "src/main.lua"]), st.binary()),
)
def test_any_manifest_bytes_give_a_package_or_problems(manifest: bytes, extra: dict[str, bytes]) -> None:
    try:
        package = load_package(zipped({"manifest.yml": manifest, **extra}))
    except BlueprintError as exc:
        problems = exc.problems
    else:
        assert package.manifest.display_name
        return
    assert problems
    assert all(isinstance(problem, str) and problem for problem in problems)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=4000))
def test_any_bytes_give_a_package_or_problems(data: bytes) -> None:
    with pytest.raises(BlueprintError):
        load_package(data)  # random bytes are never a zip with a valid manifest


MANIFEST = parse_manifest(LUA_MANIFEST)


def test_alerts_attributes_join_the_alerts_list_and_mismatches_are_listed() -> None:
    message = Telemetry(
        timestamp=1.0,
        values={"temperature": "hot", "state": "cooling", "conn_alerts": ["comm_lost"], "extra": 1},
        alerts=("overheat",),
    )
    checked, mismatches = check_telemetry(MANIFEST, message)
    assert checked.alerts == ("overheat", "comm_lost")
    assert checked.values == message.values  # nothing dropped
    assert [(m.attribute, m.reason == UNDECLARED) for m in mismatches] == [
        ("temperature", False),
        ("state", False),
        ("extra", True),
    ]
    assert all(m.section == "telemetry" for m in mismatches)


def test_alerts_attribute_alone_raises_and_a_malformed_one_is_flagged_not_raised() -> None:
    checked, mismatches = check_telemetry(MANIFEST, Telemetry(1.0, {"conn_alerts": ["a", "b"]}, None))
    assert checked.alerts == ("a", "b")
    assert mismatches == ()
    checked, mismatches = check_telemetry(MANIFEST, Telemetry(1.0, {"conn_alerts": "a"}, None))
    assert checked.alerts is None
    assert [m.attribute for m in mismatches] == ["conn_alerts"]


def test_a_conforming_message_is_unchanged() -> None:
    # `temp` is an alias of `temperature`: what older firmware still sends is declared too.
    message = Telemetry(1.0, {"temperature": 20, "temp": 21.5, "state": "idle", "conn_alerts": []}, None)
    assert check_telemetry(MANIFEST, message) == (message, ())
    _, mismatches = check_telemetry(MANIFEST, Telemetry(1.0, {"temp": "warm"}, None))
    assert [(m.attribute, m.reason == UNDECLARED) for m in mismatches] == [("temp", False)]


def test_properties_are_checked_too() -> None:
    assert check_properties(MANIFEST, Properties(1.0, {"model": "X", "serial": "1"})) == (
        Mismatch("properties", "serial", UNDECLARED),
    )


def test_readable_follows_access_levels() -> None:
    values = {"model": "X", "secret": "s", "undeclared": 1}
    assert readable(MANIFEST, "properties", values, Role.OWNER) == {"model": "X", "undeclared": 1}
    assert readable(MANIFEST, "properties", values, Role.INSTALLER) == values
    assert readable(None, "properties", values, Role.READONLY) == values
