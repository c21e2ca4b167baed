"""The SQLite store: the only module that speaks SQL.

Two aiosqlite connections to one WAL database (see DESIGN.md "Storage", broker-storage-notes §5):

- the *writer* runs every write. Ingested device messages go through a bounded queue to one writer
  task, which commits them in batches (one transaction per batch, `synchronous=NORMAL`: a power cut
  loses at most the last batches, never corrupts the file). Provisioning writes (site, devices,
  tokens, credentials) run on the same connection with `synchronous=FULL` for their transaction,
  serialised with the batches by a lock;
- the *reader* serves every query, side by side with the writer thanks to WAL.

The API's point reads (a token and the site, a device, a few devices' latest values or series) run
on a third, plain sqlite3 connection on the event loop's own thread (`Store._fetch_inline`): a
round trip to the reader's thread costs more CPU than they do, and they do not wait in its queue
behind device pages and history reads.

All connections use `isolation_level=None` (no implicit transactions from Python's sqlite3); the
writer's transactions are explicit `BEGIN IMMEDIATE ... COMMIT`. The schema lives in
`gateway.store.schema`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hmac
import json
import logging
import math
import operator
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeAlias

import aiosqlite
import orjson

from gateway.device_search import DeviceFilter, DeviceOrder, Tag, fts_query
from gateway.metadata import FieldType, MetadataField, ValueChange
from gateway.model import (
    NO_BLUEPRINT_ID,
    ApiToken,
    Blueprint,
    ChannelRef,
    CommandExecution,
    CommandResponse,
    CommandResponseState,
    CommunicationType,
    Connectivity,
    Device,
    DeviceMessage,
    DeviceType,
    ExecutionResponse,
    ExecutionState,
    JsonObject,
    JsonValue,
    LatestValue,
    Location,
    LogEntry,
    LogSeverity,
    Mismatch,
    Properties,
    Role,
    SeriesKind,
    Site,
    Telemetry,
)
from gateway.slugs import slugify
from gateway.store import rollup
from gateway.store.schema import MIGRATIONS, RETENTION, ROLLUPS, TARGET_VERSION, rollup_upsert_sql
from gateway.store.values import SqlValue, from_sql, kind_and_value
from gateway.timeline import ConnectivityChange, DeviceEvent, EventType, NewEvent, alert_changes, renamed

logger = logging.getLogger("gateway.store")

# The database file inside gateway.state_dir (the daemon, the CLI and backup archives use this name).
DATABASE_FILE: Final = "gateway.sqlite3"
GATEWAY_SLUG: Final = "gateway"
"""Slug of the gateway's own device, created with the site."""

_GATEWAY_NAME: Final = "Gateway"
# 64 MiB: the WAL is truncated back to this after a checkpoint instead of keeping its peak size.
_JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
_BUSY_TIMEOUT_MS: Final = 5000
# Reads of up to this many devices run on the event loop's thread (`Store._fetch_inline`).
_INLINE_KEYS: Final = 16

_DEVICE_COLUMNS: Final = (
    "id, site_id, name, slug, type, blueprint_id, communication_type, hardware_id, channel_id,"
    " upstream_id, created_at, updated_at"
)
_SITE_COLUMNS: Final = "id, name, timezone, updated_at, location_name, latitude, longitude"
_BLUEPRINT_COLUMNS: Final = "id, digest, name, manifest_json, created_at"
_CREDENTIAL_COLUMNS: Final = "device_id, protocol, username, secret, created_at"
_TOKEN_COLUMNS: Final = "id, name, role, created_at, revoked_at"


_EXECUTION_COLUMNS: Final = "id, device_id, name, manifest_name, arguments_json, ephemeral, state, created_at"

# telemetry_received keeps a row a minute for the site statistics' longest window (30 days).
RECEIVED_KEPT_MINUTES: Final = 31 * 24 * 60
BATCH_SECONDS_BOUNDS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the batch duration histogram (`StoreStats.batch_seconds_buckets`): a batch takes
milliseconds on a PC and up to seconds on a slow SD card."""


class ConflictError(Exception):
    """A write would break a uniqueness rule (the API answers 409)."""


class SlugTakenError(ConflictError):
    """The explicitly requested device slug is already used by another device."""


class HasChildrenError(ConflictError):
    """The device is the upstream (runtime) of other devices, which must be deleted first."""


class ChannelTakenError(ConflictError):
    """Another device already has this hardware id and channel id."""


class UsernameTakenError(ConflictError):
    """Another device's credential already uses this broker username."""


class TagTakenError(ConflictError):
    """Another tag already has this name (in any letter case)."""


class FieldTakenError(ConflictError):
    """A metadata field with this name already exists."""


class OptionInUseError(ConflictError):
    """Devices hold enum values the changed field would no longer allow (the message lists them)."""


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """How a device authenticates to the broker; `secret` is opaque here, never plaintext."""

    device_id: str
    protocol: str
    username: str
    secret: str
    created_at: float


@dataclass(frozen=True, slots=True)
class IssuedCertificateRecord:
    """A client certificate issued to a device (the certificate itself is not kept)."""

    serial: int
    hardware_id: str
    not_after: float


@dataclass(frozen=True, slots=True)
class RevokedCertificate:
    """An entry of the CRL."""

    serial: int
    revoked_at: float


