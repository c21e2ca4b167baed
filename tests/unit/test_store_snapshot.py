"""Tests for `gateway.store.snapshot`: snapshots, facts and the in-use probe on real database files.

The gateway databases are made by `Store.open` (a site, hence the gateway device, and one more
device); the foreign and damaged ones with plain `sqlite3`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.model import CommunicationType, DeviceType
from gateway.store.schema import TARGET_VERSION
from gateway.store.snapshot import (
    DatabaseFacts,
    IntegrityCheckError,
    SnapshotError,
    in_use,
    inspect_database,
    take_snapshot,
)
from gateway.store.store import Store

# Byte 18 of an SQLite file header: 1 = rollback journal, 2 = WAL (https://sqlite.org/fileformat.html).
_WRITE_VERSION_OFFSET = 18


@contextlib.asynccontextmanager
async def _gateway_database(path: Path) -> AsyncIterator[str]:
    """A store with a site (and so the gateway device) and one standalone device, open; the site id."""
    async with Store.open(path) as store:
        site = await store.ensure_site(name="Home", timezone="UTC")
        await store.create_device(
            site_id=site.id,
            name="Meter One",
            slug=None,
            type=DeviceType.STANDALONE,
            communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
            hardware_id="S" + "a" * 32,
            channel_id="s",
        )
        yield site.id


def _make_gateway_database(path: Path) -> str:
    async def make() -> str:
        async with _gateway_database(path) as site_id:
            return site_id

    return asyncio.run(make())


def test_a_snapshot_of_an_open_database_is_one_file_with_its_facts(tmp_path: Path) -> None:
    source, target = tmp_path / "live.sqlite3", tmp_path / "copy.sqlite3"

    async def snapshot_while_open() -> str:
        async with _gateway_database(source) as site_id:
            assert in_use(source)  # the daemon's situation: the store holds it open, in WAL mode
            take_snapshot(source, target)
            return site_id

    site_id = asyncio.run(snapshot_while_open())
    assert target.read_bytes()[_WRITE_VERSION_OFFSET] == 1  # switched out of WAL
    assert not target.with_name(target.name + "-wal").exists()
    assert inspect_database(target) == DatabaseFacts(
        schema_version=TARGET_VERSION, site_id=site_id, devices=1
    )


def test_a_snapshot_of_a_missing_database_fails_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="unable to open"):
        take_snapshot(tmp_path / "missing.sqlite3", tmp_path / "copy.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()


def test_a_database_without_a_site_has_no_site_id(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"

    async def open_and_close() -> None:
        async with Store.open(path):
            pass

    asyncio.run(open_and_close())
    assert inspect_database(path) == DatabaseFacts(schema_version=TARGET_VERSION, site_id=None, devices=0)


def test_a_file_that_is_no_gateway_database_is_a_snapshot_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"x" * 8192)
    with pytest.raises(SnapshotError, match="not a database") as caught:
        inspect_database(garbage)
    assert not isinstance(caught.value, IntegrityCheckError)
    foreign = tmp_path / "foreign.sqlite3"
    with contextlib.closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE other (x)")
    with pytest.raises(SnapshotError, match="no such table"):
        inspect_database(foreign)
    with pytest.raises(SnapshotError, match="unable to open"):
        inspect_database(tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()


def test_a_database_failing_its_integrity_check_reports_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (a, b)")
        db.execute("CREATE INDEX t_a ON t (a)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(i, -i) for i in range(20)])
        db.commit()
        # The index now claims to cover b, but its entries hold a: every row is missing from it.
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX t_a ON t (b)' WHERE name = 't_a'")
        db.commit()
    with pytest.raises(IntegrityCheckError) as caught:
        inspect_database(path)
    assert len(caught.value.problems) > 1
    assert all("t_a" in problem for problem in caught.value.problems)


def test_in_use_only_while_another_connection_holds_the_database(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    _make_gateway_database(path)
    assert not in_use(path)
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("SELECT count(*) FROM devices").fetchone()  # WAL: a shared lock while open
        assert in_use(path)
    assert not in_use(path)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"x" * 8192)
    assert not in_use(garbage)
    assert not in_use(tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()
