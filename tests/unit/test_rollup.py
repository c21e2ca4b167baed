"""A batch's rollup rows (gateway.store.rollup): each bucket's summary, checked against a plain
computation of the same figures, and coarser buckets made from finer ones."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.rollup import RawRow, RollupRow, coarsen, summarize
from gateway.store.values import SqlValue


def reference(rows: list[RawRow], size: int) -> list[RollupRow]:
    """Group first, then compute each figure over its group (the newest: the greatest timestamp,
    the later of equal ones, as `last_value() OVER (ORDER BY timestamp, rowid)` does)."""
    groups: dict[tuple[int, int], list[tuple[int, RawRow]]] = {}
    for arrival, row in enumerate(rows):
        series_id, timestamp, _ = row
        groups.setdefault((series_id, math.floor(timestamp / size) * size), []).append((arrival, row))
    summaries: list[RollupRow] = []
    for (series_id, bucket), members in sorted(groups.items()):
        numbers = [value for _, (_, _, value) in members if isinstance(value, int | float)]
        _, (_, last_ts, last) = max(members, key=lambda member: (member[1][1], member[0]))
        summaries.append(
            (
                series_id,
                bucket,
                len(members),
                len(numbers),
                float(sum(numbers)),
                min(numbers, default=None),
                max(numbers, default=None),
                last,
                last_ts,
            )
        )
    return summaries


# Halves of small integers: every sum is exact, so any order of adding gives the same total.
values: st.SearchStrategy[SqlValue] = st.one_of(
    st.integers(-1000, 1000),
    st.integers(-2000, 2000).map(lambda half: half / 2),
    st.sampled_from(["on", "", "x"]),
    st.just(b'["a"]'),
)
raw_rows = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.integers(-7300, 7300).map(lambda tenth: tenth / 10),
        values,
    ),
    max_size=60,
)


def batch_order(rows: list[RawRow]) -> list[RawRow]:
    """The order a batch inserts (and summarizes) its values in: series, then time, stable."""
    return sorted(rows, key=lambda row: (row[0], row[1]))


@given(raw_rows)
def test_a_summary_per_series_and_bucket_agrees_with_the_plain_computation(rows: list[RawRow]) -> None:
    ordered = batch_order(rows)
    for size in (60, 3600):
        assert summarize(ordered, size) == reference(ordered, size)


@given(raw_rows)
def test_hours_made_from_minutes_equal_hours_made_from_the_values(rows: list[RawRow]) -> None:
    ordered = batch_order(rows)
    assert coarsen(summarize(ordered, 60), 3600) == summarize(ordered, 3600)


def test_buckets_before_1970_and_the_newest_of_equal_timestamps() -> None:
    rows: list[RawRow] = [(1, -0.5, 1), (1, -0.5, 2.5), (1, 0.0, "text"), (1, 59.9, 0)]
    assert summarize(rows, 60) == [
        (1, -60, 2, 2, 3.5, 1, 2.5, 2.5, -0.5),
        (1, 0, 2, 1, 0.0, 0, 0, 0, 59.9),
    ]
    assert summarize([], 60) == []
    assert coarsen([], 3600) == []
