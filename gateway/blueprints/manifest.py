"""Blueprint manifests (`manifest.yml`): parse, validate and normalise them; check values against them.

Pure: no I/O. The format is `enapter-device-protocol.md` §4 (specs `device/1.0` and `device/3.0`, as in
the JSON schemas of Enapter's VS Code extension); access levels are `enapter-http-api.md` §2.

Every input gives a `Manifest` or a `ManifestError` listing every problem found, each as
"dotted.path: message", in document order. Choices made here:

- YAML anchors and aliases are refused, so a "billion laughs" document never expands.
- Unquoted YAML dates and timestamps (`2024-01-31`) become ISO 8601 strings: every field that could
  hold one is text. Binary values, sets, ordered maps, NaN and infinities are problems.
- Integers must fit in 64 bits, so every consumer of the compiled form can store them.
- Keys starting with "." (the marketplace's `.cloud`) are dropped wherever they appear.
- Keys of an `enum` mapping may be numbers or booleans (YAML writes them unquoted); in the compiled,
  JSON form they are text, read back according to the declared type.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import json
import math
import posixpath
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from gateway.model import JsonObject, JsonValue, Role

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

# Real manifests are a few tens of KiB; the largest in Enapter's marketplace is under 100 KiB.
MAX_MANIFEST_BYTES = 256 * 1024

# Containers nested in one another, the top-level mapping included. Bounds every recursive walk
# (here and in whoever serialises the compiled form) well below Python's recursion limit.
MAX_NESTING = 64

SPEC_V1 = "device/1.0"
SPEC_V3 = "device/3.0"

# Where problems about the document as a whole are reported.
_ROOT = "(document)"

_INT64 = 2**63


class AttributeType(enum.StrEnum):
    """The declared `type` of a property, telemetry attribute or command argument."""

    BOOLEAN = "boolean"
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    ARRAY_OF_STRINGS = "array_of_strings"
    JSON = "json"
    OBJECT = "object"
    ALERTS = "alerts"


class AlertSeverity(enum.StrEnum):
    """Severity of a declared alert; alerts a manifest does not declare count as `error`."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One declared property or telemetry attribute."""

    name: str
    type: AttributeType
    display_name: str
    access_level: Role
    enum: tuple[JsonValue, ...] | None
    unit: str | None
    aliases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Alert:
    """One declared alert."""

    name: str
    severity: AlertSeverity
    display_name: str


@dataclass(frozen=True, slots=True)
class Argument:
    """One declared command argument; `minimum`/`maximum` are the manifest's `min`/`max`."""

    name: str
    type: AttributeType
    display_name: str
    required: bool
    enum: tuple[JsonValue, ...] | None
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True, slots=True)
class Command:
    """One declared command."""

    name: str
    display_name: str
    access_level: Role
    arguments: Mapping[str, Argument]
    aliases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest.

    `referenced_files` lists, in document order, the files inside the blueprint that the manifest
    names: Lua files (`lua_file`, `lua.file`, `runtime.options.file`), rockspecs, and directories
    (`lua.dir`, `runtime.options.dir`) as a prefix ending in "/" (the blueprint's root itself is not
    listed). They are normalised relative paths.

    `compiled` is the JSON form the HTTP API returns as `manifest`: the source's keys ("."-keys
    dropped), `implements` and `aliases` as lists, `access_level` filled in and lower-case, and
    `required: false` on arguments that leave it out. `validate(m.compiled) == m`.
    """

    spec: str
    display_name: str
    implements: tuple[str, ...]
    properties: Mapping[str, Attribute]
    telemetry: Mapping[str, Attribute]
    alerts: Mapping[str, Alert]
    commands: Mapping[str, Command]
    referenced_files: tuple[str, ...]
    compiled: JsonObject
    # (section, alias) -> the declared name. Derived, so it takes no part in equality; ingest looks
    # up every value a device sends, so an alias must not cost a scan of every declaration.
    _aliases: Mapping[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sections: tuple[tuple[str, Mapping[str, Attribute] | Mapping[str, Command]], ...] = (
            ("properties", self.properties),
            ("telemetry", self.telemetry),
            ("commands", self.commands),
        )
        aliases = {
            (section, alias): name
            for section, declared in sections
            for name, item in declared.items()
            for alias in item.aliases
        }
        object.__setattr__(self, "_aliases", aliases)

    def command(self, name: str) -> Command | None:
        """The command declared under `name`, or the one that lists `name` among its aliases."""
        found = self.commands.get(name)
        if found is None and (declared := self._aliases.get(("commands", name))) is not None:
            found = self.commands[declared]
        return found

    def alert_severity(self, name: str) -> AlertSeverity:
        """Severity of alert `name`; undeclared alerts are errors (device protocol §1.3)."""
        alert = self.alerts.get(name)
        return alert.severity if alert is not None else AlertSeverity.ERROR

    def alert_attributes(self) -> tuple[str, ...]:
        """Telemetry attributes of type `alerts`, whose values are raised alerts as well."""
        return tuple(
            name for name, attribute in self.telemetry.items() if attribute.type is AttributeType.ALERTS
        )

    def attribute(self, kind: Literal["properties", "telemetry"], name: str) -> Attribute | None:
        """The property or telemetry attribute declared as `name`, or listing it among its aliases."""
        table = self.properties if kind == "properties" else self.telemetry
        found = table.get(name)
        if found is None and (declared := self._aliases.get((kind, name))) is not None:
            found = table[declared]
        return found

    def readable(self, kind: Literal["properties", "telemetry"], name: str, role: Role) -> bool:
        """Whether `role` may read property or telemetry attribute `name` (by name or alias).

        Undeclared names count as `readonly`, i.e. everyone may read them (HTTP API §2).
        """
        attribute = self.attribute(kind, name)
        return attribute is None or role.at_least(attribute.access_level)


class ManifestError(Exception):
    """A manifest was refused; `problems` are "path: message" lines in document order."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


# --- Public entry points ------------------------------------------------------------------------


