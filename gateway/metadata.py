"""Device metadata: typed, site-wide field definitions and the values devices carry for them.

Pure: plain values in, a checked value or a `MetadataError` naming the path out. What the field
types mean (Blynk's metafields, Valtronics' location / manufacturer / model):

- `text`: a string of at most 500 characters;
- `number`: a finite JSON number (not a boolean);
- `boolean`: `true` or `false`;
- `enum`: one of the field's `options` (strings, compared exactly);
- `location`: `{"latitude", "longitude", "name"?}`, degrees in [-90, 90] and [-180, 180] (numbers,
  or numeric strings like the site's location accepts), an optional name of at most 200 characters.

"Required" means every device has a value for the field at all times: a required field must be
created with a `default`, a device that has no value of its own shows the default, and removing a
device's value (`null`) brings the default back. So making a field required never leaves an
existing device without a value, and provisioning never has to ask for metadata.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from gateway.model import JsonObject, JsonValue

MAX_TEXT_LENGTH = 500
MAX_LOCATION_NAME_LENGTH = 200
MAX_OPTIONS = 100
MAX_OPTION_LENGTH = 100
MAX_FIELDS = 200
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class FieldType(enum.StrEnum):
    """What values a metadata field takes."""

    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ENUM = "enum"
    LOCATION = "location"


class MetadataError(ValueError):
    """A value or definition that does not fit; `path` names where (`metadata.site.latitude`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class MetadataField:
    """One field definition. `default` is already checked against the field."""

    name: str
    type: FieldType
    required: bool = False
    options: tuple[str, ...] = ()
    default: JsonValue = None
    description: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


def check_value(field: MetadataField, value: JsonValue, path: str) -> JsonValue:
    """The value as stored (location latitudes as floats), or MetadataError at `path` or below it."""
    if field.type is FieldType.TEXT:
        if not isinstance(value, str):
            raise MetadataError(path, "must be a string")
        if len(value) > MAX_TEXT_LENGTH:
            raise MetadataError(path, f"must be at most {MAX_TEXT_LENGTH} characters")
        return value
    if field.type is FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise MetadataError(path, "must be a number")
        return value
    if field.type is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise MetadataError(path, "must be true or false")
        return value
    if field.type is FieldType.ENUM:
        if not isinstance(value, str) or value not in field.options:
            raise MetadataError(path, f"must be one of {', '.join(field.options)}")
        return value
    return _location(value, path)


def _location(value: JsonValue, path: str) -> JsonObject:
    if not isinstance(value, dict):
        raise MetadataError(path, "must be an object with latitude, longitude and an optional name")
    unknown = sorted(set(value) - {"name", "latitude", "longitude"})
    if unknown:
        raise MetadataError(f"{path}.{unknown[0]}", "is not a location field")
    result: JsonObject = {
        "latitude": _coordinate(value.get("latitude"), f"{path}.latitude", 90.0),
        "longitude": _coordinate(value.get("longitude"), f"{path}.longitude", 180.0),
    }
    name = value.get("name")
    if name is not None and name != "":
        if not isinstance(name, str):
            raise MetadataError(f"{path}.name", "must be a string")
        if len(name) > MAX_LOCATION_NAME_LENGTH:
            raise MetadataError(f"{path}.name", f"must be at most {MAX_LOCATION_NAME_LENGTH} characters")
        result["name"] = name
    return result


def _coordinate(value: JsonValue, path: str, bound: float) -> float:
    if value is None or value == "":
        raise MetadataError(path, "is required")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise MetadataError(path, "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MetadataError(path, "must be a number")
    if not -bound <= value <= bound:
        raise MetadataError(path, f"must be between {-bound:g} and {bound:g}")
    return float(value)


def search_text(field: MetadataField, value: JsonValue) -> str:
    """What the device search (`q=`) finds of a value: text and enum values, numbers as written,
    a location's name. Booleans are left out: every device with the field would match "true"."""
    if isinstance(value, bool):
        return ""
    if field.type is FieldType.LOCATION:
        return str(value.get("name", "")) if isinstance(value, dict) else ""
    if isinstance(value, int | float | str):
        return str(value)
    return ""


_DEFINITION_KEYS = frozenset({"name", "type", "required", "options", "default", "description"})


def field_definition(body: Mapping[str, JsonValue], *, now: float = 0.0) -> MetadataField:
    """A new field from a request body `{name, type, required?, options?, default?, description?}`."""
    unknown = sorted(set(body) - _DEFINITION_KEYS)
    if unknown:
        raise MetadataError(unknown[0], "is not a metadata field property")
    name = body.get("name")
    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
        raise MetadataError("name", "must be 1-64 characters of a-z, 0-9 and _, starting with a letter")
    raw_type = body.get("type")
    if not isinstance(raw_type, str) or raw_type.lower() not in FieldType.__members__.values():
        raise MetadataError("type", f"must be one of {', '.join(t.value for t in FieldType)}")
    base = MetadataField(name=name, type=FieldType(raw_type.lower()), created_at=now, updated_at=now)
    return changed_definition(base, body, now=now, creating=True)


_CHANGEABLE_KEYS = frozenset({"required", "options", "default", "description"})


def changed_definition(
    field: MetadataField, body: Mapping[str, JsonValue], *, now: float, creating: bool = False
) -> MetadataField:
    """`field` with the changes of a PATCH body (`required`, `options`, `default`, `description`;
    absent = unchanged, `default: null` removes the default). Name and type never change: delete
    the field and create another (its values would not fit a new type)."""
    allowed = _DEFINITION_KEYS if creating else _CHANGEABLE_KEYS
    unknown = sorted(set(body) - allowed)
    if unknown:
        message = (
            "cannot be changed" if unknown[0] in _DEFINITION_KEYS else "is not a metadata field property"
        )
        raise MetadataError(unknown[0], message)
    required = field.required
    if "required" in body:
        raw = body["required"]
        if not isinstance(raw, bool):
            raise MetadataError("required", "must be true or false")
        required = raw
    options = field.options
    if "options" in body:
        options = _options(body["options"], field.type)
    elif creating and field.type is FieldType.ENUM:
        raise MetadataError("options", "an enum field needs its options")
    description = field.description
    if "description" in body:
        raw = body["description"]
        if raw is not None and not isinstance(raw, str):
            raise MetadataError("description", "must be a string")
        if raw is not None and len(raw) > MAX_TEXT_LENGTH:
            raise MetadataError("description", f"must be at most {MAX_TEXT_LENGTH} characters")
        description = raw or ""
    checked = MetadataField(
        name=field.name,
        type=field.type,
        required=required,
        options=options,
        default=None,
        description=description,
        created_at=field.created_at,
        updated_at=now,
    )
    default = body.get("default", field.default)
    if default is not None:
        default = check_value(checked, default, "default")
    elif required:
        raise MetadataError("default", "a required field needs a default, which devices without a value show")
    return replace(checked, default=default)


def _options(raw: JsonValue, field_type: FieldType) -> tuple[str, ...]:
    if field_type is not FieldType.ENUM:
        if raw is None or raw == []:
            return ()
        raise MetadataError("options", "only enum fields have options")
    if not isinstance(raw, list) or not raw:
        raise MetadataError("options", "must be a non-empty list of strings")
    if len(raw) > MAX_OPTIONS:
        raise MetadataError("options", f"at most {MAX_OPTIONS} options")
    seen: list[str] = []
    for index, option in enumerate(raw):
        if not isinstance(option, str) or not option.strip() or len(option) > MAX_OPTION_LENGTH:
            raise MetadataError(
                f"options.{index}", f"must be a non-blank string of at most {MAX_OPTION_LENGTH} characters"
            )
        if option in seen:
            raise MetadataError(f"options.{index}", f"repeats {option!r}")
        seen.append(option)
    return tuple(seen)


@dataclass(frozen=True, slots=True)
class ValueChange:
    """One field of a device's metadata PATCH: `value` None removes the device's own value."""

    field: str
    value: JsonValue
    search_text: str


def value_changes(fields: Mapping[str, MetadataField], body: Mapping[str, JsonValue]) -> list[ValueChange]:
    """Check a `PATCH .../metadata` body `{"values": {field: value or null}}` against the fields.

    Every problem raises MetadataError with its path: `values`, `metadata.<field>` (unknown field or
    a value that does not fit), `metadata.<field>.latitude`.
    """
    unknown = sorted(set(body) - {"values"})
    if unknown:
        raise MetadataError(unknown[0], 'is not allowed here; send {"values": {...}}')
    values = body.get("values")
    if not isinstance(values, dict):
        raise MetadataError("values", "must be an object of field names and values")
    changes: list[ValueChange] = []
    for name in sorted(values):
        path = f"metadata.{name}"
        field = fields.get(name)
        if field is None:
            raise MetadataError(path, "no such metadata field")
        value = values[name]
        if value is None:
            changes.append(ValueChange(field=name, value=None, search_text=""))
            continue
        checked = check_value(field, value, path)
        changes.append(ValueChange(field=name, value=checked, search_text=search_text(field, checked)))
    return changes


def effective_values(fields: Mapping[str, MetadataField], own: Mapping[str, JsonValue]) -> JsonObject:
    """What `expand=metadata` shows: the device's own values, and defaults where it has none."""
    shown: JsonObject = {}
    for name in sorted(fields):
        if name in own:
            shown[name] = own[name]
        elif fields[name].default is not None:
            shown[name] = fields[name].default
    return shown
