"""Telemetry history in the store: series, raw values, rollups merged by every batch, the table a
query reads from, and the migrations of the old history table and of schema 5's lagging rollups."""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from gateway.model import JsonValue, Partial, SeriesKind
from gateway.store.schema import RETENTION, ROLLUPS, rollup_sql
from gateway.store.store import Store
from tests.integration.test_store import add_device, database_at_version, db_path, ingested, raw, telemetry

__all__ = ["db_path"]  # a fixture, used by name


async def store_values(
    store: Store, device_id: str, points: list[tuple[float, dict[str, JsonValue]]]
) -> None:
    for index, (ts, values) in enumerate(points):
        assert store.enqueue(ingested(device_id, telemetry(ts, values)))
        if index % 5000 == 4999:  # stay under the queue's bound
            await store.flush()
    await store.flush()


async def history_of(
    store: Store, series_id: int, kind: SeriesKind, *, start: float, end: float, granularity: int
) -> list[Partial]:
    """One series' history, as `Partial`s (the store gives tuples of the same fields in order)."""
    found = await store.history({series_id: kind}, start=start, end=end, granularity=granularity)
    return [Partial(*value) for value in found[series_id]]


async def test_values_keep_their_types(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        values: dict[str, JsonValue] = {
            "f": 1.5,
            "i": 7,
            "b": True,
            "s": '["looks like json"]',
            "a": ["x", "y"],
            "j": {"k": [1, 2]},
            "big": 2**70,
        }
        await store_values(store, device.id, [(60.0, values)])
        series = await store.series(device.id, [*values, "missing"])
        assert {name: kind for name, (_, kind) in series.items()} == {
            "f": SeriesKind.FLOAT,
            "i": SeriesKind.INTEGER,
            "b": SeriesKind.BOOLEAN,
            "s": SeriesKind.STRING,
            "a": SeriesKind.STRING_ARRAY,
            "j": SeriesKind.JSON,
            "big": SeriesKind.FLOAT,
        }
        for name, expected in values.items():
            series_id, kind = series[name]
            (point,) = await history_of(store, series_id, kind, start=0, end=120, granularity=1)
            assert point.last == (float(2**70) if name == "big" else expected)
            assert type(point.last) is (float if name == "big" else type(expected))


async def test_every_value_and_timestamp_reads_back_exactly(db_path: Path) -> None:
    # Batches reach SQLite as JSON text (one statement per table): numbers must survive that,
    # to the last bit, whatever their bit pattern.
    rng = random.Random(7)
    floats = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(3000)]
    floats = [f for f in floats if math.isfinite(f)] + [0.1, -0.0, 5e-324, 1.7976931348623157e308]
    integers = [2**63 - 1, -(2**63), 0, -1, 2**53 + 1]
    texts = ["", "é ☃ 𝄞", '{"blob": "x"}', "null", "\\u0000", '\n\t"']
    values: list[JsonValue] = [*floats, *integers, *texts, ["a", "b"], {"blob": [1]}, [], {}]
    points: list[tuple[float, dict[str, JsonValue]]] = [
        (1_700_000_000 + index / 7, {"v": value}) for index, value in enumerate(values)
    ]
    async with Store.open(db_path) as store:
        device = await add_device(store)
        await store_values(store, device.id, points)
        series_id, kind = (await store.series(device.id, ["v"]))["v"]
        found = await history_of(store, series_id, kind, start=0, end=2e9, granularity=1)
    assert [(point.last_ts, point.last) for point in found] == [(ts, v["v"]) for ts, v in points]
    assert [type(point.last) for point in found] == [type(v["v"]) for _, v in points]


