"""Tests for `gateway.backup`: the manifest rules (pure), and archives written and read on tmp dirs.

The state directories are real: a database made by `Store.open` with a site, a device, a token and
telemetry, and a CA made by `Authority.open`. Every refusal is checked to leave the target state
directory (and its parent) exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import socket
import sqlite3
import stat
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import backup
from gateway.backup import (
    CONFIG,
    CONFIG_FROM_BACKUP,
    DATABASE,
    MANIFEST,
    ArchiveError,
    BackupError,
    Manifest,
    Member,
    StateDirError,
    check_member_name,
    check_members,
    check_schema,
    create_backup,
    daemon_using,
    parse_manifest,
    restore_backup,
)
from gateway.model import CommunicationType, DeviceType, Role, Telemetry
from gateway.mqtt.authority import Authority
from gateway.store.schema import TARGET_VERSION
from gateway.store.store import DATABASE_FILE, Ingested, Store

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
TOKEN_HASH = "ab" * 32
CONFIG_TEXT = '[gateway]\nsite_name = "Home"\n'
SHA = "0" * 64

# --- pure rules ---------------------------------------------------------------------------------


def manifest(**changes: object) -> Manifest:
    base = Manifest(
        format_version=1,
        gateway_version="0.1.0",
        schema_version=3,
        site_id="site-1",
        created_at="2025-03-04T05:06:07Z",
        devices=2,
        members=(
            Member(CONFIG, SHA, 10),
            Member(DATABASE, "1" * 64, 4096),
            Member("pki/ca.key", "2" * 64, 5),
        ),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_manifest_reads_back_what_was_written() -> None:
    written = manifest()
    assert parse_manifest(written.to_json()) == written
    document = json.loads(written.to_json())
    assert document["format"] == "enapter-gateway-backup"
    assert document["members"]["gateway.sqlite3"] == {"sha256": "1" * 64, "size": 4096}
    assert parse_manifest(manifest(site_id=None).to_json()).site_id is None


def rewritten(**fields: object) -> bytes:
    document = json.loads(manifest().to_json())
    document.update(fields)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "another format"),
        (rewritten(format="something-else"), "another format"),
        (rewritten(format_version=2), "unsupported backup format version 2"),
        (rewritten(format_version=True), "no valid 'format_version'"),
        (rewritten(schema_version="3"), "no valid 'schema_version'"),
        (rewritten(devices=-1), "no valid 'devices'"),
        (rewritten(site_id=7), "no valid 'site_id'"),
        (rewritten(created_at=None), "no valid 'created_at'"),
        (rewritten(members=[]), "no valid 'members'"),
        (rewritten(members={"../x": {"sha256": SHA, "size": 1}}), "unexpected member '../x'"),
        (rewritten(members={DATABASE: {"sha256": "A" * 64, "size": 1}}), "entry for 'gateway.sqlite3'"),
        (rewritten(members={DATABASE: {"sha256": SHA, "size": 1.5}}), "entry for 'gateway.sqlite3'"),
        (rewritten(members={MANIFEST: {"sha256": SHA, "size": 1}}), "entry for 'manifest.json'"),
    ],
)
def test_a_bad_manifest_is_refused_with_its_reason(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        parse_manifest(data)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_manifest_or_the_one_error(data: bytes) -> None:
    with contextlib.suppress(ArchiveError):
        parse_manifest(data)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(sorted(json.loads(manifest().to_json()))), _JSON))
def test_any_manifest_shaped_json_gives_a_manifest_or_the_one_error(changes: dict[str, object]) -> None:
    with contextlib.suppress(ArchiveError):
        parse_manifest(rewritten(**changes))


@pytest.mark.parametrize("name", [MANIFEST, DATABASE, CONFIG, "pki/ca.key", "pki/crl.pem", "pki/server.crt"])
def test_member_names_of_a_backup_are_accepted(name: str) -> None:
    check_member_name(name)


@pytest.mark.parametrize(
    "name",
    ["../evil", "/etc/passwd", "pki/../../evil", "pki/.hidden", "pki/a/b", "pki/", "./gateway.sqlite3", "x"],
)
def test_any_other_member_name_is_refused(name: str) -> None:
    with pytest.raises(ArchiveError, match="unexpected member"):
        check_member_name(name)


# Paths near the allowed names: the names themselves, pki/ with odd parts, traversal, absolute paths.
MEMBER_PARTS = st.sampled_from(
    [MANIFEST, DATABASE, CONFIG, "pki", "ca.key", "..", ".", "", "/", "\\", "-x", "a" * 64, "a" * 65, "\n"]
)
MEMBER_NAMES = st.one_of(
    st.lists(MEMBER_PARTS | st.text(max_size=4), min_size=1, max_size=4).map("/".join),
    st.from_regex(r"pki/[A-Za-z0-9._/-]{0,66}", fullmatch=True),
    st.text(max_size=20),
)


@given(MEMBER_NAMES)
def test_any_member_name_is_refused_or_stays_inside_the_staging_directory(name: str) -> None:
    refusal: str | None = None
    try:
        check_member_name(name)
    except ArchiveError as error:
        refusal = str(error)
    if refusal is not None:
        assert "unexpected member" in refusal
        return
    path = PurePosixPath(name)
    assert not path.is_absolute()
    assert ".." not in path.parts
    assert str(path) == name  # no "./", "//" or trailing "/" that unpacking would read otherwise
    assert len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "pki")


MEMBERS = st.dictionaries(
    st.sampled_from([DATABASE, CONFIG])
    | st.from_regex(r"pki/[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    st.tuples(st.binary(min_size=32, max_size=32).map(bytes.hex), st.integers(0, 2**63)),
    max_size=4,
)


@given(
    members=MEMBERS,
    text=st.text(max_size=10),
    numbers=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    site_id=st.none() | st.text(max_size=10),
)
def test_every_manifest_reads_back_as_written(
    members: dict[str, tuple[str, int]], text: str, numbers: tuple[int, int], site_id: str | None
) -> None:
    written = Manifest(
        format_version=backup.FORMAT_VERSION,
        gateway_version=text,
        schema_version=numbers[0],
        site_id=site_id,
        created_at=text,
        devices=numbers[1],
        members=tuple(Member(name, digest, size) for name, (digest, size) in sorted(members.items())),
    )
    assert parse_manifest(written.to_json()) == written


def test_the_members_must_be_exactly_those_listed_and_intact() -> None:
    listed = manifest()
    found = {item.name: item for item in listed.members}
    check_members(listed, found)
    with pytest.raises(ArchiveError, match=r"member pki/ca.key listed in the manifest is missing"):
        check_members(listed, {k: v for k, v in found.items() if k != "pki/ca.key"})
    with pytest.raises(ArchiveError, match=r"checksum mismatch for gateway.sqlite3"):
        check_members(listed, {**found, DATABASE: Member(DATABASE, "9" * 64, 4096)})
    with pytest.raises(ArchiveError, match=r"checksum mismatch for config.toml"):
        check_members(listed, {**found, CONFIG: Member(CONFIG, SHA, 11)})
    with pytest.raises(ArchiveError, match=r"member pki/extra.pem is not listed"):
        check_members(listed, {**found, "pki/extra.pem": Member("pki/extra.pem", SHA, 1)})
    without_database = manifest(members=(Member(CONFIG, SHA, 10),))
    with pytest.raises(ArchiveError, match=r"lists no gateway.sqlite3"):
        check_members(without_database, {CONFIG: Member(CONFIG, SHA, 10)})


def test_a_newer_schema_is_refused() -> None:
    check_schema(manifest(schema_version=3), 3)
    check_schema(manifest(schema_version=2), 3)
    with pytest.raises(ArchiveError, match="schema version 4 is newer than this gateway supports"):
        check_schema(manifest(schema_version=4), 3)


# --- real state directories ---------------------------------------------------------------------------


async def _populate(state_dir: Path, telemetry: list[float]) -> str:
    """A site, one standalone device with a credential, one token, telemetry; the device's id."""
    async with Store.open(state_dir / DATABASE) as store:
        site = await store.ensure_site(name="Home", timezone="UTC")
        device = await store.create_device(
            site_id=site.id,
            name="Meter One",
            slug=None,
            type=DeviceType.STANDALONE,
            communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
            hardware_id="S" + "a" * 32,
            channel_id="s",
        )
        await store.set_credential(device_id=device.id, protocol="MQTT", username="S" + "a" * 32, secret="h")
        await store.create_token(name="ops", role=Role.OWNER, token_hash=TOKEN_HASH)
        for value in telemetry:
            store.enqueue(
                Ingested(
                    device.id, Telemetry(timestamp=1000.0 + value, values={"v": value}, alerts=None), 1000.0
                )
            )
        await store.flush()
        return device.id


