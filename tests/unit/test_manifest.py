"""Tests for gateway.blueprints.manifest: blueprint manifests (enapter-device-protocol.md §4)."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.blueprints.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_NESTING,
    Alert,
    AlertSeverity,
    Argument,
    Attribute,
    AttributeType,
    Command,
    Manifest,
    ManifestError,
    check_arguments,
    check_value,
    parse_manifest,
    validate,
)
from gateway.model import JsonValue, Role

# --- Helpers ------------------------------------------------------------------------------------

V1: dict[str, Any] = {
    "blueprint_spec": "device/1.0",
    "display_name": "RL-6 Simulator",
    "communication_module": {"product": "ENP-VIRTUAL"},
    "command_groups": {"manage": {"display_name": "Manage loads"}},
    "telemetry": {"r1": {"type": "boolean", "display_name": "R1 state"}},
    "commands": {
        "enable_load": {
            "display_name": "Enable load",
            "arguments": {"load": {"display_name": "Load", "type": "string", "enum": ["r1", "r2"]}},
        }
    },
}

V3: dict[str, Any] = {
    "blueprint_spec": "device/3.0",
    "display_name": "Battery inverter",
    "runtime": {"type": "lua", "options": {"file": "main.lua"}},
    "properties": {"model": {"type": "string", "display_name": "Model"}},
    "telemetry": {
        "voltage": {"type": "float", "display_name": "Voltage", "unit": "V"},
        "status": {"type": "string", "display_name": "Status", "enum": ["ok", "fault"]},
    },
    "alerts": {"overheat": {"severity": "error", "display_name": "Overheat"}},
    "command_groups": {"control": {"display_name": "Control"}},
    "commands": {
        "set_power": {
            "display_name": "Set power",
            "group": "control",
            "arguments": {"value": {"display_name": "Value", "type": "float", "min": 0, "max": 100}},
        },
        "read_config": {"display_name": "Read configuration", "group": "control"},
    },
}

BASES = {"v1": V1, "v3": V3}
DELETE = object()


def mutated(base: Mapping[str, Any], changes: Mapping[tuple[str, ...], object]) -> dict[str, Any]:
    """A deep copy of `base` with each path set to its value (DELETE removes it)."""
    doc: dict[str, Any] = copy.deepcopy(dict(base))
    for path, value in changes.items():
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {})
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return doc


def problems_of(document: object) -> tuple[str, ...]:
    with pytest.raises(ManifestError) as caught:
        validate(document)
    return caught.value.problems


def yaml_problems(text: str | bytes) -> tuple[str, ...]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    return caught.value.problems


def paths(problems: tuple[str, ...]) -> list[str]:
    return [problem.split(": ", 1)[0] for problem in problems]


def problem_paths(document: object) -> list[str]:
    try:
        validate(document)
    except ManifestError as exc:
        return paths(exc.problems)
    return []


# --- One valid and one invalid case per rule -----------------------------------------------------

# (base, changes, the one problem's path or None when the document is valid)
RULES: list[Any] = [
    # top level
    pytest.param("v1", {}, None, id="v1 base"),
    pytest.param("v3", {}, None, id="v3 base"),
    pytest.param("v3", {("blueprint_spec",): DELETE}, "blueprint_spec", id="spec missing"),
    pytest.param("v3", {("blueprint_spec",): "device/2.0"}, "blueprint_spec", id="spec unknown"),
    pytest.param("v3", {("display_name",): DELETE}, "display_name", id="display_name missing"),
    pytest.param("v3", {("display_name",): " "}, "display_name", id="display_name empty"),
    pytest.param(
        "v3", {("description",): "About", ("icon",): "battery", ("vendor",): "sma"}, None, id="texts"
    ),
    pytest.param("v3", {("license",): "MIT", ("author",): "alice"}, None, id="license author"),
    pytest.param("v3", {("description",): 5}, "description", id="description number"),
    pytest.param("v3", {("category",): "battery-systems"}, None, id="category"),
    pytest.param("v3", {("category",): "toasters"}, "category", id="category unknown"),
    pytest.param("v3", {("contributors",): ["alice", "bob"]}, None, id="contributors"),
    pytest.param("v3", {("contributors",): "alice"}, "contributors", id="contributors not list"),
    pytest.param("v3", {("contributors",): ["alice", 7]}, "contributors[1]", id="contributor number"),
    pytest.param("v3", {("support",): {"url": "https://x", "email": "a@b"}}, None, id="support"),
    pytest.param("v3", {("support",): {"phone": "123"}}, "support.phone", id="support unknown key"),
    pytest.param("v3", {("implements",): "energy.battery"}, None, id="implements string"),
    pytest.param("v3", {("implements",): ["a.b", "c.d"]}, None, id="implements list"),
    pytest.param("v3", {("implements",): ["a.b", 1]}, "implements[1]", id="implements number"),
    pytest.param("v3", {("units",): {"rpm": {"symbol": "rpm", "display_name": "Rpm"}}}, None, id="units"),
    pytest.param("v3", {("units",): {"rpm": {"display_name": "Rpm"}}}, "units.rpm.symbol", id="unit symbol"),
    pytest.param("v3", {("colour",): "red"}, "colour", id="unknown top key"),
    pytest.param("v3", {(".cloud",): {"anything": [1, {"x": None}]}}, None, id="dot key ignored"),
    pytest.param("v3", {("commands",): {}}, None, id="empty commands"),
    pytest.param("v3", {("commands",): None, ("alerts",): None}, None, id="null sections"),
    pytest.param("v3", {("telemetry",): []}, "telemetry", id="section not mapping"),
    pytest.param("v1", {("runtime",): {"type": "lua"}}, "runtime", id="runtime in v1"),
    pytest.param(
        "v3", {("communication_module",): {"product": "X"}}, "communication_module", id="module in v3"
    ),
    # v1 communication modules
    pytest.param("v1", {("communication_module", "lua_file"): "main.lua"}, None, id="lua_file"),
    pytest.param(
        "v1",
        {("communication_module", "lua"): {"dir": "src", "dependencies": ["enapter-ucm ~> 0.3"]}},
        None,
        id="lua dir",
    ),
    pytest.param(
        "v1", {("communication_module", "product"): DELETE}, "communication_module.product", id="no product"
    ),
    pytest.param(
        "v1",
        {("communication_module", "lua_file"): "a.lua", ("communication_module", "lua"): {"file": "b.lua"}},
        "communication_module.lua",
        id="lua_file and lua",
    ),
    pytest.param(
        "v1",
        {("communication_module", "lua"): {"file": "a.lua", "dir": "src"}},
        "communication_module.lua.dir",
        id="file and dir",
    ),
    pytest.param(
        "v1",
        {("communication_module",): DELETE, ("communication_modules",): {"main": {"product": "ENP-RS485"}}},
        None,
        id="communication_modules",
    ),
    pytest.param(
        "v1",
        {("communication_modules",): {"main": {"lua_file": "a.lua"}}},
        "communication_modules.main.product",
        id="communication_modules entry",
    ),
    pytest.param(
        "v1",
        {
            ("communication_modules",): {"main": {"product": "ENP-RS485"}},
            ("telemetry", "r1", "communication_module"): "other",
        },
        "telemetry.r1.communication_module",
        id="undeclared module",
    ),
    # v3 runtime and configuration
    pytest.param("v3", {("runtime", "requirements"): ["modbus"]}, None, id="requirements"),
    pytest.param("v3", {("runtime", "type"): "python"}, "runtime.type", id="runtime type"),
    pytest.param("v3", {("runtime", "type"): DELETE}, "runtime.type", id="runtime type missing"),
    pytest.param(
        "v3", {("runtime", "options", "dir"): "src"}, "runtime.options.dir", id="options file and dir"
    ),
    pytest.param(
        "v3", {("runtime", "options", "file"): "../x.lua"}, "runtime.options.file", id="file escapes"
    ),
    pytest.param("v3", {("runtime", "options", "file"): "/etc/x.lua"}, "runtime.options.file", id="absolute"),
    pytest.param("v3", {("runtime", "options", "luarocks"): ["net-url"]}, None, id="luarocks"),
    pytest.param(
        "v3", {("runtime", "options", "amalg_mode"): "fast"}, "runtime.options.amalg_mode", id="amalg"
    ),
    pytest.param("v3", {("configuration",): {"main": {"display_name": "Main"}}}, None, id="configuration"),
    pytest.param("v3", {("configuration",): {"main": 5}}, "configuration.main", id="configuration bucket"),
    pytest.param("v3", {("telemetry_preprocessor",): {"lua_file": "pre.lua"}}, None, id="preprocessor"),
    pytest.param(
        "v3", {("virtual_commands",): {}}, "virtual_commands.lua_file", id="virtual_commands lua_file"
    ),
    # properties and telemetry
    pytest.param(
        "v3", {("telemetry", "bad-name"): {"type": "float", "display_name": "X"}}, "telemetry.bad-name"
    ),
    pytest.param("v3", {("telemetry", "1st"): {"type": "float", "display_name": "X"}}, "telemetry.1st"),
    pytest.param(
        "v3", {("telemetry", "timestamp"): {"type": "float", "display_name": "T"}}, "telemetry.timestamp"
    ),
    pytest.param(
        "v3", {("telemetry", "alerts"): {"type": "alerts", "display_name": "A"}}, "telemetry.alerts"
    ),
    pytest.param(
        "v3", {("telemetry", "voltage", "type"): "volts"}, "telemetry.voltage.type", id="type unknown"
    ),
    pytest.param(
        "v3", {("telemetry", "voltage", "type"): DELETE}, "telemetry.voltage.type", id="type missing"
    ),
    pytest.param(
        "v3",
        {("telemetry", "voltage", "display_name"): DELETE},
        "telemetry.voltage.display_name",
        id="no name",
    ),
    pytest.param(
        "v3", {("telemetry", "conn"): {"type": "alerts", "display_name": "C"}}, None, id="alerts type"
    ),
    pytest.param(
        "v3", {("properties", "model", "type"): "alerts"}, "properties.model.type", id="alerts property"
    ),
    pytest.param("v3", {("properties", "tags", "type"): "array_of_strings"}, "properties.tags.display_name"),
    pytest.param("v3", {("properties", "cfg"): {"type": "json", "display_name": "C"}}, None, id="json"),
    pytest.param("v3", {("properties", "cfg"): {"type": "object", "display_name": "C"}}, None, id="object"),
    pytest.param(
        "v3",
        {("telemetry", "voltage", "acess_level"): "user"},
        "telemetry.voltage.acess_level",
        id="typo in key",
    ),
    pytest.param("v3", {("telemetry", "voltage", "access_level"): "Installer"}, None, id="access any case"),
    pytest.param(
        "v3",
        {("telemetry", "voltage", "access_level"): "admin"},
        "telemetry.voltage.access_level",
        id="access",
    ),
    pytest.param("v3", {("telemetry", "voltage", "unit"): 5}, "telemetry.voltage.unit", id="unit number"),
    pytest.param("v3", {("telemetry", "voltage", "auto_scale"): ["kV", "mV"]}, None, id="auto_scale"),
    pytest.param("v3", {("telemetry", "voltage", "json_schema"): "schema.json"}, None, id="json_schema"),
    pytest.param(
        "v3", {("telemetry", "voltage", "implements"): "lib.voltage"}, None, id="attribute implements"
    ),
    pytest.param("v3", {("telemetry", "voltage", "description"): "Line voltage"}, None, id="description"),
    pytest.param(
        "v3",
        {("telemetry", "status", "enum"): {"ok": {"display_name": "OK", "color": "green"}, "fault": None}},
        None,
        id="enum map",
    ),
    pytest.param(
        "v3",
        {("telemetry", "status", "enum"): {"ok": {"colour": "green"}}},
        "telemetry.status.enum.ok.colour",
        id="enum map item key",
    ),
    pytest.param(
        "v3", {("telemetry", "status", "enum"): ["ok", 1]}, "telemetry.status.enum[1]", id="enum type"
    ),
    pytest.param("v3", {("telemetry", "status", "enum"): []}, "telemetry.status.enum", id="enum empty"),
    pytest.param(
        "v3", {("telemetry", "status", "enum"): ["ok", "ok"]}, "telemetry.status.enum[1]", id="enum dup"
    ),
    pytest.param("v3", {("telemetry", "status", "enum"): "ok"}, "telemetry.status.enum", id="enum scalar"),
    pytest.param(
        "v3",
        {("telemetry", "mode"): {"type": "integer", "display_name": "M", "enum": {"1": {}, "x": {}}}},
        "telemetry.mode.enum.x",
        id="enum map key type",
    ),
    pytest.param(
        "v3",
        {("telemetry", "mode"): {"type": "json", "display_name": "M", "enum": [1]}},
        "telemetry.mode.enum",
        id="enum on json",
    ),
    pytest.param("v3", {("telemetry", "voltage", "aliases"): ["volts", "u"]}, None, id="aliases"),
    pytest.param(
        "v3", {("telemetry", "voltage", "aliases"): ["u-1"]}, "telemetry.voltage.aliases[0]", id="alias name"
    ),
    pytest.param(
        "v3",
        {("telemetry", "status", "aliases"): "voltage"},
        "telemetry.status.aliases",
        id="alias collision",
    ),
    pytest.param(
        "v1",
        {("telemetry", "r1", "communication_module"): "main"},
        None,
        id="v1 attribute communication_module",
    ),
    pytest.param(
        "v3",
        {("telemetry", "voltage", "communication_module"): "main"},
        "telemetry.voltage.communication_module",
        id="v3 attribute communication_module",
    ),
    # alerts
    pytest.param(
        "v3", {("alerts", "over-heat_2"): {"severity": "info", "display_name": "O"}}, None, id="alert name"
    ),
    pytest.param(
        "v3", {("alerts", "over heat"): {"severity": "info", "display_name": "O"}}, "alerts.over heat"
    ),
    pytest.param(
        "v3", {("alerts", "overheat", "severity"): "fatal"}, "alerts.overheat.severity", id="severity"
    ),
    pytest.param(
        "v3", {("alerts", "overheat", "severity"): DELETE}, "alerts.overheat.severity", id="no severity"
    ),
    pytest.param(
        "v3",
        {("alerts", "overheat", "display_name"): DELETE},
        "alerts.overheat.display_name",
        id="no alert name",
    ),
    pytest.param("v3", {("alerts", "overheat", "grace_period"): "1h30m"}, None, id="grace period"),
    pytest.param(
        "v3", {("alerts", "overheat", "grace_period"): "soon"}, "alerts.overheat.grace_period", id="bad grace"
    ),
    pytest.param(
        "v3", {("alerts", "overheat", "troubleshooting"): ["Check the fan"]}, None, id="troubleshooting"
    ),
    pytest.param(
        "v3",
        {("alerts", "overheat", "troubleshooting"): "Check the fan"},
        "alerts.overheat.troubleshooting",
        id="troubleshooting text",
    ),
    pytest.param("v3", {("alerts", "overheat", "telemetry"): ["voltage"]}, None, id="alert telemetry"),
    pytest.param(
        "v3",
        {("alerts", "overheat", "telemetry"): ["voltage", "temp"]},
        "alerts.overheat.telemetry[1]",
        id="alert telemetry undeclared",
    ),
    pytest.param("v3", {("alerts", "overheat", "code"): "E101"}, None, id="alert code"),
    pytest.param("v3", {("alerts", "overheat", "code"): 101}, "alerts.overheat.code", id="alert code number"),
    pytest.param(
        "v3",
        {("alerts", "overheat", "components"): ["fan"], ("alerts", "overheat", "conditions"): ["hot"]},
        None,
        id="components conditions",
    ),
    pytest.param("v3", {("alerts", "overheat", "level"): 1}, "alerts.overheat.level", id="alert unknown key"),
    # command groups
    pytest.param("v3", {("command_groups", "control", "ui"): {"icon": "wrench"}}, None, id="group ui"),
    pytest.param(
        "v3",
        {("command_groups", "control", "display_name"): DELETE},
        "command_groups.control.display_name",
        id="group display_name",
    ),
    pytest.param(
        "v3", {("command_groups", "control", "order"): 1}, "command_groups.control.order", id="group key"
    ),
    # commands
    pytest.param(
        "v3", {("commands", "set_power", "group"): DELETE}, "commands.set_power.group", id="v3 group"
    ),
    pytest.param(
        "v3", {("commands", "set_power", "group"): "other"}, "commands.set_power.group", id="v3 undeclared"
    ),
    pytest.param("v1", {("commands", "enable_load", "group"): "manage"}, None, id="v1 group"),
    pytest.param(
        "v1",
        {("commands", "enable_load", "group"): "other"},
        "commands.enable_load.group",
        id="v1 undeclared",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "display_name"): DELETE},
        "commands.set_power.display_name",
        id="cmd name",
    ),
    pytest.param(
        "v3", {("commands", "set-power"): {"display_name": "S", "group": "control"}}, "commands.set-power"
    ),
    pytest.param("v3", {("commands", "set_power", "description"): "Sets it"}, None, id="cmd description"),
    pytest.param("v3", {("commands", "set_power", "access_level"): "owner"}, None, id="cmd access"),
    pytest.param(
        "v3",
        {("commands", "set_power", "access_level"): 3},
        "commands.set_power.access_level",
        id="cmd access num",
    ),
    pytest.param(
        "v3", {("commands", "set_power", "ui"): {"icon": "power", "quick_access": True}}, None, id="ui"
    ),
    pytest.param("v3", {("commands", "set_power", "ui"): "power"}, "commands.set_power.ui", id="ui text"),
    pytest.param(
        "v3", {("commands", "set_power", "response"): {"ok": {"type": "boolean"}}}, None, id="response"
    ),
    pytest.param(
        "v3", {("commands", "set_power", "response"): 5}, "commands.set_power.response", id="response num"
    ),
    pytest.param(
        "v3",
        {
            ("commands", "set_power", "confirmation"): {
                "severity": "warning",
                "title": "Sure?",
                "description": "!",
            }
        },
        None,
        id="confirmation",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "confirmation"): {"severity": "error", "title": "Sure?"}},
        "commands.set_power.confirmation.severity",
        id="confirmation severity",
    ),
    pytest.param(
        "v3", {("commands", "set_power", "populate_values_command"): "read_config"}, None, id="populate"
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "populate_values_command"): "read_all"},
        "commands.set_power.populate_values_command",
        id="populate undeclared",
    ),
    pytest.param("v3", {("commands", "set_power", "virtual"): True}, None, id="virtual"),
    pytest.param(
        "v3", {("commands", "set_power", "virtual"): "yes"}, "commands.set_power.virtual", id="virtual"
    ),
    pytest.param("v3", {("commands", "set_power", "implements"): ["lib.power"]}, None, id="cmd implements"),
    pytest.param("v3", {("commands", "set_power", "aliases"): ["power", "setpower"]}, None, id="cmd aliases"),
    pytest.param(
        "v3",
        {("commands", "set_power", "aliases"): ["power", "read_config"]},
        "commands.set_power.aliases[1]",
        id="alias is another command",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "aliases"): ["cfg"], ("commands", "read_config", "aliases"): "cfg"},
        "commands.read_config.aliases",
        id="alias used twice",
    ),
    pytest.param(
        "v3",
        {
            ("commands", "read_config", "aliases"): ["go"],
            ("commands", "go"): {"display_name": "G", "group": "control"},
        },
        "commands.read_config.aliases[0]",
        id="alias is a later command",
    ),
    pytest.param(
        "v3", {("commands", "set_power", "timeout"): 5}, "commands.set_power.timeout", id="cmd unknown"
    ),
    # arguments
    pytest.param("v3", {("commands", "set_power", "arguments"): None}, None, id="null arguments"),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "type"): DELETE},
        "commands.set_power.arguments.value.type",
        id="arg type missing",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "display_name"): DELETE},
        "commands.set_power.arguments.value.display_name",
        id="arg display_name missing",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "tags"): {"display_name": "T", "type": "array_of_strings"}},
        "commands.set_power.arguments.tags.type",
        id="arg type array",
    ),
    pytest.param(
        "v3",
        {
            ("commands", "set_power", "arguments", "cfg"): {
                "display_name": "C",
                "type": "json",
                "json_schema": "s",
            }
        },
        None,
        id="arg json",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "required"): True},
        None,
        id="arg required",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "required"): "yes"},
        "commands.set_power.arguments.value.required",
        id="arg required text",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "min"): 200},
        "commands.set_power.arguments.value.min",
        id="min above max",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "max"): "100"},
        "commands.set_power.arguments.value.max",
        id="max text",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "name"): {"display_name": "N", "type": "string", "min": 1}},
        "commands.set_power.arguments.name.min",
        id="min on string",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "default"): 50},
        None,
        id="default fits",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "default"): 150},
        "commands.set_power.arguments.value.default",
        id="default above max",
    ),
    pytest.param(
        "v3",
        {("commands", "set_power", "arguments", "value", "default"): "50"},
        "commands.set_power.arguments.value.default",
        id="default text",
    ),
    pytest.param(
        "v1",
        {("commands", "enable_load", "arguments", "load", "default"): "r1"},
        None,
        id="default in enum",
    ),
    pytest.param(
        "v1",
        {("commands", "enable_load", "arguments", "load", "default"): "r9"},
        "commands.enable_load.arguments.load.default",
        id="default outside enum",
    ),
    pytest.param(
        "v1",
        {("commands", "enable_load", "arguments", "load", "enum"): ["r1", 2]},
        "commands.enable_load.arguments.load.enum[1]",
        id="arg enum type",
    ),
    pytest.param(
        "v1",
        {("commands", "enable_load", "arguments", "load", "format"): "connection_uri"},
        None,
        id="arg format",
    ),
    pytest.param(
        "v1",
        {("commands", "enable_load", "arguments", "load", "sensitive"): "no"},
        "commands.enable_load.arguments.load.sensitive",
        id="arg sensitive",
    ),
    pytest.param(
        "v1",
        {("commands", "enable_load", "arguments", "load", "dscription"): "x"},
        "commands.enable_load.arguments.load.dscription",
        id="arg typo",
    ),
    pytest.param(
        "v1",
        {("commands", "enable_load", "arguments", "bad-arg"): {"display_name": "B", "type": "string"}},
        "commands.enable_load.arguments.bad-arg",
        id="arg name",
    ),
]


@pytest.mark.parametrize(("base", "changes", "expected"), RULES)
def test_rule(base: str, changes: Mapping[tuple[str, ...], object], expected: str | None) -> None:
    found = problem_paths(mutated(BASES[base], changes))
    assert found == ([] if expected is None else [expected])


def test_typo_gets_a_suggestion() -> None:
    (problem,) = problems_of(mutated(V3, {("telemetry", "voltage", "acess_level"): "user"}))
    assert problem == "telemetry.voltage.acess_level: unknown key (did you mean access_level?)"


def test_wrong_type_names_the_choices() -> None:
    (problem,) = problems_of(mutated(V3, {("telemetry", "voltage", "type"): "volts"}))
    assert problem.startswith("telemetry.voltage.type: must be one of boolean, string, integer, float")


def test_every_problem_is_reported_in_document_order() -> None:
    doc = mutated(
        V3,
        {
            ("display_name",): DELETE,
            ("telemetry", "voltage", "type"): "volts",
            ("telemetry", "status", "enum"): ["ok", 2],
            ("alerts", "overheat", "severity"): "fatal",
            ("commands", "set_power", "arguments", "value", "min"): "low",
            ("zzz",): 1,
        },
    )
    assert problem_paths(doc) == [
        "display_name",
        "telemetry.voltage.type",
        "telemetry.status.enum[1]",
        "alerts.overheat.severity",
        "commands.set_power.arguments.value.min",
        "zzz",
    ]


def test_error_message_joins_the_problems() -> None:
    exc = ManifestError(["a: one", "b: two"])
    assert exc.problems == ("a: one", "b: two")
    assert str(exc) == "a: one; b: two"


# --- YAML specifics -----------------------------------------------------------------------------

MINIMAL_YAML = 'blueprint_spec: "device/1.0"\ndisplay_name: Minimal\n'


def test_minimal_yaml_parses_from_text_and_bytes() -> None:
    assert parse_manifest(MINIMAL_YAML) == parse_manifest(MINIMAL_YAML.encode())
    assert parse_manifest(MINIMAL_YAML).display_name == "Minimal"


def test_anchors_and_aliases_are_refused() -> None:
    text = MINIMAL_YAML + "telemetry:\n  a: &t {type: float, display_name: A}\n  b: *t\n"
    (problem,) = yaml_problems(text)
    assert problem.startswith("(document): anchors and aliases are not supported (line 4")


def test_billion_laughs_fails_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        previous, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    started = time.perf_counter()
    problems = yaml_problems("\n".join(lines))
    assert time.perf_counter() - started < 0.5
    assert "anchors and aliases are not supported" in problems[0]


@pytest.mark.parametrize(
    ("key", "read_as"),
    [
        ("on", "true"),
        ("off", "false"),
        ("yes", "true"),
        ("no", "false"),
        ("1", "1"),
        ("2024-01-31", "2024-01-31"),
        ("~", "null"),
    ],
)
def test_unquoted_non_string_keys_are_reported(key: str, read_as: str) -> None:
    # YAML 1.1 reads these keys as booleans, numbers, dates and null.
    text = MINIMAL_YAML + f"telemetry:\n  {key}:\n    type: boolean\n    display_name: X\n"
    assert yaml_problems(text) == (f"telemetry.{read_as}: key must be a string (quote it)",)


def test_quoted_yaml_keys_are_fine() -> None:
    text = MINIMAL_YAML + 'telemetry:\n  "on":\n    type: boolean\n    display_name: X\n'
    assert list(parse_manifest(text).telemetry) == ["on"]


def test_dates_become_iso_text() -> None:
    text = MINIMAL_YAML + "description: 2024-01-31\nauthor: 2001-12-14t21:59:43.10-05:00\n"
    compiled = parse_manifest(text).compiled
    assert compiled["description"] == "2024-01-31"
    assert compiled["author"] == "2001-12-14T21:59:43.100000-05:00"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("!!binary aGVsbG8=", "v: binary values are not supported"),
        ("!!set {a, b}", "v: sets are not supported"),
        (".nan", "v: must be a finite number"),
        ("-.inf", "v: must be a finite number"),
        ("!!omap [a: 1]", "v[0]: ordered maps and pairs are not supported"),
        ("123456789012345678901234567890", "v: integer does not fit in 64 bits"),
    ],
)
def test_values_json_cannot_hold_are_reported(value: str, problem: str) -> None:
    # `ui` is free-form, so only the value's JSON-ness is in question.
    text = MINIMAL_YAML + f"command_groups:\n  g:\n    display_name: G\n    ui: {{v: {value}}}\n"
    assert yaml_problems(text) == (f"command_groups.g.ui.{problem}",)


def test_duplicate_keys_are_reported() -> None:
    text = MINIMAL_YAML + (
        "telemetry:\n  r1: {type: boolean, display_name: R1}\n  r1: {type: boolean, display_name: R1}\n"
    )
    assert yaml_problems(text) == ("telemetry.r1: duplicate key (line 5, column 3)",)


def test_duplicate_keys_do_not_hide_other_problems() -> None:
    text = MINIMAL_YAML + "icon: a\nicon: b\ncolour: red\n"
    assert paths(yaml_problems(text)) == ["icon", "colour"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xfeb\x00", "(document): manifest is not UTF-8 text (bad byte at offset 0)"),
        ("a: \ud800", "(document): text holds a lone UTF-16 surrogate at offset 3"),
        ("", "(document): must be a mapping"),
        ("- a\n- b\n", "(document): must be a mapping"),
        ("just text", "(document): must be a mapping"),
        (
            MINIMAL_YAML + "---\n" + MINIMAL_YAML,
            "(document): holds more than one YAML document (line 3, column 1)",
        ),
        ("a: !!python/object:os.system x", "(document): invalid YAML: could not determine a constructor"),
        ("a: [1, 2\nb: 3\n", "(document): invalid YAML: did not find expected ',' or ']'"),
        ("a: 2024-13-01", "(document): invalid YAML value: month must be in 1..12"),
    ],
)
def test_unreadable_yaml(data: str | bytes, expected: str) -> None:
    (problem,) = yaml_problems(data)
    assert problem.startswith(expected)


def test_yaml_syntax_errors_carry_line_and_column() -> None:
    (problem,) = yaml_problems("a: 1\nb: [1, 2\nc: 3\n")
    assert problem.endswith("(line 3, column 2)")


def test_size_limit() -> None:
    padding = "#" * (MAX_MANIFEST_BYTES - len(MINIMAL_YAML) - 1) + "\n"
    assert parse_manifest(MINIMAL_YAML + padding).display_name == "Minimal"
    (problem,) = yaml_problems(MINIMAL_YAML + padding + "#")
    assert problem == f"(document): manifest is {MAX_MANIFEST_BYTES + 1} bytes, limit is {MAX_MANIFEST_BYTES}"


def nested_yaml(depth: int) -> str:
    return MINIMAL_YAML + "description: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"


def test_yaml_nesting_limit() -> None:
    # The top-level mapping is the first level.
    assert yaml_problems(nested_yaml(MAX_NESTING)) == ("description: must be a string",)
    (problem,) = yaml_problems(nested_yaml(MAX_NESTING + 1))
    assert problem.startswith(f"(document): nests deeper than {MAX_NESTING} levels")


def test_very_deep_yaml_is_refused_not_crashed() -> None:
    (problem,) = yaml_problems(MINIMAL_YAML + "description: " + "[" * 100_000)
    assert "nests deeper" in problem


def test_deep_json_document_is_refused_not_crashed() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    too_deep = "description" + "[0]" * (MAX_NESTING - 1)
    assert problem_paths(mutated(V3, {("description",): deep})) == ["description", too_deep]


def test_validate_refuses_values_json_does_not_have() -> None:
    doc = mutated(V3, {("description",): (1, 2), ("icon",): float("nan"), ("vendor",): b"x"})
    assert problem_paths(doc) == ["description", "icon", "vendor"]
    assert problem_paths({1: "x", "blueprint_spec": "device/3.0", "display_name": "D"}) == ["1"]


# --- Realistic manifests --------------------------------------------------------------------------

# examples/standalone/rl6-simulator/manifest.yml from Enapter's python-sdk.
RL6_YAML = """\
blueprint_spec: "device/1.0"

