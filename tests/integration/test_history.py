"""Telemetry history in the store: series, raw values, rollups merged every few seconds and before
every read of them, the table a query reads from, and the migration of the old history table."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.model import JsonValue, Partial, SeriesKind
from gateway.store.schema import MIGRATIONS
from gateway.store.store import Store
from tests.gateway_process import eventually
from tests.integration.test_store import add_device, db_path, ingested, raw, telemetry

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
    """One series' history."""
    found = await store.history({series_id: kind}, start=start, end=end, granularity=granularity)
    return found[series_id]


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
    db_path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO site VALUES ('s', 'Home', 'UTC', 0, 0)")
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


async def committed(store: Store, count: int) -> None:
    """Wait until the writer committed `count` items, without `flush` (which merges rollups)."""

    async def done() -> bool:
        return store.stats.committed >= count

    await eventually(done, 5, interval=0.01)


def rolled_up_rows(path: Path) -> list[tuple[object, ...]]:
    return raw(path, "SELECT bucket, count FROM telemetry_1m ORDER BY bucket")


async def test_rollups_lag_batches_but_every_read_sees_every_value(db_path: Path) -> None:
    async with Store.open(db_path, rollup_interval=3600) as store:
        device = await add_device(store)
        for ts in (60.0, 61.0, 125.0):
            assert store.enqueue(ingested(device.id, telemetry(ts, {"t": ts})))
        await committed(store, 3)
        # Merging every batch was most of a batch's SQL under load: the rollups wait, and the
        # database says which raw values they lack.
        assert rolled_up_rows(db_path) == []
        assert raw(db_path, "SELECT count(*) FROM rollup_pending") == [(1,)]
        series_id, kind = (await store.series(device.id, ["t"]))["t"]
        minutes = await history_of(store, series_id, kind, start=0, end=180, granularity=60)
        assert [(point.start, point.count) for point in minutes] == [(60, 2), (120, 1)]
        assert raw(db_path, "SELECT count(*) FROM rollup_pending") == [(0,)]


async def test_values_a_crash_left_out_of_the_rollups_are_merged_after_the_restart(
    db_path: Path, tmp_path: Path
) -> None:
    crashed = tmp_path / "crashed" / db_path.name
    crashed.parent.mkdir()
    async with Store.open(db_path, rollup_interval=3600) as store:
        device = await add_device(store)
        assert store.enqueue(ingested(device.id, telemetry(60.0, {"t": 1})))
        await committed(store, 1)
        # The files as a power cut would leave them: committed, not rolled up.
        for suffix in ("", "-wal"):
            shutil.copy(f"{db_path}{suffix}", f"{crashed}{suffix}")
    assert rolled_up_rows(crashed) == []
    async with Store.open(crashed, rollup_interval=3600) as store:
        # The first batch after the start merges what the crash left, with its own values.
        assert store.enqueue(ingested(device.id, telemetry(130.0, {"t": 2})))
        await committed(store, 1)
        assert rolled_up_rows(crashed) == [(60, 1), (120, 1)]
