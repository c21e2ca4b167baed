"""Integration tests for `gateway.store.store.Store` on real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.model import (
    NO_BLUEPRINT_ID,
    ChannelRef,
    CommandResponse,
    CommandResponseState,
    CommunicationType,
    Device,
    DeviceMessage,
    DeviceType,
    JsonValue,
    LatestValue,
    Location,
    LogEntry,
    LogSeverity,
    Properties,
    Role,
    Site,
    Telemetry,
)
from gateway.store.schema import MIGRATIONS, TARGET_VERSION
from gateway.store.store import (
    ChannelTakenError,
    Ingested,
    IssuedCertificateRecord,
    RevokedCertificate,
    SlugTakenError,
    Store,
    UsernameTakenError,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A directory the store has to create, so its mode is the store's doing.
    return tmp_path / "state" / "gateway.db"


def raw(path: Path, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on a separate plain sqlite3 connection (what is really on disk)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA busy_timeout = 2000")
        return list(db.execute(sql, parameters).fetchall())


@contextlib.contextmanager
def database_at_version(path: Path, version: int) -> Iterator[sqlite3.Connection]:
    """A database file as schema `version` left it, with the site 's', open for the test to fill
    in before a newer Store migrates it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for migration in MIGRATIONS[:version]:
            db.executescript(migration)
        db.execute(f"PRAGMA user_version = {version:d}")
        db.execute(
            "INSERT INTO site (id, name, timezone, created_at, updated_at) VALUES ('s', 'S', 'UTC', 0, 0)"
        )
        yield db


def read(path: Path) -> bytes:
    """A file's bytes."""
    return path.read_bytes()


def mode(path: Path) -> int:
    """Permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


def make_file(path: Path, permissions: int, content: bytes = b"") -> None:
    """Create `path` (and its directory if needed) with this content and exactly these permission bits."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(content)
    path.chmod(permissions)


async def site_of(store: Store) -> Site:
    return await store.ensure_site(name="Home", timezone="Europe/Berlin")


async def add_device(
    store: Store,
    name: str = "Meter",
    *,
    slug: str | None = None,
    hardware_id: str | None = None,
    channel_id: str | None = "ch",
    type: DeviceType = DeviceType.STANDALONE,
) -> Device:
    site = await site_of(store)
    return await store.create_device(
        site_id=site.id,
        name=name,
        slug=slug,
        type=type,
        communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
        hardware_id=hardware_id if hardware_id is not None else uuid.uuid4().hex,
        channel_id=channel_id,
    )


def ingested(device: Device | str, message: DeviceMessage, received_at: float = 1000.0) -> Ingested:
    device_id = device if isinstance(device, str) else device.id
    return Ingested(device_id=device_id, message=message, received_at=received_at)


def telemetry(ts: float, values: dict[str, JsonValue], alerts: tuple[str, ...] | None = None) -> Telemetry:
    return Telemetry(timestamp=ts, values=values, alerts=alerts)


# --- Opening, migrations, files ------------------------------------------------------------------


