"""`enapter-gateway backup` / `restore`: the state that cannot be regenerated, in one checked archive.

What a backup holds (a gzipped tar, mode 0600 because of the CA key):

- `manifest.json`: format and gateway version, schema version, site id, creation time, device count
  and the SHA-256 and size of every other member;
- `gateway.sqlite3`: a consistent snapshot taken through SQLite's backup API on a connection of its
  own, so it works while the daemon writes (WAL readers never block the writer); the live file is
  never copied. The snapshot is switched to rollback-journal mode so that it is one self-contained
  file, and must pass `PRAGMA integrity_check` before it goes into the archive;
- `pki/*`: the gateway's CA (every MQTTS device certificate hangs on it), the server certificate and
  the CRL. The daemon reissues the latter two when due; the CA it never can;
- `config.toml`: the configuration file the backup was made with, for reference only.

The broker directory is not saved: the daemon writes Mosquitto's config and dynsec file afresh at
every start from the database (device passwords are stored there, hashed).

A restore unpacks into a staging directory next to the state directory and checks everything there
(every member listed and matching its checksum, nothing else in the archive, the database's
integrity, a schema version this code can migrate from, the CA key matching its certificate) before
it touches the state directory; then it swaps the staging directory in with one rename. The old
state directory is moved aside, never deleted. The configuration from the backup is not applied:
the active one decides ports and paths; it is left as `config.toml.from-backup` inside the restored
state directory.

The manifest's parser and the member-name and checksum rules are pure; the rest is file I/O. The
database is only touched through `gateway.store.snapshot` (SQL lives in the store); the store's
connections are not involved.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Final

from gateway import __version__
from gateway.mqtt import pki
from gateway.mqtt.broker import BrokerFiles
from gateway.store.schema import TARGET_VERSION
from gateway.store.snapshot import (
    DatabaseFacts,
    IntegrityCheckError,
    SnapshotError,
    in_use,
    inspect_database,
    take_snapshot,
)
from gateway.store.store import DATABASE_FILE

FORMAT: Final = "enapter-gateway-backup"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
DATABASE: Final = DATABASE_FILE  # the same name inside the archive as in the state directory
CONFIG: Final = "config.toml"
PKI: Final = "pki"
CONFIG_FROM_BACKUP: Final = "config.toml.from-backup"
"""Where a restore leaves the backup's configuration file, inside the restored state directory."""

_MAX_MANIFEST_BYTES: Final = 1024 * 1024
_CHUNK: Final = 1024 * 1024
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
# Every name an archive may hold. A whitelist, not a blacklist: no "..", no absolute paths, no
# sub-directories beyond pki/, so unpacking cannot write anywhere but the staging directory.
_MEMBER_NAME: Final = re.compile(
    rf"{re.escape(MANIFEST)}|{re.escape(DATABASE)}|{re.escape(CONFIG)}|{PKI}/[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}"
)
# Files the authority writes first and renames over the real ones (authority._write_private).
_PARTIAL_SUFFIX: Final = ".new"
_BROKER_PROBE_S: Final = 1.0
# What a damaged gzip stream or tar raises while it is read (BadGzipFile is an OSError: keep it
# ahead of any OSError handler).
_CORRUPT: Final = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


class BackupError(Exception):
    """A backup or restore was refused or failed; the message says why, in one line."""


class ArchiveError(BackupError):
    """The archive is unreadable, truncated, corrupt or does not fit this gateway."""


class StateDirError(BackupError):
    """The state directory cannot be backed up or replaced right now (e.g. the daemon uses it)."""


@dataclass(frozen=True, slots=True)
class Member:
    """One file of the archive besides the manifest, as the manifest lists it."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """`manifest.json`: what the archive holds and where it came from."""

    format_version: int
    gateway_version: str
    schema_version: int
    site_id: str | None
    created_at: str  # RFC 3339, UTC
    devices: int  # not counting the gateway itself
    members: tuple[Member, ...]

    def to_json(self) -> bytes:
        """The manifest as written into the archive (pure)."""
        document = {
            "format": FORMAT,
            "format_version": self.format_version,
            "gateway_version": self.gateway_version,
            "schema_version": self.schema_version,
            "site_id": self.site_id,
            "created_at": self.created_at,
            "devices": self.devices,
            "members": {item.name: {"sha256": item.sha256, "size": item.size} for item in self.members},
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What `create_backup` wrote."""

    path: Path
    size: int
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class RestoreSummary:
    """What `restore_backup` did."""

    state_dir: Path
    manifest: Manifest
    moved_aside: Path | None  # the previous state directory, if there was a non-empty one
    config_from_backup: Path | None