async def test_rollup_totals_beyond_the_float_range_are_infinite(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        await store_values(
            store, device.id, [(60.0, {"up": 1e308, "down": -1e308}), (61.0, {"up": 1e308, "down": -1e308})]
        )
        series = await store.series(device.id, ["up", "down"])
        for name, infinity in (("up", math.inf), ("down", -math.inf)):
            series_id, kind = series[name]
            (minute,) = await history_of(store, series_id, kind, start=0, end=120, granularity=60)
            assert (minute.count, minute.total, minute.high) == (2, infinity, math.copysign(1e308, infinity))


async def test_rollups_merge_across_batches_and_late_values(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        # Three batches; the last one carries a value older than what is stored (a late arrival).
        await store_values(store, device.id, [(3600.0, {"t": 1}), (3610.0, {"t": 5, "s": "a"})])
        await store_values(store, device.id, [(3670.0, {"t": 2}), (3700.0, {"t": 4, "s": "b"})])
        await store_values(store, device.id, [(3605.0, {"t": -3})])
        series = await store.series(device.id, ["t", "s"])
        t_id, t_kind = series["t"]
        minutes = await history_of(store, t_id, t_kind, start=3600, end=3720, granularity=60)
        assert minutes == [
            Partial(start=3600, count=3, num_count=3, total=3.0, low=-3.0, high=5.0, last=5, last_ts=3610.0),
            Partial(start=3660, count=2, num_count=2, total=6.0, low=2.0, high=4.0, last=4, last_ts=3700.0),
        ]
        (hour,) = await history_of(store, t_id, t_kind, start=3600, end=7200, granularity=3600)
        assert hour == Partial(
            start=3600, count=5, num_count=5, total=9.0, low=-3.0, high=5.0, last=4, last_ts=3700.0
        )
        # 120 s buckets are read from the 1-minute table; 90 s ones need the raw values.
        assert len(await history_of(store, t_id, t_kind, start=3600, end=3720, granularity=120)) == 2
        assert len(await history_of(store, t_id, t_kind, start=3600, end=3720, granularity=90)) == 5
        s_id, s_kind = series["s"]
        (strings,) = await history_of(store, s_id, s_kind, start=0, end=7200, granularity=3600)
        assert (strings.count, strings.num_count, strings.low, strings.last) == (2, 0, None, "b")


async def test_a_failed_batch_does_not_leave_unknown_series(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        other = await add_device(store, "Other")
        await store_values(store, device.id, [(1.0, {"t": 1})])
        assert await store.delete_device(device.id)
        # The deleted device's series ids are gone from the cache: the next batch still commits.
        await store_values(store, other.id, [(2.0, {"t": 2})])
        assert store.stats.failed_batches == 0
        assert raw(db_path, "SELECT count(*) FROM telemetry_raw") == [(1,)]


async def test_version_2_history_is_moved_and_rolled_up(db_path: Path) -> None:
    with database_at_version(db_path, 2) as db:
        db.execute(
            "INSERT INTO devices (id, site_id, name, slug, type, blueprint_id, created_at, updated_at)"
            " VALUES ('d', 's', 'D', 'd', 'STANDALONE', 'b', 0, 0)"
        )
        db.executemany(
            "INSERT INTO telemetry_history VALUES ('d', ?, ?, ?)",
            [("t", 60.0, "1"), ("t", 70.0, "2.5"), ("on", 60.0, "true"), ("n", 61.0, '"x"')],
        )
    async with Store.open(db_path) as store:
        series = await store.series("d", ["t", "on", "n"])
        assert {name: kind for name, (_, kind) in series.items()} == {
            "t": SeriesKind.FLOAT,
            "on": SeriesKind.BOOLEAN,
            "n": SeriesKind.STRING,
        }
        t_id, t_kind = series["t"]
        (minute,) = await history_of(store, t_id, t_kind, start=0, end=3600, granularity=60)
        assert (minute.count, minute.total, minute.last) == (2, 3.5, 2.5)
        on_id, on_kind = series["on"]
        (point,) = await history_of(store, on_id, on_kind, start=0, end=3600, granularity=1)
        assert point.last is True
    with pytest.raises(sqlite3.OperationalError):
        raw(db_path, "SELECT * FROM telemetry_history")


async def test_retention_by_age_deletes_oldest_rows_per_table(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        await store_values(store, device.id, [(float(t), {"t": t}) for t in range(0, 7200, 30)])
        deleted = await store.purge_telemetry(
            {"telemetry_raw": 3600.0, "telemetry_1m": 600.0, "telemetry_1h": 0.0}, chunk=7
        )
        assert deleted == {"telemetry_raw": 120, "telemetry_1m": 10, "telemetry_1h": 0}
        ((series_id, kind),) = (await store.series(device.id, ["t"])).values()
        raw_left = await history_of(store, series_id, kind, start=0, end=7200, granularity=1)
        assert raw_left[0].start == 3600.0
        assert len(raw_left) == 120
        minutes = await history_of(store, series_id, kind, start=0, end=7200, granularity=60)
        assert minutes[0].start == 600
        # The hour rollups still cover the whole range, raw values or not.
        hours = await history_of(store, series_id, kind, start=0, end=7200, granularity=3600)
        assert [(hour.start, hour.count) for hour in hours] == [(0, 120), (3600, 120)]


async def test_retention_finds_its_rows_through_indexes(db_path: Path) -> None:
    async with Store.open(db_path):
        pass
    with contextlib.closing(sqlite3.connect(db_path)) as db:

        def plan(table: str, rows: str, parameters: tuple[float, ...]) -> list[str]:
            statement = f"DELETE FROM {table} WHERE ({RETENTION[table].key}) IN ({rows})"
            return [str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]

        # Raw values have no index by time: the old ones of each series are a range of its index.
        older = plan("telemetry_raw", RETENTION["telemetry_raw"].older, (0.0, 10))
        assert "SEARCH r USING COVERING INDEX telemetry_raw_by_series (series_id=? AND timestamp<?)" in older
        assert "SCAN r" not in " ".join(older)
        assert "SCAN telemetry_raw" in plan("telemetry_raw", RETENTION["telemetry_raw"].oldest, (10,))
        for table, _ in ROLLUPS:
            assert f"USING COVERING INDEX {table}_by_bucket (bucket<?)" in " ".join(
                plan(table, RETENTION[table].older, (0.0, 10))
            )
            assert f"USING COVERING INDEX {table}_by_bucket" in " ".join(
                plan(table, RETENTION[table].oldest, (10,))
            )


async def test_retention_by_size_deletes_the_oldest_raw_values_first(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        base = await store.database_size()
        points: list[tuple[float, dict[str, JsonValue]]] = [
            (float(t), {"x": t, "y": "some text to take space"}) for t in range(20_000)
        ]
        await store_values(store, device.id, points)
        full = await store.database_size()
        limit = base + (full - base) // 2
        deleted = await store.shrink_to(limit, chunk=1000)
        assert deleted["telemetry_raw"] > 0
        assert deleted["telemetry_1m"] == 0  # dropping raw values was enough
        assert await store.database_size() <= limit
        ((series_id, kind),) = (await store.series(device.id, ["x"])).values()
        left = await history_of(store, series_id, kind, start=0, end=20_000, granularity=1)
        # What is left is the newest values, up to the last one.
        assert left[-1].last == 19_999
        assert left[0].start > 0
        assert [p.start for p in left] == [float(t) for t in range(int(left[0].start), 20_000)]
        # Nothing to do under the limit.
        assert await store.shrink_to(full * 2) == {"telemetry_raw": 0, "telemetry_1m": 0}


def rollup_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    return {table: raw(path, f"SELECT * FROM {table} ORDER BY series_id, bucket") for table, _ in ROLLUPS}


async def test_every_committed_batch_is_in_the_rollups_as_sql_sums_the_raw_values(
    db_path: Path, tmp_path: Path
) -> None:
    crashed = tmp_path / "crashed" / db_path.name
    crashed.parent.mkdir()
    batches: list[list[tuple[float, dict[str, JsonValue]]]] = [
        [(60.0, {"t": 1, "s": "a", "on": True}), (61.0, {"t": 2.5}), (3599.5, {"t": -4})],
        # A late value, one tied with the newest of its minute, another hour.
        [(30.0, {"t": 3, "s": "b"}), (61.0, {"t": 7}), (3600.0, {"t": 0.5, "on": False})],
        [(7300.25, {"t": 9, "j": [1]}), (-0.5, {"t": 2})],
    ]
    async with Store.open(db_path) as store:
        device = await add_device(store)
        for batch in batches:
            await store_values(store, device.id, batch)
        # The files as a power cut would leave them now.
        for suffix in ("", "-wal"):
            shutil.copy(f"{db_path}{suffix}", f"{crashed}{suffix}")
    stored = rollup_rows(crashed)
    # What the migrations' SQL makes of every raw value at once.
    with contextlib.closing(sqlite3.connect(crashed, isolation_level=None)) as db:
        for table, size in ROLLUPS:
            db.execute(f"DELETE FROM {table}")
            db.execute(rollup_sql(table, size, "true"))
    assert rollup_rows(crashed) == stored
    t_minutes = [row for row in stored["telemetry_1m"] if row[0] == stored["telemetry_1m"][0][0]]
    # series, bucket, count, num_count, total, low, high, last (the later of the two at 61 s), last_ts
    assert t_minutes[:3] == [(1, -60, 1, 1, 2.0, 2.0, 2.0, 2, -0.5), (1, 0, 1, 1, 3.0, 3.0, 3.0, 3, 30.0),
                             (1, 60, 3, 3, 10.5, 1.0, 7.0, 7, 61.0)]  # fmt: skip


async def test_values_a_schema_5_database_had_not_rolled_up_yet_are_merged_by_the_migration(
    db_path: Path,
) -> None:
    with database_at_version(db_path, 5) as db:
        db.execute(
            "INSERT INTO devices (id, site_id, name, slug, type, blueprint_id, created_at, updated_at)"
            " VALUES ('d', 's', 'D', 'd', 'STANDALONE', 'b', 0, 0)"
        )
        db.execute(
            "INSERT INTO telemetry_series (id, device_id, attribute, kind) VALUES (1, 'd', 't', 'float')"
        )
        db.executemany("INSERT INTO telemetry_raw VALUES (1, ?, ?)", [(60.0, 1.0), (70.0, 2.0)])
        for table, size in ROLLUPS:
            db.execute(rollup_sql(table, size, "true"))
        # Schema 5 merged every few seconds: these two had not been yet.
        db.executemany("INSERT INTO telemetry_raw VALUES (1, ?, ?)", [(80.0, 4.0), (3700.0, 8.0)])
        db.execute("INSERT INTO rollup_pending (id, after_rowid) VALUES (1, 2)")
    async with Store.open(db_path) as store:
        minutes = await history_of(store, 1, SeriesKind.FLOAT, start=0, end=7200, granularity=60)
        assert [(m.start, m.count, m.total, m.last) for m in minutes] == [
            (60, 3, 7.0, 4.0),
            (3660, 1, 8.0, 8.0),
        ]
        hours = await history_of(store, 1, SeriesKind.FLOAT, start=0, end=7200, granularity=3600)
        assert [(h.start, h.count, h.total) for h in hours] == [(0, 3, 7.0), (3600, 1, 8.0)]
    assert raw(db_path, "SELECT count(*) FROM sqlite_schema WHERE name = 'rollup_pending'") == [(0,)]