async def test_migrations_apply_once_and_survive_reopen(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        first = await site_of(store)
        device = await add_device(store)
    assert raw(db_path, "PRAGMA user_version") == [(TARGET_VERSION,)]
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(db_path, "PRAGMA auto_vacuum") == [(2,)]  # INCREMENTAL, set before any table

    async with Store.open(db_path) as store:
        assert await store.get_site() == first
        assert await store.get_device(device.id) == device
        assert await store.ensure_site(name="Other", timezone="UTC") == first
    assert raw(db_path, "PRAGMA user_version") == [(TARGET_VERSION,)]
    assert raw(db_path, "SELECT count(*) FROM site") == [(1,)]


async def test_refuses_a_database_from_a_newer_version(db_path: Path) -> None:
    async with Store.open(db_path):
        pass
    raw(db_path, f"PRAGMA user_version = {TARGET_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        async with Store.open(db_path):
            pass
    assert raw(db_path, "PRAGMA user_version") == [(TARGET_VERSION + 1,)]


async def test_files_are_private(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        await site_of(store)
        assert mode(db_path.parent) == 0o700
        for suffix in ("", "-wal", "-shm"):
            file = db_path.with_name(db_path.name + suffix)
            assert mode(file) == 0o600, file


async def test_an_existing_wider_file_is_narrowed(db_path: Path) -> None:
    make_file(db_path, 0o644)
    assert mode(db_path) == 0o644
    async with Store.open(db_path) as store:
        assert await store.integrity_check() == "ok"
    assert mode(db_path) == 0o600


async def test_integrity_check_is_ok(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        store.enqueue(ingested(device, telemetry(1.0, {"v": 1})))
        await store.flush()
        assert await store.integrity_check() == "ok"


# --- A database found unusable at start -----------------------------------------------------------


async def crashed_with_a_damaged_page(db_path: Path) -> bytes:
    """A database with history whose last run did not close it (its -wal is left behind), and one
    b-tree page overwritten with garbage: what a power cut on a lying SD card leaves."""
    async with Store.open(db_path) as store:
        device = await add_device(store)
        for second in range(2_000):
            store.enqueue(ingested(device, telemetry(float(second), {"v": second, "w": -second})))
        await store.flush()
    return damage_index_page(db_path, "telemetry_raw_by_series")


def damage_index_page(db_path: Path, index: str) -> bytes:
    """Overwrite the root page of `index` with garbage and leave an (empty) WAL behind, as a crash
    would; returns the file's bytes as damaged."""
    (root,) = raw(db_path, "SELECT rootpage FROM sqlite_schema WHERE name = ?", (index,))[0]
    (page_size,) = raw(db_path, "PRAGMA page_size")[0]
    assert isinstance(root, int)
    assert isinstance(page_size, int)
    with db_path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xa5" * page_size)
    db_path.with_name(db_path.name + "-wal").touch()
    return db_path.read_bytes()


async def test_a_file_that_is_not_a_database_is_set_aside_and_a_fresh_one_made(db_path: Path) -> None:
    garbage = b"this is not SQLite\n" * 500
    make_file(db_path, 0o600, garbage)
    async with Store.open(db_path, set_aside_corrupt=True, clock=lambda: 1_700_000_000.0) as store:
        assert store.set_aside is not None
        assert "not a database" in store.set_aside.problem
        assert store.set_aside.moved_to == db_path.with_name("gateway.db.corrupt-20231114T221320Z")
        assert read(store.set_aside.moved_to) == garbage
        device = await add_device(store)
        assert await store.get_device(device.id) == device
        assert await store.integrity_check() == "ok"
    assert mode(db_path) == 0o600


async def test_a_damaged_page_after_a_crash_is_found_and_set_aside(db_path: Path) -> None:
    damaged = await crashed_with_a_damaged_page(db_path)
    async with Store.open(db_path, set_aside_corrupt=True) as store:
        assert store.set_aside is not None
        assert store.set_aside.problem.startswith("PRAGMA quick_check: ")
        assert read(store.set_aside.moved_to) == damaged
        # Nothing of the old database (nor its WAL) was replayed into the new one.
        assert await store.list_devices(offset=0, limit=10) == ([], 0)


async def test_two_set_asides_in_one_second_keep_both_files(db_path: Path) -> None:
    for attempt in (b"first", b"second"):
        make_file(db_path, 0o600, attempt * 1000)
        async with Store.open(db_path, set_aside_corrupt=True, clock=lambda: 1_700_000_000.0) as store:
            assert store.set_aside is not None
            assert read(store.set_aside.moved_to) == attempt * 1000
    assert len(list(db_path.parent.glob("gateway.db.corrupt-*"))) == 2


async def test_a_sound_database_left_by_a_crash_is_kept(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
    make_file(db_path.with_name(db_path.name + "-wal"), 0o600)
    async with Store.open(db_path, set_aside_corrupt=True) as store:
        assert store.set_aside is None
        assert await store.get_device(device.id) == device
    assert list(db_path.parent.glob("*.corrupt-*")) == []


async def test_without_set_aside_a_damaged_database_is_an_error_and_left_alone(db_path: Path) -> None:
    make_file(db_path, 0o600, b"not SQLite" * 1000)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        async with Store.open(db_path):
            pass
    assert read(db_path) == b"not SQLite" * 1000
    assert list(db_path.parent.glob("*.corrupt-*")) == []


async def test_a_body_exception_propagates_unwrapped(db_path: Path) -> None:
    with pytest.raises(KeyError, match="boom"):
        async with Store.open(db_path):
            raise KeyError("boom")


# --- Site, gateway device, tokens --------------------------------------------------------------


async def test_ensure_site_creates_the_gateway_device_once(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        assert await store.get_site() is None
        with pytest.raises(LookupError):
            await store.gateway_device()
        site = await store.ensure_site(name="Home", timezone="Europe/Berlin")
        assert (site.name, site.timezone) == ("Home", "Europe/Berlin")
        again = await store.ensure_site(name="Renamed", timezone="UTC")
        assert again == site
        assert await store.get_site() == site

        gateway = await store.gateway_device()
        assert gateway.type is DeviceType.GATEWAY
        assert (gateway.slug, gateway.name, gateway.site_id) == ("gateway", "Gateway", site.id)
        assert gateway.communication_type is CommunicationType.MQTT_V1_LOCALHOST
        assert gateway.hardware_id is None
        assert gateway.channel is None
        assert gateway.blueprint_id == NO_BLUEPRINT_ID
        devices, total = await store.list_devices(offset=0, limit=10)
        assert (devices, total) == ([gateway], 1)
        with pytest.raises(ValueError, match="gateway"):
            await store.delete_device(gateway.id)


async def test_tokens_by_hash_and_revocation(db_path: Path) -> None:
    async with Store.open(db_path, clock=lambda: 1234.5) as store:
        token = await store.create_token(name="cli", role=Role.OWNER, token_hash="h1")
        assert (token.name, token.role, token.created_at) == ("cli", Role.OWNER, 1234.5)
        assert await store.token_by_hash("h1") == token
        assert await store.token_by_hash("h2") is None
    raw(db_path, "UPDATE api_tokens SET revoked_at = 2000 WHERE id = ?", (token.id,))
    async with Store.open(db_path) as store:
        assert await store.token_by_hash("h1") is None


async def test_token_and_site_in_one_read_agree_with_the_separate_reads(db_path: Path) -> None:
    async with Store.open(db_path, clock=lambda: 1234.5) as store:
        assert await store.token_and_site("h1") == (None, None)
        token = await store.create_token(name="cli", role=Role.OWNER, token_hash="h1")
        assert await store.token_and_site("h1") == (token, None)
        site = await store.ensure_site(name="Home", timezone="UTC")
        await store.update_site(site.id, name=None, timezone=None, location=Location("Lab", 1.5, None))
        located = await store.get_site()
        assert located is not None
        assert located.location == Location("Lab", 1.5, None)
        assert await store.token_and_site("h1") == (token, located)
        assert await store.token_and_site("h2") == (None, located)
        await store.revoke_token(token.id)
        assert await store.token_and_site("h1") == (None, located)


async def test_point_reads_on_the_loop_see_other_processes_commits_at_once(db_path: Path) -> None:
    async with Store.open(db_path, clock=lambda: 1234.5) as store:
        site = await store.ensure_site(name="Home", timezone="UTC")
        token = await store.create_token(name="cli", role=Role.OWNER, token_hash="h1")
        device = await add_device(store, "Meter")
        assert await store.token_and_site("h1") == (token, site)
        assert await store.device_seen(device.slug) == (device, None)
        # What the CLI does from another process: the very next read must see it (no caching).
        raw(db_path, "UPDATE api_tokens SET revoked_at = 2000 WHERE id = ?", (token.id,))
        raw(db_path, "UPDATE devices SET slug = 'renamed' WHERE id = ?", (device.id,))
        raw(db_path, "INSERT INTO device_state (device_id, last_seen_at) VALUES (?, 99.0)", (device.id,))
        assert await store.token_and_site("h1") == (None, site)
        assert await store.device_seen(device.slug) is None
        moved = await store.device_seen("renamed")
        assert moved is not None
        assert (moved[0].slug, moved[1]) == ("renamed", 99.0)
        # The point reads hold no read transaction open: a checkpoint can take the whole WAL.
        busy, _, _ = raw(db_path, "PRAGMA wal_checkpoint(TRUNCATE)")[0]
        assert busy == 0


class _BusyConnection:
    """Stands for the inline connection while SQLite reports the database busy (as during WAL
    recovery after a crash), which two connections of one test cannot bring about."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.calls = 0

    def execute(self, sql: str, parameters: object = ()) -> sqlite3.Cursor:
        self.calls += 1
        error = sqlite3.OperationalError("database is locked" if self.code != 1 else "boom")
        error.sqlite_errorcode = self.code
        raise error

    def close(self) -> None:
        pass


async def test_a_busy_database_sends_point_reads_to_the_reader_thread(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        token = await store.create_token(name="cli", role=Role.OWNER, token_hash="h1")
        await store.token_and_site("h1")  # opens the inline connection
        inline = store._inline
        assert inline is not None
        for code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_BUSY | (2 << 8)):
            busy = _BusyConnection(code)
            store._inline = busy  # type: ignore[assignment]
            assert await store.token_and_site("h1") == (token, None)
            assert busy.calls == 1
        # Any other error is not retried.
        store._inline = _BusyConnection(1)  # type: ignore[assignment]
        with pytest.raises(sqlite3.OperationalError, match="boom"):
            await store.token_and_site("h1")
        store._inline = inline
    # Closed with the store.
    assert store._inline is None
    with pytest.raises(sqlite3.ProgrammingError):
        inline.execute("SELECT 1")


async def test_tokens_are_listed_and_revoked(db_path: Path) -> None:
    now = [100.0]
    async with Store.open(db_path, clock=lambda: now[0]) as store:
        first = await store.create_token(name="one", role=Role.OWNER, token_hash="h1")
        now[0] = 200.0
        second = await store.create_token(name="two", role=Role.READONLY, token_hash="h2")
        assert await store.tokens() == [first, second]
        now[0] = 300.0
        revoked = await store.revoke_token(first.id)
        assert revoked is not None
        assert revoked.revoked_at == 300.0
        assert await store.token_by_hash("h1") is None
        assert await store.token_by_hash("h2") == second
        now[0] = 400.0
        again = await store.revoke_token(first.id)
        assert again is not None
        assert again.revoked_at == 300.0  # the first revocation time is kept
        assert await store.revoke_token("no-such-id") is None
        assert [t.revoked_at for t in await store.tokens()] == [300.0, None]


# --- Devices -----------------------------------------------------------------------------------


async def test_derived_slugs_get_numbered_and_explicit_ones_conflict(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        first = await add_device(store, "Heat Pump")
        second = await add_device(store, "heat  pump!")
        third = await add_device(store, "HEAT-PUMP")
        assert [first.slug, second.slug, third.slug] == ["heat-pump", "heat-pump-2", "heat-pump-3"]
        # The gateway holds "gateway"; a device named so gets the next free one.
        assert (await add_device(store, "Gateway")).slug == "gateway-2"
        assert (await add_device(store, "???")).slug == "device"

        explicit = await add_device(store, "Whatever", slug="my-meter")
        assert explicit.slug == "my-meter"
        with pytest.raises(SlugTakenError):
            await add_device(store, "Another", slug="my-meter")
        with pytest.raises(SlugTakenError):
            await add_device(store, "Another", slug="heat-pump-2")
        # A failed create leaves nothing behind.
        _, total = await store.list_devices(offset=0, limit=100)
        assert total == 7  # gateway + 6


async def test_a_gap_in_numbered_slugs_is_reused(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        await add_device(store, "pump")
        await add_device(store, "x", slug="pump-3")
        await add_device(store, "x", slug="pumpkin")
        assert (await add_device(store, "Pump")).slug == "pump-2"
        assert (await add_device(store, "Pump")).slug == "pump-4"


async def test_channel_and_site_are_checked(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store, hardware_id="HW1", channel_id="ch1")
        with pytest.raises(ChannelTakenError):
            await add_device(store, "Twin", hardware_id="HW1", channel_id="ch1")
        other = await add_device(store, "Other channel", hardware_id="HW1", channel_id="ch2")
        assert other.channel == ChannelRef("HW1", "ch2")
        with pytest.raises(LookupError):
            await store.create_device(
                site_id="no-such-site",
                name="x",
                slug=None,
                type=DeviceType.STANDALONE,
                communication_type=None,
                hardware_id=None,
                channel_id=None,
            )
        assert await store.device_by_channel(ChannelRef("HW1", "ch1")) == device
        assert await store.device_by_channel(ChannelRef("HW1", "nope")) is None


async def test_list_devices_pages_in_id_order_with_total(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        site = await site_of(store)
        made = [await add_device(store, f"d{i}") for i in range(5)]
        made.append(await add_device(store, "ucm", type=DeviceType.HARDWARE_UCM))
        everything = sorted([*made, await store.gateway_device()], key=lambda d: d.id)

        page, total = await store.list_devices(offset=0, limit=3)
        assert (page, total) == (everything[:3], 7)
        page, total = await store.list_devices(offset=3, limit=3)
        assert (page, total) == (everything[3:6], 7)
        page, total = await store.list_devices(offset=6, limit=3)
        assert (page, total) == (everything[6:], 7)
        page, total = await store.list_devices(offset=50, limit=3)
        assert (page, total) == ([], 7)

        page, total = await store.list_devices(offset=0, limit=10, types={DeviceType.HARDWARE_UCM})
        assert (page, total) == ([made[-1]], 1)
        page, total = await store.list_devices(
            offset=1, limit=10, types=[DeviceType.STANDALONE, DeviceType.GATEWAY]
        )
        assert total == 6
        assert page == [d for d in everything if d.type is not DeviceType.HARDWARE_UCM][1:]
        assert await store.list_devices(offset=0, limit=10, types=()) == ([], 0)
        page, total = await store.list_devices(offset=0, limit=2, site_id=site.id)
        assert (page, total) == (everything[:2], 7)
        assert await store.list_devices(offset=0, limit=10, site_id="elsewhere") == ([], 0)


async def test_get_device_by_id_or_slug(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store, "Solar Inverter")
        assert await store.get_device(device.id) == device
        assert await store.get_device("solar-inverter") == device
        assert await store.get_device("nope") is None
        # An id wins over another device whose slug happens to equal it.
        decoy = await add_device(store, "decoy", slug=device.id)
        assert await store.get_device(device.id) == device
        assert await store.get_device("decoy") is None
        assert decoy.slug == device.id


async def test_combined_reads_agree_with_the_separate_reads_they_replace(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store, "Solar Inverter")
        quiet = await add_device(store, "Quiet")
        # An id wins over another device whose slug happens to equal it, in every read.
        decoy = await add_device(store, "decoy", slug=device.id)
        items = [
            ingested(device, telemetry(10.0, {"power": 1.5, "mode": "auto"}), 101.0),
            ingested(decoy, telemetry(11.0, {"power": 9.0, "other": 1}), 102.0),
        ]
        assert all(store.enqueue(item) for item in items)
        await store.flush()
        keys = [device.id, "solar-inverter", quiet.slug, decoy.slug, decoy.id, "decoy", "nope"]

        for key in keys:
            seen = await store.device_seen(key)
            found = await store.get_device(key)
            if found is None:
                assert seen is None
            else:
                assert seen == (found, (await store.last_seen([found.id])).get(found.id))
        assert await store.device_seen(device.id) == (device, 101.0)
        assert await store.device_seen(quiet.id) == (quiet, None)

        by_key = await store.devices_by_keys(keys)
        latest = await store.latest_telemetry_of([d.id for d in by_key.values()])
        assert await store.latest_by_keys(keys) == {
            key: (found, latest[found.id]) for key, found in by_key.items()
        }
        assert (await store.latest_by_keys([device.id]))[device.id][1] == {
            "power": LatestValue(1.5, 10.0),
            "mode": LatestValue("auto", 10.0),
        }
        assert await store.latest_by_keys([]) == {}

        wanted = {key: ["power", "other", "missing"] for key in keys} | {decoy.id: ["other"]}
        expected = {}
        for key, found in by_key.items():
            expected[key] = (found, await store.series(found.id, wanted[key]))
        assert await store.series_by_keys(wanted) == expected
        assert set(expected[device.id][1]) == {"power"}
        assert set(expected[decoy.id][1]) == {"other"}
        assert expected[quiet.slug][1] == {}


# --- Credentials ---------------------------------------------------------------------------------


async def test_credentials_are_replaced_listed_and_deleted(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        a = await add_device(store, "a")
        b = await add_device(store, "b")
        assert await store.credential(a.id) is None
        await store.set_credential(device_id=a.id, protocol="MQTT", username="ua", secret="s1")
        replaced = await store.set_credential(device_id=a.id, protocol="MQTTS", username="ua2", secret="s2")
        assert await store.credential(a.id) == replaced
        assert (replaced.protocol, replaced.username, replaced.secret) == ("MQTTS", "ua2", "s2")
        cb = await store.set_credential(device_id=b.id, protocol="MQTT", username="ub", secret="x")
        assert await store.credentials() == sorted([replaced, cb], key=lambda c: c.device_id)
        with pytest.raises(UsernameTakenError):
            await store.set_credential(device_id=b.id, protocol="MQTT", username="ua2", secret="x")
        with pytest.raises(LookupError):
            await store.set_credential(device_id="ghost", protocol="MQTT", username="g", secret="x")
        await store.delete_credential(a.id)
        assert await store.credential(a.id) is None
        assert await store.credentials() == [cb]
    # Durable writes are on disk once the call returns, visible to any other connection.
    assert raw(db_path, "SELECT username FROM device_credentials") == [("ub",)]


async def test_a_credential_can_set_the_communication_type(db_path: Path) -> None:
    async with Store.open(db_path, clock=lambda: 5000.0) as store:
        device = await add_device(store)
        assert device.communication_type is CommunicationType.MQTT_V1_PLAINTEXT
        await store.set_credential(
            device_id=device.id,
            protocol="MQTTS",
            username="u",
            secret="x509:1",
            communication_type=CommunicationType.MQTT_V1_TLS,
        )
        changed = await store.get_device(device.id)
        assert changed is not None
        assert (changed.communication_type, changed.updated_at) == (CommunicationType.MQTT_V1_TLS, 5000.0)


async def test_certificates_are_revoked_on_reissue_and_delete(db_path: Path) -> None:
    now = [1000.0]
    async with Store.open(db_path, clock=lambda: now[0]) as store:
        a = await add_device(store, "a")
        b = await add_device(store, "b")
        big = 2**158 + 12345  # serials are up to 159 bits, beyond SQLite's INTEGER

        def cert(serial: int, device: Device, not_after: float = 10_000.0) -> IssuedCertificateRecord:
            assert device.hardware_id is not None
            return IssuedCertificateRecord(serial=serial, hardware_id=device.hardware_id, not_after=not_after)

        await store.set_credential(
            device_id=a.id, protocol="MQTTS", username="ua", secret="x509", certificate=cert(big, a)
        )
        await store.set_credential(
            device_id=b.id, protocol="MQTTS", username="ub", secret="x509", certificate=cert(7, b, 1500.0)
        )
        assert await store.revoked_certificates(now[0]) == []
        now[0] = 1100.0
        # A new credential of any kind revokes what the device had before.
        await store.set_credential(device_id=a.id, protocol="MQTT", username="ua", secret="hash")
        assert await store.revoked_certificates(now[0]) == [RevokedCertificate(serial=big, revoked_at=1100.0)]
        now[0] = 1200.0
        assert await store.delete_device(b.id)
        assert await store.revoked_certificates(now[0]) == [
            RevokedCertificate(serial=big, revoked_at=1100.0),
            RevokedCertificate(serial=7, revoked_at=1200.0),
        ]
        # An expired certificate no longer needs a CRL entry.
        assert await store.revoked_certificates(1600.0) == [RevokedCertificate(serial=big, revoked_at=1100.0)]


# --- Ingest --------------------------------------------------------------------------------------


async def test_ingested_messages_become_readable(db_path: Path) -> None:
    async with Store.open(db_path, clock=lambda: 5000.0) as store:
        device = await add_device(store)
        other = await add_device(store, "other")
        items = [
            ingested(device, telemetry(10.0, {"power": 1.5, "mode": "auto"}, ("overheat",)), 100.0),
            ingested(device, Properties(timestamp=9.0, values={"model": "X1", "fw": "1.0"}), 101.0),
            ingested(
                device,
                LogEntry(timestamp=11.0, message="hello", severity=LogSeverity.INFO, persist=True),
                102.0,
            ),
            ingested(
                device,
                LogEntry(timestamp=8.0, message="late", severity=LogSeverity.ERROR, persist=False),
                103.0,
            ),
            ingested(
                device,
                CommandResponse(
                    execution_id="e1", state=CommandResponseState.SUCCEEDED, payload={"ok": True}
                ),
                104.0,
            ),
        ]
        assert all(store.enqueue(item) for item in items)
        await store.flush()

        assert await store.latest_telemetry(device.id) == {
            "power": LatestValue(1.5, 10.0),
            "mode": LatestValue("auto", 10.0),
        }
        assert await store.properties([device.id, other.id]) == {device.id: {"model": "X1", "fw": "1.0"}}
        assert await store.last_seen([device.id, other.id]) == {device.id: 104.0}
        assert await store.raised_alerts([device.id, other.id]) == {device.id: ["overheat"]}
        logs, _ = await store.logs(device.id, offset=0, limit=10)
        assert logs == [
            (LogEntry(11.0, "hello", LogSeverity.INFO, True), 102.0),
            (LogEntry(8.0, "late", LogSeverity.ERROR, False), 103.0),
        ]
        assert (await store.logs(device.id, offset=1, limit=10))[0] == logs[1:]
        assert (await store.logs(device.id, offset=0, limit=1))[0] == logs[:1]
        assert await store.logs(device.id, offset=0, limit=10, newest_first=True) == (logs[::-1], 2)
        assert await store.logs(device.id, offset=0, limit=10, persisted=False) == (logs[1:], 1)
        assert await store.logs(device.id, offset=0, limit=10, severities=[LogSeverity.ERROR]) == (
            logs[1:],
            1,
        )
        window = await store.logs(device.id, offset=0, limit=10, received_from=102.0, received_to=103.0)
        assert window == (logs[:1], 1)
        assert await store.logs(device.id, offset=5, limit=10) == ([], 2)
        # Temporary logs go once they are old enough; persisted ones stay.
        assert await store.purge_temporary_logs(103.0) == 0
        assert await store.purge_temporary_logs(104.0, chunk=1) == 1
        assert await store.logs(device.id, offset=0, limit=10) == (logs[:1], 1)
        stats = store.stats
        assert (stats.enqueued, stats.committed, stats.failed_batches) == (5, 5, 0)
        assert stats.batches >= 1
        assert store.queue_depth == 0
    assert raw(db_path, "SELECT execution_id, state, payload_json FROM command_responses") == [
        ("e1", "SUCCEEDED", '{"ok":true}')
    ]
    assert raw(db_path, "SELECT updated_at FROM device_properties") == [(5000.0,)]


async def test_properties_merge_across_messages(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        store.enqueue(ingested(device, Properties(1.0, {"a": 1, "b": {"x": 1}, "c": "keep"})))
        await store.flush()
        # Same batch: applied in arrival order.
        store.enqueue(ingested(device, Properties(2.0, {"a": 2, "b": {"y": 2}})))
        store.enqueue(ingested(device, Properties(3.0, {"a": 3, "d": None})))
        await store.flush()
        assert await store.properties([device.id]) == {
            # Top-level keys are replaced, not deep-merged; a null is a value, not a deletion.
            device.id: {"a": 3, "b": {"y": 2}, "c": "keep", "d": None}
        }


async def test_latest_telemetry_keeps_the_newest_timestamp(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        store.enqueue(ingested(device, telemetry(20.0, {"t": 2, "u": "new"}, ("hot",))))
        await store.flush()
        # Older message arriving later, in its own batch: ignored for latest and alerts.
        store.enqueue(ingested(device, telemetry(10.0, {"t": 1, "v": "only-old"}, ("cold",))))
        await store.flush()
        assert await store.raised_alerts([device.id]) == {device.id: ["hot"]}
        # Within one batch, out of order.
        store.enqueue(ingested(device, telemetry(30.0, {"u": "newest"})))
        store.enqueue(ingested(device, telemetry(25.0, {"u": "stale"}, ("stale",))))
        await store.flush()
        assert await store.latest_telemetry(device.id) == {
            "t": LatestValue(2, 20.0),
            "u": LatestValue("newest", 30.0),
            "v": LatestValue("only-old", 10.0),
        }
        # alerts=None means "no alerts" for the newest telemetry.
        assert await store.raised_alerts([device.id]) == {device.id: []}
    # History keeps every row, whatever the order.
    assert raw(
        db_path,
        "SELECT count(*) FROM telemetry_raw JOIN telemetry_series ON id = series_id WHERE attribute = 't'",
    ) == [(2,)]


async def test_null_telemetry_is_latest_but_not_history(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        store.enqueue(ingested(device, telemetry(1.0, {"a": 1.0, "b": "x"})))
        store.enqueue(ingested(device, telemetry(2.0, {"a": None, "b": "y"})))
        await store.flush()
        assert await store.latest_telemetry(device.id) == {
            "a": LatestValue(None, 2.0),
            "b": LatestValue("y", 2.0),
        }
    assert raw(
        db_path,
        "SELECT attribute, timestamp, value FROM telemetry_raw JOIN telemetry_series ON id = series_id"
        " ORDER BY telemetry_raw.rowid",
    ) == [("a", 1.0, 1.0), ("b", 1.0, "x"), ("b", 2.0, "y")]


async def test_values_json_text_cannot_hold_are_kept_as_sent(db_path: Path) -> None:
    # The JSON encoder for stored values (orjson) refuses integers beyond 64 bits: they must
    # still be stored exactly, not dropped or rounded.
    huge = 2**70 + 1
    values: dict[str, JsonValue] = {"huge": huge, "nested": {"n": -huge, "s": "é"}, "ok": 1.5}
    async with Store.open(db_path) as store:
        device = await add_device(store)
        store.enqueue(ingested(device, telemetry(1.0, values)))
        await store.flush()
        latest = await store.latest_telemetry(device.id)
    assert {name: found.value for name, found in latest.items()} == values
    assert store.stats.dropped_write_failed == 0


async def test_full_queue_refuses_and_counts(db_path: Path) -> None:
    async with Store.open(db_path, queue_size=2) as store:
        device = await add_device(store)
        # No await in between: the writer cannot take anything meanwhile.
        results = [store.enqueue(ingested(device, telemetry(float(i), {"i": i}))) for i in range(4)]
        assert results == [True, True, False, False]
        assert store.queue_depth == 2
        assert store.stats.dropped_queue_full == 2
        await store.flush()
        assert store.queue_depth == 0
        assert await store.latest_telemetry(device.id) == {"i": LatestValue(1, 1.0)}
        stats = store.stats
        assert (stats.enqueued, stats.committed, stats.dropped_queue_full) == (2, 2, 2)


async def test_max_batch_splits_the_queue(db_path: Path) -> None:
    async with Store.open(db_path, max_batch=3) as store:
        device = await add_device(store)
        batches_before = store.stats.batches
        for i in range(7):
            assert store.enqueue(ingested(device, telemetry(float(i), {"i": i})))
        await store.flush()
        assert store.stats.batches - batches_before == 3  # 3 + 3 + 1
        assert store.stats.committed == 7


async def test_closing_commits_everything_queued(db_path: Path) -> None:
    async with Store.open(db_path, max_batch=50) as store:
        device = await add_device(store)
        for i in range(500):
            assert store.enqueue(ingested(device, telemetry(float(i), {"i": i}), 1000.0 + i))
        assert store.queue_depth > 0
    async with Store.open(db_path) as store:
        assert await store.latest_telemetry(device.id) == {"i": LatestValue(499, 499.0)}
        assert await store.last_seen([device.id]) == {device.id: 1499.0}
        # Closed stores refuse new items.
    assert not store.enqueue(ingested(device, telemetry(1.0, {"i": 0})))
    assert raw(db_path, "SELECT count(*) FROM telemetry_raw") == [(500,)]


async def test_unknown_and_deleted_devices_do_not_break_the_batch(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        keep = await add_device(store, "keep")
        gone = await add_device(store, "gone")
        store.enqueue(ingested(gone, telemetry(1.0, {"x": 1})))
        store.enqueue(ingested(gone, Properties(1.0, {"p": 1})))
        await store.flush()
        assert await store.delete_device(gone.id)
        assert not await store.delete_device(gone.id)
        # Everything stored for it went with it.
        assert await store.latest_telemetry(gone.id) == {}
        assert await store.properties([gone.id]) == {}
        assert await store.last_seen([gone.id]) == {}

        store.enqueue(ingested(gone, telemetry(2.0, {"x": 2})))
        store.enqueue(ingested(keep, telemetry(2.0, {"x": 2})))
        store.enqueue(ingested(str(uuid.uuid4()), LogEntry(1.0, "m", LogSeverity.INFO, True)))
        store.enqueue(ingested(keep, Properties(2.0, {"p": 2})))
        await store.flush()
        assert await store.latest_telemetry(keep.id) == {"x": LatestValue(2, 2.0)}
        assert await store.properties([keep.id]) == {keep.id: {"p": 2}}
        assert await store.latest_telemetry(gone.id) == {}
        stats = store.stats
        assert stats.failed_batches == 0
        assert stats.skipped_unknown_device == 2
        assert stats.committed == 4
    assert raw(db_path, "SELECT count(*) FROM device_logs") == [(0,)]


async def test_a_failing_batch_is_dropped_and_the_writer_goes_on(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        # A real SQLite error inside the batch transaction, from a second connection's trigger.
        raw(
            db_path,
            "CREATE TRIGGER fail_boom BEFORE INSERT ON device_logs WHEN NEW.message = 'boom'"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END",
        )
        store.enqueue(ingested(device, telemetry(1.0, {"lost": 1})))
        store.enqueue(ingested(device, LogEntry(1.0, "boom", LogSeverity.INFO, True)))
        await store.flush()
        assert await store.latest_telemetry(device.id) == {}  # the whole batch rolled back
        stats = store.stats
        assert (stats.failed_batches, stats.dropped_write_failed, stats.committed) == (1, 2, 0)

        store.enqueue(ingested(device, telemetry(2.0, {"kept": 2})))
        await store.flush()
        assert await store.latest_telemetry(device.id) == {"kept": LatestValue(2, 2.0)}
        assert store.stats.committed == 1
        # Durable writes still work on the writer connection after the rollback.
        assert (await add_device(store, "after")).slug == "after"


async def test_durable_writes_interleave_with_batches(db_path: Path) -> None:
    async with Store.open(db_path, max_batch=10) as store:
        device = await add_device(store)
        for i in range(200):
            store.enqueue(ingested(device, telemetry(float(i), {"i": i})))
        created = await asyncio.gather(*(add_device(store, f"n{i}") for i in range(10)), store.flush())
        assert len({d.slug for d in created[:10] if isinstance(d, Device)}) == 10
        assert store.stats.committed == 200
        assert store.stats.failed_batches == 0
        assert await store.integrity_check() == "ok"
