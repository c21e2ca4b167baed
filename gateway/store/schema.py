"""The SQLite schema as an ordered list of migrations, keyed by `PRAGMA user_version`.

Pure: SQL text only. `MIGRATIONS[i]` moves a database from version `i` to `i + 1`; the store applies
the pending ones in order, in one transaction, when it opens the file. Never edit a migration that
has shipped: append a new one.

Conventions: STRICT tables; timestamps are UTC epoch seconds as REAL; JSON values are compact JSON
text; enums are stored as their wire spelling. Every per-device table cascades on device deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

_V1: Final = """
CREATE TABLE site (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    timezone TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,
    site_id TEXT NOT NULL REFERENCES site (id),
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    blueprint_id TEXT NOT NULL,
    communication_type TEXT,
    hardware_id TEXT,
    channel_id TEXT,
    upstream_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    -- NULLs are distinct in UNIQUE, so devices without a channel (the gateway) coexist.
    UNIQUE (hardware_id, channel_id)
) STRICT;

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
) STRICT;

CREATE TABLE device_credentials (
    device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    protocol TEXT NOT NULL,
    -- One dynsec client per device, and dynsec client names are one namespace.
    username TEXT NOT NULL UNIQUE,
    -- Opaque string computed by the caller (e.g. a dynsec password hash); never a plain password.
    secret TEXT NOT NULL,
    created_at REAL NOT NULL
) STRICT;

