"""Finding devices in a real store file: the FTS5 index and the alert table follow every write, the
v5 migration fills them from existing rows, connectivity is decided in SQL like the API decides it,
and on 10,000 devices the filters are served by indexes (EXPLAIN QUERY PLAN)."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

import pytest

from gateway.device_search import DeviceFilter, DeviceOrder, search_terms
from gateway.metadata import field_definition, value_changes
from gateway.model import CommunicationType, Connectivity, Device, DeviceType, Telemetry
from gateway.presence import Presence
from gateway.store.store import Ingested, OptionInUseError, Store, TagTakenError
from tests.integration.test_store import database_at_version


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


async def add(store: Store, name: str, hardware_id: str | None = None, **extra: object) -> Device:
    site = await store.ensure_site(name="Home", timezone="UTC")
    return await store.create_device(
        site_id=site.id,
        name=name,
        slug=None,
        type=DeviceType(str(extra.get("type", DeviceType.STANDALONE))),
        communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
        hardware_id=hardware_id or "S" + uuid.uuid4().hex.upper(),
        channel_id="s",
    )


async def found(store: Store, search: DeviceFilter, **extra: object) -> list[str]:
    devices, total = await store.find_devices(search, offset=0, limit=1000, **extra)  # type: ignore[arg-type]
    assert total == len(devices)
    return [device.name for device in devices]


def q(text: str) -> DeviceFilter:
    return DeviceFilter(terms=search_terms(text), order=DeviceOrder.NAME_ASC)


async def test_the_search_index_follows_names_slugs_hardware_ids_and_metadata(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        pump = await add(store, "Pump North", "SABCDEF0123")
        boiler = await add(store, "Boiler")
        assert await found(store, q("pump")) == ["Pump North"]
        assert await found(store, q("CDEF01")) == ["Pump North"]  # hardware id, any case
        assert await found(store, q("ump nor")) == ["Pump North"]  # every word, as substrings
        assert await found(store, q("pump boiler")) == []
        await store.update_device(pump.id, name="Fan", slug="cellar-fan")
        assert await found(store, q("pump")) == []
        assert await found(store, q("cellar")) == ["Fan"]  # the slug

        await store.create_metadata_field(field_definition({"name": "serial", "type": "text"}), max_fields=10)
        await store.create_metadata_field(
            field_definition({"name": "place", "type": "location"}), max_fields=10
        )
        fields = await store.metadata_fields()
        await store.set_device_metadata(
            boiler.id,
            value_changes(
                fields,
                {"values": {"serial": "XK-2231", "place": {"latitude": 1, "longitude": 2, "name": "Attic"}}},
            ),
        )
        assert await found(store, q("k-223")) == ["Boiler"]
        assert await found(store, q("attic xk-2")) == ["Boiler"]
        assert await store.device_metadata([boiler.id, pump.id]) == {
            boiler.id: {"serial": "XK-2231", "place": {"latitude": 1.0, "longitude": 2.0, "name": "Attic"}}
        }
        await store.set_device_metadata(boiler.id, value_changes(fields, {"values": {"serial": None}}))
        assert await found(store, q("k-223")) == []
        assert await found(store, q("attic")) == ["Boiler"]
        # Deleting a field takes its values out of the index too.
        assert await store.delete_metadata_field("place")
        assert await found(store, q("attic")) == []
        assert await store.delete_device(boiler.id)
        assert await found(store, q("boiler")) == []
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        # One index row per device, none left behind.
        indexed = db.execute("SELECT count(*) FROM device_search").fetchone()[0]
        assert indexed == db.execute("SELECT count(*) FROM devices").fetchone()[0] == 2


async def test_tags_attach_rename_delete_and_count(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        a, b = await add(store, "A"), await add(store, "B")
        roof = await store.create_tag("Roof")
        cellar = await store.create_tag("cellar")
        with pytest.raises(TagTakenError):
            await store.create_tag("ROOF")
        await store.attach_tag(a.id, roof.id)
        await store.attach_tag(a.id, roof.id)  # again is fine
        await store.attach_tag(b.id, roof.id)
        await store.attach_tag(b.id, cellar.id)
        assert await store.device_count_by_tag() == {"cellar": 1, "Roof": 2}
        by_name = DeviceOrder.NAME_ASC
        # Names in any letter case, or ids.
        assert await found(store, DeviceFilter(tags=frozenset({"roof"}), order=by_name)) == ["A", "B"]
        assert await found(store, DeviceFilter(tags=frozenset({cellar.id}), order=by_name)) == ["B"]
        assert await found(store, DeviceFilter(tags=frozenset({"nope"}))) == []
        renamed = await store.rename_tag(roof.id, "Top")
        assert (renamed.name, renamed.device_count) == ("Top", 2)
        with pytest.raises(TagTakenError):
            await store.rename_tag(roof.id, "CELLAR")
        assert await store.tag("top") == renamed
        assert [t.name for t in (await store.device_tags([b.id]))[b.id]] == ["cellar", "Top"]
        assert await store.detach_tag(b.id, roof.id)
        assert not await store.detach_tag(b.id, roof.id)
        assert await store.delete_tag(cellar.id)
        assert await store.device_tags([b.id]) == {}
        assert await store.device_count_by_tag() == {"Top": 1}
        assert (await store.tags()) == ([await store.tag(roof.id)], 1)


async def test_enum_options_in_use_cannot_be_taken_away(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add(store, "A")
        phase = field_definition({"name": "phase", "type": "enum", "options": ["L1", "L2"]})
        await store.create_metadata_field(phase, max_fields=10)
        await store.set_device_metadata(
            device.id, value_changes({"phase": phase}, {"values": {"phase": "L2"}})
        )
        narrowed = field_definition({"name": "phase", "type": "enum", "options": ["L1"]})
        with pytest.raises(OptionInUseError, match="L2"):
            await store.update_metadata_field(narrowed)
        widened = field_definition({"name": "phase", "type": "enum", "options": ["L1", "L2", "L3"]})
        assert await store.update_metadata_field(widened) == widened
        assert (await store.metadata_fields())["phase"].options == ("L1", "L2", "L3")
        with pytest.raises(ValueError, match="at most 1"):
            await store.create_metadata_field(field_definition({"name": "x", "type": "text"}), max_fields=1)


async def test_the_alert_filter_follows_the_newest_telemetry(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        hot, cold = await add(store, "Hot"), await add(store, "Cold")
        store.enqueue(
            Ingested(hot.id, Telemetry(timestamp=10.0, values={}, alerts=("overheat", "fan")), 10.0)
        )
        store.enqueue(Ingested(cold.id, Telemetry(timestamp=10.0, values={}, alerts=("frost",)), 10.0))
        await store.flush()
        alerts = DeviceFilter(raised_alert_names=frozenset({"overheat", "frost"}), order=DeviceOrder.NAME_ASC)
        assert await found(store, alerts) == ["Cold", "Hot"]
        assert await found(store, DeviceFilter(raised_alert_names=frozenset({"fan"}))) == ["Hot"]
        # An older message arriving late changes nothing; a newer one without alerts clears them.
        store.enqueue(Ingested(hot.id, Telemetry(timestamp=5.0, values={}, alerts=()), 11.0))
        store.enqueue(Ingested(cold.id, Telemetry(timestamp=20.0, values={}, alerts=()), 12.0))
        await store.flush()
        assert await found(store, alerts) == ["Hot"]
    # Whoever deletes a device's state row (clearing its data) clears its alerts too.
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.execute("DELETE FROM device_state WHERE device_id = ?", (hot.id,))
    async with Store.open(db_path) as store:
        assert await found(store, alerts) == []


async def test_connectivity_is_decided_like_the_api_decides_it(db_path: Path) -> None:
    now = 1000.0
    async with Store.open(db_path, clock=lambda: now) as store:
        devices = {
            name: await add(store, name, "S" + name.upper() * 4)
            for name in ("on", "fresh", "off", "gone", "new")
        }
        presence = Presence(30.0)
        presence.connected("c1", "SONONONON")
        presence.message("SFRESHFRESHFRESHFRESH", now - 5)
        presence.message("SOFFOFFOFFOFF", now - 100)  # too old: OFFLINE
        presence.connected("c2", "SGONEGONEGONEGONE")
        presence.disconnected("c2")
        # "new" never spoke to this daemon but the store knows a message from it.
        store.enqueue(Ingested(devices["new"].id, Telemetry(timestamp=1.0, values={}, alerts=None), 1.0))
        await store.flush()
        last_seen = await store.last_seen([d.id for d in devices.values()])
        gateway = await store.gateway_device()
        expected: dict[Connectivity, list[str]] = {c: [] for c in Connectivity}
        for device in [gateway, *devices.values()]:
            status = (
                Connectivity.ONLINE
                if device.type is DeviceType.GATEWAY
                else presence.status(device.hardware_id, now, seen_before=device.id in last_seen)
            )
            expected[status].append(device.name)
        assert sorted(expected[Connectivity.ONLINE]) == ["Gateway", "fresh", "on"]
        sets = {"online": presence.online_identities(now), "seen": presence.seen_identities()}
        for status, names in expected.items():
            search = DeviceFilter(connectivity=frozenset({status}), order=DeviceOrder.NAME_ASC)
            assert await found(store, search, **sets) == sorted(names, key=str.casefold), status
        both = DeviceFilter(connectivity=frozenset({Connectivity.OFFLINE, Connectivity.UNKNOWN}))
        assert len(await found(store, both, **sets)) == 3


async def test_the_migration_fills_the_index_and_alerts_from_a_v4_database(db_path: Path) -> None:
    with database_at_version(db_path, 4) as db:
        for n, name in enumerate(("Heat pump", "Battery")):
            db.execute(
                "INSERT INTO devices (id, site_id, name, slug, type, blueprint_id, hardware_id, channel_id,"
                " created_at, updated_at) VALUES (?, 's', ?, ?, 'STANDALONE', 'b', ?, 's', ?, ?)",
                (f"d{n}", name, f"slug-{n}", f"SHW{n}", n, n),
            )
        db.execute(
            "INSERT INTO device_state (device_id, last_seen_at, raised_alerts_json, alerts_timestamp)"
            " VALUES ('d1', 5, '[\"low_soc\"]', 5)"
        )
    async with Store.open(db_path) as store:
        assert await found(store, q("heat")) == ["Heat pump"]
        assert await found(store, q("shw1")) == ["Battery"]
        assert await found(store, DeviceFilter(raised_alert_names=frozenset({"low_soc"}))) == ["Battery"]
        # New devices are indexed too, after the migrated ones.
        await store.create_device(
            site_id="s", name="Heater", slug=None, type=DeviceType.STANDALONE,
            communication_type=None, hardware_id="SHW9", channel_id="s",
        )  # fmt: skip
        assert await found(store, q("hea")) == ["Heat pump", "Heater"]


def bulk_devices(path: Path, count: int) -> None:
    """`count` devices, a tag on every 100th and an alert on every 250th, in one raw transaction
    (the schema's triggers index them as any write would)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("BEGIN")
        site = db.execute("SELECT id FROM site").fetchone()[0]
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO devices (id, site_id, name, slug, type, blueprint_id, hardware_id, channel_id,"
            " created_at, updated_at)"
            " SELECT printf('dev-%05d', i), ?, printf('Device %05d', i), printf('device-%05d', i),"
            " CASE i % 3 WHEN 0 THEN 'STANDALONE' WHEN 1 THEN 'VIRTUAL_UCM' ELSE 'LUA' END,"
            " printf('bp-%d', i % 7), printf('SHW%08d', i), 's', i, i FROM n",
            (count, site),
        )
        db.execute("INSERT INTO tags (id, name, created_at, updated_at) VALUES ('t', 'every-100', 0, 0)")
        db.execute(
            "INSERT INTO device_tags (tag_id, device_id)"
            " SELECT 't', id FROM devices WHERE created_at % 100 = 0"
        )
        db.execute(
            "INSERT INTO device_state (device_id, last_seen_at, raised_alerts_json, alerts_timestamp)"
            " SELECT id, created_at, '[\"overheat\"]', 1 FROM devices WHERE created_at % 250 = 0"
        )
        db.execute("COMMIT")
        db.execute("ANALYZE")


async def test_on_10000_devices_the_search_and_filters_use_indexes(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        await store.ensure_site(name="Home", timezone="UTC")
    bulk_devices(db_path, 10_000)
    async with Store.open(db_path) as store:
        terms = DeviceFilter(terms=search_terms("ice 0423"))
        plan = await store.explain_find_devices(terms)
        assert any(
            "device_search VIRTUAL TABLE INDEX" in line or "fts VIRTUAL TABLE INDEX" in line for line in plan
        ), plan
        full_scans = [line for line in plan if line.startswith("SCAN d") and "INDEX" not in line]
        assert full_scans == [], plan
        devices, total = await store.find_devices(terms, offset=0, limit=50)
        # Device 00423 and Device 04230-04239 ("ice" is in every name).
        assert total == 11
        assert [d.name for d in devices] == ["Device 00423", *(f"Device 0423{n}" for n in range(10))]

        for search, index in [
            (DeviceFilter(raised_alert_names=frozenset({"overheat"})), "device_alerts"),
            (DeviceFilter(tags=frozenset({"every-100"})), "device_tags"),
            (DeviceFilter(order=DeviceOrder.NAME_DESC), "devices_by_name"),
            (DeviceFilter(order=DeviceOrder.CREATED_AT_ASC), "devices_by_created"),
            (DeviceFilter(created_from=9000, created_before=9100), "devices_by_created"),
            (DeviceFilter(connectivity=frozenset({Connectivity.ONLINE})), "(hardware_id=?)"),
        ]:
            plan = await store.explain_find_devices(search)
            assert any(index in line for line in plan), (search, plan)

        alerts, total = await store.find_devices(
            DeviceFilter(raised_alert_names=frozenset({"overheat"}), order=DeviceOrder.LAST_SEEN_AT_DESC),
            offset=0,
            limit=3,
        )
        assert total == 40
        assert [d.name for d in alerts] == ["Device 10000", "Device 09750", "Device 09500"]
        tagged, total = await store.find_devices(
            DeviceFilter(tags=frozenset({"EVERY-100"}), types=frozenset({DeviceType.VIRTUAL_UCM})),
            offset=2,
            limit=2,
        )
        # i % 100 == 0 and i % 3 == 1: 100, 400, 700, ...
        assert total == 34
        assert [d.name for d in tagged] == ["Device 00700", "Device 01000"]