def parse_manifest(data: bytes | str) -> Manifest:
    """Parse and validate `manifest.yml` text; raise `ManifestError` with every problem found."""
    problems = _Problems()
    document = _load_yaml(data, problems)
    if "" in problems:
        raise ManifestError(problems.ordered())
    return _build(document, problems)


def validate(document: object) -> Manifest:
    """Validate an already loaded document (from YAML or JSON); raise `ManifestError` if it is not one."""
    return _build(document, _Problems())


def check_value(attribute: Attribute, value: JsonValue) -> str | None:
    """None if `value` fits the attribute's declared type and enum, else a short reason."""
    return _value_problem(attribute.type, attribute.enum, value)


def check_arguments(command: Command, arguments: Mapping[str, JsonValue]) -> list[str]:
    """Problems with a command request's arguments, as "arguments.<name>: message" lines."""
    problems: list[str] = []
    for name, argument in command.arguments.items():
        value = arguments.get(name)
        if value is None:
            # A null argument is no argument: the device would see nothing to act on.
            if argument.required:
                problems.append(f"arguments.{name}: is required")
            continue
        reason = _argument_problem(argument.type, argument.enum, argument.minimum, argument.maximum, value)
        if reason is not None:
            problems.append(f"arguments.{name}: {reason}")
    problems.extend(
        f"arguments.{name}: unknown argument" for name in arguments if name not in command.arguments
    )
    return problems


# --- Problems -----------------------------------------------------------------------------------


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


_LAST_STEP = re.compile(r"(?:\[\d+\]|\.[^.]*)\Z")


def _parent(path: str) -> str:
    step = _LAST_STEP.search(path)
    return path[: step.start()] if step else ""


class _Problems:
    """Problems found so far, each under a path; at most one per path (the first explains the rest).

    The walk over the document records the position of every path, so problems can be listed in
    document order whichever check found them.
    """

    def __init__(self) -> None:
        self._found: dict[str, str] = {}
        self._positions: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._found)

    def __contains__(self, path: str) -> bool:
        return path in self._found

    def add(self, path: str, message: str) -> None:
        self._found.setdefault(path, message)

    def visit(self, path: str) -> None:
        self._positions.setdefault(path, len(self._positions))

    def ordered(self) -> list[str]:
        # A path missing from the document (a required key) sorts with its nearest present ancestor.
        def position(path: str) -> int:
            while path not in self._positions and path:
                path = _parent(path)
            return self._positions.get(path, -1)

        paths = sorted(self._found, key=position)
        return [f"{path or _ROOT}: {self._found[path]}" for path in paths]


# --- YAML ---------------------------------------------------------------------------------------