@dataclasses.dataclass(frozen=True)
class Saved:
    state_dir: Path
    config: Path
    archive: Path
    device_id: str


def make_state(directory: Path) -> tuple[Path, Path, str]:
    state_dir = directory / "state"
    device_id = asyncio.run(_populate(state_dir, [1.0, 2.0]))
    Authority.open(state_dir / "pki", datetime.now(UTC))
    config = directory / "gateway.toml"
    config.write_text(CONFIG_TEXT)
    return state_dir, config, device_id


@pytest.fixture
def saved(tmp_path: Path) -> Saved:
    """A backup of a populated state directory, at tmp_path/backup.tar.gz."""
    state_dir, config, device_id = make_state(tmp_path / "source")
    archive = tmp_path / "backup.tar.gz"
    create_backup(state_dir, config, archive, now=NOW)
    return Saved(state_dir, config, archive, device_id)


async def _read_back(state_dir: Path, device_id: str) -> tuple[str, str, float, int]:
    async with Store.open(state_dir / DATABASE) as store:
        device = await store.get_device(device_id)
        assert device is not None
        token = await store.token_by_hash(TOKEN_HASH)
        assert token is not None
        latest = (await store.latest_telemetry(device_id))["v"]
        assert isinstance(latest.value, float)
        return device.name, token.name, latest.value, len(await store.credentials())