display_name: "RL-6 Simulator"

communication_module:
  product: ENP-VIRTUAL

command_groups:
  manage:
    display_name: Manage Loads

properties: {}

alerts: {}

telemetry:
  r1:
    display_name: R1 state
    type: boolean
  r2:
    display_name: R2 state
    type: boolean
  r3:
    display_name: R3 state
    type: boolean
  r4:
    display_name: R4 state
    type: boolean
  r5:
    display_name: R5 state
    type: boolean
  r6:
    display_name: R6 state
    type: boolean

commands:
  enable_load:
    display_name: Enable Load
    group: manage
    arguments:
      load:
        display_name: Load
        type: string
        enum:
          - r1
          - r2
          - r3
          - r4
          - r5
          - r6
  disable_load:
    display_name: Disable Load
    group: manage
    arguments:
      load:
        display_name: Load
        type: string
        enum:
          - r1
          - r2
          - r3
          - r4
          - r5
          - r6
"""


def test_rl6_simulator_manifest() -> None:
    manifest = parse_manifest(RL6_YAML)
    assert manifest.spec == "device/1.0"
    assert manifest.display_name == "RL-6 Simulator"
    assert list(manifest.telemetry) == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert manifest.telemetry["r3"] == Attribute(
        name="r3",
        type=AttributeType.BOOLEAN,
        display_name="R3 state",
        access_level=Role.READONLY,
        enum=None,
        unit=None,
        aliases=(),
    )
    assert manifest.properties == {}
    assert manifest.alerts == {}
    assert list(manifest.commands) == ["enable_load", "disable_load"]
    assert manifest.commands["disable_load"] == Command(
        name="disable_load",
        display_name="Disable Load",
        access_level=Role.USER,
        arguments={
            "load": Argument(
                name="load",
                type=AttributeType.STRING,
                display_name="Load",
                required=False,
                enum=("r1", "r2", "r3", "r4", "r5", "r6"),
                minimum=None,
                maximum=None,
            )
        },
        aliases=(),
    )
    assert manifest.referenced_files == ()


V3_YAML = """\
blueprint_spec: device/3.0
display_name: SMA Sunny Island
description: Battery inverter
icon: battery-charging
category: battery-systems
implements: energy.battery_inverter.3_phase
.cloud:
  category: battery
