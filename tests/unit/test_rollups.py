"""Partial rollups computed in Python (gateway.store.rollups) against the SQL that defines them.

The rows are merged batch by batch, as the writer does, into real (in-memory) SQLite tables with
the schema's columns, and must give the same rollup rows as `schema.rollup_sql` over all raw rows.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.rollups import partial_rollups
from gateway.store.schema import ROLLUP_COLUMNS, rollup_sql, rollup_upsert_sql
from gateway.store.values import SqlValue

values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([0, 1]),  # booleans, as stored
    st.text(max_size=5),
    st.binary(max_size=5),  # arrays and objects, as stored
)
rows = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.one_of(st.floats(-200, 400, allow_nan=False), st.integers(-200, 400).map(float)),
        values,
    ),
    max_size=60,
)

Row = tuple[int, float, SqlValue]


def rollup_tables(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE telemetry_raw (series_id INTEGER NOT NULL, timestamp REAL NOT NULL, value ANY) STRICT"
    )
    for table in ("by_sql", "by_python"):
        db.execute(f"CREATE TABLE {table} ({ROLLUP_COLUMNS}) STRICT, WITHOUT ROWID")


def table_rows(db: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return list(db.execute(f"SELECT * FROM {table} ORDER BY series_id, bucket"))


@given(rows=rows, cuts=st.lists(st.integers(0, 60), max_size=4), size=st.sampled_from([60, 3600]))
def test_batch_partials_merge_to_what_the_sql_rollup_gives(
    rows: list[Row], cuts: list[int], size: int
) -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        rollup_tables(db)
        db.executemany("INSERT INTO telemetry_raw VALUES (?, ?, ?)", rows)
        db.execute(rollup_sql("by_sql", size, "true"))
        bounds = sorted({0, len(rows), *(cut for cut in cuts if cut < len(rows))})
        for start, end in itertools.pairwise(bounds):
            db.executemany(rollup_upsert_sql("by_python"), partial_rollups(rows[start:end], size))
        expected, found = table_rows(db, "by_sql"), table_rows(db, "by_python")
    assert len(found) == len(expected)
    for mine, theirs in zip(found, expected, strict=True):
        # The sum is added up in another order (per batch, then merged): equal up to rounding.
        assert mine[:4] == theirs[:4]
        assert math.isclose(float(str(mine[4])), float(str(theirs[4])), rel_tol=1e-9, abs_tol=1e-6)
        assert mine[5:] == theirs[5:]


def test_one_batch_gives_one_row_per_series_and_bucket() -> None:
    batch: list[Row] = [(1, 59.9, 2), (1, 60.0, 4.5), (1, 61.0, "on"), (2, -0.5, 7), (1, 60.5, 1)]
    assert partial_rollups(batch, 60) == [
        (1, 0, 1, 1, 2.0, 2, 2, 2, 59.9),
        (1, 60, 3, 2, 5.5, 1, 4.5, "on", 61.0),
        (2, -60, 1, 1, 7.0, 7, 7, 7, -0.5),
    ]