def test_a_backup_restores_into_a_fresh_state_dir(saved: Saved, tmp_path: Path) -> None:
    assert stat.S_IMODE(saved.archive.stat().st_mode) == 0o600
    assert sorted(p.name for p in saved.archive.parent.iterdir()) == ["backup.tar.gz", "source"]
    target = tmp_path / "elsewhere" / "state"

    restored = restore_backup(saved.archive, target, force=False, now=NOW)

    assert restored.state_dir == target
    assert restored.moved_aside is None
    assert restored.manifest.devices == 1
    assert restored.manifest.schema_version == TARGET_VERSION
    assert restored.manifest.created_at == "2025-03-04T05:06:07Z"
    assert asyncio.run(_read_back(target, saved.device_id)) == ("Meter One", "ops", 2.0, 1)
    for name in ("ca.key", "ca.crt"):
        assert (target / "pki" / name).read_bytes() == (saved.state_dir / "pki" / name).read_bytes()
    assert restored.config_from_backup == target / CONFIG_FROM_BACKUP
    assert (target / CONFIG_FROM_BACKUP).read_text() == CONFIG_TEXT
    assert not (target / CONFIG).exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "pki").stat().st_mode) == 0o700
    for path in [target / DATABASE, target / CONFIG_FROM_BACKUP, *(target / "pki").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # Nothing but the state directory appeared (no staging directory left behind).
    assert [p.name for p in target.parent.iterdir()] == ["state"]


def test_the_manifest_describes_the_archive(saved: Saved) -> None:
    with tarfile.open(saved.archive, "r:gz") as tar:
        names = tar.getnames()
        manifest_file = tar.extractfile(MANIFEST)
        assert manifest_file is not None
        found = parse_manifest(manifest_file.read())
        contents = {name: tar.extractfile(name).read() for name in names[1:]}  # type: ignore[union-attr]
    assert names[0] == MANIFEST
    assert set(names) == {MANIFEST, DATABASE, CONFIG, "pki/ca.key", "pki/ca.crt"}
    assert found.site_id is not None
    assert found.devices == 1
    for member in found.members:
        assert hashlib.sha256(contents[member.name]).hexdigest() == member.sha256
        assert len(contents[member.name]) == member.size
    # The snapshot is one self-contained file (no WAL needed to read it).
    assert contents[DATABASE][18:20] == b"\x01\x01"


async def _backup_while_open(state_dir: Path, config: Path, archive: Path, device_id: str) -> None:
    async with Store.open(state_dir / DATABASE) as store:
        store.enqueue(
            Ingested(device_id, Telemetry(timestamp=2000.0, values={"v": 3.0}, alerts=None), 2000.0)
        )
        await store.flush()
        assert daemon_using(state_dir) is not None
        create_backup(state_dir, config, archive, now=NOW)
        store.enqueue(
            Ingested(device_id, Telemetry(timestamp=3000.0, values={"v": 4.0}, alerts=None), 3000.0)
        )
        await store.flush()


def test_a_backup_taken_while_the_database_is_open_holds_what_was_committed(tmp_path: Path) -> None:
    state_dir, config, device_id = make_state(tmp_path / "source")
    archive = tmp_path / "online.tar.gz"
    asyncio.run(_backup_while_open(state_dir, config, archive, device_id))
    target = tmp_path / "restored"
    restore_backup(archive, target, force=False, now=NOW)
    assert asyncio.run(_read_back(target, device_id))[2] == 3.0


def test_backup_refuses_a_state_dir_without_a_database_and_a_directory_target(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG_TEXT)
    with pytest.raises(StateDirError, match="nothing to back up"):
        create_backup(tmp_path / "state", config, tmp_path / "b.tar.gz", now=NOW)
    state_dir, config, _ = make_state(tmp_path / "source")
    with pytest.raises(BackupError, match="is a directory"):
        create_backup(state_dir, config, tmp_path, now=NOW)
    with pytest.raises(BackupError, match="cannot write"):
        create_backup(state_dir, config, tmp_path / "missing" / "b.tar.gz", now=NOW)
    assert not (tmp_path / "b.tar.gz").exists()
    (state_dir / DATABASE).write_bytes(b"not a database at all" * 100)
    with pytest.raises(StateDirError, match="cannot read the database"):
        create_backup(state_dir, config, tmp_path / "b.tar.gz", now=NOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.toml", "source"]


# --- refusals ------------------------------------------------------------------------------------------


def tree(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under `directory` with its mode and content."""
    return {
        str(path.relative_to(directory)): (path.stat().st_mode, path.read_bytes() if path.is_file() else b"")
        for path in sorted(directory.rglob("*"))
    }


@pytest.fixture
def occupied(tmp_path: Path) -> Iterator[Path]:
    """A non-empty target state directory; the test fails if a refused restore changed anything
    in it or next to it."""
    parent = tmp_path / "target"
    state_dir = parent / "state"
    (state_dir / "pki").mkdir(parents=True)
    (state_dir / DATABASE).write_bytes(b"the old database")
    (state_dir / "pki" / "ca.key").write_bytes(b"the old key")
    before = tree(parent)
    yield state_dir
    assert tree(parent) == before


def members_of(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {info.name: tar.extractfile(info).read() for info in tar}  # type: ignore[union-attr]


def pack(target: Path, members: dict[str, bytes], *, rehash: bool = False) -> Path:
    """A tar.gz of `members`; with `rehash`, the manifest's checksums are made to match them."""
    if rehash:
        document = json.loads(members[MANIFEST])
        document["members"] = {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in members.items()
            if name != MANIFEST
        }
        members = {**members, MANIFEST: json.dumps(document).encode()}
    with tarfile.open(target, "w:gz") as tar:
        for name, data in members.items():
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
    return target


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def repacked(saved: Saved, change: Callable[[dict[str, bytes]], None], *, rehash: bool = False) -> Path:
    members = members_of(saved.archive)
    change(members)
    return pack(saved.archive.with_name("changed.tar.gz"), members, rehash=rehash)


def _manifest_field(**fields: object) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        document = json.loads(members[MANIFEST])
        document.update(fields)
        members[MANIFEST] = json.dumps(document).encode()

    return change


def _with_database(
    edit: Callable[[sqlite3.Connection], None], tmp: Path
) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        path = tmp / "edited.sqlite3"
        path.write_bytes(members[DATABASE])
        with sqlite3.connect(path) as db:
            edit(db)
        db.close()
        members[DATABASE] = path.read_bytes()

    return change


def _execute(sql: str) -> Callable[[sqlite3.Connection], None]:
    def edit(db: sqlite3.Connection) -> None:
        db.execute(sql)

    return edit


def _flip(offset: int) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        data = bytearray(members[DATABASE])
        data[offset] ^= 0x01
        members[DATABASE] = bytes(data)

    return change


def refused(archive: Path, state_dir: Path, match: str) -> None:
    with pytest.raises(ArchiveError, match=match):
        restore_backup(archive, state_dir, force=True, now=NOW)


def test_a_truncated_archive_is_refused(saved: Saved, occupied: Path) -> None:
    data = saved.archive.read_bytes()
    for length in (len(data) // 2, len(data) - 4, 100):
        cut = saved.archive.with_name("cut.tar.gz")
        cut.write_bytes(data[:length])
        refused(cut, occupied, "truncated or corrupt")


def test_a_flipped_byte_in_the_compressed_archive_is_refused(saved: Saved, occupied: Path) -> None:
    data = bytearray(saved.archive.read_bytes())
    for offset in (len(data) // 3, len(data) // 2, len(data) - 6):
        flipped = bytearray(data)
        flipped[offset] ^= 0x10
        damaged = saved.archive.with_name("flipped.tar.gz")
        damaged.write_bytes(bytes(flipped))
        # Whichever layer notices it first (inflate, gzip CRC, member checksum, manifest JSON).
        refused(damaged, occupied, "corrupt|checksum mismatch|manifest")


def test_a_changed_member_fails_its_checksum(saved: Saved, occupied: Path) -> None:
    refused(repacked(saved, _flip(5000)), occupied, "checksum mismatch for gateway.sqlite3")


def test_a_missing_or_unlisted_member_is_refused(saved: Saved, occupied: Path) -> None:
    def drop_key(members: dict[str, bytes]) -> None:
        del members["pki/ca.key"]

    def add_file(members: dict[str, bytes]) -> None:
        members["pki/extra.pem"] = b"x"

    def drop_manifest(members: dict[str, bytes]) -> None:
        del members[MANIFEST]

    refused(repacked(saved, drop_key), occupied, "member pki/ca.key listed in the manifest is missing")
    refused(repacked(saved, add_file), occupied, "member pki/extra.pem is not listed")
    refused(repacked(saved, drop_manifest), occupied, "has no manifest.json")


def test_a_wrong_manifest_version_is_refused(saved: Saved, occupied: Path) -> None:
    refused(
        repacked(saved, _manifest_field(format_version=2)), occupied, "unsupported backup format version 2"
    )


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "pki/../../evil", "state/evil"])
def test_a_member_outside_the_state_dir_is_refused(saved: Saved, occupied: Path, name: str) -> None:
    def add(members: dict[str, bytes]) -> None:
        members[name] = b"owned"

    refused(repacked(saved, add), occupied, "unexpected member")
    assert not (occupied.parent / "evil").exists()
    assert not (occupied.parent.parent / "evil").exists()


def test_links_and_duplicates_are_refused(saved: Saved, occupied: Path) -> None:
    members = members_of(saved.archive)
    linked = saved.archive.with_name("linked.tar.gz")
    with tarfile.open(linked, "w:gz") as tar:
        for name, data in members.items():
            if name != "pki/ca.key":
                tar.addfile(_info(name, len(data)), io.BytesIO(data))
        link = tarfile.TarInfo("pki/ca.key")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    refused(linked, occupied, "'pki/ca.key' is not a regular file")
    twice = saved.archive.with_name("twice.tar.gz")
    with tarfile.open(twice, "w:gz") as tar:
        for name, data in [*members.items(), (CONFIG, b"again")]:
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
    refused(twice, occupied, "member config.toml appears twice")


def test_a_damaged_or_foreign_database_is_refused(saved: Saved, occupied: Path, tmp_path: Path) -> None:
    def not_a_database(members: dict[str, bytes]) -> None:
        members[DATABASE] = b"x" * 8192

    def damaged_pages(members: dict[str, bytes]) -> None:
        data = bytearray(members[DATABASE])
        data[4096:] = bytes(len(data) - 4096)  # every page but the first zeroed
        members[DATABASE] = bytes(data)

    refused(repacked(saved, not_a_database, rehash=True), occupied, "database in the archive is unusable")
    refused(repacked(saved, damaged_pages, rehash=True), occupied, "database")
    other_site = _with_database(_execute("UPDATE site SET id = 'another'"), tmp_path)
    refused(repacked(saved, other_site, rehash=True), occupied, "does not match its manifest")


def test_a_newer_schema_is_refused_from_the_manifest_or_the_database(
    saved: Saved, occupied: Path, tmp_path: Path
) -> None:
    newer = TARGET_VERSION + 1
    refused(repacked(saved, _manifest_field(schema_version=newer)), occupied, "newer than this gateway")
    bumped = _with_database(_execute(f"PRAGMA user_version = {newer}"), tmp_path)
    refused(repacked(saved, bumped, rehash=True), occupied, "newer than this gateway")


def test_a_ca_that_does_not_match_its_key_is_refused(saved: Saved, occupied: Path, tmp_path: Path) -> None:
    other = Authority.open(tmp_path / "other-pki", datetime.now(UTC))

    def swap(members: dict[str, bytes]) -> None:
        members["pki/ca.crt"] = other.ca.certificate_pem.encode()

    def half(members: dict[str, bytes]) -> None:
        del members["pki/ca.crt"]

    refused(repacked(saved, swap, rehash=True), occupied, "gateway CA in the archive is unusable")
    refused(repacked(saved, half, rehash=True), occupied, "only half of the gateway CA")


def test_an_unreadable_or_foreign_file_is_refused(saved: Saved, occupied: Path) -> None:
    refused(saved.archive.with_name("absent.tar.gz"), occupied, "cannot read")
    plain = saved.archive.with_name("plain.tar.gz")
    plain.write_bytes(b"just text, not gzip")
    refused(plain, occupied, "truncated or corrupt")
    empty_gzip = saved.archive.with_name("empty.tar.gz")
    empty_gzip.write_bytes(gzip.compress(b""))
    refused(empty_gzip, occupied, "truncated or corrupt|no manifest.json")


# --- the target state directory ------------------------------------------------------------------------


def test_a_non_empty_state_dir_needs_force_and_is_then_moved_aside(saved: Saved, tmp_path: Path) -> None:
    state_dir = tmp_path / "target" / "state"
    state_dir.mkdir(parents=True)
    (state_dir / "old.txt").write_text("keep me")
    with pytest.raises(StateDirError, match="is not empty; pass --force"):
        restore_backup(saved.archive, state_dir, force=False, now=NOW)
    assert sorted(p.name for p in state_dir.parent.iterdir()) == ["state"]
    assert [p.name for p in state_dir.iterdir()] == ["old.txt"]

    restored = restore_backup(saved.archive, state_dir, force=True, now=NOW)

    aside = state_dir.with_name("state.before-restore-20250304T050607Z")
    assert restored.moved_aside == aside
    assert (aside / "old.txt").read_text() == "keep me"
    assert (state_dir / DATABASE).is_file()
    # Again within the same second: a second name, nothing overwritten.
    again = restore_backup(saved.archive, state_dir, force=True, now=NOW)
    assert again.moved_aside == aside.with_name(aside.name + "-2")
    assert (aside / "old.txt").is_file()


def test_an_empty_state_dir_is_restored_into_without_force(saved: Saved, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    restored = restore_backup(saved.archive, state_dir, force=False, now=NOW)
    assert restored.moved_aside is None
    assert (state_dir / DATABASE).is_file()


async def _restore_while_open(archive: Path, state_dir: Path) -> str:
    async with Store.open(state_dir / DATABASE):
        with pytest.raises(StateDirError) as caught:
            restore_backup(archive, state_dir, force=True, now=NOW)
    return str(caught.value)


def test_a_state_dir_whose_database_is_open_is_refused(saved: Saved, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    message = asyncio.run(_restore_while_open(saved.archive, state_dir))
    assert "is open in another process" in message
    assert "stop the gateway first" in message
    # Closed again: nobody holds it, and it is restored.
    assert daemon_using(state_dir) is None
    restore_backup(saved.archive, state_dir, force=True, now=NOW)


def test_a_listening_managed_broker_is_refused_but_a_stale_socket_is_not(
    saved: Saved, tmp_path: Path
) -> None:
    state_dir = tmp_path / "s"
    (state_dir / "broker").mkdir(parents=True)
    path = state_dir / "broker" / "admin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        with pytest.raises(StateDirError, match="still listens on"):
            restore_backup(saved.archive, state_dir, force=True, now=NOW)
    assert path.exists()
    assert daemon_using(state_dir) is None
    restore_backup(saved.archive, state_dir, force=True, now=NOW)


def test_a_refused_restore_removes_the_parents_it_made(saved: Saved, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(saved.archive.read_bytes()[:200])
    with pytest.raises(ArchiveError):
        restore_backup(cut, tmp_path / "new" / "deeper" / "state", force=False, now=NOW)
    assert not (tmp_path / "new").exists()


def test_the_archive_is_written_atomically_with_mode_0600(saved: Saved, tmp_path: Path) -> None:
    target = tmp_path / "again.tar.gz"
    target.write_bytes(b"an older backup")
    os.chmod(target, 0o644)
    summary = create_backup(saved.state_dir, saved.config, target, now=NOW)
    assert summary.size == target.stat().st_size
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert members_of(target).keys() == members_of(saved.archive).keys()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_module_names_its_members_consistently() -> None:
    assert backup.DATABASE == DATABASE_FILE
