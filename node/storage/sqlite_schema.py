"""The store's SQLite file: recognising it, its schema version, and the migrations.

Why it is done this way:

- A file is judged before anything writes to it (even switching to WAL rewrites its
  header). One that is not an SQLite database, is damaged, is another program's
  database, or was written by a newer tapsim raises
  :class:`~node.storage.errors.StoreFileError`, naming the file and what to do. Nothing
  is repaired, recreated or migrated away silently: the store holds acknowledged events,
  which may exist nowhere else once peers have dropped them from their outboxes.
- The schema version is SQLite's ``user_version``; ``application_id`` marks the file as
  a tapsim store, so another program's database is recognised as such.
- A fresh file is created as schema 1 and then migrated like any old file, so every
  migration runs on every new store and cannot rot. Each migration moves the file one
  version up in one transaction together with the new ``user_version``: a crash during
  an upgrade leaves the previous version, and the next start runs the step again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from node.storage.errors import StoreFileError

SCHEMA_VERSION = 2
APPLICATION_ID = 0x54415053  # "TAPS"
_MAGIC = b"SQLite format 3\x00"

# Schema 1, as every release before migrations created it (user_version 1, no
# application_id). Never edit it: a change is a new migration below.
_SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS events (
    group_id     TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    ciphertext   BLOB    NOT NULL,
    content_hash TEXT    NOT NULL,
    key_id       TEXT    NOT NULL,
    signature    TEXT    NOT NULL,
    received_at  REAL    NOT NULL,
    hop          TEXT    NOT NULL,
    provisional  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_by_author_seq ON events (group_id, author, seq);
CREATE TABLE IF NOT EXISTS outbox (
    peer_id  TEXT NOT NULL,
    group_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (peer_id, group_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (
    server_id TEXT PRIMARY KEY,
    doc       TEXT NOT NULL,
    source    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replay (
    key     TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replay_by_seen_at ON replay (seen_at);
CREATE TABLE IF NOT EXISTS own_seq (
    group_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS equivocators (
    group_id TEXT NOT NULL,
    author   TEXT NOT NULL,
    PRIMARY KEY (group_id, author)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peer_ids (
    url       TEXT PRIMARY KEY,
    server_id TEXT NOT NULL
);
"""
_TABLES_1 = frozenset({"events", "outbox", "pins", "replay", "own_seq", "equivocators", "peer_ids"})


def _to_2(db: sqlite3.Connection) -> None:
    """Schema 2: the file says it is a tapsim store; ``meta`` holds small facts about the
    store itself (the write probe that tells when a full disk has room again)."""
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")


# MIGRATIONS[v] takes a file from schema v to v + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _to_2}

_MOVE_ASIDE = "move it aside (tapsim then starts with an empty store) or restore it from a backup"


def open_database(path: str) -> tuple[sqlite3.Connection, int]:
    """Connect to the store at ``path`` (``":memory:"`` for tests), judged, configured and
    migrated to :data:`SCHEMA_VERSION`. Returns the connection and the version it had
    (0 for a new store)."""
    if path != ":memory:":
        _check_header(Path(path))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        found = _judge(db, path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-65536")
        if found == 0:
            _step(db, _create_1, 1)
        for version in range(max(found, 1), SCHEMA_VERSION):
            _step(db, MIGRATIONS[version], version + 1)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise file_error(path, exc) from exc
    except BaseException:
        db.close()
        raise
    return db, found


def file_error(path: str, exc: sqlite3.Error) -> StoreFileError:
    """The one line for a database error met while opening or loading the store."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        return StoreFileError(f"{path} is not an SQLite database: {_MOVE_ASIDE}")
    if code == sqlite3.SQLITE_CORRUPT:
        return StoreFileError(f"{path} is damaged ({exc}): {_MOVE_ASIDE}")
    return StoreFileError(f"cannot open the event store {path}: {exc}")


def _check_header(path: Path) -> None:
    """A non-empty file must start like an SQLite database (an empty one is a new store)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_MAGIC))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise StoreFileError(f"{path} is a directory, not an event store: move it aside") from None
    if head and head != _MAGIC:
        raise StoreFileError(f"{path} is not an SQLite database: {_MOVE_ASIDE}")


def _judge(db: sqlite3.Connection, path: str) -> int:
    """The schema version of a file we may open; raises for any other, writing nothing."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 and not tables and app_id in (0, APPLICATION_ID):
        return 0
    if app_id not in (0, APPLICATION_ID) or version == 0 or not tables >= _TABLES_1:
        raise StoreFileError(
            f"{path} is an SQLite database but not a tapsim event store: "
            "move it aside, or use another --data-dir"
        )
    if version > SCHEMA_VERSION:
        raise StoreFileError(
            f"{path} was written by a newer tapsim (store schema {version}; this one reads "
            f"up to {SCHEMA_VERSION}): upgrade tapsim, or use another --data-dir"
        )
    problems = [r[0] for r in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise StoreFileError(f"{path} is damaged ({problems[0]}): {_MOVE_ASIDE}")
    return version


def _create_1(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA_1.split(";"):
        if statement.strip():
            db.execute(statement)


def _step(db: sqlite3.Connection, migrate: Callable[[sqlite3.Connection], None], to: int) -> None:
    """One version up, atomically with the new ``user_version``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        migrate(db)
        db.execute(f"PRAGMA user_version={to}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