def _load_yaml(data: bytes | str, problems: _Problems) -> object:
    """The YAML document in `data` as Python values, or None (with a problem) if there is none.

    Duplicate keys are reported but do not stop the load, so the rest is still checked.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            problems.add("", f"text holds a lone UTF-16 surrogate at offset {exc.start}")
            return None
    else:
        raw = data
    if len(raw) > MAX_MANIFEST_BYTES:
        problems.add("", f"manifest is {len(raw)} bytes, limit is {MAX_MANIFEST_BYTES}")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add("", f"manifest is not UTF-8 text (bad byte at offset {exc.start})")
        return None
    try:
        # Events first: refusing aliases and deep nesting before anything is built keeps both
        # expansion attacks and the recursive composer out of reach.
        if not _EventScan(problems).run(text):
            return None
        return yaml.load(text, Loader=_SafeLoader)  # a safe loader: plain data only
    except yaml.YAMLError as exc:
        problems.add("", _yaml_error(exc))
    except (ValueError, OverflowError) as exc:
        # The constructors raise these for e.g. `2024-13-01` or an integer of 5000 digits.
        problems.add("", f"invalid YAML value: {exc}")
    return None


@dataclass(slots=True)
class _Frame:
    """An open mapping or sequence during the event scan."""

    path: str
    keys: set[str] | None  # None for a sequence
    key: str | None = None  # the mapping key whose value comes next
    count: int = 0  # items seen in a sequence


class _EventScan:
    """Checks the YAML event stream before anything is constructed.

    Refuses anchors and aliases, nesting deeper than `MAX_NESTING` and more than one document
    (fatal), and reports duplicate keys, which PyYAML would silently resolve to the last one.
    """

    def __init__(self, problems: _Problems) -> None:
        self._problems = problems
        self._stack: list[_Frame] = []
        self._documents = 0

    def run(self, text: str) -> bool:
        """True if the document may be loaded."""
        for event in yaml.parse(text, Loader=_SafeLoader):
            fatal = self._fatal(event)
            if fatal is not None:
                self._problems.add("", f"{fatal} ({_where(event.start_mark)})")
                return False
            if isinstance(event, yaml.NodeEvent):
                path = self._node_path(event)
                if isinstance(event, yaml.CollectionStartEvent):
                    mapping = isinstance(event, yaml.MappingStartEvent)
                    self._stack.append(_Frame(path, set() if mapping else None))
            elif isinstance(event, yaml.CollectionEndEvent):
                self._stack.pop()
        return True

    def _fatal(self, event: yaml.Event) -> str | None:
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            return "anchors and aliases are not supported"
        if isinstance(event, yaml.DocumentStartEvent):
            self._documents += 1
            if self._documents > 1:
                return "holds more than one YAML document"
        if isinstance(event, yaml.CollectionStartEvent) and len(self._stack) >= MAX_NESTING:
            return f"nests deeper than {MAX_NESTING} levels"
        return None

    def _node_path(self, event: yaml.NodeEvent) -> str:
        """The path of the node starting at `event`, noting mapping keys as they pass."""
        if not self._stack:
            return ""
        frame = self._stack[-1]
        if frame.keys is None:
            frame.count += 1
            return _index(frame.path, frame.count - 1)
        if frame.key is None:
            # This node is a key; only scalar keys can repeat in a way that matters here.
            frame.key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
            if isinstance(event, yaml.ScalarEvent):
                if frame.key in frame.keys:
                    self._problems.add(
                        _at(frame.path, frame.key), f"duplicate key ({_where(event.start_mark)})"
                    )
                frame.keys.add(frame.key)
            return _at(frame.path, "?")
        path, frame.key = _at(frame.path, frame.key), None
        return path


def _where(mark: Any) -> str:
    # libyaml's marks are their own class, with the same zero-based line and column.
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        message = ", ".join(part for part in (exc.problem, exc.context) if part)
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return f"invalid YAML: {message} ({_where(mark)})"
        return f"invalid YAML: {message}"
    return "invalid YAML: " + " ".join(str(exc).split())


# --- From any document to plain JSON values -----------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def _key_text(key: object) -> str:
    """A mapping key as it appears in paths and in JSON: `true`, `1`, `1.5`, `2024-01-31`, text."""
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, datetime.date):
        return key.isoformat()
    return str(key)


def _clean(value: object, path: str, depth: int, problems: _Problems, *, scalar_keys: bool = False) -> object:
    """`value` as JSON values (mappings, lists, text, finite numbers, booleans, null).

    Drops "."-keys; reports what JSON cannot hold and stands null in for it. Mappings under an
    `enum` key may keep number and boolean keys (`scalar_keys`).
    """
    problems.visit(path)
    if isinstance(value, dict):
        if depth >= MAX_NESTING:
            problems.add(path, f"nests deeper than {MAX_NESTING} levels")
            return None
        return _clean_mapping(value, path, depth, problems, scalar_keys=scalar_keys)
    if isinstance(value, list):
        if depth >= MAX_NESTING:
            problems.add(path, f"nests deeper than {MAX_NESTING} levels")
            return None
        return [_clean(item, _index(path, i), depth + 1, problems) for i, item in enumerate(value)]
    reason = _scalar_problem(value)
    if reason is not None:
        problems.add(path, reason)
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _clean_mapping(
    mapping: dict[Any, object], path: str, depth: int, problems: _Problems, *, scalar_keys: bool
) -> dict[Any, object]:
    cleaned: dict[Any, object] = {}
    for key, item in mapping.items():
        key_path = _at(path, _key_text(key))
        if isinstance(key, str):
            if key.startswith("."):
                continue
            if _SURROGATE.search(key):
                problems.add(key_path, "key holds a lone UTF-16 surrogate")
                continue
        elif not (scalar_keys and isinstance(key, int | float) and _scalar_problem(key) is None):
            problems.visit(key_path)
            problems.add(key_path, "key must be a string (quote it)")
            continue
        cleaned[key] = _clean(item, key_path, depth + 1, problems, scalar_keys=key == "enum")
    return cleaned


def _scalar_problem(value: object) -> str | None:
    if value is None or isinstance(value, bool | datetime.date):
        return None
    if isinstance(value, str):
        return "holds a lone UTF-16 surrogate" if _SURROGATE.search(value) else None
    if isinstance(value, int):
        return None if -_INT64 <= value < _INT64 else "integer does not fit in 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, bytes | bytearray):
        return "binary values are not supported"
    if isinstance(value, set | frozenset):
        return "sets are not supported"
    if isinstance(value, tuple):
        return "ordered maps and pairs are not supported"
    return f"{type(value).__name__} values are not supported"


def _plain(value: object) -> JsonValue:
    """A cleaned value as JSON, `enum` mapping keys written as text."""
    if isinstance(value, dict):
        return {_key_text(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return None  # unreachable for cleaned values


# --- Field checks ---------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ALERT_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Go's time.ParseDuration syntax, which `grace_period` follows ("15s", "2m30s").
_DURATION = re.compile(r"0|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")
# Enum keys given as text (JSON has no other keys) are numbers when they are JSON numbers.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")

_ROLES = {role.value.lower(): role for role in Role}
_ENUM_TYPES = (AttributeType.BOOLEAN, AttributeType.STRING, AttributeType.INTEGER, AttributeType.FLOAT)
_NUMBER_TYPES = (AttributeType.INTEGER, AttributeType.FLOAT)
_CATEGORIES = (
    "hydrogen-storage",
    "electrolysers",
    "solar-generators",
    "fuel-cells",
    "water-treatment",
    "battery-systems",
    "power-meters",
    "hvac",
    "electric-vehicles",
    "control",
    "data-providers",
    "sensors",
)


def _kind_of(value: object) -> str:
    return "a number" if isinstance(value, int | float) and not isinstance(value, bool) else "a boolean"


def _text(value: object, path: str, problems: _Problems, *, non_empty: bool = False) -> str | None:
    if isinstance(value, str):
        if non_empty and not value.strip():
            problems.add(path, "must not be empty")
            return None
        return value
    if isinstance(value, bool | int | float):
        problems.add(path, f"must be a string, not {_kind_of(value)} (quote it)")
    else:
        problems.add(path, "must be a string")
    return None


def _choice(value: object, path: str, problems: _Problems, choices: Sequence[str]) -> str | None:
    if isinstance(value, str) and value in choices:
        return value
    problems.add(path, "must be one of " + ", ".join(choices))
    return None


def _texts(value: object, path: str, problems: _Problems, *, single: bool = False) -> list[str] | None:
    """A list of strings; with `single`, one string stands for a list of one."""
    if single and isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        problems.add(path, "must be a string or a list of strings" if single else "must be a list of strings")
        return None
    texts = [_text(item, _index(path, i), problems) for i, item in enumerate(value)]
    strings = [text for text in texts if text is not None]
    return strings if len(strings) == len(texts) else None


def _name_list(value: object, path: str, problems: _Problems) -> list[tuple[str, str]] | None:
    """Aliases: (name, path) pairs of a string or a list of strings, each a valid name."""
    names = _texts(value, path, problems, single=True)
    if names is None:
        return None
    paths = [path] if isinstance(value, str) else [_index(path, i) for i in range(len(names))]
    for name, name_path in zip(names, paths, strict=True):
        _check_name(name, name_path, _NAME, problems)
    return list(zip(names, paths, strict=True))


def _check_name(name: str, path: str, pattern: re.Pattern[str], problems: _Problems) -> None:
    if not pattern.fullmatch(name):
        problems.add(path, f"name must match ^{pattern.pattern}$")


def _file(value: object, path: str, problems: _Problems, *, directory: bool = False) -> str | None:
    """A path inside the blueprint, normalised; a directory as a prefix ending in "/" (None: the root)."""
    text = _text(value, path, problems, non_empty=True)
    if text is None:
        return None
    normalised = posixpath.normpath(text)
    if normalised.startswith("/") or normalised == ".." or normalised.startswith("../"):
        problems.add(path, "must be a relative path inside the blueprint")
        return None
    if not directory:
        return normalised
    # The blueprint's own root needs no checking, so it is not listed.
    return None if normalised == "." else normalised + "/"


class _Fields:
    """One mapping under validation: typed reads of its keys, each reporting under `path.key`.

    `compiled` starts as the mapping's JSON copy; reads that normalise a value write it back.
    """

    def __init__(self, mapping: Mapping[Any, object], path: str, problems: _Problems) -> None:
        self.mapping = mapping
        self.path = path
        self.problems = problems
        self.compiled: JsonObject = {_key_text(key): _plain(value) for key, value in mapping.items()}

    def __contains__(self, key: str) -> bool:
        return key in self.mapping

    def at(self, key: str) -> str:
        return _at(self.path, key)

    def text(self, key: str, *, non_empty: bool = False) -> str | None:
        if key not in self.mapping:
            return None
        return _text(self.mapping[key], self.at(key), self.problems, non_empty=non_empty)

    def display_name(self) -> str | None:
        return self.text("display_name", non_empty=True)

    def choice(self, key: str, choices: Sequence[str]) -> str | None:
        if key not in self.mapping:
            return None
        return _choice(self.mapping[key], self.at(key), self.problems, choices)

    def flag(self, key: str) -> bool | None:
        value = self.mapping.get(key)
        if key in self.mapping and not isinstance(value, bool):
            self.problems.add(self.at(key), "must be true or false")
            return None
        return value if isinstance(value, bool) else None

    def number(self, key: str) -> int | float | None:
        value = self.mapping.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if key in self.mapping:
            self.problems.add(self.at(key), "must be a number")
        return None

    def texts(self, key: str) -> list[str] | None:
        if key not in self.mapping:
            return None
        return _texts(self.mapping[key], self.at(key), self.problems)

    def names(self, key: str) -> list[str] | None:
        """`implements`-style: a string or a list of strings, compiled as a list."""
        if key not in self.mapping:
            return None
        names = _texts(self.mapping[key], self.at(key), self.problems, single=True)
        if names is not None:
            compiled: list[JsonValue] = list(names)
            self.compiled[key] = compiled
        return names

    def aliases(self, names: _Names) -> tuple[str, ...]:
        """`aliases` (a name or a list), compiled as a list; each claimed in `names`."""
        if "aliases" not in self.mapping:
            return ()
        aliases = _name_list(self.mapping["aliases"], self.at("aliases"), self.problems)
        if aliases is None:
            return ()
        for alias, path in aliases:
            names.claim(alias, self.path, path)
        self.compiled["aliases"] = [alias for alias, _ in aliases]
        return tuple(alias for alias, _ in aliases)

    def enum(self, value_type: AttributeType | None) -> tuple[JsonValue, ...] | None:
        if "enum" not in self.mapping:
            return None
        return _enum(self.mapping["enum"], self.at("enum"), self.problems, value_type)

    def mapping_of(self, key: str) -> Mapping[Any, object] | None:
        """A free-form mapping (`ui`, `response`): checked to be one, copied as it is."""
        value = self.mapping.get(key)
        if key in self.mapping and not isinstance(value, dict):
            self.problems.add(self.at(key), "must be a mapping")
        return value if isinstance(value, dict) else None

    def json_schema(self) -> None:
        # "JSON schema or path to file with it" (v3 schema): text, or a schema written inline.
        if "json_schema" in self.mapping and not isinstance(self.mapping["json_schema"], str | dict):
            self.problems.add(self.at("json_schema"), "must be a string or a mapping")

    def access_level(self, default: Role) -> Role | None:
        """`access_level` in any case, compiled lower-case; filled with `default` when absent."""
        role = default
        if "access_level" in self.mapping:
            value = self.mapping["access_level"]
            given = _ROLES.get(value.lower()) if isinstance(value, str) else None
            if given is None:
                self.problems.add(self.at("access_level"), "must be one of " + ", ".join(_ROLES))
                return None
            role = given
        self.compiled["access_level"] = role.value.lower()
        return role

    def file(self, key: str, files: list[str], *, directory: bool = False) -> None:
        if key in self.mapping:
            name = _file(self.mapping[key], self.at(key), self.problems, directory=directory)
            if name is not None:
                files.append(name)

    def exclusive(self, *keys: str) -> None:
        present = [key for key in keys if key in self.mapping]
        if len(present) > 1:
            self.problems.add(self.at(present[-1]), f"cannot be used together with {present[0]}")


def _fields(
    value: object, path: str, problems: _Problems, allowed: Collection[str], required: Sequence[str] = ()
) -> _Fields | None:
    """`value` as a mapping with only `allowed` keys and every `required` one, else None/problems."""
    if not isinstance(value, dict):
        problems.add(path, "must be a mapping")
        return None
    for key in required:
        if key not in value:
            problems.add(_at(path, key), "is required")
    for key in value:
        if key not in allowed:
            text = _key_text(key)
            hint = difflib.get_close_matches(text, sorted(allowed), n=1, cutoff=0.75)
            problems.add(_at(path, text), f"unknown key (did you mean {hint[0]}?)" if hint else "unknown key")
    return _Fields(value, path, problems)


def _section(value: object, path: str, problems: _Problems) -> Iterator[tuple[str, object, str]]:
    """The (name, declaration, path) entries of a section; a null section is empty."""
    if value is None:
        return
    if not isinstance(value, dict):
        problems.add(path, "must be a mapping")
        return
    for name, declaration in value.items():
        yield _key_text(name), declaration, _at(path, _key_text(name))


# --- Values against declarations ------------------------------------------------------------------


def _value_problem(
    value_type: AttributeType, enum: tuple[JsonValue, ...] | None, value: object
) -> str | None:
    if value is None:
        return None
    reason = _type_problem(value_type, value)
    if reason is None and enum is not None and value not in enum:
        reason = "must be one of " + _show(enum)
    return reason


def _type_problem(value_type: AttributeType, value: object) -> str | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    match value_type:
        case AttributeType.BOOLEAN:
            fits, wanted = isinstance(value, bool), "a boolean"
        case AttributeType.INTEGER:
            fits = number and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
            wanted = "an integer"
        case AttributeType.FLOAT:
            fits = number and (not isinstance(value, float) or math.isfinite(value))
            wanted = "a number"
        case AttributeType.STRING:
            fits, wanted = isinstance(value, str), "a string"
        case AttributeType.ARRAY_OF_STRINGS | AttributeType.ALERTS:
            fits = isinstance(value, list) and all(isinstance(item, str) for item in value)
            wanted = "a list of strings"
        case AttributeType.OBJECT:
            fits, wanted = isinstance(value, dict), "an object"
        case AttributeType.JSON:
            fits, wanted = True, "JSON"
    return None if fits else f"must be {wanted}"


def _argument_problem(
    value_type: AttributeType,
    enum: tuple[JsonValue, ...] | None,
    minimum: float | None,
    maximum: float | None,
    value: object,
) -> str | None:
    reason = _value_problem(value_type, enum, value)
    if reason is None and isinstance(value, int | float) and not isinstance(value, bool):
        if minimum is not None and value < minimum:
            reason = f"must be at least {minimum}"
        elif maximum is not None and value > maximum:
            reason = f"must be at most {maximum}"
    return reason


def _show(values: Sequence[JsonValue], limit: int = 10) -> str:
    shown = ", ".join(json.dumps(value, ensure_ascii=False) for value in values[:limit])
    return shown if len(values) <= limit else f"{shown}, … ({len(values)} values)"


# --- Enums --------------------------------------------------------------------------------------


def _enum(
    value: object, path: str, problems: _Problems, value_type: AttributeType | None
) -> tuple[JsonValue, ...] | None:
    """An `enum`: a list of values, or a mapping of value -> {display_name, description, color}."""
    if value_type is not None and value_type not in _ENUM_TYPES:
        problems.add(path, "enum is only allowed for boolean, string, integer and float")
        return None
    if isinstance(value, list):
        entries = [(_plain(item), _index(path, i)) for i, item in enumerate(value)]
    elif isinstance(value, dict):
        entries = [(_enum_key(key, value_type), _at(path, _key_text(key))) for key in value]
        for key, item in value.items():
            _enum_item(item, _at(path, _key_text(key)), problems)
    else:
        problems.add(
            path, "must be a list of values or a mapping of values to {display_name, description, color}"
        )
        return None
    if not entries:
        problems.add(path, "must not be empty")
        return None
    seen: set[tuple[bool, JsonValue]] = set()
    for entry, entry_path in entries:
        if entry is None or isinstance(entry, list | dict):
            problems.add(entry_path, "must be a boolean, number or string")
            continue
        if value_type is not None and (reason := _type_problem(value_type, entry)) is not None:
            problems.add(entry_path, reason)
        # (is it a bool, value): keeps True apart from 1 while 1 and 1.0 stay one value.
        if (isinstance(entry, bool), entry) in seen:
            problems.add(entry_path, "duplicate enum value")
        seen.add((isinstance(entry, bool), entry))
    return tuple(entry for entry, _ in entries)


def _enum_key(key: object, value_type: AttributeType | None) -> JsonValue:
    """An enum mapping key as a value: JSON keys are text, so "1" is 1 for a number type."""
    if not isinstance(key, str):
        return key if isinstance(key, bool | int | float) else None
    if value_type in _NUMBER_TYPES and len(key) <= 32 and (number := _JSON_NUMBER.fullmatch(key)):
        # Short keys only: int() of thousands of digits raises, and such keys fit no type anyway.
        parsed: int | float = int(key) if number.group(1) is None and number.group(2) is None else float(key)
        return parsed if _scalar_problem(parsed) is None else key
    if value_type is AttributeType.BOOLEAN and key in ("true", "false"):
        return key == "true"
    return key


def _enum_item(value: object, path: str, problems: _Problems) -> None:
    if value is None:
        return
    fields = _fields(value, path, problems, ("display_name", "description", "color"))
    if fields is not None:
        fields.text("display_name")
        fields.text("description")
        fields.text("color")


# --- Sections -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    """What the section checks share: the spec, names declared anywhere, and what they found."""

    problems: _Problems
    spec: str | None
    telemetry_names: frozenset[str]
    group_names: frozenset[str]
    command_names: frozenset[str]
    module_names: frozenset[str]
    files: list[str] = field(default_factory=list)
    properties: dict[str, Attribute] = field(default_factory=dict)
    telemetry: dict[str, Attribute] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)

    @property
    def v3(self) -> bool:
        return self.spec == SPEC_V3


class _Names:
    """The names of one section's declarations, and the aliases claimed so far.

    An alias that is another declaration's name (wherever it is declared) or another's alias is a
    collision, reported at the alias: the name is what devices and clients use first.
    """

    def __init__(self, problems: _Problems, entries: Sequence[tuple[str, object, str]]) -> None:
        self._owners = {name: path for name, _, path in entries}
        self._problems = problems

    def claim(self, alias: str, owner: str, path: str) -> None:
        previous = self._owners.setdefault(alias, owner)
        if previous != owner:
            self._problems.add(path, f"{alias} is already the name or an alias of {previous}")


_COMMON_TOP = (
    "blueprint_spec",
    "display_name",
    "description",
    "icon",
    "vendor",
    "category",
    "license",
    "author",
    "contributors",
    "support",
    "implements",
    "implements_draft",
    "verification_level",
    "units",
    "properties",
    "telemetry",
    "alerts",
    "command_groups",
    "commands",
    "telemetry_preprocessor",
    "virtual_commands",
)
_V1_TOP = ("communication_module", "communication_modules")
_V3_TOP = ("runtime", "configuration")


def _build(document: object, problems: _Problems) -> Manifest:
    tree = _clean(document, "", 0, problems)
    manifest = _manifest(tree, problems)
    if problems or manifest is None:
        raise ManifestError(problems.ordered())
    return manifest


def _manifest(tree: object, problems: _Problems) -> Manifest | None:
    top = _fields(tree, "", problems, _COMMON_TOP + _V1_TOP + _V3_TOP, ("blueprint_spec", "display_name"))
    if top is None:
        return None
    ctx = _Context(
        problems=problems,
        spec=_spec_of(top),
        telemetry_names=_declared(top.mapping, "telemetry"),
        group_names=_declared(top.mapping, "command_groups"),
        command_names=_declared(top.mapping, "commands"),
        module_names=_declared(top.mapping, "communication_modules"),
    )
    _top_level(top, ctx)
    compiled = top.compiled
    spec_text = top.choice("blueprint_spec", (SPEC_V1, SPEC_V3))
    display_name = top.display_name()
    implements = top.names("implements")
    sections = (
        ("properties", _properties),
        ("telemetry", _telemetry),
        ("alerts", _alerts),
        ("command_groups", _command_groups),
        ("commands", _commands),
        ("communication_module", _communication_module),
        ("communication_modules", _communication_modules),
        ("runtime", _runtime),
        ("telemetry_preprocessor", _lua_hook),
        ("virtual_commands", _lua_hook),
        ("configuration", _configuration),
    )
    for key, check in sections:
        if key in top:
            compiled[key] = check(top.mapping[key], key, ctx)
    if spec_text is None or display_name is None:
        return None
    return Manifest(
        spec=spec_text,
        display_name=display_name,
        implements=tuple(implements or ()),
        properties=ctx.properties,
        telemetry=ctx.telemetry,
        alerts=ctx.alerts,
        commands=ctx.commands,
        referenced_files=tuple(dict.fromkeys(ctx.files)),
        compiled=compiled,
    )


def _spec_of(top: _Fields) -> str | None:
    """The spec the rest is checked against (None: unknown, so no spec-only rule applies)."""
    spec = top.mapping.get("blueprint_spec")
    if spec not in (SPEC_V1, SPEC_V3):
        return None
    # The other spec's keys get a message of their own rather than "unknown key".
    for key in _V3_TOP if spec == SPEC_V1 else _V1_TOP:
        if key in top:
            top.problems.add(key, f"is not allowed in {spec} manifests")
    return str(spec)


def _declared(mapping: Mapping[Any, object], section: str) -> frozenset[str]:
    table = mapping.get(section)
    return frozenset(_key_text(name) for name in table) if isinstance(table, dict) else frozenset()


def _top_level(top: _Fields, ctx: _Context) -> None:
    """The descriptive top-level keys, which only need the right shape."""
    for key in ("description", "icon", "vendor", "license", "author", "verification_level"):
        top.text(key)
    top.choice("category", _CATEGORIES)
    top.texts("contributors")
    top.names("implements_draft")
    if "support" in top:
        support = _fields(top.mapping["support"], "support", ctx.problems, ("url", "email"))
        if support is not None:
            support.text("url")
            support.text("email")
    for _unit, declaration, path in _section(top.mapping.get("units"), "units", ctx.problems):
        unit = _fields(declaration, path, ctx.problems, ("symbol", "display_name"), ("symbol",))
        if unit is not None:
            unit.text("symbol", non_empty=True)
            unit.text("display_name")


_ATTRIBUTE_KEYS = (
    "type",
    "display_name",
    "description",
    "unit",
    "enum",
    "access_level",
    "implements",
    "aliases",
    "auto_scale",
    "json_schema",
    # v3 schema: silence the editor's warning about `C`/`F` meaning coulomb/farad.
    "allow_unit_c",
    "allow_unit_f",
)
_PROPERTY_TYPES = tuple(t for t in AttributeType if t is not AttributeType.ALERTS)
_TELEMETRY_TYPES = tuple(AttributeType)
# Device protocol §1.3: the telemetry message's own fields.
_RESERVED_TELEMETRY = ("timestamp", "alerts")


def _properties(value: object, path: str, ctx: _Context) -> JsonValue:
    return _attributes(value, path, ctx, "properties")


def _telemetry(value: object, path: str, ctx: _Context) -> JsonValue:
    return _attributes(value, path, ctx, "telemetry")


def _attributes(
    value: object, path: str, ctx: _Context, kind: Literal["properties", "telemetry"]
) -> JsonValue:
    compiled: JsonObject = {}
    entries = list(_section(value, path, ctx.problems))
    names = _Names(ctx.problems, entries)
    results = ctx.telemetry if kind == "telemetry" else ctx.properties
    for name, declaration, item_path in entries:
        _check_name(name, item_path, _NAME, ctx.problems)
        if kind == "telemetry" and name in _RESERVED_TELEMETRY:
            ctx.problems.add(item_path, f"{name} is reserved in telemetry messages")
        attribute, compiled[name] = _attribute(name, declaration, item_path, ctx, kind, names)
        if attribute is not None:
            results[name] = attribute
    return compiled


def _attribute(
    name: str,
    value: object,
    path: str,
    ctx: _Context,
    kind: Literal["properties", "telemetry"],
    names: _Names,
) -> tuple[Attribute | None, JsonValue]:
    allowed = _ATTRIBUTE_KEYS + (("communication_module",) if not ctx.v3 else ())
    fields = _fields(value, path, ctx.problems, allowed, ("type", "display_name"))
    if fields is None:
        return None, _plain(value)
    type_name = fields.choice("type", _TELEMETRY_TYPES if kind == "telemetry" else _PROPERTY_TYPES)
    value_type = AttributeType(type_name) if type_name is not None else None
    display_name = fields.display_name()
    fields.text("description")
    unit = fields.text("unit")
    values = fields.enum(value_type)
    access_level = fields.access_level(Role.READONLY)
    fields.names("implements")
    aliases = fields.aliases(names)
    fields.texts("auto_scale")
    fields.json_schema()
    fields.flag("allow_unit_c")
    fields.flag("allow_unit_f")
    _module_reference(fields, ctx)
    if value_type is None or display_name is None or access_level is None:
        return None, fields.compiled
    attribute = Attribute(
        name=name,
        type=value_type,
        display_name=display_name,
        access_level=access_level,
        enum=values,
        unit=unit,
        aliases=aliases,
    )
    return attribute, fields.compiled


def _module_reference(fields: _Fields, ctx: _Context) -> None:
    """v1 `communication_module` on a declaration: which of `communication_modules` serves it."""
    module = fields.text("communication_module")
    if module is not None and ctx.module_names and module not in ctx.module_names:
        ctx.problems.add(
            fields.at("communication_module"), f"{module} is not declared in communication_modules"
        )


_ALERT_KEYS = (
    "severity",
    "display_name",
    "description",
    "code",
    "grace_period",
    "troubleshooting",
    "telemetry",
    "components",
    "conditions",
)


def _alerts(value: object, path: str, ctx: _Context) -> JsonValue:
    compiled: JsonObject = {}
    for name, declaration, item_path in _section(value, path, ctx.problems):
        _check_name(name, item_path, _ALERT_NAME, ctx.problems)
        fields = _fields(declaration, item_path, ctx.problems, _ALERT_KEYS, ("severity", "display_name"))
        if fields is None:
            compiled[name] = _plain(declaration)
            continue
        severity = fields.choice("severity", tuple(AlertSeverity))
        display_name = fields.display_name()
        fields.text("description")
        fields.text("code")
        grace_period = fields.text("grace_period")
        if grace_period is not None and not _DURATION.fullmatch(grace_period):
            ctx.problems.add(fields.at("grace_period"), 'must be a duration such as "15s", "2m" or "1h30m"')
        fields.texts("troubleshooting")
        for i, attribute in enumerate(fields.texts("telemetry") or ()):
            if attribute not in ctx.telemetry_names:
                ctx.problems.add(
                    _index(fields.at("telemetry"), i), f"{attribute} is not declared in telemetry"
                )
        fields.texts("components")
        fields.texts("conditions")
        if severity is not None and display_name is not None:
            ctx.alerts[name] = Alert(name=name, severity=AlertSeverity(severity), display_name=display_name)
        compiled[name] = fields.compiled
    return compiled


def _command_groups(value: object, path: str, ctx: _Context) -> JsonValue:
    compiled: JsonObject = {}
    for name, declaration, item_path in _section(value, path, ctx.problems):
        fields = _fields(
            declaration, item_path, ctx.problems, ("display_name", "description", "ui"), ("display_name",)
        )
        if fields is None:
            compiled[name] = _plain(declaration)
            continue
        fields.display_name()
        fields.text("description")
        fields.mapping_of("ui")
        compiled[name] = fields.compiled
    return compiled


_COMMAND_KEYS = (
    "display_name",
    "group",
    "description",
    "arguments",
    "response",
    "access_level",
    "ui",
    "confirmation",
    "populate_values_command",
    "virtual",
    "implements",
    "aliases",
)


def _commands(value: object, path: str, ctx: _Context) -> JsonValue:
    compiled: JsonObject = {}
    entries = list(_section(value, path, ctx.problems))
    names = _Names(ctx.problems, entries)
    for name, declaration, item_path in entries:
        _check_name(name, item_path, _NAME, ctx.problems)
        command, compiled[name] = _command(name, declaration, item_path, ctx, names)
        if command is not None:
            ctx.commands[name] = command
    return compiled


def _command(
    name: str, value: object, path: str, ctx: _Context, names: _Names
) -> tuple[Command | None, JsonValue]:
    allowed = _COMMAND_KEYS + (("communication_module",) if not ctx.v3 else ())
    # The v3 schema requires a group; v1 manifests such as the SDK's psutil example have none.
    required = ("display_name", "group") if ctx.v3 else ("display_name",)
    fields = _fields(value, path, ctx.problems, allowed, required)
    if fields is None:
        return None, _plain(value)
    display_name = fields.display_name()
    group = fields.text("group")
    if group is not None and group not in ctx.group_names:
        ctx.problems.add(fields.at("group"), f"{group} is not declared in command_groups")
    fields.text("description")
    arguments: dict[str, Argument] = {}
    if "arguments" in fields:
        fields.compiled["arguments"] = _arguments(
            fields.mapping["arguments"], fields.at("arguments"), ctx, arguments
        )
    fields.mapping_of("response")
    access_level = fields.access_level(Role.USER)
    fields.mapping_of("ui")
    if "confirmation" in fields:
        _confirmation(fields.mapping["confirmation"], fields.at("confirmation"), ctx.problems)
    populate = fields.text("populate_values_command")
    if populate is not None and populate not in ctx.command_names:
        ctx.problems.add(fields.at("populate_values_command"), f"{populate} is not declared in commands")
    fields.flag("virtual")
    fields.names("implements")
    aliases = fields.aliases(names)
    _module_reference(fields, ctx)
    if display_name is None or access_level is None:
        return None, fields.compiled
    command = Command(
        name=name,
        display_name=display_name,
        access_level=access_level,
        arguments=arguments,
        aliases=aliases,
    )
    return command, fields.compiled


def _confirmation(value: object, path: str, problems: _Problems) -> None:
    fields = _fields(value, path, problems, ("severity", "title", "description"), ("severity", "title"))
    if fields is not None:
        fields.choice("severity", (AlertSeverity.INFO, AlertSeverity.WARNING))
        fields.text("title")
        fields.text("description")


_ARGUMENT_KEYS = (
    "display_name",
    "type",
    "description",
    "required",
    "min",
    "max",
    "enum",
    "format",
    "default",
    "sensitive",
    "json_schema",
    # Not in Enapter's schemas, but in marketplace blueprints (a unit shown next to the input).
    "unit",
)
_ARGUMENT_TYPES = (
    AttributeType.BOOLEAN,
    AttributeType.STRING,
    AttributeType.INTEGER,
    AttributeType.FLOAT,
    AttributeType.JSON,
    AttributeType.OBJECT,
)


def _arguments(value: object, path: str, ctx: _Context, results: dict[str, Argument]) -> JsonValue:
    compiled: JsonObject = {}
    for name, declaration, item_path in _section(value, path, ctx.problems):
        _check_name(name, item_path, _NAME, ctx.problems)
        argument, compiled[name] = _argument(name, declaration, item_path, ctx.problems)
        if argument is not None:
            results[name] = argument
    return compiled


def _argument(name: str, value: object, path: str, problems: _Problems) -> tuple[Argument | None, JsonValue]:
    fields = _fields(value, path, problems, _ARGUMENT_KEYS, ("display_name", "type"))
    if fields is None:
        return None, _plain(value)
    display_name = fields.display_name()
    type_name = fields.choice("type", _ARGUMENT_TYPES)
    value_type = AttributeType(type_name) if type_name is not None else None
    fields.text("description")
    required = fields.flag("required")
    if "required" not in fields:
        fields.compiled["required"] = False
    minimum, maximum = fields.number("min"), fields.number("max")
    for key in ("min", "max"):
        if key in fields and value_type is not None and value_type not in _NUMBER_TYPES:
            problems.add(fields.at(key), f"{key} is only allowed for integer and float arguments")
    if minimum is not None and maximum is not None and minimum > maximum:
        problems.add(fields.at("min"), f"must not be greater than max ({maximum})")
    values = fields.enum(value_type)
    fields.text("format")
    fields.flag("sensitive")
    fields.json_schema()
    fields.text("unit")
    if "default" in fields and value_type is not None:
        reason = _argument_problem(value_type, values, minimum, maximum, fields.mapping["default"])
        if reason is not None:
            problems.add(fields.at("default"), reason)
    if display_name is None or value_type is None:
        return None, fields.compiled
    argument = Argument(
        name=name,
        type=value_type,
        display_name=display_name,
        required=bool(required),
        enum=values,
        minimum=minimum,
        maximum=maximum,
    )
    return argument, fields.compiled


# --- Where the code lives ---------------------------------------------------------------------------

_LUA_KEYS = ("dir", "file", "rockspec", "dependencies", "allow_dev_dependencies", "amalg_mode")
_MODULE_KEYS = ("product", "lua_file", "lua", "telemetry_preprocessor", "virtual_commands")
_RUNTIME_KEYS = ("type", "requirements", "options")
_OPTIONS_KEYS = ("file", "dir", "luarocks", "rockspec", "allow_dev_luarocks", "amalg_mode")
_AMALG_MODES = ("isolate", "nodebug")


def _communication_modules(value: object, path: str, ctx: _Context) -> JsonValue:
    compiled: JsonObject = {}
    for name, declaration, item_path in _section(value, path, ctx.problems):
        compiled[name] = _communication_module(declaration, item_path, ctx)
    return compiled


def _communication_module(value: object, path: str, ctx: _Context) -> JsonValue:
    """v1: `{product, lua_file | lua{file | dir, rockspec | dependencies, ...}}`."""
    fields = _fields(value, path, ctx.problems, _MODULE_KEYS, ("product",))
    if fields is None:
        return _plain(value)
    fields.text("product", non_empty=True)
    fields.exclusive("lua_file", "lua")
    fields.file("lua_file", ctx.files)
    if "lua" in fields:
        lua = _fields(fields.mapping["lua"], fields.at("lua"), ctx.problems, _LUA_KEYS)
        if lua is not None:
            _lua_options(lua, ctx, dependencies="dependencies", allow_dev="allow_dev_dependencies")
    for key in ("telemetry_preprocessor", "virtual_commands"):
        if key in fields:
            fields.compiled[key] = _lua_hook(fields.mapping[key], fields.at(key), ctx)
    return fields.compiled


def _runtime(value: object, path: str, ctx: _Context) -> JsonValue:
    """v3: `{type: lua | embedded, requirements: [...], options: {file | dir, luarocks | rockspec}}`."""
    fields = _fields(value, path, ctx.problems, _RUNTIME_KEYS, ("type",))
    if fields is None:
        return _plain(value)
    fields.choice("type", ("lua", "embedded"))
    fields.texts("requirements")
    if "options" in fields:
        options = _fields(fields.mapping["options"], fields.at("options"), ctx.problems, _OPTIONS_KEYS)
        if options is not None:
            _lua_options(options, ctx, dependencies="luarocks", allow_dev="allow_dev_luarocks")
    return fields.compiled


def _lua_options(fields: _Fields, ctx: _Context, *, dependencies: str, allow_dev: str) -> None:
    fields.exclusive("file", "dir")
    fields.exclusive("rockspec", dependencies)
    fields.file("file", ctx.files)
    fields.file("dir", ctx.files, directory=True)
    fields.file("rockspec", ctx.files)
    fields.texts(dependencies)
    fields.flag(allow_dev)
    if "amalg_mode" in fields:
        modes = _texts(fields.mapping["amalg_mode"], fields.at("amalg_mode"), ctx.problems, single=True)
        for mode in modes or ():
            if mode not in _AMALG_MODES:
                ctx.problems.add(fields.at("amalg_mode"), "must be one of " + ", ".join(_AMALG_MODES))


def _lua_hook(value: object, path: str, ctx: _Context) -> JsonValue:
    """`telemetry_preprocessor` / `virtual_commands`: `{lua_file}`, Lua run by the platform."""
    fields = _fields(value, path, ctx.problems, ("lua_file",), ("lua_file",))
    if fields is None:
        return _plain(value)
    fields.file("lua_file", ctx.files)
    return fields.compiled


def _configuration(value: object, path: str, ctx: _Context) -> JsonValue:
    """v3 configuration buckets; the gateway does not act on them, so only their shape is checked."""
    for _name, bucket, bucket_path in _section(value, path, ctx.problems):
        if not isinstance(bucket, dict):
            ctx.problems.add(bucket_path, "must be a mapping")
    return _plain(value) if value is not None else None