CREATE TABLE device_properties (
    device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    values_json TEXT NOT NULL,
    timestamp REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

CREATE TABLE telemetry_latest (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    attribute TEXT NOT NULL,
    value_json TEXT NOT NULL,
    timestamp REAL NOT NULL,
    PRIMARY KEY (device_id, attribute)
) STRICT, WITHOUT ROWID;

-- Raw history; to be replaced by integer keys plus 1-minute and 1-hour rollups.
CREATE TABLE telemetry_history (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    attribute TEXT NOT NULL,
    timestamp REAL NOT NULL,
    value_json TEXT NOT NULL
) STRICT;
CREATE INDEX telemetry_history_by_attribute
    ON telemetry_history (device_id, attribute, timestamp);

CREATE TABLE device_logs (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    timestamp REAL NOT NULL,
    received_at REAL NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    persist INTEGER NOT NULL
) STRICT;
CREATE INDEX device_logs_by_device ON device_logs (device_id, received_at);

CREATE TABLE command_responses (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    execution_id TEXT NOT NULL,
    state TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    received_at REAL NOT NULL
) STRICT;
CREATE INDEX command_responses_by_execution ON command_responses (execution_id);
-- Lets ON DELETE CASCADE find a device's rows without a full scan.
CREATE INDEX command_responses_by_device ON command_responses (device_id);

CREATE TABLE device_state (
    device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    -- Gateway clock when the device's last message arrived.
    last_seen_at REAL,
    -- Alerts of the newest telemetry (by device timestamp), and that timestamp.
    raised_alerts_json TEXT NOT NULL DEFAULT '[]',
    alerts_timestamp REAL
) STRICT;
"""

# Certificates issued to MQTTS devices. Rows outlive their device (no foreign key): a deleted device's
# certificates must stay on the CRL until they expire. Serials are up to 159 bits, so hex text.
_V2: Final = """
CREATE TABLE device_certificates (
    serial TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL,
    hardware_id TEXT NOT NULL,
    issued_at REAL NOT NULL,
    not_after REAL NOT NULL,
    revoked_at REAL
) STRICT;
CREATE INDEX device_certificates_by_device ON device_certificates (device_id);
"""

# Command executions, and telemetry history keyed by series with 1-minute and 1-hour rollups.
#
# telemetry_raw.value keeps the value's own SQLite type (column type ANY): integers and booleans
# (0/1) as INTEGER, numbers as REAL, strings as TEXT, arrays and objects as compact JSON in a BLOB
# so they cannot be mistaken for strings. The series' `kind` (of its newest value) tells booleans
# from integers. Each batch merges its values into the rollups in its own transaction (schema 6;
# in schema 5 they lagged by a few seconds, marked by rollup_pending).
_ROLLUP_COLUMNS = """
    series_id INTEGER NOT NULL REFERENCES telemetry_series (id) ON DELETE CASCADE,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    -- numeric values (booleans as 0/1) among them, their sum, min and max
    num_count INTEGER NOT NULL,
    total REAL NOT NULL,
    low REAL,
    high REAL,
    last ANY,
    last_ts REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
"""
_V3_TABLES: Final = f"""
CREATE TABLE command_executions (
    id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    manifest_name TEXT NOT NULL,
    arguments_json TEXT NOT NULL,
    ephemeral INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;
CREATE INDEX command_executions_by_device ON command_executions (device_id, created_at);
CREATE INDEX command_executions_by_time ON command_executions (created_at);
CREATE INDEX command_executions_open ON command_executions (state)
    WHERE state IN ('NEW', 'IN_PROGRESS');

CREATE TABLE telemetry_series (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    attribute TEXT NOT NULL,
    kind TEXT NOT NULL,
    UNIQUE (device_id, attribute)
) STRICT;

CREATE TABLE telemetry_raw (
    series_id INTEGER NOT NULL REFERENCES telemetry_series (id) ON DELETE CASCADE,
    timestamp REAL NOT NULL,
    value ANY NOT NULL
) STRICT;
CREATE INDEX telemetry_raw_by_series ON telemetry_raw (series_id, timestamp);
-- Retention deletes the oldest rows first, in small chunks; device timestamps mostly grow, so
-- this index is appended to at its right edge.
CREATE INDEX telemetry_raw_by_time ON telemetry_raw (timestamp);

CREATE TABLE telemetry_1m ({_ROLLUP_COLUMNS}) STRICT, WITHOUT ROWID;
CREATE INDEX telemetry_1m_by_bucket ON telemetry_1m (bucket);
CREATE TABLE telemetry_1h ({_ROLLUP_COLUMNS}) STRICT, WITHOUT ROWID;
CREATE INDEX telemetry_1h_by_bucket ON telemetry_1h (bucket);

INSERT INTO telemetry_series (device_id, attribute, kind)
    SELECT device_id, attribute,
        CASE json_type(max_by_time.value_json)
            WHEN 'integer' THEN 'integer' WHEN 'real' THEN 'float'
            WHEN 'true' THEN 'boolean' WHEN 'false' THEN 'boolean'
            WHEN 'text' THEN 'string' WHEN 'array' THEN 'string_array' ELSE 'json' END
    FROM (SELECT device_id, attribute, value_json, max(timestamp) FROM telemetry_history
          GROUP BY device_id, attribute) AS max_by_time;
INSERT INTO telemetry_raw (series_id, timestamp, value)
    SELECT s.id, h.timestamp,
        CASE json_type(h.value_json)
            WHEN 'integer' THEN CAST(h.value_json AS INTEGER) WHEN 'real' THEN CAST(h.value_json AS REAL)
            WHEN 'true' THEN 1 WHEN 'false' THEN 0 WHEN 'text' THEN h.value_json ->> '$'
            ELSE CAST(h.value_json AS BLOB) END
    FROM telemetry_history AS h
    JOIN telemetry_series AS s ON s.device_id = h.device_id AND s.attribute = h.attribute
    ORDER BY h.rowid;
DROP TABLE telemetry_history;
"""


ROLLUPS: Final[tuple[tuple[str, int], ...]] = (("telemetry_1m", 60), ("telemetry_1h", 3600))
"""Rollup tables and their bucket size in seconds, finest first."""


ROLLUP_MERGE: Final = """
ON CONFLICT (series_id, bucket) DO UPDATE SET
    count = count + excluded.count,
    num_count = num_count + excluded.num_count,
    total = total + excluded.total,
    low = CASE WHEN excluded.low IS NOT NULL AND (low IS NULL OR excluded.low < low)
        THEN excluded.low ELSE low END,
    high = CASE WHEN excluded.high IS NOT NULL AND (high IS NULL OR excluded.high > high)
        THEN excluded.high ELSE high END,
    last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
    last_ts = max(last_ts, excluded.last_ts)
"""
"""How a summary of more values merges into a rollup row (an upsert's conflict clause)."""


def rollup_sql(table: str, size: int, rows: str) -> str:
    """Merge the raw rows selected by `rows` (a condition on telemetry_raw) into a rollup table
    (migrations; batches merge summaries made by `gateway.store.rollup`, which agree with this).

    Buckets are floor(timestamp / size) * size, in integer arithmetic (SQLite may lack floor()).
    `last` is the value with the greatest timestamp (then rowid) in the bucket.
    """
    floor = "(CAST(timestamp AS INTEGER) - (timestamp < CAST(timestamp AS INTEGER)))"
    return f"""
INSERT INTO {table} (series_id, bucket, count, num_count, total, low, high, last, last_ts)
SELECT series_id, bucket, count(*), count(num), total(num), min(num), max(num), max(newest),
    max(timestamp)
FROM (
    SELECT series_id, timestamp, bucket, num,
        last_value(value) OVER (PARTITION BY series_id, bucket ORDER BY timestamp, rowid
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS newest
    FROM (
        SELECT rowid, series_id, timestamp, value,
            {floor} - (({floor} % {size:d}) + {size:d}) % {size:d} AS bucket,
            CASE WHEN typeof(value) IN ('integer', 'real') THEN value END AS num
        FROM telemetry_raw WHERE {rows}
    )
)
WHERE true
GROUP BY series_id, bucket
{ROLLUP_MERGE}"""


def rollup_upsert_sql(table: str) -> str:
    """Merge summary rows (`gateway.store.rollup.RollupRow`, one per parameter set) into a rollup
    table."""
    return (
        f"INSERT INTO {table} (series_id, bucket, count, num_count, total, low, high, last, last_ts)"
        f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) {ROLLUP_MERGE}"
    )


@dataclass(frozen=True, slots=True)
class Retention:
    """How retention finds a chunk of a telemetry table's rows (the last parameter: how many);
    `RETENTION` has one per table."""

    key: str
    # Rows older than a time (the age limit; first parameter: the time).
    older: str
    # The oldest rows (the size limit).
    oldest: str


RETENTION: Final = {
    # Raw values have no index by time (schema 6: it cost a third of their insert). Old ones are
    # found series by series (CROSS JOIN keeps that order: each series' by its index), and the
    # oldest are the earliest stored.
    "telemetry_raw": Retention(
        "rowid",
        "SELECT r.rowid FROM telemetry_series AS s CROSS JOIN telemetry_raw AS r"
        " ON r.series_id = s.id AND r.timestamp < ? LIMIT ?",
        "SELECT rowid FROM telemetry_raw ORDER BY rowid LIMIT ?",
    ),
    **{
        table: Retention(
            "series_id, bucket",
            f"SELECT series_id, bucket FROM {table} WHERE bucket < ? ORDER BY bucket LIMIT ?",
            f"SELECT series_id, bucket FROM {table} ORDER BY bucket LIMIT ?",
        )
        for table, _ in ROLLUPS
    },
}


# The history moved over by _V3 is rolled up once, in the same migration.
_V3: Final = _V3_TABLES + "".join(rollup_sql(table, size, "true") + ";" for table, size in ROLLUPS)

# Site location; blueprints (stored once per distinct content); the device profiles archive;
# telemetry and properties that did not match the device's manifest (kept, and flagged here).
_V4: Final = """
ALTER TABLE site ADD COLUMN location_name TEXT;
ALTER TABLE site ADD COLUMN latitude REAL;
ALTER TABLE site ADD COLUMN longitude REAL;

CREATE TABLE blueprints (
    id TEXT PRIMARY KEY NOT NULL,
    -- sha256 of the archive's files (gateway.blueprints.archive.content_digest): the same
    -- content uploaded again is the same blueprint.
    digest TEXT NOT NULL UNIQUE,
    -- `{name}` of /v3/blueprints/enapter/{name}/{tag}, from the manifest's display_name.
    name TEXT NOT NULL,
    archive BLOB NOT NULL,
    manifest_json TEXT NOT NULL,
    created_at REAL NOT NULL
) STRICT;
CREATE INDEX blueprints_by_name ON blueprints (name, created_at);

CREATE TABLE device_profiles (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    archive BLOB NOT NULL,
    uploaded_at REAL NOT NULL
) STRICT;

CREATE INDEX devices_by_upstream ON devices (upstream_id) WHERE upstream_id IS NOT NULL;
CREATE INDEX devices_by_blueprint ON devices (blueprint_id);

CREATE TABLE manifest_mismatches (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    section TEXT NOT NULL,
    attribute TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (device_id, section, attribute)
) STRICT, WITHOUT ROWID;
"""


def _metadata_search_trigger(event: str, row: str) -> str:
    """A trigger that rewrites a device's searchable metadata text after `event` (INSERT, UPDATE,
    DELETE) on device_metadata; `row` is NEW or OLD, whichever names the device."""
    return f"""
CREATE TRIGGER device_search_metadata_{event.lower()} AFTER {event} ON device_metadata BEGIN
    UPDATE device_search SET metadata = (
        SELECT coalesce(group_concat(search_text, char(10)), '') FROM device_metadata
        WHERE device_id = {row}.device_id)
    WHERE rowid = (SELECT rowid FROM device_search_docs WHERE device_id = {row}.device_id);
END;"""


# Finding devices: tags, site-wide metadata field definitions and per-device values, the indexes
# behind the device list's filters and sorting, and the full-text index behind its `q=`.
_V5_FIND: Final = """
CREATE TABLE tags (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

CREATE TABLE device_tags (
    tag_id TEXT NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    PRIMARY KEY (tag_id, device_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_tags_by_device ON device_tags (device_id, tag_id);

CREATE TABLE metadata_fields (
    name TEXT PRIMARY KEY NOT NULL,
    type TEXT NOT NULL,
    required INTEGER NOT NULL,
    options_json TEXT NOT NULL,
    -- NULL: no default (never for a required field).
    default_json TEXT,
    description TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

-- A device's own values (defaults are not copied here). search_text is what `q=` finds of it.
CREATE TABLE device_metadata (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    field TEXT NOT NULL REFERENCES metadata_fields (name) ON DELETE CASCADE,
    value_json TEXT NOT NULL,
    search_text TEXT NOT NULL,
    PRIMARY KEY (device_id, field)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_metadata_by_field ON device_metadata (field);

-- One row per raised alert, kept equal to device_state.raised_alerts_json by triggers, so that
-- `raised_alert_names.in` is an index lookup.
CREATE TABLE device_alerts (
    name TEXT NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    PRIMARY KEY (name, device_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_alerts_by_device ON device_alerts (device_id);
INSERT OR IGNORE INTO device_alerts (name, device_id)
    SELECT CAST(alert.value AS TEXT), s.device_id
    FROM device_state AS s, json_each(s.raised_alerts_json) AS alert
    WHERE json_valid(s.raised_alerts_json) AND json_type(s.raised_alerts_json) = 'array';
CREATE TRIGGER device_alerts_on_insert AFTER INSERT ON device_state BEGIN
    INSERT OR IGNORE INTO device_alerts (name, device_id)
        SELECT CAST(value AS TEXT), NEW.device_id FROM json_each(NEW.raised_alerts_json);
END;
CREATE TRIGGER device_alerts_on_delete AFTER DELETE ON device_state BEGIN
    DELETE FROM device_alerts WHERE device_id = OLD.device_id;
END;
CREATE TRIGGER device_alerts_on_update AFTER UPDATE OF raised_alerts_json ON device_state BEGIN
    DELETE FROM device_alerts WHERE device_id = NEW.device_id;
    INSERT OR IGNORE INTO device_alerts (name, device_id)
        SELECT CAST(value AS TEXT), NEW.device_id FROM json_each(NEW.raised_alerts_json);
END;

-- The sorts and filters of the device list; ties are broken by id.
CREATE INDEX devices_by_name ON devices (name COLLATE NOCASE, id);
CREATE INDEX devices_by_created ON devices (created_at, id);
CREATE INDEX devices_by_updated ON devices (updated_at, id);
CREATE INDEX devices_by_type ON devices (type);
CREATE INDEX device_state_by_last_seen ON device_state (last_seen_at, device_id);

-- Full-text search over name, slug, hardware id and metadata values, one row per device.
-- `trigram` makes every query a case-insensitive substring match. The index's rowids are those of
-- device_search_docs (an INTEGER PRIMARY KEY, which VACUUM keeps), not the devices' own rowids.
CREATE TABLE device_search_docs (
    rowid INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL UNIQUE REFERENCES devices (id) ON DELETE CASCADE
) STRICT;
CREATE VIRTUAL TABLE device_search USING fts5 (
    name, slug, hardware_id, metadata, tokenize = 'trigram'
);
INSERT INTO device_search_docs (device_id) SELECT id FROM devices ORDER BY created_at, id;
INSERT INTO device_search (rowid, name, slug, hardware_id, metadata)
    SELECT docs.rowid, d.name, d.slug, coalesce(d.hardware_id, ''), ''
    FROM device_search_docs AS docs JOIN devices AS d ON d.id = docs.device_id;
CREATE TRIGGER device_search_on_insert AFTER INSERT ON devices BEGIN
    INSERT INTO device_search_docs (device_id) VALUES (NEW.id);
    INSERT INTO device_search (rowid, name, slug, hardware_id, metadata)
        SELECT rowid, NEW.name, NEW.slug, coalesce(NEW.hardware_id, ''), ''
        FROM device_search_docs WHERE device_id = NEW.id;
END;
CREATE TRIGGER device_search_on_update AFTER UPDATE OF name, slug, hardware_id ON devices BEGIN
    UPDATE device_search SET name = NEW.name, slug = NEW.slug,
        hardware_id = coalesce(NEW.hardware_id, '')
        WHERE rowid = (SELECT rowid FROM device_search_docs WHERE device_id = NEW.id);
END;
-- BEFORE: the docs row (which names the index row) goes with the device, by its foreign key.
CREATE TRIGGER device_search_on_delete BEFORE DELETE ON devices BEGIN
    DELETE FROM device_search
        WHERE rowid = (SELECT rowid FROM device_search_docs WHERE device_id = OLD.id);
END;
""" + "".join(
    _metadata_search_trigger(event, row)
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
)

# Each device's timeline: a durable, bounded history of what happened to it.
# `type` is the event's wire spelling (gateway.timeline.EventType); `details_json` its
# type-specific fields. Retention deletes the oldest rows first, by `timestamp`.
_V5_TIMELINE: Final = """
CREATE TABLE device_events (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    -- Gateway clock when it happened.
    timestamp REAL NOT NULL,
    details_json TEXT NOT NULL
) STRICT;
CREATE INDEX device_events_by_device ON device_events (device_id, timestamp);
CREATE INDEX device_events_by_time ON device_events (timestamp);
"""

# Telemetry values stored per minute of the gateway's clock, for the site statistics: a window's
# count reads at most 43,200 rows instead of the rollups of every series.
_V5_STATS: Final = """
CREATE TABLE telemetry_received (
    minute INTEGER PRIMARY KEY NOT NULL,
    data_points INTEGER NOT NULL
) STRICT;
"""

# Rollups are merged every few seconds rather than every batch: the raw values above this rowid
# are not in them yet (no row: all are).
_V5_ROLLUPS: Final = """
CREATE TABLE rollup_pending (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    after_rowid INTEGER NOT NULL
) STRICT;
"""

_V5: Final = _V5_FIND + _V5_TIMELINE + _V5_STATS + _V5_ROLLUPS

# Batches now merge their values into the rollups in their own transaction: merge what a schema-5
# database left pending, and drop the marker. Raw values lose their index by time.
_V6: Final = (
    "".join(
        rollup_sql(table, size, "rowid > (SELECT after_rowid FROM rollup_pending)") + ";"
        for table, size in ROLLUPS
    )
    + "DROP TABLE rollup_pending;"
    # A third of a raw value's insert; retention finds old raw values by series instead.
    + "DROP INDEX telemetry_raw_by_time;"
)

MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2, _V3, _V4, _V5, _V6)
"""`MIGRATIONS[i]` upgrades a database at `user_version == i` to `i + 1`."""

TARGET_VERSION: Final[int] = len(MIGRATIONS)
"""The `user_version` of a fully migrated database."""