@dataclass(frozen=True, slots=True)
class Ingested:
    """One decoded device message handed to the writer queue by ingest."""

    device_id: str
    message: DeviceMessage
    received_at: float
    # Values the device's manifest does not declare or allow: stored anyway, and flagged.
    mismatches: tuple[Mismatch, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Writer counters since the store was opened.

    Every accepted item ends up in exactly one of `committed`, `dropped_write_failed` or
    `skipped_unknown_device` once flushed, so `enqueued` is their sum plus the queue depth.
    """

    enqueued: int
    committed: int
    # Refused by `enqueue`: the queue was full, or the store was closing.
    dropped_queue_full: int
    batches: int
    failed_batches: int
    # Lost with a batch whose transaction failed (e.g. disk full), or not encodable as JSON.
    dropped_write_failed: int = 0
    # For a device id that does not exist (any more) when the batch is written.
    skipped_unknown_device: int = 0
    # How long each batch's transaction took, committed or failed, lock wait included: the
    # total, and (upper bound, batches that took at most that long) for each of
    # BATCH_SECONDS_BOUNDS and then infinity (the count of all timed batches).
    batch_seconds_sum: float = 0.0
    batch_seconds_buckets: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SiteActivity:
    """What a site's devices did since a time (the stored part of the site statistics).

    `data_points` counts telemetry values stored in whole minutes of the gateway's clock from
    that time on.
    """

    provisioned: int
    data_points: int
    executions_by_state: dict[str, int]


@dataclass(slots=True)
class _Counters:
    enqueued: int = 0
    committed: int = 0
    dropped_queue_full: int = 0
    batches: int = 0
    failed_batches: int = 0
    dropped_write_failed: int = 0
    skipped_unknown_device: int = 0
    batch_seconds_sum: float = 0.0
    # Batches per duration bucket (not cumulative); the last one is past every bound.
    batch_seconds_counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SECONDS_BOUNDS) + 1))

    def time_batch(self, seconds: float) -> None:
        """Count one batch that took `seconds`."""
        self.batch_seconds_sum += seconds
        self.batch_seconds_counts[bisect.bisect_left(BATCH_SECONDS_BOUNDS, seconds)] += 1

    def cumulative_buckets(self) -> tuple[tuple[float, int], ...]:
        """(upper bound, batches at most that long), the last bound infinite."""
        total = 0
        buckets: list[tuple[float, int]] = []
        for bound, count in zip((*BATCH_SECONDS_BOUNDS, math.inf), self.batch_seconds_counts, strict=True):
            total += count
            buckets.append((bound, total))
        return tuple(buckets)


def _dump(value: JsonValue | Mapping[str, JsonValue]) -> str:
    """Compact JSON text for the database.

    orjson, several times faster than `json` (this runs for every telemetry value, on the event
    loop's thread). What it refuses, `json` writes or refuses with its own error: integers beyond
    64 bits (kept as sent), lone surrogates, keys that are not strings.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load(text: str) -> JsonValue:
    result: JsonValue = json.loads(text)
    return result


@dataclass(slots=True)
class _BatchRows:
    """One batch of queued messages turned into rows, aggregated where only the newest counts."""

    # (device_id, timestamp, values) of each telemetry message, in arrival order.
    telemetry: list[tuple[str, float, Mapping[str, JsonValue]]] = field(default_factory=list)
    # device_id -> attribute -> (value, timestamp); the newest timestamp wins, ties: the last.
    latest: dict[str, dict[str, tuple[JsonValue, float]]] = field(default_factory=dict)
    # device_id -> (alerts_json, timestamp) of its newest telemetry in the batch.
    alerts: dict[str, tuple[str, float]] = field(default_factory=dict)
    # device_id -> latest received_at.
    last_seen: dict[str, float] = field(default_factory=dict)
    # (device_id, values, timestamp) in arrival order.
    properties: list[tuple[str, Mapping[str, JsonValue], float]] = field(default_factory=list)
    # (device_id, timestamp, received_at, severity, message, persist)
    logs: list[tuple[str, float, float, str, str, int]] = field(default_factory=list)
    # (device_id, execution_id, state, payload_json, received_at)
    responses: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    # (device_id, section, attribute) -> (reason, count, first received_at, last received_at)
    mismatches: dict[tuple[str, str, str], tuple[str, int, float, float]] = field(default_factory=dict)
    # Items per device, to count the ones skipped for an unknown device.
    items_per_device: dict[str, int] = field(default_factory=dict)
    # Filled while writing: timeline events written, and the raised alerts (with their telemetry
    # timestamp) now stored per device; both count only once the batch commits.
    events: list[DeviceEvent] = field(default_factory=list)
    raised_alerts: dict[str, tuple[tuple[str, ...], float]] = field(default_factory=dict)

    def add(self, item: Ingested) -> None:
        """Add one message; raises (TypeError, ValueError, RecursionError) if not encodable."""
        device_id, message = item.device_id, item.message
        # Encode everything first so that a failure leaves the batch untouched.
        match message:
            case Telemetry(timestamp=ts, values=values, alerts=alerts):
                # Numbers, strings, booleans and null always encode: only the others are tried.
                for value in values.values():
                    if isinstance(value, list | dict):
                        _dump(value)
                alerts_json = _dump(list(alerts or ()))
                self.telemetry.append((device_id, ts, values))
                latest = self.latest.get(device_id)
                if latest is None:
                    latest = self.latest[device_id] = {}
                for name, value in values.items():
                    known = latest.get(name)
                    if known is None or ts >= known[1]:
                        latest[name] = (value, ts)
                newest = self.alerts.get(device_id)
                if newest is None or ts >= newest[1]:
                    self.alerts[device_id] = (alerts_json, ts)
            case Properties(timestamp=ts, values=values):
                _dump(values)  # fail here, not inside the transaction
                self.properties.append((device_id, values, ts))
            case LogEntry(timestamp=ts, message=text, severity=severity, persist=persist):
                self.logs.append((device_id, ts, item.received_at, severity.value, text, int(persist)))
            case CommandResponse(execution_id=execution_id, state=state, payload=payload):
                self.responses.append(
                    (device_id, execution_id, state.value, _dump(payload), item.received_at)
                )
        for mismatch in item.mismatches:
            key = (device_id, mismatch.section, mismatch.attribute)
            _, count, first, _ = self.mismatches.get(key, ("", 0, item.received_at, 0.0))
            self.mismatches[key] = (mismatch.reason, count + 1, first, item.received_at)
        self.last_seen[device_id] = max(item.received_at, self.last_seen.get(device_id, 0.0))
        self.items_per_device[device_id] = self.items_per_device.get(device_id, 0) + 1

    def keep_only(self, known: Collection[str]) -> int:
        """Drop the rows of devices not in `known`; returns how many items that skipped."""
        skipped = sum(n for d, n in self.items_per_device.items() if d not in known)
        if skipped:
            self.telemetry = [r for r in self.telemetry if r[0] in known]
            self.latest = {k: v for k, v in self.latest.items() if k in known}
            self.alerts = {k: v for k, v in self.alerts.items() if k in known}
            self.last_seen = {k: v for k, v in self.last_seen.items() if k in known}
            self.properties = [r for r in self.properties if r[0] in known]
            self.logs = [r for r in self.logs if r[0] in known]
            self.responses = [r for r in self.responses if r[0] in known]
            self.mismatches = {k: v for k, v in self.mismatches.items() if k[0] in known}
        return skipped


# device_id -> attribute -> (telemetry_series.id, kind)
_SeriesIds: TypeAlias = dict[str, dict[str, tuple[int, SeriesKind]]]
_NO_SERIES: Final[Mapping[str, tuple[int, SeriesKind]]] = {}
# Raw rows in series order, then time order (values of any type are never compared).
_SERIES_TIME: Final = operator.itemgetter(0, 1)


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (semicolons inside strings or triggers stay)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {pending!r}")


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """Files created meanwhile (the database, its -wal and -shm) are readable by the owner only.

    The umask is process-wide; it is held only while the store opens, at start-up.
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@dataclass(frozen=True, slots=True)
class SetAside:
    """A database found unusable at start and renamed, so that a fresh one could be made."""

    moved_to: Path
    problem: str


# Primary result codes (the low byte of an extended code) that mean the file itself is damaged,
# as opposed to e.g. SQLITE_BUSY or SQLITE_CANTOPEN, which say nothing about its content.
_DAMAGED: Final = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


async def _corruption(path: Path) -> str | None:
    """Why the database at `path` is unusable, or None when it is sound (or absent).

    The schema is always read, which finds a file that is not a database or whose header or
    schema is damaged. The whole file is checked (`PRAGMA quick_check`, every page) only when a
    write-ahead log was left behind, i.e. the last run did not close the database (crash, power
    cut): reading every page of a large database on an SD card would otherwise slow every start.
    """
    thorough = _left_by_a_crash(path)
    if thorough is None:
        return None
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return _damage(exc)
    try:
        await db.execute_fetchall("SELECT count(*) FROM sqlite_schema")
        if thorough:
            rows = await db.execute_fetchall("PRAGMA quick_check(10)")
            problems = [str(row[0]) for row in rows]
            if problems != ["ok"]:
                return "PRAGMA quick_check: " + "; ".join(problems)
    except sqlite3.Error as exc:
        return _damage(exc)
    finally:
        await db.close()
    return None


def _left_by_a_crash(path: Path) -> bool | None:
    """None when there is no database yet (no file, or an empty one); else whether its WAL was left
    behind, which SQLite removes when the last connection closes cleanly."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    return path.with_name(path.name + "-wal").exists()


def _damage(exc: sqlite3.Error) -> str | None:
    """SQLite's message when `exc` says the file is damaged; re-raises any other failure."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DAMAGED:
        return str(exc)
    raise exc


def _move_aside(path: Path, now: float) -> Path:
    """Rename the database and its -wal/-shm to `<name>.corrupt-<UTC time>[-wal|-shm]`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    attempt = 1
    while target.exists():  # two starts within one second must not overwrite the first copy
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{attempt}")
        attempt += 1
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target


def _prepare_file(path: Path) -> None:
    """Create the directory (0700) and the database file (0600) before SQLite opens it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    # A file left by an older version or created by hand may be wider; it holds credentials.
    os.chmod(path, 0o600)


async def _connect(path: Path, pragmas: Iterable[str]) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        for pragma in pragmas:
            await db.execute(pragma)
    except BaseException:
        await db.close()
        raise
    return db


def _site(row: sqlite3.Row) -> Site:
    location = Location(name=row["location_name"], latitude=row["latitude"], longitude=row["longitude"])
    return Site(
        id=row["id"],
        name=row["name"],
        timezone=row["timezone"],
        updated_at=row["updated_at"],
        location=None if location == Location() else location,
    )


def _blueprint(row: sqlite3.Row) -> Blueprint:
    return Blueprint(
        id=row["id"],
        digest=row["digest"],
        name=row["name"],
        manifest=_load_object(row["manifest_json"]),
        created_at=row["created_at"],
    )


# Enum members by value: a dict lookup takes a tenth of an enum call (a device list page makes 50).
_DEVICE_TYPES: Final = {member.value: member for member in DeviceType}
_COMMUNICATION_TYPES: Final = {member.value: member for member in CommunicationType}


def _device(row: sqlite3.Row) -> Device:
    communication_type = row["communication_type"]
    return Device(
        id=row["id"],
        site_id=row["site_id"],
        name=row["name"],
        slug=row["slug"],
        type=_DEVICE_TYPES[row["type"]],
        blueprint_id=row["blueprint_id"],
        communication_type=(None if communication_type is None else _COMMUNICATION_TYPES[communication_type]),
        hardware_id=row["hardware_id"],
        channel_id=row["channel_id"],
        upstream_id=row["upstream_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _device_at(row: sqlite3.Row, first: int) -> Device:
    """`_device` of a row holding the `_DEVICE_COLUMNS` in their order from column `first`: by
    position, a third quicker than by name (device pages make 50 at a time)."""
    (
        device_id,
        site_id,
        name,
        slug,
        device_type,
        blueprint_id,
        communication_type,
        hardware_id,
        channel_id,
        upstream_id,
        created_at,
        updated_at,
    ) = row[first : first + 12]
    return Device(
        id=device_id,
        site_id=site_id,
        name=name,
        slug=slug,
        type=_DEVICE_TYPES[device_type],
        blueprint_id=blueprint_id,
        communication_type=(None if communication_type is None else _COMMUNICATION_TYPES[communication_type]),
        hardware_id=hardware_id,
        channel_id=channel_id,
        upstream_id=upstream_id,
        created_at=created_at,
        updated_at=updated_at,
    )


def _credential(row: sqlite3.Row) -> DeviceCredential:
    return DeviceCredential(
        device_id=row["device_id"],
        protocol=row["protocol"],
        username=row["username"],
        secret=row["secret"],
        created_at=row["created_at"],
    )


def _token(row: sqlite3.Row) -> ApiToken:
    return ApiToken(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _serial_text(serial: int) -> str:
    return format(serial, "x")


async def _revoke_certificates(db: aiosqlite.Connection, device_id: str, now: float) -> None:
    await db.execute(
        "UPDATE device_certificates SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
        (now, device_id),
    )


def _load_object(text: str) -> dict[str, JsonValue]:
    loaded = _load(text)
    return loaded if isinstance(loaded, dict) else {}


class HistoryValue(NamedTuple):
    """What `Store.history` gives for one stored value or rollup bucket: the fields of
    `model.Partial`, as a tuple, which takes a third of the time to make (a query of a day per
    minute makes 1,440 per column)."""

    start: float
    value_count: int  # `Partial.count` (a tuple has a method of that name)
    num_count: int
    total: float
    low: float | None
    high: float | None
    last: JsonValue
    last_ts: float


def _raw_partial(timestamp: float, value: SqlValue, kind: SeriesKind) -> HistoryValue:
    number = float(value) if isinstance(value, int | float) else None
    last = from_sql(value, kind)
    numbers = 0 if number is None else 1
    return HistoryValue(timestamp, 1, numbers, number or 0.0, number, number, last, timestamp)


def _id_list(ids: Collection[str]) -> str:
    """A JSON array parameter, expanded in SQL by `json_each`: one bound value for any count."""
    return _dump(list(ids))


_EVENT_COLUMNS: Final = "id, device_id, type, timestamp, details_json"


def _event(row: sqlite3.Row) -> DeviceEvent:
    return DeviceEvent(
        id=row["id"],
        device_id=row["device_id"],
        type=EventType(row["type"]),
        timestamp=row["timestamp"],
        details=_load_object(row["details_json"]),
    )


def _command_executed(device_id: str, execution_id: str, name: str, state: str, at: float) -> NewEvent:
    details: JsonObject = {"execution_id": execution_id, "command": name, "state": state}
    return NewEvent(device_id, EventType.COMMAND_EXECUTED, at, details)


async def _insert_events(db: aiosqlite.Connection, events: Iterable[NewEvent]) -> list[DeviceEvent]:
    """Write timeline events inside the caller's transaction; the rows as written (with ids)."""
    written: list[DeviceEvent] = []
    for new in events:
        # Whole microseconds, as RFC 3339 shows it: `timestamp.gte=<a timestamp>` must match it.
        timestamp = round(new.timestamp, 6)
        rows = await db.execute_fetchall(
            "INSERT INTO device_events (device_id, type, timestamp, details_json) VALUES (?, ?, ?, ?)"
            " RETURNING id",
            (new.device_id, new.type.value, timestamp, _dump(new.details)),
        )
        (row,) = rows
        written.append(DeviceEvent(row["id"], new.device_id, new.type, timestamp, dict(new.details)))
    return written


def _event_filter(
    device_ids: Collection[str] | None,
    types: Collection[EventType] | None,
    since: float | None,
    until: float | None,
) -> tuple[str, list[Any]]:
    """A WHERE condition on device_events and its parameters."""
    where = ["true"]
    parameters: list[Any] = []
    if device_ids is not None and len(device_ids) == 1:
        # `=` rather than IN: the (device_id, timestamp) index then also gives the order.
        where.append("device_id = ?")
        parameters.extend(device_ids)
    elif device_ids is not None:
        where.append("device_id IN (SELECT value FROM json_each(?))")
        parameters.append(_id_list(device_ids))
    if types is not None:
        where.append("type IN (SELECT value FROM json_each(?))")
        parameters.append(_id_list([event_type.value for event_type in types]))
    if since is not None:
        where.append("timestamp >= ?")
        parameters.append(since)
    if until is not None:
        where.append("timestamp < ?")
        parameters.append(until)
    return " AND ".join(where), parameters


def _alert_names(text: str) -> tuple[str, ...]:
    loaded = _load(text)
    return tuple(name for name in loaded if isinstance(name, str)) if isinstance(loaded, list) else ()


class Store:
    """Access to the gateway database. Create it with `Store.open`, never directly."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        queue_size: int,
        max_batch: int,
        clock: Callable[[], float],
        path: Path | None = None,
    ) -> None:
        """Wrap two open, migrated connections. Use `Store.open`, which owns their lifetime."""
        self._path = path
        # The unusable database this one replaced at start, if any (shown by `status`).
        self.set_aside: SetAside | None = None
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._max_batch = max_batch
        # None is the stop marker, put by `open` on exit after every accepted item.
        self._queue: asyncio.Queue[Ingested | None] = asyncio.Queue(maxsize=queue_size)
        self._write_lock = asyncio.Lock()
        # Set (and replaced) after every batch and when the writer stops; `flush` waits on it.
        self._batch_done = asyncio.Event()
        self._processed = 0  # accepted items the writer is done with, whatever the outcome
        self._counters = _Counters()
        self._closing = False
        self._failing = False
        self._last_failure = ""
        self._task: asyncio.Task[None] | None = None
        # device_id -> attribute -> (series id, kind), as committed; filled as batches need it.
        self._series: _SeriesIds = {}
        # The minute of the last telemetry_received write, to purge that table once a minute.
        self._received_minute = 0
        # device_id -> (raised alerts, their telemetry timestamp), as committed; filled as batches
        # need it, so that a batch compares alerts without reading them back every time.
        self._raised: dict[str, tuple[tuple[str, ...], float]] = {}
        # Called with the timeline events of every committed transaction that wrote some (the live
        # event feed). They must not block.
        self.event_listeners: list[Callable[[Sequence[DeviceEvent]], None]] = []

    # --- lifetime ------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        queue_size: int = 20_000,
        max_batch: int = 10_000,
        clock: Callable[[], float] = time.time,
        set_aside_corrupt: bool = False,
    ) -> AsyncIterator[Store]:
        """Open (creating and migrating) the database at `path` and run the writer task.

        On exit, everything queued so far is committed, the writer stops and both connections
        are closed (aiosqlite's threads would otherwise keep the process alive). `clock` gives
        the created/updated/received times the store stamps itself.

        With `set_aside_corrupt` (the daemon), a file that is not a database or fails its check is
        renamed with its WAL (`Store.set_aside` says where and why) and a fresh database is made;
        otherwise (CLI tools) it is an error, so that only the daemon ever decides to start over.
        """
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be positive")
        set_aside: SetAside | None = None
        if set_aside_corrupt:
            problem = await _corruption(path)
            if problem is not None:
                set_aside = SetAside(moved_to=_move_aside(path, clock()), problem=problem)
        async with contextlib.AsyncExitStack() as stack:
            with _private_umask():
                _prepare_file(path)
                writer = await _connect(
                    path,
                    (
                        # Only takes effect on a new, empty file; lets a later retention job
                        # reclaim space with incremental_vacuum instead of a full VACUUM.
                        "PRAGMA auto_vacuum = INCREMENTAL",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                        f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}",
                        "PRAGMA foreign_keys = ON",
                        f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}",
                    ),
                )
                stack.push_async_callback(writer.close)
                await _check_wal(writer)
                await _migrate(writer)
                reader = await _connect(
                    path,
                    (
                        f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}",
                        "PRAGMA foreign_keys = ON",
                        # The reader never writes; make a mistake fail loudly.
                        "PRAGMA query_only = ON",
                    ),
                )
                stack.push_async_callback(reader.close)
            store = cls(
                writer,
                reader,
                queue_size=queue_size,
                max_batch=max_batch,
                clock=clock,
                path=path,
            )
            store.set_aside = set_aside
            stack.callback(store._close_inline)
            stack.push_async_callback(_optimize, writer)
            body_error: Exception | None = None
            async with asyncio.TaskGroup() as tasks:
                store._task = tasks.create_task(store._write_loop(), name="store-writer")
                try:
                    yield store
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    # Re-raised below, outside the TaskGroup, so that callers get their own
                    # exception and not an ExceptionGroup wrapping it.
                    body_error = exc
                finally:
                    await store._stop_writer()
            if body_error is not None:
                raise body_error

    async def _stop_writer(self) -> None:
        """Refuse new items, let the writer commit everything accepted, and wait for it."""
        self._closing = True
        task = self._task
        if task is None or task.done():
            return
        # Blocks only while the queue is full, i.e. until the writer takes the next batch.
        await self._queue.put(None)
        await asyncio.wait([task])

    # --- queued writes (ingest) ----------------------------------------------------------------

    def enqueue(self, item: Ingested) -> bool:
        """Queue a device message for the writer; never blocks.

        Returns False, and counts a drop, when the queue is full or the store is closing.
        """
        if self._closing:
            self._counters.dropped_queue_full += 1
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._counters.dropped_queue_full += 1
            return False
        self._counters.enqueued += 1
        return True

    async def flush(self) -> None:
        """Wait until every item enqueued so far has been written (or dropped by a failed batch)."""
        target = self._counters.enqueued
        while self._processed < target:
            if self._task is None or self._task.done():
                raise RuntimeError("the store writer is not running")
            await self._batch_done.wait()

    @property
    def accepting(self) -> bool:
        """False while `enqueue` would refuse an item (queue full, or closing); counts nothing."""
        return not (self._closing or self._queue.full())

    @property
    def queue_depth(self) -> int:
        """Items waiting for the writer."""
        return self._queue.qsize()

    @property
    def stats(self) -> StoreStats:
        """A snapshot of the writer counters."""
        c = self._counters
        return StoreStats(
            enqueued=c.enqueued,
            committed=c.committed,
            dropped_queue_full=c.dropped_queue_full,
            batches=c.batches,
            failed_batches=c.failed_batches,
            dropped_write_failed=c.dropped_write_failed,
            skipped_unknown_device=c.skipped_unknown_device,
            batch_seconds_sum=c.batch_seconds_sum,
            batch_seconds_buckets=c.cumulative_buckets(),
        )

    def writer_problem(self) -> str | None:
        """Why the writer cannot store ingested messages right now, or None if it can: it has
        stopped, or its latest batch failed (a full or broken disk fails every batch)."""
        if self._task is None or self._task.done():
            return "the store writer is not running"
        if self._failing:
            return f"the latest batch failed: {self._last_failure}"
        return None

    async def ping(self) -> None:
        """A trivial read on the reader connection (health checks put a deadline on it)."""
        await self._fetch("SELECT 1")

    def file_size(self) -> int:
        """Bytes the database takes on disk: the file and its write-ahead log (0 if unknown)."""
        if self._path is None:
            return 0
        size = 0
        for path in (self._path, self._path.with_name(self._path.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                size += path.stat().st_size
        return size

    async def _write_loop(self) -> None:
        """Wait for an item, take what else is queued (up to max_batch), commit it; repeat."""
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                try:
                    await self._write_batch(batch)
                finally:
                    self._processed += len(batch)
                    self._batch_done.set()
                    self._batch_done = asyncio.Event()
                if stop:
                    return
        finally:
            # Wake `flush` callers however the writer ends, so none waits forever.
            self._batch_done.set()

    async def _write_batch(self, batch: list[Ingested]) -> None:
        rows = _BatchRows()
        for item in batch:
            try:
                rows.add(item)
            except (TypeError, ValueError, RecursionError) as exc:
                logger.warning("dropping a %s not encodable as JSON: %s", type(item.message), exc)
                self._counters.dropped_write_failed += 1
        accepted = sum(rows.items_per_device.values())
        if not accepted:
            return
        started = time.monotonic()
        try:
            async with self._transaction(durable=False) as db:
                skipped = rows.keep_only(await self._existing_devices(db, rows.items_per_device))
                changed_series = await self._write_rows(db, rows)
            # Only now: a rolled-back batch must not leave ids of series that do not exist.
            for device_id, changed in changed_series.items():
                self._series.setdefault(device_id, {}).update(changed)
            self._raised.update(rows.raised_alerts)
            self._announce(rows.events)
        except sqlite3.Error as exc:
            self._counters.time_batch(time.monotonic() - started)
            self._last_failure = str(exc)
            self._counters.failed_batches += 1
            self._counters.dropped_write_failed += accepted
            # Log the first failure of a streak only: a full disk fails every batch, and the
            # log goes to the same card.
            if not self._failing:
                logger.error("store batch of %d items failed and was dropped: %s", accepted, exc)
            self._failing = True
            return
        self._counters.time_batch(time.monotonic() - started)
        if self._failing:
            logger.warning("store batches are committing again")
            self._failing = False
        self._counters.batches += 1
        self._counters.committed += accepted - skipped
        self._counters.skipped_unknown_device += skipped

    @staticmethod
    async def _existing_devices(db: aiosqlite.Connection, device_ids: Collection[str]) -> set[str]:
        rows = await db.execute_fetchall(
            "SELECT id FROM devices WHERE id IN (SELECT value FROM json_each(?))",
            (_id_list(device_ids),),
        )
        return {str(row["id"]) for row in rows}

    async def _write_rows(self, db: aiosqlite.Connection, rows: _BatchRows) -> _SeriesIds:
        """Write one batch; returns the series ids it created or changed (for after COMMIT)."""
        changed_series: _SeriesIds = {}
        if rows.telemetry:
            changed_series = await self._write_history(db, rows.telemetry)
        if rows.latest:
            await db.executemany(
                "INSERT INTO telemetry_latest (device_id, attribute, value_json, timestamp)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id, attribute) DO UPDATE"
                " SET value_json = excluded.value_json, timestamp = excluded.timestamp"
                # An older message arriving late must not replace a newer value.
                " WHERE excluded.timestamp >= telemetry_latest.timestamp",
                [
                    (device_id, name, _dump(value), ts)
                    for device_id, latest in rows.latest.items()
                    for name, (value, ts) in latest.items()
                ],
            )
        if rows.last_seen:
            await db.executemany(
                "INSERT INTO device_state (device_id, last_seen_at) VALUES (?, ?)"
                " ON CONFLICT (device_id) DO UPDATE"
                " SET last_seen_at = max(coalesce(last_seen_at, excluded.last_seen_at),"
                " excluded.last_seen_at)",
                list(rows.last_seen.items()),
            )
        if rows.alerts:
            # Compared with the alerts stored before this batch's update.
            await self._alert_events(db, rows)
            # The row exists: last_seen above inserted it.
            await db.executemany(
                "UPDATE device_state SET raised_alerts_json = ?, alerts_timestamp = ?"
                " WHERE device_id = ? AND (alerts_timestamp IS NULL OR alerts_timestamp <= ?)",
                [(text, ts, d, ts) for d, (text, ts) in rows.alerts.items()],
            )
        if rows.properties:
            await self._merge_properties(db, rows.properties)
        if rows.logs:
            await db.executemany(
                "INSERT INTO device_logs"
                " (device_id, timestamp, received_at, severity, message, persist)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows.logs,
            )
        if rows.mismatches:
            await db.executemany(
                "INSERT INTO manifest_mismatches"
                " (device_id, section, attribute, reason, count, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (device_id, section, attribute) DO UPDATE SET reason = excluded.reason,"
                " count = count + excluded.count, last_seen = excluded.last_seen",
                [(*key, *value) for key, value in rows.mismatches.items()],
            )
        if rows.responses:
            await db.executemany(
                "INSERT INTO command_responses"
                " (device_id, execution_id, state, payload_json, received_at)"
                " VALUES (?, ?, ?, ?, ?)",
                rows.responses,
            )
            rows.events += await self._apply_responses(db, rows.responses)
        return changed_series

    async def _write_history(
        self, db: aiosqlite.Connection, telemetry: list[tuple[str, float, Mapping[str, JsonValue]]]
    ) -> _SeriesIds:
        """Insert raw values under their series (creating series as needed) and merge them into
        the rollups, all inside the batch's transaction."""
        raw_rows: list[rollup.RawRow] = []
        # Series that are new or whose kind changes: the kind of their newest value, and where
        # their values are in raw_rows (their ids are known once they are written).
        changing: dict[tuple[str, str], SeriesKind] = {}
        unresolved: list[tuple[int, str, str]] = []
        # The hot loop of a batch: once per value, so a dictionary lookup by name per value in
        # the common case (every series known, none changing kind).
        for device_id, ts, values in telemetry:
            known = self._series.get(device_id, _NO_SERIES)
            for name, value in values.items():
                if value is None:
                    continue
                kind, stored = kind_and_value(value)
                series = known.get(name)
                if (
                    series is not None
                    and series[1] is kind
                    and not (changing and (device_id, name) in changing)
                ):
                    raw_rows.append((series[0], ts, stored))
                else:
                    changing[(device_id, name)] = kind
                    unresolved.append((len(raw_rows), device_id, name))
                    raw_rows.append((0, ts, stored))
        changed: _SeriesIds = {}
        if changing:
            # Two statements for all of them: a new fleet's first batch has thousands.
            await db.executemany(
                "INSERT INTO telemetry_series (device_id, attribute, kind) VALUES (?, ?, ?)"
                " ON CONFLICT (device_id, attribute) DO UPDATE SET kind = excluded.kind",
                [(*key, kind.value) for key, kind in changing.items()],
            )
            rows = await db.execute_fetchall(
                "SELECT s.device_id, s.attribute, s.id FROM json_each(?) AS wanted"
                " JOIN telemetry_series AS s"
                " ON s.device_id = wanted.value ->> 0 AND s.attribute = wanted.value ->> 1",
                (_dump([list(key) for key in changing]),),
            )
            for device_id, attribute, series_id in rows:
                kind = changing[(device_id, attribute)]
                changed.setdefault(device_id, {})[attribute] = (int(series_id), kind)
            for index, device_id, name in unresolved:
                _, ts, stored = raw_rows[index]
                raw_rows[index] = (changed[device_id][name][0], ts, stored)
        if not raw_rows:
            return changed
        # In series order (stable: equal timestamps keep their arrival order): consecutive rows
        # then land on the same page of the by-series index, which halves this insert's time
        # once the history outgrows the cache (each series has pages of its own by then).
        raw_rows.sort(key=_SERIES_TIME)
        await db.executemany(
            "INSERT INTO telemetry_raw (series_id, timestamp, value) VALUES (?, ?, ?)", raw_rows
        )
        # The finest rollup from the raw values, each coarser one from the one before it.
        (finest, finest_size), *coarser = ROLLUPS
        summaries = rollup.summarize(raw_rows, finest_size)
        await db.executemany(rollup_upsert_sql(finest), summaries)
        for table, size in coarser:
            summaries = rollup.coarsen(summaries, size)
            await db.executemany(rollup_upsert_sql(table), summaries)
        minute = int(self._clock() // 60)
        await db.execute(
            "INSERT INTO telemetry_received (minute, data_points) VALUES (?, ?)"
            " ON CONFLICT (minute) DO UPDATE SET data_points = data_points + excluded.data_points",
            (minute, len(raw_rows)),
        )
        if minute != self._received_minute:
            # Once a minute: the statistics' longest window is 30 days.
            self._received_minute = minute
            await db.execute(
                "DELETE FROM telemetry_received WHERE minute < ?", (minute - RECEIVED_KEPT_MINUTES,)
            )
        return changed

    async def _alert_events(self, db: aiosqlite.Connection, rows: _BatchRows) -> None:
        """Compare each device's newest alerts in the batch with the stored ones; write an event per
        alert raised or cleared. Reads the stored alerts only for devices not in `_raised` yet."""
        missing = [device_id for device_id in rows.alerts if device_id not in self._raised]
        known: dict[str, tuple[tuple[str, ...], float]] = {}
        if missing:
            stored = await db.execute_fetchall(
                "SELECT device_id, raised_alerts_json, alerts_timestamp FROM device_state"
                " WHERE device_id IN (SELECT value FROM json_each(?))",
                (_id_list(missing),),
            )
            for row in stored:
                known[row["device_id"]] = (
                    _alert_names(row["raised_alerts_json"]),
                    -math.inf if row["alerts_timestamp"] is None else row["alerts_timestamp"],
                )
        new_events: list[NewEvent] = []
        for device_id, (text, ts) in rows.alerts.items():
            before, before_ts = self._raised.get(device_id) or known.get(device_id, ((), -math.inf))
            if ts < before_ts:  # older than what is stored: the UPDATE above left it alone
                rows.raised_alerts[device_id] = (before, before_ts)
                continue
            after = _alert_names(text)
            rows.raised_alerts[device_id] = (after, ts)
            received_at = rows.last_seen.get(device_id, ts)
            new_events += alert_changes(device_id, before, after, received_at)
        rows.events += await _insert_events(db, new_events)

    async def _apply_responses(
        self, db: aiosqlite.Connection, responses: list[tuple[str, str, str, str, float]]
    ) -> list[DeviceEvent]:
        """Move each response's execution on, unless it already ended (e.g. timed out); a
        `command_executed` event for each execution a response ended.

        A device can only answer its own executions.
        """
        progress: list[tuple[str, float, str, str]] = []
        final: list[tuple[str, float, str, str]] = []
        for device_id, execution_id, state, _, received_at in responses:
            execution_state = CommandResponseState(state).execution_state
            target = final if execution_state.terminal else progress
            target.append((execution_state.value, received_at, execution_id, device_id))
        update = (
            "UPDATE command_executions SET state = ?, updated_at = ?"
            " WHERE id = ? AND device_id = ? AND state IN ('NEW', 'IN_PROGRESS')"
        )
        await db.executemany(update, progress)
        ended: list[NewEvent] = []
        for values in final:
            for row in await db.execute_fetchall(update + " RETURNING name", values):
                state, received_at, execution_id, device_id = values
                ended.append(_command_executed(device_id, execution_id, row["name"], state, received_at))
        return await _insert_events(db, ended)

    async def _merge_properties(
        self,
        db: aiosqlite.Connection,
        messages: list[tuple[str, Mapping[str, JsonValue], float]],
    ) -> None:
        """Shallow-merge each message's keys into the stored set, in arrival order.

        Read-modify-write inside the batch transaction rather than `json_patch`, whose RFC 7396
        semantics would delete a key sent as null and deep-merge object values.
        """
        stored = await db.execute_fetchall(
            "SELECT device_id, values_json, timestamp FROM device_properties"
            " WHERE device_id IN (SELECT value FROM json_each(?))",
            (_id_list({d for d, _, _ in messages}),),
        )
        merged: dict[str, tuple[dict[str, JsonValue], float]] = {}
        for row in stored:
            merged[row["device_id"]] = (_load_object(row["values_json"]), row["timestamp"])
        for device_id, values, ts in messages:
            current, newest = merged.get(device_id, ({}, ts))
            current.update(values)
            merged[device_id] = (current, max(newest, ts))
        now = self._clock()
        await db.executemany(
            "INSERT INTO device_properties (device_id, values_json, timestamp, updated_at)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET values_json = excluded.values_json,"
            " timestamp = excluded.timestamp, updated_at = excluded.updated_at",
            [(d, _dump(values), ts, now) for d, (values, ts) in merged.items()],
        )

    @contextlib.asynccontextmanager
    async def _transaction(self, *, durable: bool) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction on the writer connection, exclusive among this store's writers.

        `durable` commits with `synchronous=FULL`, which fsyncs the WAL (with every earlier
        frame) before COMMIT returns. Any failure, including cancellation, rolls back: aiosqlite
        runs calls in order on one thread, so the rollback runs after whatever was in flight.
        """
        db = self._writer
        async with self._write_lock:
            if durable:
                await db.execute("PRAGMA synchronous = FULL")
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    try:
                        # sqlite3's rollback() is a no-op outside a transaction.
                        await db.rollback()
                    except sqlite3.Error:
                        logger.exception("rollback failed")
                    raise
            finally:
                if durable:
                    await db.execute("PRAGMA synchronous = NORMAL")

    # --- durable writes (provisioning) ---------------------------------------------------------

    async def ensure_site(self, *, name: str, timezone: str) -> Site:
        """Return the site; the first call creates it together with the gateway's own device."""
        async with self._transaction(durable=True) as db:
            rows = list(
                await db.execute_fetchall(f"SELECT {_SITE_COLUMNS} FROM site ORDER BY created_at LIMIT 1")
            )
            if rows:
                return _site(rows[0])
            now = self._clock()
            site = Site(id=str(uuid.uuid4()), name=name, timezone=timezone, updated_at=now)
            await db.execute(
                "INSERT INTO site (id, name, timezone, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (site.id, name, timezone, now, now),
            )
            await self._insert_device(
                db,
                Device(
                    id=str(uuid.uuid4()),
                    site_id=site.id,
                    name=_GATEWAY_NAME,
                    slug=GATEWAY_SLUG,
                    type=DeviceType.GATEWAY,
                    blueprint_id=NO_BLUEPRINT_ID,
                    communication_type=CommunicationType.MQTT_V1_LOCALHOST,
                    hardware_id=None,
                    channel_id=None,
                    upstream_id=None,
                    created_at=now,
                    updated_at=now,
                ),
            )
        return site

    async def create_token(self, *, name: str, role: Role, token_hash: str) -> ApiToken:
        """Store a new API token by its hash (the caller hashes; the token itself is never here)."""
        token = ApiToken(id=str(uuid.uuid4()), name=name, role=role, created_at=self._clock())
        async with self._transaction(durable=True) as db:
            await db.execute(
                "INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (token.id, name, role.value, token_hash, token.created_at),
            )
        return token

    async def revoke_token(self, token_id: str) -> ApiToken | None:
        """Revoke the token with this id (at once, for a running daemon too); None if unknown.

        Revoking a revoked token keeps its first revocation time.
        """
        async with self._transaction(durable=True) as db:
            await db.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (self._clock(), token_id),
            )
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)
                )
            )
        return _token(rows[0]) if rows else None

    async def create_device(
        self,
        *,
        site_id: str,
        name: str,
        slug: str | None,
        type: DeviceType,
        communication_type: CommunicationType | None,
        hardware_id: str | None,
        channel_id: str | None,
        upstream_id: str | None = None,
        blueprint_id: str = NO_BLUEPRINT_ID,
    ) -> Device:
        """Create a device with a new uuid4 id.

        `slug=None` derives it from `name` (`gateway.slugs.slugify`), adding `-2`, `-3`, ... when
        taken. Raises SlugTakenError for a taken explicit slug, ChannelTakenError when another
        device has this hardware id and channel id, LookupError for an unknown site.
        """
        async with self._transaction(durable=True) as db:
            if not await db.execute_fetchall("SELECT 1 FROM site WHERE id = ?", (site_id,)):
                raise LookupError(f"no site {site_id!r}")
            if slug is None:
                slug = await self._free_slug(db, slugify(name))
            elif await db.execute_fetchall("SELECT 1 FROM devices WHERE slug = ?", (slug,)):
                raise SlugTakenError(slug)
            if hardware_id is not None and channel_id is not None:
                taken = await db.execute_fetchall(
                    "SELECT 1 FROM devices WHERE hardware_id = ? AND channel_id = ?",
                    (hardware_id, channel_id),
                )
                if taken:
                    raise ChannelTakenError(f"{hardware_id}/{channel_id}")
            now = self._clock()
            device = Device(
                id=str(uuid.uuid4()),
                site_id=site_id,
                name=name,
                slug=slug,
                type=type,
                blueprint_id=blueprint_id,
                communication_type=communication_type,
                hardware_id=hardware_id,
                channel_id=channel_id,
                upstream_id=upstream_id,
                created_at=now,
                updated_at=now,
            )
            await self._insert_device(db, device)
            details: JsonObject = {"name": name, "slug": slug, "type": type.value}
            events = await _insert_events(db, [NewEvent(device.id, EventType.PROVISIONED, now, details)])
        self._announce(events)
        return device

    @staticmethod
    async def _free_slug(db: aiosqlite.Connection, base: str) -> str:
        """`base`, or the first of `base-2`, `base-3`, ... that no device uses."""
        rows = await db.execute_fetchall(
            "SELECT slug FROM devices WHERE slug = ?1 OR substr(slug, 1, length(?1) + 1) = ?1 || '-'",
            (base,),
        )
        taken = {str(row["slug"]) for row in rows}
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    @staticmethod
    async def _insert_device(db: aiosqlite.Connection, device: Device) -> None:
        await db.execute(
            f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device.id,
                device.site_id,
                device.name,
                device.slug,
                device.type.value,
                device.blueprint_id,
                None if device.communication_type is None else device.communication_type.value,
                device.hardware_id,
                device.channel_id,
                device.upstream_id,
                device.created_at,
                device.updated_at,
            ),
        )

    async def delete_device(self, device_id: str) -> bool:
        """Delete a device and everything stored for it; False if there was no such device.

        The gateway's own device cannot be deleted (ValueError).
        """
        async with self._transaction(durable=True) as db:
            rows = list(await db.execute_fetchall("SELECT type FROM devices WHERE id = ?", (device_id,)))
            if not rows:
                return False
            if rows[0]["type"] == DeviceType.GATEWAY.value:
                raise ValueError("the gateway device cannot be deleted")
            children = await db.execute_fetchall(
                "SELECT slug FROM devices WHERE upstream_id = ? ORDER BY slug", (device_id,)
            )
            if children:
                raise HasChildrenError(", ".join(str(row["slug"]) for row in children))
            await _revoke_certificates(db, device_id, self._clock())
            await db.execute("DELETE FROM devices WHERE id = ?", (device_id,))
        # Its series went with it (cascade); a cached id would make every later batch fail.
        self._series.pop(device_id, None)
        self._raised.pop(device_id, None)
        return True

    async def set_credential(
        self,
        *,
        device_id: str,
        protocol: str,
        username: str,
        secret: str,
        certificate: IssuedCertificateRecord | None = None,
        communication_type: CommunicationType | None = None,
    ) -> DeviceCredential:
        """Store the device's broker credential, replacing any existing one.

        Every certificate issued to the device before is revoked in the same transaction, and
        `certificate`, the one this credential comes with, is recorded; `communication_type`, if
        given, becomes the device's (plain or TLS MQTT follows the credential). Raises LookupError for an
        unknown device, UsernameTakenError when another device's credential has this username.
        """
        credential = DeviceCredential(
            device_id=device_id,
            protocol=protocol,
            username=username,
            secret=secret,
            created_at=self._clock(),
        )
        async with self._transaction(durable=True) as db:
            if not await db.execute_fetchall("SELECT 1 FROM devices WHERE id = ?", (device_id,)):
                raise LookupError(f"no device {device_id!r}")
            taken = await db.execute_fetchall(
                "SELECT 1 FROM device_credentials WHERE username = ? AND device_id != ?",
                (username, device_id),
            )
            if taken:
                raise UsernameTakenError(username)
            replaced = await db.execute_fetchall(
                "SELECT protocol FROM device_credentials WHERE device_id = ?", (device_id,)
            )
            await db.execute(
                f"INSERT INTO device_credentials ({_CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET protocol = excluded.protocol,"
                " username = excluded.username, secret = excluded.secret,"
                " created_at = excluded.created_at",
                (device_id, protocol, username, secret, credential.created_at),
            )
            await _revoke_certificates(db, device_id, credential.created_at)
            if communication_type is not None:
                await db.execute(
                    "UPDATE devices SET communication_type = ?, updated_at = ? WHERE id = ?",
                    (communication_type.value, credential.created_at, device_id),
                )
            if certificate is not None:
                await db.execute(
                    "INSERT INTO device_certificates"
                    " (serial, device_id, hardware_id, issued_at, not_after) VALUES (?, ?, ?, ?, ?)",
                    (
                        _serial_text(certificate.serial),
                        device_id,
                        certificate.hardware_id,
                        credential.created_at,
                        certificate.not_after,
                    ),
                )
            at = credential.created_at
            new_events = [
                NewEvent(
                    device_id,
                    EventType.CONFIG_REVOKED,
                    at,
                    {"protocol": row["protocol"], "reason": "replaced"},
                )
                for row in replaced
            ]
            new_events.append(NewEvent(device_id, EventType.CONFIG_GENERATED, at, {"protocol": protocol}))
            events = await _insert_events(db, new_events)
        self._announce(events)
        return credential

    async def delete_credential(self, device_id: str) -> None:
        """Forget the device's broker credential (nothing happens if it has none)."""
        async with self._transaction(durable=True) as db:
            removed = await db.execute_fetchall(
                "DELETE FROM device_credentials WHERE device_id = ? RETURNING protocol", (device_id,)
            )
            events = await _insert_events(
                db,
                [
                    NewEvent(
                        device_id,
                        EventType.CONFIG_REVOKED,
                        self._clock(),
                        {"protocol": row["protocol"], "reason": "removed"},
                    )
                    for row in removed
                ],
            )
        self._announce(events)

    async def update_site(
        self, site_id: str, *, name: str | None, timezone: str | None, location: Location | None
    ) -> Site:
        """Change the given fields (None = unchanged); LookupError for an unknown site."""
        async with self._transaction(durable=True) as db:
            cursor = await db.execute(
                "UPDATE site SET name = coalesce(:name, name), timezone = coalesce(:timezone, timezone),"
                " location_name = CASE WHEN :relocate THEN :location_name ELSE location_name END,"
                " latitude = CASE WHEN :relocate THEN :latitude ELSE latitude END,"
                " longitude = CASE WHEN :relocate THEN :longitude ELSE longitude END,"
                " updated_at = :now WHERE id = :id",
                {
                    "name": name,
                    "timezone": timezone,
                    "relocate": location is not None,
                    "location_name": None if location is None else location.name,
                    "latitude": None if location is None else location.latitude,
                    "longitude": None if location is None else location.longitude,
                    "now": self._clock(),
                    "id": site_id,
                },
            )
            if cursor.rowcount == 0:
                raise LookupError(f"no site {site_id!r}")
            rows = list(
                await db.execute_fetchall(f"SELECT {_SITE_COLUMNS} FROM site WHERE id = ?", (site_id,))
            )
        return _site(rows[0])

    async def update_device(self, device_id: str, *, name: str | None, slug: str | None) -> Device:
        """Rename the device and/or change its slug (None = unchanged).

        Raises SlugTakenError when another device has the slug, LookupError for an unknown device.
        """
        async with self._transaction(durable=True) as db:
            if slug is not None:
                taken = await db.execute_fetchall(
                    "SELECT 1 FROM devices WHERE slug = ? AND id != ?", (slug, device_id)
                )
                if taken:
                    raise SlugTakenError(slug)
            old = list(await db.execute_fetchall("SELECT name, slug FROM devices WHERE id = ?", (device_id,)))
            device = await self._update_device(
                db, device_id, "name = coalesce(?, name), slug = coalesce(?, slug)", (name, slug)
            )
            event = renamed(
                device_id, (old[0]["name"], old[0]["slug"]), (device.name, device.slug), device.updated_at
            )
            events = await _insert_events(db, [] if event is None else [event])
        self._announce(events)
        return device

    async def assign_blueprint(self, device_id: str, blueprint_id: str) -> Device:
        """Give the device this blueprint; LookupError for an unknown device or blueprint."""
        async with self._transaction(durable=True) as db:
            found = list(
                await db.execute_fetchall("SELECT name FROM blueprints WHERE id = ?", (blueprint_id,))
            )
            if not found:
                raise LookupError(f"no blueprint {blueprint_id!r}")
            # What was flagged against the old manifest says nothing about the new one.
            await db.execute("DELETE FROM manifest_mismatches WHERE device_id = ?", (device_id,))
            device = await self._update_device(db, device_id, "blueprint_id = ?", (blueprint_id,))
            details: JsonObject = {"blueprint_id": blueprint_id, "blueprint_name": found[0]["name"]}
            events = await _insert_events(
                db, [NewEvent(device_id, EventType.BLUEPRINT_ASSIGNED, device.updated_at, details)]
            )
        self._announce(events)
        return device

    async def _update_device(
        self, db: aiosqlite.Connection, device_id: str, assignments: str, values: tuple[Any, ...]
    ) -> Device:
        rows = list(
            await db.execute_fetchall(
                f"UPDATE devices SET {assignments}, updated_at = ? WHERE id = ? RETURNING {_DEVICE_COLUMNS}",
                (*values, self._clock(), device_id),
            )
        )
        if not rows:
            raise LookupError(f"no device {device_id!r}")
        return _device(rows[0])

    async def create_blueprint(
        self, *, digest: str, name: str, archive: bytes, manifest: JsonObject
    ) -> Blueprint:
        """Store a blueprint, or return the one already stored with this content digest."""
        async with self._transaction(durable=True) as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_BLUEPRINT_COLUMNS} FROM blueprints WHERE digest = ?", (digest,)
                )
            )
            if rows:
                return _blueprint(rows[0])
            blueprint = Blueprint(
                id=str(uuid.uuid4()), digest=digest, name=name, manifest=manifest, created_at=self._clock()
            )
            await db.execute(
                f"INSERT INTO blueprints ({_BLUEPRINT_COLUMNS}, archive) VALUES (?, ?, ?, ?, ?, ?)",
                (blueprint.id, digest, name, _dump(manifest), blueprint.created_at, archive),
            )
        return blueprint

    async def set_device_profiles(self, archive: bytes) -> None:
        """Replace the device profiles archive (`/v3/blueprints/upload_device_profiles`)."""
        async with self._transaction(durable=True) as db:
            await db.execute(
                "INSERT INTO device_profiles (id, archive, uploaded_at) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET archive = excluded.archive,"
                " uploaded_at = excluded.uploaded_at",
                (archive, self._clock()),
            )

    # --- reads (reader connection) -------------------------------------------------------------

    async def _fetch(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._reader.execute_fetchall(sql, parameters))

    # The third connection, for `_fetch_inline`: opened on first use, closed by `open` on exit.
    _inline: sqlite3.Connection | None = None

    async def _fetch_inline(self, sql: str, parameters: Sequence[Any]) -> list[sqlite3.Row]:
        """`_fetch` on the calling thread (the event loop's), for the API's point reads only:
        statements that find a few rows by index in small tables read on every request.

        A round trip to the reader's thread costs 0.1-0.4 ms of CPU on a small machine (a thread
        wake-up each way, perf-baselines §4), several times what these statements take, and
        every request paid it two to four times. The loop is blocked while the statement runs,
        hence only such statements. The connection does not wait for locks (busy_timeout 0): a
        busy or locked database (WAL recovery) sends the read to the reader's thread, which does.
        """
        if self._path is None:
            return await self._fetch(sql, parameters)
        if self._inline is None:
            connection = sqlite3.connect(self._path, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA query_only = ON")  # it never writes; a mistake fails loudly
            connection.execute("PRAGMA busy_timeout = 0")
            self._inline = connection
        try:
            cursor = self._inline.execute(sql, parameters)
            try:
                # Read to the end: the statement, and with it the read transaction, is over.
                return cursor.fetchall()
            finally:
                cursor.close()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            return await self._fetch(sql, parameters)

    def _close_inline(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    async def get_site(self) -> Site | None:
        """The site, or None before `ensure_site`."""
        rows = await self._fetch(f"SELECT {_SITE_COLUMNS} FROM site ORDER BY created_at LIMIT 1")
        return _site(rows[0]) if rows else None

    async def gateway_device(self) -> Device:
        """The gateway's own device (LookupError before `ensure_site`)."""
        rows = await self._fetch(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE type = ? ORDER BY created_at LIMIT 1",
            (DeviceType.GATEWAY.value,),
        )
        if not rows:
            raise LookupError("no gateway device; ensure_site has not run")
        return _device(rows[0])

    async def token_by_hash(self, token_hash: str) -> ApiToken | None:
        """The unrevoked token with this hash, if any."""
        rows = await self._fetch(
            f"SELECT {_TOKEN_COLUMNS}, token_hash FROM api_tokens"
            " WHERE token_hash = ? AND revoked_at IS NULL",
            (token_hash,),
        )
        # The index found the row; the comparison that decides is still made in constant time.
        if not rows or not hmac.compare_digest(rows[0]["token_hash"], token_hash):
            return None
        return _token(rows[0])

    async def token_and_site(self, token_hash: str) -> tuple[ApiToken | None, Site | None]:
        """`token_by_hash` and `get_site` in one statement: what every authenticated request
        needs first, for one round trip to the reader thread instead of two."""
        rows = await self._fetch_inline(
            "SELECT s.*, t.id AS token_id, t.name AS token_name, t.role AS token_role,"
            " t.created_at AS token_created_at, t.revoked_at AS token_revoked_at,"
            " t.token_hash AS token_hash"
            f" FROM (SELECT 1) LEFT JOIN (SELECT {_SITE_COLUMNS} FROM site ORDER BY created_at LIMIT 1)"
            " AS s ON true LEFT JOIN api_tokens AS t ON t.token_hash = ? AND t.revoked_at IS NULL",
            (token_hash,),
        )
        (row,) = rows
        site = None if row["id"] is None else _site(row)
        # The index found the row; the comparison that decides is still made in constant time.
        stored = row["token_hash"]
        if stored is None or not hmac.compare_digest(stored, token_hash):
            return None, site
        token = ApiToken(
            id=row["token_id"],
            name=row["token_name"],
            role=Role(row["token_role"]),
            created_at=row["token_created_at"],
            revoked_at=row["token_revoked_at"],
        )
        return token, site

    async def tokens(self) -> list[ApiToken]:
        """Every API token, revoked ones included, oldest first."""
        rows = await self._fetch(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id")
        return [_token(row) for row in rows]

    async def revoked_certificates(self, now: float) -> list[RevokedCertificate]:
        """The CRL's entries: revoked certificates that have not expired yet."""
        rows = await self._fetch(
            "SELECT serial, revoked_at FROM device_certificates"
            " WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY revoked_at, serial",
            (now,),
        )
        return [
            RevokedCertificate(serial=int(row["serial"], 16), revoked_at=row["revoked_at"]) for row in rows
        ]

    async def list_devices(
        self,
        *,
        offset: int,
        limit: int,
        site_id: str | None = None,
        types: Collection[DeviceType] | None = None,
    ) -> tuple[list[Device], int]:
        """One page of devices ordered by id, and the total count under the same filters.

        `site_id`/`types` None means no filter; an empty `types` matches nothing.
        """
        # One statement, so page and total come from the same snapshot: the one-row `total`
        # side keeps the count even when the page is empty.
        rows = await self._fetch(
            "WITH matching AS ("
            f"  SELECT {_DEVICE_COLUMNS} FROM devices"
            "   WHERE (:site_id IS NULL OR site_id = :site_id)"
            "   AND (:types IS NULL OR type IN (SELECT value FROM json_each(:types)))"
            "), page AS ("
            "  SELECT * FROM matching ORDER BY id LIMIT :limit OFFSET :offset"
            ") SELECT total.n AS total, page.* FROM (SELECT count(*) AS n FROM matching) AS total"
            " LEFT JOIN page ON 1 ORDER BY page.id",
            {
                "site_id": site_id,
                "types": None if types is None else _id_list([t.value for t in types]),
                "limit": limit,
                "offset": offset,
            },
        )
        total = int(rows[0]["total"])
        return [_device(row) for row in rows if row["id"] is not None], total

    async def get_device(self, id_or_slug: str) -> Device | None:
        """The device with this id or, failing that, this slug."""
        return (await self.devices_by_keys([id_or_slug])).get(id_or_slug)

    async def devices_by_keys(self, keys: Collection[str]) -> dict[str, Device]:
        """`get_device` for many keys in one query: key -> device, for the keys that name one."""
        rows = await self._fetch(
            f"SELECT wanted, {_DEVICE_COLUMNS} FROM (SELECT value AS wanted FROM json_each(?))"
            " JOIN devices ON id = wanted OR slug = wanted"
            " ORDER BY id = wanted",  # an id match comes last and wins
            (_id_list(keys),),
        )
        return {row["wanted"]: _device(row) for row in rows}

    async def device_seen(self, id_or_slug: str) -> tuple[Device, float | None] | None:
        """`get_device` and the device's `last_seen` (None if never) in one query."""
        rows = await self._fetch_inline(
            f"SELECT wanted, {_QUALIFIED_DEVICE_COLUMNS}, ds.last_seen_at AS last_seen_at"
            " FROM (SELECT ? AS wanted) JOIN devices AS d ON d.id = wanted OR d.slug = wanted"
            " LEFT JOIN device_state AS ds ON ds.device_id = d.id"
            " ORDER BY d.id = wanted",  # an id match comes last and wins
            (id_or_slug,),
        )
        return (_device(rows[-1]), rows[-1]["last_seen_at"]) if rows else None

    async def latest_by_keys(self, keys: Collection[str]) -> dict[str, tuple[Device, dict[str, LatestValue]]]:
        """`devices_by_keys` and each device's `latest_telemetry`, in one query."""
        fetch = self._fetch_inline if len(keys) <= _INLINE_KEYS else self._fetch
        rows = await fetch(
            f"WITH found AS (SELECT wanted, {_QUALIFIED_DEVICE_COLUMNS}"
            " FROM (SELECT value AS wanted FROM json_each(?)) JOIN devices AS d"
            " ON d.id = wanted OR d.slug = wanted)"
            " SELECT found.*, l.attribute AS latest_attribute, l.value_json AS latest_value_json,"
            " l.timestamp AS latest_timestamp"
            " FROM found LEFT JOIN telemetry_latest AS l ON l.device_id = found.id"
            " ORDER BY found.id = found.wanted, found.id",  # an id match comes last and wins
            (_id_list(keys),),
        )
        found: dict[str, tuple[Device, dict[str, LatestValue]]] = {}
        for row in rows:
            key = row["wanted"]
            current = found.get(key)
            if current is None or current[0].id != row["id"]:
                current = found[key] = (_device(row), {})
            attribute = row["latest_attribute"]
            if attribute is not None:
                current[1][attribute] = LatestValue(_load(row["latest_value_json"]), row["latest_timestamp"])
        return found

    async def series_by_keys(
        self, wanted: Mapping[str, Collection[str]]
    ) -> dict[str, tuple[Device, dict[str, tuple[int, SeriesKind]]]]:
        """`devices_by_keys` of `wanted`'s keys and each device's `series` among the attributes
        `wanted` lists for its key, in one query."""
        fetch = self._fetch_inline if len(wanted) <= _INLINE_KEYS else self._fetch
        rows = await fetch(
            "WITH found AS (SELECT wanted.key AS wanted, wanted.value AS attributes,"
            f" {_QUALIFIED_DEVICE_COLUMNS} FROM json_each(?) AS wanted JOIN devices AS d"
            " ON d.id = wanted.key OR d.slug = wanted.key)"
            " SELECT found.*, s.attribute AS series_attribute, s.id AS series_id, s.kind AS series_kind"
            " FROM found LEFT JOIN telemetry_series AS s ON s.device_id = found.id"
            " AND s.attribute IN (SELECT value FROM json_each(found.attributes))"
            " ORDER BY found.id = found.wanted, found.id",  # an id match comes last and wins
            (_dump({key: list(attributes) for key, attributes in wanted.items()}),),
        )
        found: dict[str, tuple[Device, dict[str, tuple[int, SeriesKind]]]] = {}
        for row in rows:
            key = row["wanted"]
            current = found.get(key)
            if current is None or current[0].id != row["id"]:
                current = found[key] = (_device(row), {})
            if row["series_id"] is not None:
                current[1][row["series_attribute"]] = (row["series_id"], SeriesKind(row["series_kind"]))
        return found

    async def device_by_hardware_id(self, hardware_id: str) -> Device | None:
        """The first device created with this hardware id (a UCM before the Lua devices on it)."""
        rows = await self._fetch(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE hardware_id = ? ORDER BY created_at LIMIT 1",
            (hardware_id,),
        )
        return _device(rows[0]) if rows else None

    async def device_by_channel(self, channel: ChannelRef) -> Device | None:
        """The device behind an MQTT hardware id and channel id."""
        rows = await self._fetch(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE hardware_id = ? AND channel_id = ?",
            (channel.hardware_id, channel.channel_id),
        )
        return _device(rows[0]) if rows else None

    async def children(self, device_id: str) -> list[Device]:
        """The devices whose upstream (runtime) is this device, oldest first."""
        rows = await self._fetch(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE upstream_id = ? ORDER BY created_at, id",
            (device_id,),
        )
        return [_device(row) for row in rows]

    async def blueprints(self, blueprint_ids: Collection[str]) -> dict[str, Blueprint]:
        """The stored blueprints among these ids."""
        rows = await self._fetch(
            f"SELECT {_BLUEPRINT_COLUMNS} FROM blueprints WHERE id IN (SELECT value FROM json_each(?))",
            (_id_list(blueprint_ids),),
        )
        return {row["id"]: _blueprint(row) for row in rows}

    async def blueprint(self, blueprint_id: str) -> Blueprint | None:
        """The stored blueprint with this id."""
        return (await self.blueprints([blueprint_id])).get(blueprint_id)

    async def blueprints_in_use(self) -> dict[str, str]:
        """device id -> blueprint id, for every device with a stored blueprint."""
        rows = await self._fetch(
            "SELECT devices.id AS device_id, blueprint_id FROM devices JOIN blueprints"
            " ON blueprints.id = devices.blueprint_id"
        )
        return {row["device_id"]: row["blueprint_id"] for row in rows}

    async def newest_blueprint(self, name: str) -> Blueprint | None:
        """The newest blueprint uploaded under this name."""
        rows = await self._fetch(
            f"SELECT {_BLUEPRINT_COLUMNS} FROM blueprints WHERE name = ?"
            " ORDER BY created_at DESC, id LIMIT 1",
            (name,),
        )
        return _blueprint(rows[0]) if rows else None

    async def blueprint_archive(self, blueprint_id: str) -> bytes | None:
        """The archive as uploaded."""
        rows = await self._fetch("SELECT archive FROM blueprints WHERE id = ?", (blueprint_id,))
        return bytes(rows[0]["archive"]) if rows else None

    async def device_profiles(self) -> bytes | None:
        """The device profiles archive last uploaded, if any."""
        rows = await self._fetch("SELECT archive FROM device_profiles WHERE id = 1")
        return bytes(rows[0]["archive"]) if rows else None

    async def mismatches(self, device_ids: Collection[str]) -> dict[str, list[tuple[Mismatch, int, float]]]:
        """What each device sent against its manifest: each flagged attribute, how often, last when
        (device id -> list, for the devices with any)."""
        rows = await self._fetch(
            "SELECT device_id, section, attribute, reason, count, last_seen FROM manifest_mismatches"
            " WHERE device_id IN (SELECT value FROM json_each(?)) ORDER BY device_id, section, attribute",
            (_id_list(device_ids),),
        )
        found: dict[str, list[tuple[Mismatch, int, float]]] = {}
        for row in rows:
            mismatch = Mismatch(row["section"], row["attribute"], row["reason"])
            found.setdefault(row["device_id"], []).append((mismatch, row["count"], row["last_seen"]))
        return found

    async def credentials(self) -> list[DeviceCredential]:
        """Every device credential, ordered by device id (to reconcile the broker at start-up)."""
        rows = await self._fetch(f"SELECT {_CREDENTIAL_COLUMNS} FROM device_credentials ORDER BY device_id")
        return [_credential(row) for row in rows]

    async def credential(self, device_id: str) -> DeviceCredential | None:
        """The device's broker credential, if it has one."""
        rows = await self._fetch(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM device_credentials WHERE device_id = ?",
            (device_id,),
        )
        return _credential(rows[0]) if rows else None

    async def properties(self, device_ids: Collection[str]) -> dict[str, dict[str, JsonValue]]:
        """The merged latest properties of each device that has any."""
        rows = await self._fetch(
            "SELECT device_id, values_json FROM device_properties"
            " WHERE device_id IN (SELECT value FROM json_each(?))",
            (_id_list(device_ids),),
        )
        result: dict[str, dict[str, JsonValue]] = {}
        for row in rows:
            values = _load(row["values_json"])
            if isinstance(values, dict):
                result[row["device_id"]] = values
        return result

    async def latest_telemetry_of(self, device_ids: Collection[str]) -> dict[str, dict[str, LatestValue]]:
        """`latest_telemetry` of many devices in one query: device id -> attribute -> value."""
        rows = await self._fetch(
            "SELECT device_id, attribute, value_json, timestamp FROM telemetry_latest"
            " WHERE device_id IN (SELECT value FROM json_each(?))",
            (_id_list(device_ids),),
        )
        found: dict[str, dict[str, LatestValue]] = {device_id: {} for device_id in device_ids}
        for device_id, attribute, value_json, timestamp in rows:
            found[device_id][attribute] = LatestValue(_load(value_json), timestamp)
        return found

    async def latest_telemetry(self, device_id: str) -> dict[str, LatestValue]:
        """The newest value of every telemetry attribute the device has sent (null included)."""
        return (await self.latest_telemetry_of([device_id]))[device_id]

    async def series(self, device_id: str, attributes: Collection[str]) -> dict[str, tuple[int, SeriesKind]]:
        """The id and kind of each of the device's telemetry series among `attributes`."""
        rows = await self._fetch(
            "SELECT attribute, id, kind FROM telemetry_series WHERE device_id = ?"
            " AND attribute IN (SELECT value FROM json_each(?))",
            (device_id, _id_list(attributes)),
        )
        return {row["attribute"]: (row["id"], SeriesKind(row["kind"])) for row in rows}

    async def history(
        self, series: Mapping[int, SeriesKind], *, start: float, end: float, granularity: int
    ) -> dict[int, list[HistoryValue]]:
        """Values of these series in [start, end), oldest first, from the coarsest table whose
        buckets divide `granularity` (raw values when none does): series id -> values.

        A rollup bucket counts as inside when its start is: callers align `start` and `end` to
        the granularity so that raw and rolled-up answers agree.
        """
        table = next((t for t, size in reversed(ROLLUPS) if granularity % size == 0), None)
        found: dict[int, list[HistoryValue]] = {series_id: [] for series_id in series}
        ids = _dump(list(series))
        if table is None:
            rows = await self._fetch(
                "SELECT series_id, timestamp, value FROM telemetry_raw"
                " WHERE series_id IN (SELECT value FROM json_each(?)) AND timestamp >= ? AND timestamp < ?"
                " ORDER BY series_id, timestamp, rowid",
                (ids, start, end),
            )
            for series_id, timestamp, value in rows:
                found[series_id].append(_raw_partial(timestamp, value, series[series_id]))
            return found
        rows = await self._fetch(
            "SELECT series_id, bucket, count, num_count, total, low, high, last, last_ts"
            f" FROM {table} WHERE series_id IN (SELECT value FROM json_each(?))"
            " AND bucket >= ? AND bucket < ? ORDER BY series_id, bucket",
            (ids, start, end),
        )
        # Positional: this runs for every bucket of every column (1,440 a day per minute).
        for series_id, bucket, count, num_count, total, low, high, last, last_ts in rows:
            kind = series[series_id]
            # from_sql changes only JSON text and a boolean series' integers: skip the call otherwise.
            value = from_sql(last, kind) if kind is SeriesKind.BOOLEAN or type(last) is bytes else last
            found[series_id].append(HistoryValue(bucket, count, num_count, total, low, high, value, last_ts))
        return found

    async def last_seen(self, device_ids: Collection[str]) -> dict[str, float]:
        """When each device's last message arrived (gateway clock); absent if never."""
        rows = await self._fetch(
            "SELECT device_id, last_seen_at FROM device_state"
            " WHERE last_seen_at IS NOT NULL AND device_id IN (SELECT value FROM json_each(?))",
            (_id_list(device_ids),),
        )
        return {row["device_id"]: row["last_seen_at"] for row in rows}

    async def raised_alerts(self, device_ids: Collection[str]) -> dict[str, list[str]]:
        """The alerts of each device's newest telemetry; absent if it never sent telemetry."""
        rows = await self._fetch(
            "SELECT device_id, raised_alerts_json FROM device_state"
            " WHERE alerts_timestamp IS NOT NULL"
            " AND device_id IN (SELECT value FROM json_each(?))",
            (_id_list(device_ids),),
        )
        result: dict[str, list[str]] = {}
        for row in rows:
            alerts = _load(row["raised_alerts_json"])
            result[row["device_id"]] = [str(a) for a in alerts] if isinstance(alerts, list) else []
        return result

    async def logs(
        self,
        device_id: str,
        *,
        offset: int,
        limit: int,
        received_from: float | None = None,
        received_to: float | None = None,
        severities: Collection[LogSeverity] | None = None,
        persisted: bool | None = None,
        newest_first: bool = False,
    ) -> tuple[list[tuple[LogEntry, float]], int]:
        """The device's log entries matching the filters, with arrival times, and how many match.

        `received_to` is exclusive. Ordered by arrival, oldest first unless `newest_first`.
        """
        where = ["device_id = ?"]
        parameters: list[Any] = [device_id]
        if received_from is not None:
            where.append("received_at >= ?")
            parameters.append(received_from)
        if received_to is not None:
            where.append("received_at < ?")
            parameters.append(received_to)
        if severities is not None:
            where.append(f"severity IN ({', '.join('?' for _ in severities)})")
            parameters += [severity.value for severity in severities]
        if persisted is not None:
            where.append("persist = ?")
            parameters.append(int(persisted))
        condition = " AND ".join(where)
        direction = "DESC" if newest_first else "ASC"
        (count,) = await self._fetch(f"SELECT count(*) AS n FROM device_logs WHERE {condition}", parameters)
        rows = await self._fetch(
            "SELECT timestamp, received_at, severity, message, persist FROM device_logs"
            f" WHERE {condition} ORDER BY received_at {direction}, id {direction} LIMIT ? OFFSET ?",
            [*parameters, limit, offset],
        )
        entries = [
            (
                LogEntry(
                    timestamp=row["timestamp"],
                    message=row["message"],
                    severity=LogSeverity(row["severity"]),
                    persist=bool(row["persist"]),
                ),
                row["received_at"],
            )
            for row in rows
        ]
        return entries, count["n"]

    async def purge_temporary_logs(self, received_before: float, *, chunk: int = 1000) -> int:
        """Delete logs sent with `persist: false` that arrived before `received_before`; how many.

        In small transactions, so that ingest batches are never held up for long.
        """
        return await self._delete_in_chunks(
            "device_logs", "persist = 0 AND received_at < ?", (received_before,), chunk
        )

    async def _delete_in_chunks(
        self, table: str, condition: str, parameters: tuple[float, ...], chunk: int, order: str = ""
    ) -> int:
        """Delete the rows of `table` (keyed by `id`) that match, `chunk` per transaction; how many."""
        deleted = 0
        while True:
            async with self._transaction(durable=False) as db:
                cursor = await db.execute(
                    f"DELETE FROM {table} WHERE id IN"
                    f" (SELECT id FROM {table} WHERE {condition}{order} LIMIT ?)",
                    (*parameters, chunk),
                )
                count = cursor.rowcount
            deleted += count
            if count < chunk:
                return deleted

    # --- retention -----------------------------------------------------------------------------

    async def purge_telemetry(self, before: Mapping[str, float], *, chunk: int = 5000) -> dict[str, int]:
        """Delete telemetry older than its table's limit; `before` maps a table (`telemetry_raw`,
        `telemetry_1m`, `telemetry_1h`) to the time before which its rows go. Rows deleted per
        table. Small transactions, oldest first, so ingest batches are never held up for long."""
        deleted: dict[str, int] = {}
        for table, cutoff in before.items():
            deleted[table] = 0
            while True:
                count = await self._delete_chunk(table, RETENTION[table].older, (cutoff, chunk))
                deleted[table] += count
                if count < chunk:
                    break
        return deleted

    async def database_size(self) -> int:
        """Bytes the database holds in live pages (free pages are reused, so they do not count)."""
        (row,) = await self._fetch(
            "SELECT (page_count - freelist_count) * page_size AS size"
            " FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
        )
        return int(row["size"])

    async def shrink_to(self, limit: int, *, chunk: int = 5000) -> dict[str, int]:
        """Delete the oldest telemetry (raw values first, the earliest stored first; then 1-minute
        rollups) until the database holds at most `limit` bytes, then hand the freed pages back
        to the file system."""
        deleted = {"telemetry_raw": 0, "telemetry_1m": 0}
        for table in deleted:
            while await self.database_size() > limit:
                count = await self._delete_chunk(table, RETENTION[table].oldest, (chunk,))
                deleted[table] += count
                if count == 0:
                    break
        if any(deleted.values()):
            async with self._transaction(durable=False) as db:
                await db.execute_fetchall("PRAGMA incremental_vacuum")
        return deleted

    async def _delete_chunk(self, table: str, rows: str, parameters: tuple[float, ...]) -> int:
        """Delete the rows `rows` selects (a `Retention` statement) in one transaction."""
        async with self._transaction(durable=False) as db:
            cursor = await db.execute(
                f"DELETE FROM {table} WHERE ({RETENTION[table].key}) IN ({rows})", parameters
            )
            return cursor.rowcount

    # --- command executions --------------------------------------------------------------------

    async def create_execution(
        self,
        *,
        device_id: str,
        name: str,
        manifest_name: str,
        arguments: Mapping[str, JsonValue],
        ephemeral: bool,
    ) -> CommandExecution:
        """Record a new execution (state NEW) before its request is sent."""
        # Whole microseconds, as RFC 3339 shows it: `created_at.gte=<a created_at>` must match it.
        now = round(self._clock(), 6)
        execution = CommandExecution(
            id=str(uuid.uuid4()),
            device_id=device_id,
            name=name,
            manifest_name=manifest_name,
            arguments=dict(arguments),
            ephemeral=ephemeral,
            state=ExecutionState.NEW,
            created_at=now,
        )
        async with self._transaction(durable=True) as db:
            await db.execute(
                "INSERT INTO command_executions (id, device_id, name, manifest_name, arguments_json,"
                " ephemeral, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    execution.id,
                    device_id,
                    name,
                    manifest_name,
                    _dump(execution.arguments),
                    int(ephemeral),
                    execution.state.value,
                    now,
                    now,
                ),
            )
        return execution

    async def advance_execution(
        self, execution: CommandExecution, state: ExecutionState, response: ExecutionResponse | None = None
    ) -> None:
        """Move an execution that has not ended yet to `state`, adding the gateway's own response."""
        events: list[DeviceEvent] = []
        async with self._transaction(durable=False) as db:
            now = self._clock()
            cursor = await db.execute(
                "UPDATE command_executions SET state = ?, updated_at = ?"
                " WHERE id = ? AND state IN ('NEW', 'IN_PROGRESS')",
                (state.value, now, execution.id),
            )
            if state.terminal and cursor.rowcount:
                ended = _command_executed(execution.device_id, execution.id, execution.name, state.value, now)
                events = await _insert_events(db, [ended])
            if response is not None and cursor.rowcount:
                await db.execute(
                    "INSERT INTO command_responses"
                    " (device_id, execution_id, state, payload_json, received_at) VALUES (?, ?, ?, ?, ?)",
                    (
                        execution.device_id,
                        execution.id,
                        response.state.value,
                        _dump(response.payload),
                        response.received_at,
                    ),
                )
        self._announce(events)

    async def time_out_executions(self, execution_ids: Collection[str]) -> int:
        """Executions among these that have not ended become TIMEOUT; how many did."""
        async with self._transaction(durable=False) as db:
            now = self._clock()
            rows = await db.execute_fetchall(
                "UPDATE command_executions SET state = 'TIMEOUT', updated_at = ?"
                " WHERE id IN (SELECT value FROM json_each(?)) AND state IN ('NEW', 'IN_PROGRESS')"
                " RETURNING id, device_id, name",
                (now, _id_list(execution_ids)),
            )
            events = await _insert_events(
                db,
                [
                    _command_executed(
                        row["device_id"], row["id"], row["name"], ExecutionState.TIMEOUT.value, now
                    )
                    for row in rows
                ],
            )
        self._announce(events)
        return len(events)

    async def open_executions(self) -> dict[str, tuple[str, float]]:
        """Executions that have not ended (e.g. left by a stopped daemon): id -> (device, created_at)."""
        rows = await self._fetch(
            "SELECT id, device_id, created_at FROM command_executions WHERE state IN ('NEW', 'IN_PROGRESS')"
        )
        return {row["id"]: (row["device_id"], row["created_at"]) for row in rows}

    async def execution(self, device_id: str, execution_id: str) -> CommandExecution | None:
        """One of the device's executions with all its responses."""
        rows = await self._fetch(
            f"SELECT {_EXECUTION_COLUMNS} FROM command_executions WHERE id = ? AND device_id = ?",
            (execution_id, device_id),
        )
        found = await self._with_responses(rows)
        return found[0] if found else None

    async def executions(
        self,
        *,
        device_ids: Collection[str] | None,
        offset: int,
        limit: int,
        created_from: float | None = None,
        created_before: float | None = None,
        states: Collection[ExecutionState] | None = None,
        names: Collection[str] | None = None,
        include_ephemeral: bool = False,
        newest_first: bool = False,
    ) -> tuple[list[CommandExecution], int]:
        """Executions matching the filters (of these devices, or of all) and how many match."""
        where = ["true"]
        parameters: list[Any] = []
        if device_ids is not None:
            where.append("device_id IN (SELECT value FROM json_each(?))")
            parameters.append(_id_list(device_ids))
        if created_from is not None:
            where.append("created_at >= ?")
            parameters.append(created_from)
        if created_before is not None:
            where.append("created_at < ?")
            parameters.append(created_before)
        if states is not None:
            where.append("state IN (SELECT value FROM json_each(?))")
            parameters.append(_id_list([state.value for state in states]))
        if names is not None:
            where.append("name IN (SELECT value FROM json_each(?))")
            parameters.append(_id_list(names))
        if not include_ephemeral:
            where.append("ephemeral = 0")
        condition = " AND ".join(where)
        direction = "DESC" if newest_first else "ASC"
        (count,) = await self._fetch(
            f"SELECT count(*) AS n FROM command_executions WHERE {condition}", parameters
        )
        rows = await self._fetch(
            f"SELECT {_EXECUTION_COLUMNS} FROM command_executions WHERE {condition}"
            f" ORDER BY created_at {direction}, id {direction} LIMIT ? OFFSET ?",
            [*parameters, limit, offset],
        )
        return await self._with_responses(rows), count["n"]

    async def activity_since(self, since: float) -> SiteActivity:
        """What happened on the site from `since` on, for the statistics (index-served counts)."""
        rows = await self._fetch(
            "SELECT 'provisioned' AS what, NULL AS state, count(*) AS n FROM devices"
            " WHERE created_at >= :since AND type != 'GATEWAY'"
            " UNION ALL SELECT 'data_points', NULL, coalesce(sum(data_points), 0)"
            " FROM telemetry_received WHERE minute >= :minute"
            " UNION ALL SELECT 'executions', state, count(*) FROM command_executions"
            " WHERE created_at >= :since GROUP BY state",
            {"since": since, "minute": math.ceil(since / 60)},
        )
        found = {row["what"]: int(row["n"]) for row in rows if row["what"] != "executions"}
        return SiteActivity(
            provisioned=found["provisioned"],
            data_points=found["data_points"],
            executions_by_state={row["state"]: int(row["n"]) for row in rows if row["what"] == "executions"},
        )

    async def _with_responses(self, rows: list[sqlite3.Row]) -> list[CommandExecution]:
        responses: dict[tuple[str, str], list[ExecutionResponse]] = {}
        if rows:
            found = await self._fetch(
                "SELECT device_id, execution_id, state, payload_json, received_at FROM command_responses"
                " WHERE execution_id IN (SELECT value FROM json_each(?)) ORDER BY received_at, id",
                (_id_list([row["id"] for row in rows]),),
            )
            for response in found:
                responses.setdefault((response["device_id"], response["execution_id"]), []).append(
                    ExecutionResponse(
                        state=CommandResponseState(response["state"]),
                        payload=_load_object(response["payload_json"]),
                        received_at=response["received_at"],
                    )
                )
        return [
            CommandExecution(
                id=row["id"],
                device_id=row["device_id"],
                name=row["name"],
                manifest_name=row["manifest_name"],
                arguments=_load_object(row["arguments_json"]),
                ephemeral=bool(row["ephemeral"]),
                state=ExecutionState(row["state"]),
                created_at=row["created_at"],
                # Only the executing device's responses count: another device may reuse an id.
                responses=tuple(responses.get((row["device_id"], row["id"]), ())),
            )
            for row in rows
        ]

    async def purge_ephemeral_executions(self, created_before: float, *, chunk: int = 500) -> int:
        """Delete ephemeral executions created before `created_before`, with their responses."""
        deleted = 0
        while True:
            async with self._transaction(durable=False) as db:
                ids = [
                    row["id"]
                    for row in await db.execute_fetchall(
                        "SELECT id FROM command_executions WHERE ephemeral = 1 AND created_at < ? LIMIT ?",
                        (created_before, chunk),
                    )
                ]
                await db.execute(
                    "DELETE FROM command_responses WHERE execution_id IN (SELECT value FROM json_each(?))",
                    (_id_list(ids),),
                )
                await db.execute(
                    "DELETE FROM command_executions WHERE id IN (SELECT value FROM json_each(?))",
                    (_id_list(ids),),
                )
            deleted += len(ids)
            if len(ids) < chunk:
                return deleted

    # --- finding devices: search, tags, metadata -----------------------------------------------

    async def find_devices(
        self,
        search: DeviceFilter,
        *,
        offset: int,
        limit: int,
        site_id: str | None = None,
        online: Collection[str] = (),
        seen: Collection[str] = (),
    ) -> tuple[list[Device], int]:
        """One page of the devices `search` selects, in its order, and how many it selects.

        Connectivity is decided in SQL exactly as `Services` decides it for one device: the gateway
        is ONLINE; a device without a hardware id UNKNOWN; ONLINE if its hardware id is in `online`
        (the identities Presence counts as online now); else OFFLINE if the store has a message from
        it or its hardware id is in `seen` (Presence saw it); else UNKNOWN. The filters are lookups
        in indexes (FTS5 for terms, device_tags, device_alerts, hardware id and type for ONLINE, the
        devices indexes for times and orders); OFFLINE and UNKNOWN ("not among the online") and a
        type filter the planner finds unselective read every device row, in SQL.
        """
        sql, values = _find_devices_sql(
            search, offset=offset, limit=limit, site_id=site_id, online=online, seen=seen
        )
        rows = await self._fetch(sql, values)
        total = int(rows[0]["total"])
        # `total`, then the device columns (`_find_devices_sql`).
        return [_device_at(row, 1) for row in rows if row["id"] is not None], total

    async def explain_find_devices(
        self, search: DeviceFilter, *, online: Collection[str] = (), seen: Collection[str] = ()
    ) -> list[str]:
        """The query plan (EXPLAIN QUERY PLAN details) of `find_devices` for `search`: which indexes
        serve it (for tests and diagnosis)."""
        sql, values = _find_devices_sql(search, offset=0, limit=50, site_id=None, online=online, seen=seen)
        rows = await self._fetch("EXPLAIN QUERY PLAN " + sql, values)
        return [str(row["detail"]) for row in rows]

    async def create_tag(self, name: str) -> Tag:
        """A new tag; TagTakenError if a tag has this name in any letter case."""
        now = self._clock()
        tag = Tag(id=str(uuid.uuid4()), name=name, created_at=now, updated_at=now)
        async with self._transaction(durable=True) as db:
            if await db.execute_fetchall("SELECT 1 FROM tags WHERE name = ?", (name,)):
                raise TagTakenError(name)
            await db.execute(
                "INSERT INTO tags (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (tag.id, name, now, now),
            )
        return tag

    async def tags(self, *, offset: int = 0, limit: int = 1000) -> tuple[list[Tag], int]:
        """One page of tags by name (case-insensitively), with their device counts, and the total."""
        rows = await self._fetch(
            "SELECT t.id, t.name, t.created_at, t.updated_at,"
            " (SELECT count(*) FROM device_tags AS dt WHERE dt.tag_id = t.id) AS device_count,"
            " (SELECT count(*) FROM tags) AS total"
            " FROM tags AS t ORDER BY t.name, t.id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        if rows:
            return [_tag(row) for row in rows], int(rows[0]["total"])
        total = await self._fetch("SELECT count(*) AS n FROM tags")
        return [], int(total[0]["n"])

    async def tag(self, id_or_name: str) -> Tag | None:
        """The tag with this id or, failing that, this name (in any letter case)."""
        rows = await self._fetch(
            "SELECT t.id, t.name, t.created_at, t.updated_at,"
            " (SELECT count(*) FROM device_tags AS dt WHERE dt.tag_id = t.id) AS device_count"
            " FROM tags AS t WHERE t.id = ?1 OR t.name = ?1 ORDER BY t.id = ?1 DESC LIMIT 1",
            (id_or_name,),
        )
        return _tag(rows[0]) if rows else None

    async def rename_tag(self, tag_id: str, name: str) -> Tag:
        """Give the tag a new name; TagTakenError if another tag has it, LookupError if no tag."""
        async with self._transaction(durable=True) as db:
            if await db.execute_fetchall("SELECT 1 FROM tags WHERE name = ? AND id != ?", (name, tag_id)):
                raise TagTakenError(name)
            cursor = await db.execute(
                "UPDATE tags SET name = ?, updated_at = ? WHERE id = ?", (name, self._clock(), tag_id)
            )
            if cursor.rowcount == 0:
                raise LookupError(f"no tag {tag_id!r}")
        tag = await self.tag(tag_id)
        if tag is None:
            raise LookupError(f"no tag {tag_id!r}")
        return tag

    async def delete_tag(self, tag_id: str) -> bool:
        """Delete the tag, detaching it from every device; False if there was no such tag."""
        async with self._transaction(durable=True) as db:
            cursor = await db.execute("DELETE FROM tags WHERE id = ?", (tag_id,))
            return cursor.rowcount > 0

    async def attach_tag(self, device_id: str, tag_id: str) -> None:
        """Put the tag on the device (again is fine); LookupError if either does not exist."""
        async with self._transaction(durable=True) as db:
            if not await db.execute_fetchall("SELECT 1 FROM devices WHERE id = ?", (device_id,)):
                raise LookupError(f"no device {device_id!r}")
            if not await db.execute_fetchall("SELECT 1 FROM tags WHERE id = ?", (tag_id,)):
                raise LookupError(f"no tag {tag_id!r}")
            await db.execute(
                "INSERT OR IGNORE INTO device_tags (tag_id, device_id) VALUES (?, ?)", (tag_id, device_id)
            )

    async def detach_tag(self, device_id: str, tag_id: str) -> bool:
        """Take the tag off the device; False if the device did not carry it."""
        async with self._transaction(durable=True) as db:
            cursor = await db.execute(
                "DELETE FROM device_tags WHERE tag_id = ? AND device_id = ?", (tag_id, device_id)
            )
            return cursor.rowcount > 0

    async def device_tags(self, device_ids: Collection[str]) -> dict[str, list[Tag]]:
        """Each device's tags by name (device id -> tags, for the devices with any)."""
        rows = await self._fetch(
            "SELECT dt.device_id, t.id, t.name, t.created_at, t.updated_at, 0 AS device_count"
            " FROM device_tags AS dt JOIN tags AS t ON t.id = dt.tag_id"
            " WHERE dt.device_id IN (SELECT value FROM json_each(?)) ORDER BY t.name, t.id",
            (_id_list(device_ids),),
        )
        found: dict[str, list[Tag]] = {}
        for row in rows:
            found.setdefault(row["device_id"], []).append(_tag(row))
        return found

    async def device_count_by_tag(self) -> dict[str, int]:
        """tag name -> how many devices carry it, for every tag (0 for unused ones); for statistics."""
        rows = await self._fetch(
            "SELECT t.name, (SELECT count(*) FROM device_tags AS dt WHERE dt.tag_id = t.id) AS n"
            " FROM tags AS t ORDER BY t.name"
        )
        return {row["name"]: int(row["n"]) for row in rows}

    async def metadata_fields(self) -> dict[str, MetadataField]:
        """Every metadata field definition, by name."""
        rows = await self._fetch(f"SELECT {_FIELD_COLUMNS} FROM metadata_fields ORDER BY name")
        return {row["name"]: _field(row) for row in rows}

    async def create_metadata_field(self, field: MetadataField, *, max_fields: int) -> MetadataField:
        """Store a new definition; FieldTakenError if the name is used, ValueError past `max_fields`."""
        async with self._transaction(durable=True) as db:
            if await db.execute_fetchall("SELECT 1 FROM metadata_fields WHERE name = ?", (field.name,)):
                raise FieldTakenError(field.name)
            (count,) = await db.execute_fetchall("SELECT count(*) FROM metadata_fields")
            if count[0] >= max_fields:
                raise ValueError(f"at most {max_fields} metadata fields")
            await db.execute(
                f"INSERT INTO metadata_fields ({_FIELD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _field_row(field),
            )
        return field

    async def update_metadata_field(self, field: MetadataField) -> MetadataField:
        """Replace a definition (same name and type). OptionInUseError when devices hold enum
        values the new options leave out; LookupError for an unknown field."""
        async with self._transaction(durable=True) as db:
            if field.type is FieldType.ENUM:
                rows = await db.execute_fetchall(
                    "SELECT DISTINCT value_json ->> '$' AS value FROM device_metadata WHERE field = ?"
                    " AND value_json ->> '$' NOT IN (SELECT value FROM json_each(?)) ORDER BY 1",
                    (field.name, _dump(list(field.options))),
                )
                if rows:
                    raise OptionInUseError(", ".join(str(row["value"]) for row in rows))
            cursor = await db.execute(
                "UPDATE metadata_fields SET required = ?, options_json = ?, default_json = ?,"
                " description = ?, updated_at = ? WHERE name = ? AND type = ?",
                (
                    int(field.required),
                    _dump(list(field.options)),
                    None if field.default is None else _dump(field.default),
                    field.description,
                    field.updated_at,
                    field.name,
                    field.type.value,
                ),
            )
            if cursor.rowcount == 0:
                raise LookupError(f"no metadata field {field.name!r}")
        return field

    async def delete_metadata_field(self, name: str) -> bool:
        """Delete a definition and every device's value for it; False if there was none."""
        async with self._transaction(durable=True) as db:
            cursor = await db.execute("DELETE FROM metadata_fields WHERE name = ?", (name,))
            return cursor.rowcount > 0

    async def set_device_metadata(self, device_id: str, changes: Collection[ValueChange]) -> Device:
        """Apply checked value changes (value None removes the device's own value) in one
        transaction; the device's `updated_at` moves. LookupError for an unknown device or field."""
        async with self._transaction(durable=True) as db:
            if not await db.execute_fetchall("SELECT 1 FROM devices WHERE id = ?", (device_id,)):
                raise LookupError(f"no device {device_id!r}")
            names = [change.field for change in changes]
            known = await db.execute_fetchall(
                "SELECT name FROM metadata_fields WHERE name IN (SELECT value FROM json_each(?))",
                (_id_list(names),),
            )
            missing = set(names) - {str(row["name"]) for row in known}
            if missing:
                raise LookupError(f"no metadata field {sorted(missing)[0]!r}")
            await db.executemany(
                "DELETE FROM device_metadata WHERE device_id = ? AND field = ?",
                [(device_id, c.field) for c in changes if c.value is None],
            )
            await db.executemany(
                "INSERT INTO device_metadata (device_id, field, value_json, search_text)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (device_id, field) DO UPDATE"
                " SET value_json = excluded.value_json, search_text = excluded.search_text",
                [(device_id, c.field, _dump(c.value), c.search_text) for c in changes if c.value is not None],
            )
            # Only updated_at changes (`_update_device` sets it).
            return await self._update_device(db, device_id, "id = id", ())

    async def device_metadata(self, device_ids: Collection[str]) -> dict[str, dict[str, JsonValue]]:
        """Each device's own metadata values (no defaults), device id -> field -> value."""
        rows = await self._fetch(
            "SELECT device_id, field, value_json FROM device_metadata"
            " WHERE device_id IN (SELECT value FROM json_each(?)) ORDER BY device_id, field",
            (_id_list(device_ids),),
        )
        found: dict[str, dict[str, JsonValue]] = {}
        for row in rows:
            found.setdefault(row["device_id"], {})[row["field"]] = _load(row["value_json"])
        return found

    # --- timeline ------------------------------------------------------------------------------

    def _announce(self, events: Sequence[DeviceEvent]) -> None:
        """Tell the event listeners about events that were just committed."""
        if events:
            for listener in self.event_listeners:
                listener(events)

    async def add_event(self, event: NewEvent) -> DeviceEvent:
        """Record one event (durably); LookupError for an unknown device."""
        async with self._transaction(durable=True) as db:
            if not await db.execute_fetchall("SELECT 1 FROM devices WHERE id = ?", (event.device_id,)):
                raise LookupError(f"no device {event.device_id!r}")
            (written,) = await _insert_events(db, [event])
        self._announce([written])
        return written

    async def record_connectivity(self, changes: Sequence[ConnectivityChange]) -> list[DeviceEvent]:
        """Record connectivity changes as `connected`/`disconnected` events of the device holding
        each identity's credential (in one transaction); changes of unknown identities are skipped."""
        if not changes:
            return []
        async with self._transaction(durable=False) as db:
            rows = await db.execute_fetchall(
                "SELECT username, device_id FROM device_credentials"
                " WHERE username IN (SELECT value FROM json_each(?))",
                (_id_list({change.identity for change in changes}),),
            )
            holders = {str(row["username"]): str(row["device_id"]) for row in rows}
            events = await _insert_events(
                db,
                [
                    change.event_for(holders[change.identity])
                    for change in changes
                    if change.identity in holders
                ],
            )
        self._announce(events)
        return events

    async def end_open_connections(self, reason: str) -> list[DeviceEvent]:
        """Record `disconnected` (with `reason`) for every device whose newest connectivity event
        is `connected`: at start, for the connections the previous run's broker took along when it
        stopped. Stamped with the device's last message, or its connection time if later."""
        async with self._transaction(durable=False) as db:
            rows = await db.execute_fetchall(
                "SELECT e.device_id, max(e.timestamp, coalesce(s.last_seen_at, 0)) AS ended"
                " FROM devices AS d"
                " JOIN device_events AS e ON e.id = (SELECT id FROM device_events"
                " WHERE device_id = d.id AND type IN ('connected', 'disconnected')"
                " ORDER BY timestamp DESC, id DESC LIMIT 1)"
                " LEFT JOIN device_state AS s ON s.device_id = d.id"
                " WHERE e.type = 'connected'"
            )
            events = await _insert_events(
                db,
                [
                    NewEvent(row["device_id"], EventType.DISCONNECTED, row["ended"], {"reason": reason})
                    for row in rows
                ],
            )
        self._announce(events)
        return events

    async def clear_device_data(self, device_id: str) -> DeviceEvent:
        """Delete the device's data history and record `data_cleared`; LookupError for an unknown
        device.

        Gone: telemetry (latest values, series with their raw values and rollups), raised alerts,
        manifest mismatches, logs, and finished command executions with their responses. Kept: the
        device, its credentials, blueprint, properties, last-seen time and timeline, and
        executions still open (NEW or IN_PROGRESS) with their responses, so that a command in
        flight ends normally.
        """
        async with self._transaction(durable=True) as db:
            if not await db.execute_fetchall("SELECT 1 FROM devices WHERE id = ?", (device_id,)):
                raise LookupError(f"no device {device_id!r}")
            # Raw values and rollups go with their series (ON DELETE CASCADE).
            for statement in (
                "DELETE FROM telemetry_series WHERE device_id = ?",
                "DELETE FROM telemetry_latest WHERE device_id = ?",
                "DELETE FROM device_logs WHERE device_id = ?",
                "DELETE FROM manifest_mismatches WHERE device_id = ?",
                "DELETE FROM command_responses WHERE device_id = ?1 AND execution_id NOT IN"
                " (SELECT id FROM command_executions WHERE device_id = ?1"
                " AND state IN ('NEW', 'IN_PROGRESS'))",
                "DELETE FROM command_executions WHERE device_id = ? AND state NOT IN ('NEW', 'IN_PROGRESS')",
                "UPDATE device_state SET raised_alerts_json = '[]', alerts_timestamp = NULL"
                " WHERE device_id = ?",
            ):
                await db.execute(statement, (device_id,))
            (event,) = await _insert_events(db, [NewEvent(device_id, EventType.DATA_CLEARED, self._clock())])
        # As after a deletion: cached series ids are gone, and the alerts are none now.
        self._series.pop(device_id, None)
        self._raised.pop(device_id, None)
        self._announce([event])
        return event

    async def timeline(
        self,
        device_id: str,
        *,
        offset: int,
        limit: int,
        types: Collection[EventType] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[list[DeviceEvent], int]:
        """The device's events (of `types`, at `since` <= timestamp < `until`), newest first, paged;
        and how many match."""
        condition, parameters = _event_filter([device_id], types, since, until)
        (count,) = await self._fetch(f"SELECT count(*) AS n FROM device_events WHERE {condition}", parameters)
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM device_events WHERE {condition}"
            " ORDER BY timestamp DESC, id DESC LIMIT ? OFFSET ?",
            [*parameters, limit, offset],
        )
        return [_event(row) for row in rows], count["n"]

    async def timeline_events(
        self,
        device_ids: Collection[str] | None,
        types: Collection[EventType] | None,
        since: float | None,
        until: float | None,
    ) -> list[DeviceEvent]:
        """Events of these devices (None: every device) and `types` (None: all) at `since` <=
        timestamp < `until` (None: unbounded), oldest first (by timestamp, then id).

        For uptime over a window, pair it with `last_events_before(..., since)`, the state at the
        window's start. Retention (`retention.timeline`) bounds how far back events reach.
        """
        condition, parameters = _event_filter(device_ids, types, since, until)
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM device_events WHERE {condition} ORDER BY timestamp, id", parameters
        )
        return [_event(row) for row in rows]

    async def last_events_before(
        self, device_ids: Collection[str], types: Collection[EventType], before: float
    ) -> dict[str, DeviceEvent]:
        """Each device's newest event of `types` with timestamp < `before` (devices with none are
        left out): with `timeline.CONNECTIVITY`, whether it was online when a window began."""
        # One query; per device, the (device_id, timestamp) index is walked back from `before`.
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM device_events WHERE id IN ("
            " SELECT (SELECT id FROM device_events WHERE device_id = wanted.value"
            " AND type IN (SELECT value FROM json_each(?2)) AND timestamp < ?3"
            " ORDER BY timestamp DESC, id DESC LIMIT 1)"
            " FROM json_each(?1) AS wanted)",
            (_id_list(device_ids), _id_list([event_type.value for event_type in types]), before),
        )
        return {row["device_id"]: _event(row) for row in rows}

    async def purge_timeline(self, before: float, *, chunk: int = 1000) -> int:
        """Delete timeline events older than `before`, oldest first, in small transactions; how many."""
        return await self._delete_in_chunks(
            "device_events", "timestamp < ?", (before,), chunk, " ORDER BY timestamp"
        )

    async def integrity_check(self) -> str:
        """The result of `PRAGMA integrity_check`: "ok" for a sound database."""
        rows = await self._fetch("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)


async def _check_wal(db: aiosqlite.Connection) -> None:
    rows = list(await db.execute_fetchall("PRAGMA journal_mode"))
    mode = str(rows[0][0]).lower()
    if mode != "wal":
        # E.g. a filesystem without shared memory; batches and readers depend on WAL.
        raise RuntimeError(f"SQLite refused WAL mode (journal_mode={mode})")


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring the schema to TARGET_VERSION in one durable transaction."""
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute("BEGIN IMMEDIATE")
    try:
        # Read inside the write transaction: another process cannot migrate in between.
        rows = list(await db.execute_fetchall("PRAGMA user_version"))
        version = int(rows[0][0])
        if version > TARGET_VERSION:
            raise RuntimeError(
                f"database schema version {version} is newer than this gateway's "
                f"({TARGET_VERSION}); refusing to open it"
            )
        for index in range(version, TARGET_VERSION):
            for statement in _statements(MIGRATIONS[index]):
                await db.execute(statement)
        if version != TARGET_VERSION:
            # PRAGMA takes no bound parameters; TARGET_VERSION is an int constant.
            await db.execute(f"PRAGMA user_version = {TARGET_VERSION:d}")
            logger.info("database migrated from schema version %d to %d", version, TARGET_VERSION)
        await db.execute("COMMIT")
    except BaseException:
        await db.rollback()
        raise
    finally:
        await db.execute("PRAGMA synchronous = NORMAL")


async def _optimize(db: aiosqlite.Connection) -> None:
    """Refresh query-planner statistics where SQLite thinks they are stale (cheap at close)."""
    try:
        await db.execute("PRAGMA optimize")
    except sqlite3.Error as exc:
        logger.warning("PRAGMA optimize failed: %s", exc)


# --- finding devices ---------------------------------------------------------------------------

_QUALIFIED_DEVICE_COLUMNS: Final = ", ".join("d." + c.strip() for c in _DEVICE_COLUMNS.split(","))
# ORDER BY of each device list order, `{t}` = the table prefix; ties always broken by id.
_DEVICE_ORDERS: Final[dict[DeviceOrder | None, str]] = {
    None: "{t}id",
    DeviceOrder.NAME_ASC: "{t}name COLLATE NOCASE, {t}id",
    DeviceOrder.NAME_DESC: "{t}name COLLATE NOCASE DESC, {t}id DESC",
    DeviceOrder.CREATED_AT_ASC: "{t}created_at, {t}id",
    DeviceOrder.CREATED_AT_DESC: "{t}created_at DESC, {t}id DESC",
    DeviceOrder.UPDATED_AT_ASC: "{t}updated_at, {t}id",
    DeviceOrder.UPDATED_AT_DESC: "{t}updated_at DESC, {t}id DESC",
    DeviceOrder.LAST_SEEN_AT_ASC: "{t}last_seen_at, {t}id",
    DeviceOrder.LAST_SEEN_AT_DESC: "{t}last_seen_at DESC, {t}id DESC",
}
_FIELD_COLUMNS: Final = (
    "name, type, required, options_json, default_json, description, created_at, updated_at"
)


def _tag(row: sqlite3.Row) -> Tag:
    return Tag(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        device_count=int(row["device_count"]),
    )


def _field(row: sqlite3.Row) -> MetadataField:
    options = _load(row["options_json"])
    return MetadataField(
        name=row["name"],
        type=FieldType(row["type"]),
        required=bool(row["required"]),
        options=tuple(str(o) for o in options) if isinstance(options, list) else (),
        default=None if row["default_json"] is None else _load(row["default_json"]),
        description=row["description"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _field_row(field: MetadataField) -> tuple[Any, ...]:
    return (
        field.name,
        field.type.value,
        int(field.required),
        _dump(list(field.options)),
        None if field.default is None else _dump(field.default),
        field.description,
        field.created_at,
        field.updated_at,
    )


def _find_devices_sql(
    search: DeviceFilter,
    *,
    offset: int,
    limit: int,
    site_id: str | None,
    online: Collection[str],
    seen: Collection[str],
) -> tuple[str, dict[str, Any]]:
    """The statement of `Store.find_devices` and its parameters: fixed fragments, one per filter
    in use, all values bound."""
    conditions: list[str] = []
    values: dict[str, Any] = {"limit": limit, "offset": offset}
    if site_id is not None:
        conditions.append("d.site_id = :site_id")
        values["site_id"] = site_id
    if search.terms:
        conditions.append(
            "d.id IN (SELECT docs.device_id FROM device_search AS fts"
            " JOIN device_search_docs AS docs ON docs.rowid = fts.rowid"
            " WHERE device_search MATCH :match)"
        )
        values["match"] = fts_query(search.terms)
    if search.types is not None:
        conditions.append("d.type IN (SELECT value FROM json_each(:types))")
        values["types"] = _id_list(sorted(t.value for t in search.types))
    if search.blueprint_ids is not None:
        conditions.append("d.blueprint_id IN (SELECT value FROM json_each(:blueprint_ids))")
        values["blueprint_ids"] = _id_list(sorted(search.blueprint_ids))
    if search.created_from is not None:
        conditions.append("d.created_at >= :created_from")
        values["created_from"] = search.created_from
    if search.created_before is not None:
        conditions.append("d.created_at < :created_before")
        values["created_before"] = search.created_before
    if search.tags is not None:
        conditions.append(
            "d.id IN (SELECT device_id FROM device_tags WHERE tag_id IN ("
            " SELECT id FROM tags WHERE id IN (SELECT value FROM json_each(:tags))"
            " UNION SELECT id FROM tags WHERE name IN (SELECT value FROM json_each(:tags))))"
        )
        values["tags"] = _id_list(sorted(search.tags))
    if search.raised_alert_names is not None:
        conditions.append(
            "d.id IN (SELECT device_id FROM device_alerts"
            " WHERE name IN (SELECT value FROM json_each(:alerts)))"
        )
        values["alerts"] = _id_list(sorted(search.raised_alert_names))
    if search.connectivity == frozenset({Connectivity.ONLINE}):
        # The common case, as index lookups (by hardware id, by type); the others need every row.
        conditions.append("(d.type = 'GATEWAY' OR d.hardware_id IN (SELECT value FROM json_each(:online)))")
        values["online"] = _id_list(sorted(online))
    elif search.connectivity is not None:
        conditions.append(
            "CASE WHEN d.type = 'GATEWAY' THEN 'ONLINE'"
            " WHEN d.hardware_id IS NULL THEN 'UNKNOWN'"
            " WHEN d.hardware_id IN (SELECT value FROM json_each(:online)) THEN 'ONLINE'"
            " WHEN ds.last_seen_at IS NOT NULL"
            " OR d.hardware_id IN (SELECT value FROM json_each(:seen)) THEN 'OFFLINE'"
            " ELSE 'UNKNOWN' END IN (SELECT value FROM json_each(:connectivity))"
        )
        values["online"] = _id_list(sorted(online))
        values["seen"] = _id_list(sorted(seen))
        values["connectivity"] = _id_list(sorted(c.value for c in search.connectivity))
    where = " AND ".join(conditions) or "1"
    order = _DEVICE_ORDERS[search.order]
    # device_state only where a condition or the order reads it: joined for nothing, it cost a
    # lookup per device counted and per device skipped by the offset (a third of a plain page).
    state = (
        ", ds.last_seen_at AS last_seen_at FROM devices AS d"
        " LEFT JOIN device_state AS ds ON ds.device_id = d.id"
        if "last_seen_at" in order or "ds." in where
        else " FROM devices AS d"
    )
    # One statement, so page and total come from the same snapshot; NOT MATERIALIZED lets
    # each use of `matching` be planned on its own (the page walks the order's index).
    sql = (
        "WITH matching AS NOT MATERIALIZED ("
        f"  SELECT {_QUALIFIED_DEVICE_COLUMNS}{state}"
        f"  WHERE {where}"
        "), page AS MATERIALIZED ("
        f"  SELECT * FROM matching ORDER BY {order.format(t='')} LIMIT :limit OFFSET :offset"
        ") SELECT total.n AS total, page.* FROM (SELECT count(*) AS n FROM matching) AS total"
        f" LEFT JOIN page ON 1 ORDER BY {order.format(t='page.')}"
    )
    return sql, values
