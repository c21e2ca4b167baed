"""Fuzzing `gateway.store.values`: every telemetry value a device may send is stored and read back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.model import JsonValue, SeriesKind
from gateway.store.values import from_sql, kind_and_value, kind_of, to_sql

INT64 = 2**63
# What `payloads.decode` lets through: JSON without NaN/Infinity, any integer size, any text
# (lone surrogates are refused before storage, so they are left out here).
TEXT = st.text(st.characters(codec="utf-8"), max_size=6)
VALUES: st.SearchStrategy[JsonValue] = st.recursive(
    st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([INT64 - 1, -INT64, INT64, 0, 1, -0.0, 1e308])
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | st.sampled_from(["", "[1]", '{"a": 1}', "null", "true", "1"]),  # strings that look like JSON
    lambda children: (
        st.lists(children | st.none(), max_size=3) | st.dictionaries(TEXT, children | st.none(), max_size=3)
    ),
    max_leaves=8,
)


@given(VALUES)
def test_every_value_reads_back_as_stored(value: JsonValue) -> None:
    kind = kind_of(value)
    back = from_sql(to_sql(value), kind)
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        # SQLite integers are 64-bit: a larger one is kept as the nearest float, and says so.
        assert kind is SeriesKind.FLOAT
        assert back == float(value)
        return
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1.0, back) == math.copysign(1.0, value)  # type: ignore[arg-type]


def test_null_is_not_stored() -> None:
    with pytest.raises(ValueError, match="null"):
        to_sql(None)
    assert from_sql(None, SeriesKind.FLOAT) is None


@given(VALUES)
def test_the_quick_path_gives_the_kind_and_stored_value_of_the_two_functions(value: JsonValue) -> None:
    kind, stored = kind_and_value(value)
    assert kind is kind_of(value)
    assert stored == to_sql(value)
    assert type(stored) is type(to_sql(value))
