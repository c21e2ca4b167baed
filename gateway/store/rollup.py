"""Rollup rows for one batch of raw telemetry values, computed before they are written.

Pure. A batch's raw values are summed up per series and bucket here, and each summary is merged
into its rollup row (`schema.ROLLUP_MERGE`) in the batch's own transaction: summing in SQL took
a sort of every new raw row per rollup table, most of a batch's time under load, while here each
value costs one pass of a short loop and the database sees one row per series and bucket.

The rows give what `schema.rollup_sql` gives for the same values: per bucket the count, the count,
sum, minimum and maximum of the numeric values (integers, booleans as 0/1, reals), and the value
with the greatest timestamp, the later one of equal timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

from gateway.store.values import SqlValue

# (series_id, timestamp, stored value): a raw value as inserted into telemetry_raw.
RawRow: TypeAlias = tuple[int, float, SqlValue]
# (series_id, bucket, count, num_count, total, low, high, last, last_ts): rollup columns.
RollupRow: TypeAlias = tuple[int, int, int, int, float, float | None, float | None, SqlValue, float]


def summarize(rows: Sequence[RawRow], size: int) -> list[RollupRow]:
    """One rollup row per series and `size`-second bucket of `rows`.

    `rows` must be ordered by series and timestamp, values of equal timestamps in arrival order
    (the order the batch inserts them in): the last row of a bucket is then its newest value.
    """
    summaries: list[RollupRow] = []
    key: tuple[int, int] | None = None
    count = num_count = 0
    total = 0.0
    low: float | None = None
    high: float | None = None
    last: SqlValue = 0
    last_ts = 0.0
    for series_id, timestamp, value in rows:
        # The floor, also before 1970, as in rollup_sql.
        whole = math.floor(timestamp)
        bucket = whole - whole % size
        if key != (series_id, bucket):
            if key is not None:
                summaries.append((*key, count, num_count, total, low, high, last, last_ts))
            key = (series_id, bucket)
            count = num_count = 0
            total = 0.0
            low = high = None
        count += 1
        if isinstance(value, int | float):
            num_count += 1
            total += value
            if low is None or value < low:
                low = value
            if high is None or value > high:
                high = value
        last, last_ts = value, timestamp
    if key is not None:
        summaries.append((*key, count, num_count, total, low, high, last, last_ts))
    return summaries


def coarsen(summaries: Sequence[RollupRow], size: int) -> list[RollupRow]:
    """`summaries` (ordered by series and bucket, as `summarize` returns them) merged into
    buckets of `size` seconds, a multiple of theirs."""
    merged: list[RollupRow] = []
    for series_id, start, count, num_count, total, low, high, last, last_ts in summaries:
        bucket = start - start % size
        if merged and merged[-1][0] == series_id and merged[-1][1] == bucket:
            _, _, m_count, m_num, m_total, m_low, m_high, _, _ = merged[-1]
            merged[-1] = (
                series_id,
                bucket,
                m_count + count,
                m_num + num_count,
                m_total + total,
                low if m_low is None or (low is not None and low < m_low) else m_low,
                high if m_high is None or (high is not None and high > m_high) else m_high,
                # Later finer buckets hold later timestamps: the newest value is the last one's.
                last,
                last_ts,
            )
        else:
            merged.append((series_id, bucket, count, num_count, total, low, high, last, last_ts))
    return merged