runtime:
  type: lua
  requirements: [modbus]
  options:
    file: ./src/main.lua
properties:
  serial_number: {type: string, display_name: Serial number}
  firmware: {type: string, display_name: Firmware, access_level: INSTALLER}
telemetry:
  status:
    type: string
    display_name: Status
    enum:
      "off": {display_name: "Off", color: purple-lighter}
      operating: {display_name: Operating, color: green}
  battery_soc: {type: float, unit: "%", display_name: State of charge, aliases: [soc]}
  mode:
    type: integer
    display_name: Mode
    enum:
      1: {display_name: Grid}
      2: {display_name: Island}
  conn_alerts: {type: alerts, display_name: Connection alerts, access_level: vendor}
alerts:
  communication_failed:
    severity: error
    display_name: Communication failed
    grace_period: 15s
    telemetry: [status]
    troubleshooting: [Check the cable]
  low_soc: {severity: warning, display_name: Low state of charge, .note: internal}
command_groups:
  config: {display_name: Configuration, ui: {icon: wrench}}
commands:
  write_configuration:
    display_name: Configure
    group: config
    populate_values_command: read_configuration
    access_level: Owner
    ui: {icon: wrench, mobile_quick_access: true}
    confirmation: {severity: warning, title: Sure?}
    arguments:
      address: {display_name: Address, type: string, required: true, format: connection_uri}
      unit_id: {display_name: Unit ID, type: integer, min: 1, max: 247, default: 3}
  read_configuration:
    display_name: Read configuration
    group: config
    aliases: get_configuration
