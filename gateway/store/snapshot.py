"""File-level operations on the gateway database, for the `backup` / `restore` CLI.

Synchronous, stdlib `sqlite3`, one short-lived connection per call: this runs in a CLI process, next
to (or instead of) the daemon, never inside it, and the store's own connections are not involved.

- `take_snapshot`: a consistent copy through SQLite's backup API, safe while the daemon writes;
- `inspect_database`: `PRAGMA integrity_check`, then what a backup manifest records
  (`PRAGMA user_version`, the site id, the device count);
- `in_use`: whether another process has the database open right now.

Every SQLite failure leaves this module as `SnapshotError` (SQLite's message), a failed integrity
check as its subclass `IntegrityCheckError`, so callers need not know `sqlite3`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from gateway.model import DeviceType


class SnapshotError(Exception):
    """SQLite could not open, read or write a database file; the message is SQLite's own."""


class IntegrityCheckError(SnapshotError):
    """The file is an SQLite database but fails `PRAGMA integrity_check`."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        """What the check reported, one line each, in SQLite's order."""


@dataclass(frozen=True, slots=True)
class DatabaseFacts:
    """What a backup manifest records about a database that passed its integrity check."""

    schema_version: int  # PRAGMA user_version
    site_id: str | None  # None before the daemon first created the site
    devices: int  # not counting the gateway itself


def _uri(path: Path, mode: str) -> str:
    # mode=rw/ro never creates a missing file (plain connect would, silently).
    return f"file:{urllib.parse.quote(str(path.absolute()))}?mode={mode}"


def take_snapshot(source: Path, target: Path) -> None:
    """Copy the database `source` to a new file `target` consistently, while the daemon may write it.

    The copy is switched to rollback-journal mode, so that it is one self-contained file.
    SnapshotError if SQLite cannot read `source` or write `target`.
    """
    try:
        with (
            contextlib.closing(sqlite3.connect(_uri(source, "rw"), uri=True, timeout=10.0)) as live,
            contextlib.closing(sqlite3.connect(target, isolation_level=None)) as copy,
        ):
            # pages=-1: one step, under one read transaction, so the copy is one committed state
            # (a stepwise copy would restart whenever the daemon commits).
            live.backup(copy)
            # The copy inherits WAL mode; make it one self-contained file.
            copy.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.Error as exc:
        raise SnapshotError(str(exc)) from None


def inspect_database(path: Path) -> DatabaseFacts:
    """Integrity-check a database file nobody else uses, then read what a backup manifest records.

    Read-only. IntegrityCheckError if it fails the check (nothing else is read then); SnapshotError
    if it is no SQLite database, or no gateway database at all (no `site` or `devices` table).
    """
    try:
        with contextlib.closing(sqlite3.connect(_uri(path, "ro"), uri=True, isolation_level=None)) as db:
            problems = tuple(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
            if problems != ("ok",):
                raise IntegrityCheckError(problems)
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            site = db.execute("SELECT id FROM site ORDER BY created_at LIMIT 1").fetchone()
            devices = int(
                db.execute(
                    "SELECT count(*) FROM devices WHERE type != ?", (DeviceType.GATEWAY.value,)
                ).fetchone()[0]
            )
    except sqlite3.Error as exc:
        raise SnapshotError(str(exc)) from None
    return DatabaseFacts(
        schema_version=version, site_id=None if site is None else str(site[0]), devices=devices
    )


def in_use(database: Path) -> bool:
    """Whether some other process has the database file `database` open right now.

    The daemon keeps its database open for as long as it runs, and in WAL mode every open
    connection holds a shared lock on the file, which the kernel drops when the process dies
    (however it dies). So asking SQLite for an exclusive lock, without waiting, fails exactly
    while some process has the database open. False too when `database` cannot be opened or is
    no database at all: nobody can be using it as one.

    When nobody has it open, the probe is the last connection to close, so SQLite folds a WAL
    left by a process that was killed into the database file, as the daemon's next start would:
    the files change, their content does not.
    """
    try:
        with contextlib.closing(
            sqlite3.connect(_uri(database, "rw"), uri=True, timeout=0.0, isolation_level=None)
        ) as probe:
            probe.execute("PRAGMA locking_mode = EXCLUSIVE")
            probe.execute("BEGIN EXCLUSIVE")
            probe.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    except sqlite3.DatabaseError:
        return False  # not a database any more
    return False
