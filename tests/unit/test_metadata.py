"""Metadata field definitions and values (`gateway.metadata`): pure checks, each problem with its path."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.metadata import (
    FieldType,
    MetadataError,
    MetadataField,
    ValueChange,
    changed_definition,
    check_value,
    effective_values,
    field_definition,
    search_text,
    value_changes,
)
from gateway.model import JsonValue

TEXT = MetadataField("serial_number", FieldType.TEXT)
NUMBER = MetadataField("rated_power", FieldType.NUMBER)
BOOLEAN = MetadataField("outdoor", FieldType.BOOLEAN)
ENUM = MetadataField("phase", FieldType.ENUM, options=("L1", "L2", "L3"))
LOCATION = MetadataField("position", FieldType.LOCATION)
FIELDS = {f.name: f for f in (TEXT, NUMBER, BOOLEAN, ENUM, LOCATION)}


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        (TEXT, "SN-1", "SN-1"),
        (TEXT, "", ""),
        (NUMBER, 3, 3),
        (NUMBER, -2.5, -2.5),
        (BOOLEAN, False, False),
        (ENUM, "L2", "L2"),
        (LOCATION, {"latitude": 52.5, "longitude": 13}, {"latitude": 52.5, "longitude": 13.0}),
        (
            LOCATION,
            {"latitude": "-33.9", "longitude": "151.2", "name": "Roof"},
            {"latitude": -33.9, "longitude": 151.2, "name": "Roof"},
        ),
        (LOCATION, {"latitude": 0, "longitude": 0, "name": ""}, {"latitude": 0.0, "longitude": 0.0}),
    ],
)
def test_values_that_fit_are_kept(field: MetadataField, value: JsonValue, stored: JsonValue) -> None:
    assert check_value(field, value, f"metadata.{field.name}") == stored


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        (TEXT, 5, "metadata.serial_number"),
        (TEXT, "x" * 501, "metadata.serial_number"),
        (NUMBER, True, "metadata.rated_power"),
        (NUMBER, "3", "metadata.rated_power"),
        (NUMBER, math.inf, "metadata.rated_power"),
        (BOOLEAN, 1, "metadata.outdoor"),
        (ENUM, "l2", "metadata.phase"),
        (ENUM, ["L1"], "metadata.phase"),
        (LOCATION, [52, 13], "metadata.position"),
        (LOCATION, {"latitude": 91, "longitude": 0}, "metadata.position.latitude"),
        (LOCATION, {"latitude": 0, "longitude": -180.5}, "metadata.position.longitude"),
        (LOCATION, {"latitude": "north", "longitude": 0}, "metadata.position.latitude"),
        (LOCATION, {"longitude": 0}, "metadata.position.latitude"),
        (LOCATION, {"latitude": 0, "longitude": 0, "name": 7}, "metadata.position.name"),
        (LOCATION, {"latitude": 0, "longitude": 0, "altitude": 7}, "metadata.position.altitude"),
    ],
)
def test_values_that_do_not_fit_name_their_path(field: MetadataField, value: JsonValue, path: str) -> None:
    with pytest.raises(MetadataError) as raised:
        check_value(field, value, f"metadata.{field.name}")
    assert raised.value.path == path
    assert str(raised.value).startswith(path + ": ")


def test_a_patch_is_checked_as_a_whole_and_null_removes() -> None:
    changes = value_changes(
        FIELDS,
        {"values": {"serial_number": "SN-9", "outdoor": None, "position": {"latitude": 1, "longitude": 2}}},
    )
    assert changes == [
        ValueChange("outdoor", None, ""),
        ValueChange("position", {"latitude": 1.0, "longitude": 2.0}, ""),
        ValueChange("serial_number", "SN-9", "SN-9"),
    ]
    bodies: list[tuple[dict[str, JsonValue], str]] = [
        ({"values": {"colour": "red"}}, "metadata.colour"),
        ({"values": {"serial_number": "ok", "phase": "L4"}}, "metadata.phase"),
        ({"values": []}, "values"),
        ({}, "values"),
        ({"values": {}, "extra": 1}, "extra"),
    ]
    for body, path in bodies:
        with pytest.raises(MetadataError) as raised:
            value_changes(FIELDS, body)
        assert raised.value.path == path, body


def test_what_the_search_finds_of_each_value() -> None:
    assert search_text(TEXT, "SN-1") == "SN-1"
    assert search_text(NUMBER, 2.5) == "2.5"
    assert search_text(ENUM, "L3") == "L3"
    assert search_text(BOOLEAN, True) == ""
    assert search_text(LOCATION, {"latitude": 1.0, "longitude": 2.0, "name": "Roof"}) == "Roof"
    assert search_text(LOCATION, {"latitude": 1.0, "longitude": 2.0}) == ""


def test_defaults_fill_in_where_a_device_has_no_value() -> None:
    with_default = MetadataField("site_zone", FieldType.TEXT, required=True, default="A")
    fields = {"site_zone": with_default, "serial_number": TEXT}
    assert effective_values(fields, {}) == {"site_zone": "A"}
    assert effective_values(fields, {"site_zone": "B", "serial_number": "S"}) == {
        "serial_number": "S",
        "site_zone": "B",
    }


def test_definitions() -> None:
    field = field_definition(
        {"name": "phase", "type": "ENUM", "options": ["L1", "L2"], "default": "L1", "required": True}, now=5.0
    )
    assert field == MetadataField(
        "phase",
        FieldType.ENUM,
        required=True,
        options=("L1", "L2"),
        default="L1",
        created_at=5.0,
        updated_at=5.0,
    )
    located = field_definition({"name": "position", "type": "location", "description": "Where"})
    assert (located.type, located.required, located.default, located.description) == (
        FieldType.LOCATION,
        False,
        None,
        "Where",
    )
    definitions: list[tuple[dict[str, JsonValue], str]] = [
        ({"name": "Phase", "type": "text"}, "name"),
        ({"name": "9lives", "type": "text"}, "name"),
        ({"name": "x", "type": "date"}, "type"),
        ({"name": "x", "type": "enum"}, "options"),
        ({"name": "x", "type": "enum", "options": []}, "options"),
        ({"name": "x", "type": "enum", "options": ["a", "a"]}, "options.1"),
        ({"name": "x", "type": "enum", "options": ["a", " "]}, "options.1"),
        ({"name": "x", "type": "text", "options": ["a"]}, "options"),
        ({"name": "x", "type": "text", "required": True}, "default"),
        ({"name": "x", "type": "text", "required": "yes", "default": "a"}, "required"),
        ({"name": "x", "type": "number", "default": "1"}, "default"),
        ({"name": "x", "type": "location", "default": {"latitude": 99, "longitude": 0}}, "default.latitude"),
        ({"name": "x", "type": "text", "unit": "W"}, "unit"),
    ]
    for body, path in definitions:
        with pytest.raises(MetadataError) as raised:
            field_definition(body)
        assert raised.value.path == path, body


def test_changes_keep_name_and_type_and_recheck_the_default() -> None:
    enum = field_definition({"name": "phase", "type": "enum", "options": ["L1", "L2"], "default": "L2"})
    narrowed = changed_definition(enum, {"options": ["L1", "L2", "L3"], "description": "Phase"}, now=9.0)
    assert (narrowed.options, narrowed.default, narrowed.description, narrowed.updated_at) == (
        ("L1", "L2", "L3"),
        "L2",
        "Phase",
        9.0,
    )
    with pytest.raises(MetadataError) as raised:
        changed_definition(enum, {"options": ["L1"]}, now=9.0)  # the default is no longer allowed
    assert raised.value.path == "default"
    assert changed_definition(enum, {"default": None}, now=9.0).default is None
    with pytest.raises(MetadataError) as raised:
        changed_definition(enum, {"default": None, "required": True}, now=9.0)
    assert raised.value.path == "default"
    for key in ("name", "type"):
        with pytest.raises(MetadataError) as raised:
            changed_definition(enum, {key: "x"}, now=9.0)
        assert raised.value.path == key


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
location_like = st.fixed_dictionaries(
    {"latitude": json_values | st.floats(-100, 100), "longitude": json_values | st.floats(-200, 200)},
    optional={"name": json_values},
)


@settings(max_examples=300)
@given(field=st.sampled_from(list(FIELDS.values())), value=json_values | location_like)
def test_any_value_gives_a_value_or_the_declared_error(field: MetadataField, value: JsonValue) -> None:
    try:
        checked = check_value(field, value, "metadata.f")
    except MetadataError as exc:
        path = exc.path
        assert path == "metadata.f" or path.startswith("metadata.f.")
        return
    # What passed is stable: checking it again gives it back.
    assert check_value(field, checked, "metadata.f") == checked


@settings(max_examples=300)
@given(
    body=st.dictionaries(
        st.sampled_from(["name", "type", "required", "options", "default", "x"]), json_values
    )
)
def test_any_definition_gives_a_field_or_the_declared_error(body: dict[str, JsonValue]) -> None:
    try:
        field = field_definition(body)
    except MetadataError as exc:
        path = exc.path
        assert path.split(".")[0] in {"name", "type", "required", "options", "default", "x"}
        return
    assert not field.required or field.default is not None