configuration:
  connection:
    display_name: Connection
    access_level: owner
    parameters:
      address: {display_name: Address, type: string, required: true}
"""


def test_v3_manifest() -> None:
    manifest = parse_manifest(V3_YAML)
    assert manifest.spec == "device/3.0"
    assert manifest.implements == ("energy.battery_inverter.3_phase",)
    assert manifest.referenced_files == ("src/main.lua",)
    assert manifest.properties["firmware"].access_level is Role.INSTALLER
    assert manifest.telemetry["status"].enum == ("off", "operating")
    assert manifest.telemetry["mode"].enum == (1, 2)
    assert manifest.telemetry["battery_soc"].unit == "%"
    assert manifest.telemetry["battery_soc"].aliases == ("soc",)
    assert manifest.alert_attributes() == ("conn_alerts",)
    assert manifest.alerts["low_soc"] == Alert("low_soc", AlertSeverity.WARNING, "Low state of charge")
    write = manifest.commands["write_configuration"]
    assert write.access_level is Role.OWNER
    assert write.arguments["address"].required is True
    assert write.arguments["unit_id"].minimum == 1
    assert write.arguments["unit_id"].maximum == 247
    assert manifest.commands["read_configuration"].aliases == ("get_configuration",)


def test_compiled_form() -> None:
    compiled = parse_manifest(V3_YAML).compiled
    assert ".cloud" not in compiled
    assert compiled["blueprint_spec"] == "device/3.0"
    assert compiled["implements"] == ["energy.battery_inverter.3_phase"]
    assert list(compiled) == [
        "blueprint_spec",
        "display_name",
        "description",
        "icon",
        "category",
        "implements",
        "runtime",
        "properties",
        "telemetry",
        "alerts",
        "command_groups",
        "commands",
        "configuration",
    ]
    telemetry: Any = compiled["telemetry"]
    assert telemetry["status"]["access_level"] == "readonly"
    assert telemetry["conn_alerts"]["access_level"] == "vendor"
    assert list(telemetry["mode"]["enum"]) == ["1", "2"]
    properties: Any = compiled["properties"]
    assert properties["firmware"]["access_level"] == "installer"
    alerts: Any = compiled["alerts"]
    assert alerts["low_soc"] == {"severity": "warning", "display_name": "Low state of charge"}
    commands: Any = compiled["commands"]
    assert commands["write_configuration"]["access_level"] == "owner"
    assert commands["read_configuration"]["access_level"] == "user"
    assert commands["read_configuration"]["aliases"] == ["get_configuration"]
    assert commands["write_configuration"]["arguments"]["unit_id"]["required"] is False
    assert commands["write_configuration"]["arguments"]["address"]["required"] is True
    runtime: Any = compiled["runtime"]
    assert runtime["options"]["file"] == "./src/main.lua"


@pytest.mark.parametrize("text", [RL6_YAML, V3_YAML, MINIMAL_YAML])
def test_compiled_round_trips(text: str) -> None:
    manifest = parse_manifest(text)
    as_json = json.loads(json.dumps(manifest.compiled, allow_nan=False))
    assert validate(as_json) == manifest
    assert validate(as_json).compiled == as_json


@pytest.mark.parametrize("text", [RL6_YAML, V3_YAML])
def test_compiled_written_as_yaml_parses_back(text: str) -> None:
    # A downloaded "compiled" blueprint carries the compiled manifest as its manifest.yml.
    manifest = parse_manifest(text)
    assert parse_manifest(yaml.safe_dump(manifest.compiled, sort_keys=False)) == manifest


@pytest.mark.parametrize(
    ("value_type", "keys", "expected"),
    [
        ("integer", "{0: {}, -1: {}}", (0, -1)),
        ("float", "{0.5: {}, 2: {}, 1.0e+3: {}}", (0.5, 2, 1000.0)),
        ("boolean", "{true: {display_name: Enabled}, false: {}}", (True, False)),
        ("string", '{"1": {}, "true": {}}', ("1", "true")),
    ],
)
def test_enum_map_keys_follow_the_type_through_json(value_type: str, keys: str, expected: tuple[Any]) -> None:
    text = MINIMAL_YAML + f"telemetry:\n  x: {{type: {value_type}, display_name: X, enum: {keys}}}\n"
    manifest = parse_manifest(text)
    assert manifest.telemetry["x"].enum == expected
    assert validate(json.loads(json.dumps(manifest.compiled))) == manifest


def test_unquoted_boolean_enum_key_on_a_string_is_a_problem() -> None:
    text = MINIMAL_YAML + "telemetry:\n  x: {type: string, display_name: X, enum: {off: {}, on: {}}}\n"
    assert paths(yaml_problems(text)) == ["telemetry.x.enum.false", "telemetry.x.enum.true"]


def test_referenced_files_v1() -> None:
    doc = mutated(
        V1,
        {
            ("communication_module",): DELETE,
            ("communication_modules",): {
                "main": {"product": "ENP-RS485", "lua_file": "main.lua"},
                "aux": {"product": "ENP-CAN", "lua": {"dir": "aux/src/", "rockspec": "aux-dev-1.rockspec"}},
                "again": {"product": "ENP-CAN", "lua": {"file": "./main.lua"}},
            },
            ("telemetry_preprocessor",): {"lua_file": "pre.lua"},
        },
    )
    assert validate(doc).referenced_files == ("main.lua", "aux/src/", "aux-dev-1.rockspec", "pre.lua")


@pytest.mark.parametrize(("directory", "expected"), [("src", ("src/",)), ("./lua/", ("lua/",)), (".", ())])
def test_referenced_files_v3_dir(directory: str, expected: tuple[str, ...]) -> None:
    doc = mutated(V3, {("runtime", "options"): {"dir": directory}})
    assert validate(doc).referenced_files == expected


# --- Manifest queries -----------------------------------------------------------------------------


def test_command_lookup_by_name_and_alias() -> None:
    manifest = parse_manifest(V3_YAML)
    read = manifest.commands["read_configuration"]
    assert manifest.command("read_configuration") is read
    assert manifest.command("get_configuration") is read
    assert manifest.command("reboot") is None


def test_alert_severity() -> None:
    manifest = parse_manifest(V3_YAML)
    assert manifest.alert_severity("low_soc") is AlertSeverity.WARNING
    assert manifest.alert_severity("communication_failed") is AlertSeverity.ERROR
    assert manifest.alert_severity("something_else") is AlertSeverity.ERROR


def test_alert_attributes_empty_without_alerts_type() -> None:
    assert parse_manifest(RL6_YAML).alert_attributes() == ()


@pytest.mark.parametrize(
    ("kind", "name", "role", "expected"),
    [
        ("properties", "serial_number", Role.READONLY, True),
        ("properties", "firmware", Role.OWNER, False),
        ("properties", "firmware", Role.INSTALLER, True),
        ("properties", "firmware", Role.SYSTEM, True),
        ("telemetry", "conn_alerts", Role.INSTALLER, False),
        ("telemetry", "conn_alerts", Role.VENDOR, True),
        ("telemetry", "undeclared", Role.READONLY, True),
        ("telemetry", "soc", Role.READONLY, True),
        # A property's name is not a telemetry attribute's.
        ("telemetry", "firmware", Role.READONLY, True),
    ],
)
def test_readable(kind: Any, name: str, role: Role, expected: bool) -> None:
    assert parse_manifest(V3_YAML).readable(kind, name, role) is expected


def test_readable_follows_aliases() -> None:
    doc = mutated(
        V3, {("telemetry", "voltage", "access_level"): "owner", ("telemetry", "voltage", "aliases"): "u"}
    )
    manifest = validate(doc)
    assert manifest.readable("telemetry", "u", Role.USER) is False
    assert manifest.readable("telemetry", "u", Role.OWNER) is True


# --- Values against declarations ------------------------------------------------------------------


def attribute(value_type: AttributeType, enum: tuple[JsonValue, ...] | None = None) -> Attribute:
    return Attribute("x", value_type, "X", Role.READONLY, enum, None, ())


T = AttributeType


@pytest.mark.parametrize(
    ("value_type", "enum", "value", "expected"),
    [
        (T.BOOLEAN, None, True, None),
        (T.BOOLEAN, None, None, None),
        (T.BOOLEAN, None, 1, "must be a boolean"),
        (T.INTEGER, None, 3, None),
        (T.INTEGER, None, 3.0, None),
        (T.INTEGER, None, 3.5, "must be an integer"),
        (T.INTEGER, None, True, "must be an integer"),
        (T.INTEGER, None, "3", "must be an integer"),
        (T.FLOAT, None, 3, None),
        (T.FLOAT, None, 3.5, None),
        (T.FLOAT, None, False, "must be a number"),
        (T.FLOAT, None, "3.5", "must be a number"),
        (T.STRING, None, "x", None),
        (T.STRING, None, 1, "must be a string"),
        (T.ARRAY_OF_STRINGS, None, ["a", "b"], None),
        (T.ARRAY_OF_STRINGS, None, [], None),
        (T.ARRAY_OF_STRINGS, None, ["a", 1], "must be a list of strings"),
        (T.ARRAY_OF_STRINGS, None, "a", "must be a list of strings"),
        (T.ALERTS, None, ["communication_failed"], None),
        (T.ALERTS, None, [None], "must be a list of strings"),
        (T.JSON, None, {"a": [1, None]}, None),
        (T.JSON, None, "anything", None),
        (T.OBJECT, None, {"a": 1}, None),
        (T.OBJECT, None, [1], "must be an object"),
        (T.STRING, ("r1", "r2"), "r2", None),
        (T.STRING, ("r1", "r2"), "r3", 'must be one of "r1", "r2"'),
        (T.STRING, ("r1", "r2"), None, None),
        (T.INTEGER, (1, 2), 2.0, None),
        (T.INTEGER, (1, 2), True, "must be an integer"),
        (T.BOOLEAN, (True,), False, "must be one of true"),
    ],
)
def test_check_value(value_type: AttributeType, enum: Any, value: JsonValue, expected: str | None) -> None:
    assert check_value(attribute(value_type, enum), value) == expected


SET_POWER = Command(
    name="set_power",
    display_name="Set power",
    access_level=Role.USER,
    arguments={
        "value": Argument("value", T.FLOAT, "Value", True, None, 0, 100),
        "mode": Argument("mode", T.STRING, "Mode", False, ("eco", "boost"), None, None),
        "count": Argument("count", T.INTEGER, "Count", False, None, 1, None),
    },
    aliases=(),
)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"value": 50}, []),
        ({"value": 0, "mode": "eco", "count": 1}, []),
        ({"value": 100.0, "mode": None}, []),
        ({}, ["arguments.value: is required"]),
        ({"value": None}, ["arguments.value: is required"]),
        ({"value": "50"}, ["arguments.value: must be a number"]),
        ({"value": -1}, ["arguments.value: must be at least 0"]),
        ({"value": 100.5}, ["arguments.value: must be at most 100"]),
        ({"value": 1, "mode": "turbo"}, ['arguments.mode: must be one of "eco", "boost"']),
        ({"value": 1, "count": 0}, ["arguments.count: must be at least 1"]),
        ({"value": 1, "count": 1.5}, ["arguments.count: must be an integer"]),
        ({"value": 1, "speed": 3}, ["arguments.speed: unknown argument"]),
        (
            {"mode": 3, "extra": 1},
            [
                "arguments.value: is required",
                "arguments.mode: must be a string",
                "arguments.extra: unknown argument",
            ],
        ),
    ],
)
def test_check_arguments(arguments: dict[str, JsonValue], expected: list[str]) -> None:
    assert check_arguments(SET_POWER, arguments) == expected


def test_check_arguments_with_a_parsed_manifest() -> None:
    enable = parse_manifest(RL6_YAML).command("enable_load")
    assert enable is not None
    assert check_arguments(enable, {"load": "r6"}) == []
    assert check_arguments(enable, {"load": "r7"}) == [
        'arguments.load: must be one of "r1", "r2", "r3", "r4", "r5", "r6"'
    ]


# What devices send and API clients put in arguments: any JSON value, weighted to the edges.
CHECKED_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats()
    | st.text(max_size=5)
    | st.sampled_from([0, 1, 1.0, -0.0, 2**53 + 1, 1e300, "eco", "1"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
ENUMS = st.none() | st.lists(
    st.booleans() | st.integers(-3, 3) | st.floats(-3, 3) | st.sampled_from(["eco", "boost", "1"]),
    min_size=1,
    max_size=4,
).map(tuple)


def _json_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@given(st.sampled_from(AttributeType), ENUMS, CHECKED_VALUES)
def test_any_value_fits_an_attribute_or_gets_a_reason(
    value_type: AttributeType, enum: tuple[JsonValue, ...] | None, value: JsonValue
) -> None:
    if enum is not None:
        # A validated manifest's enum holds only values of its type (true is no integer there).
        enum = tuple(item for item in enum if check_value(attribute(value_type), item) is None) or None
    reason = check_value(attribute(value_type, enum), value)
    if reason is not None:
        assert reason.startswith("must be ")
        assert value is not None
        return
    if value is None or value_type is T.JSON:
        return
    if enum is not None:
        assert any(value == item and isinstance(value, bool) == isinstance(item, bool) for item in enum)
    fits = {
        T.BOOLEAN: isinstance(value, bool),
        T.INTEGER: _json_number(value) and float(value).is_integer(),  # type: ignore[arg-type]
        T.FLOAT: _json_number(value),
        T.STRING: isinstance(value, str),
        T.ARRAY_OF_STRINGS: isinstance(value, list) and all(isinstance(item, str) for item in value),
        T.ALERTS: isinstance(value, list) and all(isinstance(item, str) for item in value),
        T.OBJECT: isinstance(value, dict),
    }
    assert fits[value_type], (value_type, value)


ARGUMENTS = st.builds(
    lambda name, value_type, required, enum, bounds: Argument(
        name, value_type, name, required, enum, min(bounds, default=None), max(bounds, default=None)
    ),
    st.sampled_from(["value", "mode", "count"]),
    st.sampled_from(AttributeType),
    st.booleans(),
    ENUMS,
    st.lists(st.integers(-5, 5) | st.floats(-5, 5), max_size=2),
)


@settings(max_examples=60)
@given(
    st.lists(ARGUMENTS, max_size=3, unique_by=lambda argument: argument.name),
    st.dictionaries(st.sampled_from(["value", "mode", "count", "speed"]), CHECKED_VALUES, max_size=4),
)
def test_any_arguments_fit_a_command_or_get_one_line_per_problem(
    declared: list[Argument], arguments: dict[str, JsonValue]
) -> None:
    command = Command("c", "C", Role.USER, {argument.name: argument for argument in declared}, ())
    problems = check_arguments(command, arguments)
    names = [problem.split(":", 1)[0].removeprefix("arguments.") for problem in problems]
    assert all(problem.startswith("arguments.") for problem in problems)
    assert len(names) == len(set(names))  # one line per argument
    for name, value in arguments.items():
        argument = command.arguments.get(name)
        if argument is None:
            assert f"arguments.{name}: unknown argument" in problems
        elif name not in names and _json_number(value):
            assert argument.minimum is None or value >= argument.minimum  # type: ignore[operator]
            assert argument.maximum is None or value <= argument.maximum  # type: ignore[operator]
    for argument in declared:
        if argument.required and arguments.get(argument.name) is None:
            assert f"arguments.{argument.name}: is required" in problems


# --- Any input: a Manifest or a ManifestError ---------------------------------------------------


def parse_or_error(data: bytes | str) -> Manifest | ManifestError:
    try:
        return parse_manifest(data)
    except ManifestError as exc:
        return exc


def validate_or_error(document: object) -> Manifest | ManifestError:
    try:
        manifest = validate(document)
    except ManifestError as exc:
        return exc
    # Whatever validates compiles to JSON that validates to the same manifest.
    assert validate(json.loads(json.dumps(manifest.compiled, allow_nan=False))) == manifest
    return manifest


@given(st.binary(max_size=2000))
def test_any_bytes(data: bytes) -> None:
    result = parse_or_error(data)
    assert isinstance(result, Manifest) or result.problems


@given(st.text(max_size=2000))
def test_any_text(text: str) -> None:
    assert isinstance(parse_or_error(text), Manifest | ManifestError)


YAMLISH = st.text(alphabet="ab01.:-_ \n\t[]{},&*!|>'\"#?%@`~", max_size=300)


@given(YAMLISH)
def test_any_yaml_like_text(text: str) -> None:
    result = parse_or_error(MINIMAL_YAML + text)
    assert isinstance(result, Manifest | ManifestError)


@given(st.sampled_from([RL6_YAML, V3_YAML]), st.data())
def test_damaged_real_manifests(text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    insert = data.draw(YAMLISH.filter(lambda s: len(s) < 20))
    assert isinstance(parse_or_error(text[:start] + insert + text[end:]), Manifest | ManifestError)


KEYS = sorted(
    {
        "blueprint_spec",
        "display_name",
        "type",
        "enum",
        "access_level",
        "aliases",
        "implements",
        "arguments",
        "group",
        "min",
        "max",
        "default",
        "required",
        "severity",
        "telemetry",
        "properties",
        "commands",
        "alerts",
        "command_groups",
        "runtime",
        "options",
        "file",
        "dir",
        "communication_module",
        "lua",
        "lua_file",
        "product",
        "populate_values_command",
        ".x",
        "r1",
        "control",
    }
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.sampled_from(
        ["device/1.0", "device/3.0", "float", "integer", "string", "user", "error", "r1", "control"]
    )
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner)
    ),
    max_leaves=40,
)


@given(JSONISH)
def test_any_json_like_document(document: object) -> None:
    assert isinstance(validate_or_error(document), Manifest | ManifestError)


# Declarations: known keys with scalar, list or small mapping values.
FIELD_VALUES = (
    SCALARS | st.lists(SCALARS, max_size=3) | st.dictionaries(st.sampled_from(KEYS), SCALARS, max_size=3)
)
SECTION = st.dictionaries(
    st.sampled_from(["r1", "control", "x"]),
    st.dictionaries(st.sampled_from(KEYS), FIELD_VALUES, max_size=6),
    max_size=3,
)


@given(
    st.fixed_dictionaries(
        {"blueprint_spec": st.sampled_from(["device/1.0", "device/3.0"]), "display_name": st.just("D")},
        optional={
            key: SECTION for key in ("telemetry", "properties", "commands", "alerts", "command_groups")
        },
    )
)
def test_any_manifest_shaped_document(document: dict[str, object]) -> None:
    assert isinstance(validate_or_error(document), Manifest | ManifestError)


@given(st.sampled_from([V1, V3]), st.data())
def test_real_documents_with_one_value_replaced(base: dict[str, Any], data: st.DataObject) -> None:
    doc = copy.deepcopy(base)
    target: Any = doc
    while isinstance(target, dict) and target:
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()) or not isinstance(target[key], dict):
            target[key] = data.draw(JSONISH)
            break
        target = target[key]
    assert isinstance(validate_or_error(doc), Manifest | ManifestError)
