"""The SQLite schema as an ordered list of migrations, keyed by `PRAGMA user_version`.

Pure: SQL text only. `MIGRATIONS[i]` moves a database from version `i` to `i + 1`; the store applies
the pending ones in order, in one transaction, when it opens the file. Never edit a migration that
has shipped: append a new one.

Conventions: STRICT tables; timestamps are UTC epoch seconds as REAL; JSON values are compact JSON
text; enums are stored as their wire spelling. Every per-device table cascades on device deletion.
"""

from __future__ import annotations

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

MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2)
"""`MIGRATIONS[i]` upgrades a database at `user_version == i` to `i + 1`."""

TARGET_VERSION: Final[int] = len(MIGRATIONS)
"""The `user_version` of a fully migrated database."""