# --- pure rules ---------------------------------------------------------------------------------


def check_member_name(name: str) -> None:
    """ArchiveError unless `name` is one a gateway backup may hold (pure)."""
    if not _MEMBER_NAME.fullmatch(name):
        raise ArchiveError(f"unexpected member {name!r} in the archive; refusing it")


def _count(value: object) -> int | None:
    # bool is an int to isinstance, but `true` is no count.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _required_count(document: Mapping[str, object], key: str) -> int:
    value = _count(document.get(key))
    if value is None:
        raise ArchiveError(f"the backup manifest has no valid {key!r}")
    return value


def _required_text(document: Mapping[str, object], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        raise ArchiveError(f"the backup manifest has no valid {key!r}")
    return value


def _parse_member(name: str, entry: object) -> Member:
    check_member_name(name)
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    size = _count(entry.get("size")) if isinstance(entry, dict) else None
    if name == MANIFEST or not isinstance(digest, str) or not _SHA256.fullmatch(digest) or size is None:
        raise ArchiveError(f"the backup manifest's entry for {name!r} is invalid")
    return Member(name=name, sha256=digest, size=size)


def parse_manifest(data: bytes) -> Manifest:
    """`manifest.json` → Manifest, or ArchiveError for anything else (pure; any bytes)."""
    try:
        document = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArchiveError("the backup manifest is not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArchiveError("not an enapter-gateway backup (its manifest names another format)")
    version = _required_count(document, "format_version")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"unsupported backup format version {version} (this gateway reads version {FORMAT_VERSION})"
        )
    site_id = document.get("site_id")
    if site_id is not None and not isinstance(site_id, str):
        raise ArchiveError("the backup manifest has no valid 'site_id'")
    listed = document.get("members")
    if not isinstance(listed, dict):
        raise ArchiveError("the backup manifest has no valid 'members'")
    members = sorted((_parse_member(name, entry) for name, entry in listed.items()), key=lambda m: m.name)
    return Manifest(
        format_version=version,
        gateway_version=_required_text(document, "gateway_version"),
        schema_version=_required_count(document, "schema_version"),
        site_id=site_id,
        created_at=_required_text(document, "created_at"),
        devices=_required_count(document, "devices"),
        members=tuple(members),
    )


def check_members(manifest: Manifest, found: Mapping[str, Member]) -> None:
    """ArchiveError unless the archive holds exactly the manifest's members, each intact (pure)."""
    listed = {item.name: item for item in manifest.members}
    if DATABASE not in listed:
        raise ArchiveError(f"the backup manifest lists no {DATABASE}")
    for name, expected in listed.items():
        actual = found.get(name)
        if actual is None:
            raise ArchiveError(f"member {name} listed in the manifest is missing from the archive")
        if actual.sha256 != expected.sha256 or actual.size != expected.size:
            raise ArchiveError(f"checksum mismatch for {name}: the archive is corrupt")
    for name in found:
        if name not in listed:
            raise ArchiveError(f"member {name} is not listed in the backup manifest")


def check_schema(manifest: Manifest, supported: int) -> None:
    """ArchiveError if the backup's schema is newer than `supported` (pure)."""
    if manifest.schema_version > supported:
        raise ArchiveError(
            f"the backup's database schema version {manifest.schema_version} is newer than this "
            f"gateway supports ({supported}); restore it with enapter-gateway {manifest.gateway_version}"
            " or newer"
        )


# --- the database ---------------------------------------------------------------------------------


def _database_facts(path: Path) -> DatabaseFacts:
    """Integrity-check a database file nobody else uses and read what the manifest records.

    ArchiveError if it fails the check; SnapshotError if it is no gateway database at all.
    """
    try:
        return inspect_database(path)
    except IntegrityCheckError as exc:
        raise ArchiveError(f"the database fails its integrity check: {'; '.join(exc.problems[:3])}") from None


def _snapshot(source: Path, target: Path) -> DatabaseFacts:
    """Copy `source` to `target` consistently, while the daemon may be writing it."""
    try:
        take_snapshot(source, target)
    except SnapshotError as exc:
        raise StateDirError(f"cannot read the database {source}: {exc}") from None
    try:
        return _database_facts(target)
    except ArchiveError as exc:  # the live database itself is damaged: no backup of that
        raise StateDirError(f"{source}: {exc}") from None
    except SnapshotError as exc:
        raise StateDirError(f"{source} is not a gateway database: {exc}") from None


# --- the running daemon -----------------------------------------------------------------------------


def daemon_using(state_dir: Path) -> str | None:
    """Why `state_dir` is in use by a gateway right now, or None.

    The daemon keeps its database open for as long as it runs, so the database being open in
    another process (`gateway.store.snapshot.in_use`, which may fold a WAL left by a killed daemon
    into the file) means a gateway uses it. A Mosquitto left listening on the managed broker's
    admin socket (the daemon killed with SIGKILL, say) is reported too.
    """
    database = state_dir / DATABASE
    if database.is_file() and in_use(database):
        return (
            f"{database} is open in another process (the gateway daemon, or an"
            " `enapter-gateway token` command); stop the gateway first"
        )
    admin_socket = BrokerFiles(state_dir / "broker").socket
    if admin_socket.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe_socket:
            probe_socket.settimeout(_BROKER_PROBE_S)
            try:
                probe_socket.connect(str(admin_socket))
            except OSError:
                return None  # a stale socket file: nothing listens
        return f"a Mosquitto started by the gateway still listens on {admin_socket}; stop it first"
    return None


# --- backup -----------------------------------------------------------------------------------------


def _hash_file(path: Path, name: str) -> Member:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Member(name=name, sha256=digest.hexdigest(), size=size)


def _member(name: str, data: bytes) -> Member:
    return Member(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _pki_files(state_dir: Path) -> dict[str, bytes]:
    directory = state_dir / PKI
    found: dict[str, bytes] = {}
    if not directory.is_dir():
        return found  # MQTTS off, or an external broker: the daemon never made a CA
    for path in sorted(directory.iterdir()):
        name = f"{PKI}/{path.name}"
        if path.name.endswith(_PARTIAL_SUFFIX) or not _MEMBER_NAME.fullmatch(name):
            continue
        if stat.S_ISREG(path.lstat().st_mode):
            # Read once: the bytes hashed are the bytes archived, even if the daemon renews it now.
            found[name] = path.read_bytes()
    return found


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_backup(state_dir: Path, config_file: Path, target: Path, *, now: datetime) -> BackupSummary:
    """Write a backup of `state_dir` (and `config_file`) to `target`, atomically, mode 0600.

    Safe while the daemon runs. StateDirError if there is nothing to back up or the database is
    unreadable; BackupError if `target` cannot be written (then nothing is left behind).
    """
    database = state_dir / DATABASE
    if not database.is_file():
        raise StateDirError(f"no gateway database at {database}: nothing to back up")
    target = target.absolute()
    if target.is_dir():
        raise BackupError(f"{target} is a directory; name the archive file to write")
    try:
        config = config_file.read_bytes()
        files = {**_pki_files(state_dir), CONFIG: config}
    except OSError as exc:
        raise StateDirError(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        # Next to the target: the snapshot may be large (/tmp is often a small tmpfs) and the
        # archive must be renamed onto the target within one filesystem.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as work:
            snapshot = Path(work) / DATABASE
            facts = _snapshot(database, snapshot)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                gateway_version=__version__,
                schema_version=facts.schema_version,
                site_id=facts.site_id,
                created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                devices=facts.devices,
                members=tuple(
                    sorted(
                        [
                            _hash_file(snapshot, DATABASE),
                            *(_member(name, data) for name, data in files.items()),
                        ],
                        key=lambda item: item.name,
                    )
                ),
            )
            _write_archive(target, manifest, snapshot, files, now)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror}") from None
    return BackupSummary(path=target, size=target.stat().st_size, manifest=manifest)


def _write_archive(
    target: Path, manifest: Manifest, snapshot: Path, files: Mapping[str, bytes], now: datetime
) -> None:
    """The archive, to a 0600 temporary file renamed onto `target` once it is complete and synced."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as stream:
            with tarfile.open(fileobj=stream, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                # The manifest first, so that a reader learns the format before any large member.
                document = manifest.to_json()
                tar.addfile(_tar_info(MANIFEST, len(document), now.timestamp()), io.BytesIO(document))
                with snapshot.open("rb") as copy:
                    size = snapshot.stat().st_size
                    tar.addfile(_tar_info(DATABASE, size, now.timestamp()), copy)
                for name, data in sorted(files.items()):
                    tar.addfile(_tar_info(name, len(data), now.timestamp()), io.BytesIO(data))
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(target.parent)


# --- restore ----------------------------------------------------------------------------------------


def _unpack_member(source: IO[bytes], destination: Path, name: str) -> Member:
    """Copy one member into a new 0600 file, hashing it on the way."""
    digest, size = hashlib.sha256(), 0
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return Member(name=name, sha256=digest.hexdigest(), size=size)


def _unpack(archive: Path, staging: Path) -> tuple[Manifest, dict[str, Member]]:
    """Every member of `archive` into `staging`, by the whitelist; the manifest and what was found."""
    manifest_bytes: bytes | None = None
    found: dict[str, Member] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for info in tar:
                check_member_name(info.name)
                if not info.isreg():
                    raise ArchiveError(f"member {info.name!r} is not a regular file; refusing it")
                if info.name in found or (info.name == MANIFEST and manifest_bytes is not None):
                    raise ArchiveError(f"member {info.name} appears twice in the archive")
                source = tar.extractfile(info)
                assert source is not None  # a regular file always has data
                if info.name == MANIFEST:
                    manifest_bytes = source.read(_MAX_MANIFEST_BYTES + 1)
                    if len(manifest_bytes) > _MAX_MANIFEST_BYTES:
                        raise ArchiveError("the backup manifest is implausibly large")
                    continue
                destination = staging / info.name
                if destination.parent != staging:
                    destination.parent.mkdir(mode=0o700, exist_ok=True)
                found[info.name] = _unpack_member(source, destination, info.name)
            # Read to the end of the gzip stream: its CRC and length are checked only there, and
            # a tar cut at a header boundary would otherwise just look shorter.
            assert tar.fileobj is not None
            while tar.fileobj.read(_CHUNK):
                pass
    except _CORRUPT as exc:
        raise ArchiveError(
            f"the archive {archive} is truncated or corrupt ({exc or type(exc).__name__})"
        ) from None
    except ArchiveError:
        raise
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename) == archive:
            raise ArchiveError(f"cannot read {archive}: {exc.strerror}") from None
        raise BackupError(f"cannot unpack into {staging.parent}: {exc.strerror}") from None
    if manifest_bytes is None:
        raise ArchiveError(f"not an enapter-gateway backup: {archive} has no {MANIFEST}")
    return parse_manifest(manifest_bytes), found


def _check_database(path: Path, manifest: Manifest) -> None:
    try:
        facts = _database_facts(path)
    except SnapshotError as exc:
        raise ArchiveError(f"the database in the archive is unusable: {exc}") from None
    if facts.schema_version > TARGET_VERSION:
        raise ArchiveError(
            f"the backup's database schema version {facts.schema_version} is newer than this gateway"
            f" supports ({TARGET_VERSION})"
        )
    if facts.schema_version != manifest.schema_version or facts.site_id != manifest.site_id:
        raise ArchiveError("the database in the archive does not match its manifest (schema version, site)")


def _check_authority(directory: Path) -> None:
    key, certificate = directory / "ca.key", directory / "ca.crt"
    if not key.exists() and not certificate.exists():
        return  # saved from a gateway without MQTTS: the daemon makes a CA when it needs one
    try:
        pki.check_authority(pki.KeyPair(key_pem=key.read_text(), certificate_pem=certificate.read_text()))
    except FileNotFoundError:
        raise ArchiveError("the archive holds only half of the gateway CA (ca.key and ca.crt)") from None
    except (pki.PkiError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"the gateway CA in the archive is unusable: {exc}") from None


def _check_target(state_dir: Path, *, force: bool) -> None:
    """StateDirError unless `state_dir` may be replaced now."""
    if state_dir.exists() and not state_dir.is_dir():
        raise StateDirError(f"{state_dir} is not a directory")
    if not state_dir.is_dir():
        return
    reason = daemon_using(state_dir)
    if reason is not None:
        raise StateDirError(f"refusing to restore into {state_dir}: {reason}")
    if not force and any(state_dir.iterdir()):
        raise StateDirError(
            f"{state_dir} is not empty; pass --force to move it aside"
            f" (to {state_dir.name}.before-restore-<time>) and restore anyway"
        )


def _move_aside(state_dir: Path, now: datetime) -> Path | None:
    """Rename a non-empty `state_dir` out of the way (never delete it); remove an empty one."""
    if not state_dir.is_dir():
        return None
    if not any(state_dir.iterdir()):
        state_dir.rmdir()
        return None
    base = f"{state_dir.name}.before-restore-{now.strftime('%Y%m%dT%H%M%SZ')}"
    aside = state_dir.with_name(base)
    counter = 1
    while aside.exists():
        counter += 1
        aside = state_dir.with_name(f"{base}-{counter}")
    os.rename(state_dir, aside)
    return aside


def _missing_parents(directory: Path) -> list[Path]:
    """`directory` and its ancestors that do not exist yet, outermost first."""
    missing: list[Path] = []
    while not directory.exists():
        missing.insert(0, directory)
        directory = directory.parent
    return missing


@contextlib.contextmanager
def _staging(state_dir: Path) -> Iterator[Path]:
    """A private directory next to `state_dir` (one filesystem, so it can be renamed into place);
    removed, with any parent made for it, unless the caller renamed it away."""
    created = _missing_parents(state_dir.parent)
    for directory in created:
        directory.mkdir(mode=0o700)
    staging = Path(tempfile.mkdtemp(dir=state_dir.parent, prefix=f".{state_dir.name}.restore-"))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for directory in reversed(created):
            with contextlib.suppress(OSError):  # not empty: the restored state is in it
                directory.rmdir()


def restore_backup(archive: Path, state_dir: Path, *, force: bool, now: datetime) -> RestoreSummary:
    """Replace `state_dir` with the backup in `archive`, once all of it has been checked.

    ArchiveError if the archive is unusable, StateDirError if the daemon runs on `state_dir` or it
    is not empty and `force` is not given; in both cases `state_dir` is left as it was. With
    `force`, a non-empty `state_dir` is moved to `<state_dir>.before-restore-<time>`.
    """
    state_dir, archive = state_dir.absolute(), archive.absolute()
    _check_target(state_dir, force=force)
    try:
        with _staging(state_dir) as staging:
            manifest, found = _unpack(archive, staging)
            check_members(manifest, found)
            check_schema(manifest, TARGET_VERSION)
            _check_database(staging / DATABASE, manifest)
            _check_authority(staging / PKI)
            config_copy = None
            if CONFIG in found:
                os.rename(staging / CONFIG, staging / CONFIG_FROM_BACKUP)
                config_copy = state_dir / CONFIG_FROM_BACKUP
            if (staging / PKI).is_dir():
                _fsync_directory(staging / PKI)
            _fsync_directory(staging)
            # Again, right before the swap: the daemon may have been started meanwhile.
            _check_target(state_dir, force=force)
            moved = _move_aside(state_dir, now)
            try:
                os.rename(staging, state_dir)
            except OSError:
                if moved is not None:
                    os.rename(moved, state_dir)
                raise
    except OSError as exc:
        raise BackupError(f"cannot restore into {state_dir}: {exc.strerror} ({exc.filename})") from None
    _fsync_directory(state_dir.parent)
    return RestoreSummary(
        state_dir=state_dir, manifest=manifest, moved_aside=moved, config_from_backup=config_copy
    )
