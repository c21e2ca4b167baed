"""Fuzzing `gateway.config`: any TOML document gives a `Config` or a `ConfigError` listing problems.

Kept apart from `test_config.py` (the examples) because the documents here are generated from the
`Config` dataclasses themselves: a key added there is fuzzed here without an edit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Config, ConfigError, default_config, load, parse

BASE = Path("/etc/enapter-gateway")


def _tables(value: object) -> dict[str, object]:
    """Each table of a config value (a dataclass) -> its defaults: key -> default, sub-tables nested."""
    assert dataclasses.is_dataclass(value)
    return {
        field.name: _tables(item) if dataclasses.is_dataclass(item := getattr(value, field.name)) else item
        for field in dataclasses.fields(value)
    }


DEFAULTS = _tables(default_config(base_dir=BASE))

# What TOML can hold besides JSON's values: dates, times, and floats JSON has not.
TOML_ODDITIES = st.one_of(
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
    st.sampled_from([math.inf, -math.inf, math.nan, -0.0]),
)
TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["", "~", "a/b", "gw.lan", "GW.lan", "10.0.0.1", "eth0", "UTC", "ntp", "\x00"]),
    TOML_ODDITIES,
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=2)
    ),
    max_leaves=6,
)


def _near(default: object) -> st.SearchStrategy[object]:
    """Values for a key whose default is `default`: of its type, near its type, or anything."""
    if isinstance(default, bool):
        typed: st.SearchStrategy[object] = st.booleans()
    elif isinstance(default, int):
        typed = st.integers(-2, 70_000) | st.sampled_from([0, 1, 65535, 65536, 2**53, 2**63])
    elif isinstance(default, float):
        typed = st.floats(min_value=-1, max_value=1e9) | st.integers(-1, 10**6)
    elif isinstance(default, tuple):
        typed = st.lists(st.sampled_from(["eth0", "gw.lan", "GW.LAN", "a b", "", "10.2", "x-"]), max_size=3)
    else:
        typed = st.sampled_from([str(default), "", " ", "managed", "external", "HTTP", "Europe/Berlin", "/x"])
    return typed | TOML_VALUES


def _table(defaults: dict[str, object]) -> st.SearchStrategy[dict[str, object]]:
    """A table with some of its keys (sub-tables recursively), an unknown key now and then."""
    fields = {
        key: _table(default) if isinstance(default, dict) else _near(default)
        for key, default in defaults.items()
    }
    return st.fixed_dictionaries({}, optional={**fields, "unknown_key": TOML_VALUES})


DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        **{
            section: _table(defaults) | TOML_VALUES
            for section, defaults in DEFAULTS.items()
            if isinstance(defaults, dict)
        },
        "bogus": TOML_VALUES,
    },
)


def _leaves(value: object) -> list[object]:
    if dataclasses.is_dataclass(value):
        return [leaf for field in dataclasses.fields(value) for leaf in _leaves(getattr(value, field.name))]
    if isinstance(value, tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


@settings(max_examples=80)
@given(DOCUMENTS)
def test_any_toml_document_gives_a_config_or_problems_with_their_paths(document: dict[str, object]) -> None:
    try:
        config = parse(document, base_dir=BASE)
    except ConfigError as error:
        problems = error.problems
    else:
        assert isinstance(config, Config)
        # Nothing of TOML's own types, or a float JSON cannot hold, gets through.
        for leaf in _leaves(config):
            assert not isinstance(leaf, dt.date | dt.time)
            assert not isinstance(leaf, float) or math.isfinite(leaf)
        return
    assert problems
    for problem in problems:
        path, sep, message = problem.partition(": ")
        assert sep
        assert message
        # Every problem names where it is: a section of the document (or the document itself).
        assert path.split(".")[0].split("[")[0].strip('"') in document or path.startswith("(top level)")


# Lines of a TOML file: tables, keys of the config and others, values TOML has and JSON lacks.
KEYS = sorted({key for table in DEFAULTS.values() if isinstance(table, dict) for key in table})
TOML_TEXTS = [
    *("1", "-0", "0x10", "1_000", "3.5", "inf", "nan", "true", '"x"', "'~/x'", '"""a\nb"""'),
    *("1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", '["eth0", "wlan0"]', "{a = 1}", "[1, 'a']"),
]
TOML_LINES = st.one_of(
    st.sampled_from(
        [*(f"[{section}]" for section in DEFAULTS), "[mqtt.external]", "[api.rate_limit]", "[[x]]"]
    ),
    st.tuples(st.sampled_from([*KEYS, "a.b", '"q"']), st.sampled_from(TOML_TEXTS)).map(
        lambda pair: f"{pair[0]} = {pair[1]}"
    ),
    st.text(max_size=10),
)


@settings(max_examples=60)
@given(st.lists(TOML_LINES, max_size=8).map("\n".join))
def test_any_config_file_gives_a_config_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "gateway.toml")
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            config = load(path)
        except ConfigError as error:
            problems = error.problems
        else:
            assert config.gateway.state_dir.is_absolute()
            return
    assert problems


def test_a_deeply_nested_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load(path)
