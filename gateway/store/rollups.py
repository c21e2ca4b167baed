"""Partial rollup rows for one batch of raw telemetry values, computed in Python.

Pure. The writer used to merge every batch into the rollup tables with one SQL statement per table
that re-read the batch's raw rows with a window function (`schema.rollup_sql`); on this machine
that cost twice as much as inserting the raw rows themselves. Here the batch is aggregated once per
(series, bucket) while its rows are still in memory, and only those partial rows are merged
(`schema.rollup_upsert_sql`). The result is the same as `rollup_sql`'s, row for row (a unit test
compares the two): buckets are floor(timestamp / size) * size, numbers (booleans as 0/1) are
counted, summed and bounded, and `last` is the value with the greatest timestamp, the later one in
the batch on a tie.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.store.values import SqlValue

# (series_id, bucket, count, num_count, total, low, high, last, last_ts)
PartialRow = tuple[int, int, int, int, float, float | None, float | None, SqlValue, float]


@dataclass(slots=True)
class _Bucket:
    """What one (series, bucket) has gathered so far in the batch."""

    count: int
    num_count: int
    total: float
    low: float | None
    high: float | None
    last: SqlValue
    last_ts: float


def partial_rollups(rows: Iterable[tuple[int, float, SqlValue]], size: int) -> list[PartialRow]:
    """One partial row per (series, bucket of `size` seconds) among `rows` (series_id, timestamp,
    value), in the order each (series, bucket) first appears."""
    buckets: dict[tuple[int, int], _Bucket] = {}
    for series_id, timestamp, value in rows:
        key = (series_id, math.floor(timestamp) // size * size)
        # bytes (arrays, objects) and str are not numbers; SQLite's typeof() says the same.
        number = value if isinstance(value, int | float) else None
        found = buckets.get(key)
        if found is None:
            buckets[key] = _Bucket(
                count=1,
                num_count=0 if number is None else 1,
                total=0.0 if number is None else float(number),
                low=number,
                high=number,
                last=value,
                last_ts=timestamp,
            )
            continue
        found.count += 1
        if number is not None:
            found.num_count += 1
            found.total += number
            if found.low is None or number < found.low:
                found.low = number
            if found.high is None or number > found.high:
                found.high = number
        if timestamp >= found.last_ts:
            found.last, found.last_ts = value, timestamp
    return [
        (series_id, bucket, b.count, b.num_count, b.total, b.low, b.high, b.last, b.last_ts)
        for (series_id, bucket), b in buckets.items()
    ]
