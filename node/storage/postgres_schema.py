"""The store's PostgreSQL schema: reaching the database, its schema version, the migrations.

Why it is done this way:

- A store is one PostgreSQL schema (namespace): the first schema of the connection's
  ``search_path``, ``public`` unless the URL says otherwise (``options=-csearch_path=…``),
  so several nodes can share one database, each in its own schema.
- The same versions and migrations as the SQLite file (:mod:`node.storage.sqlite_schema`):
  a new store is created as schema 1 and migrated like any old one, one transaction per
  step, together with the new version. The version lives in the one-row table
  ``tapsim_schema``, whose presence also marks the schema as a tapsim store, so another
  program's tables are recognised and never written to.
- One node per store: a session advisory lock, taken before anything is judged, keeps a
  second node (another data dir given the same ``--store``) out, as the data-dir lock
  does for a file.
- Text columns are ``COLLATE "C"``: event ids compare and sort by their bytes, as in
  SQLite and as §5 orders them, whatever the database's default collation.
- Every failure to reach or use the database is one line
  (:class:`~node.storage.errors.StoreFileError`) naming the URL without its password.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import conninfo

from node.storage.errors import StoreFileError
from node.storage.location import shown_url
from node.storage.sqlite_schema import SCHEMA_VERSION

_LOCK_KEY = 0x54415053  # "TAPS", with hashtext(schema) as the second key
_WORKER_KEY = 0x54415700  # + K: worker K of the schema (with hashtext(schema))
# `worker` of a process that shares the store with the workers but is none of them
# (`tapsim workers map`, `move`): it takes no worker's lock.
SHARED = -1
_MIGRATE_KEY = 0x544150FF  # held while a store is judged and migrated (workers start at once)
CONNECT_TIMEOUT = 10  # seconds, unless the URL gives connect_timeout
LOCK_WAIT = 3.0  # seconds a node waits for the store's lock before it says "in use"

# Schema 1, the tables of SQLite's schema 1 in PostgreSQL's types. Never edit it: a
# change is a new migration below (the same as SQLite's, in this dialect).
_SCHEMA_1 = """
CREATE TABLE events (
    group_id     TEXT COLLATE "C" NOT NULL,
    event_id     TEXT COLLATE "C" NOT NULL,
    author       TEXT COLLATE "C" NOT NULL,
    seq          BIGINT           NOT NULL,
    ciphertext   BYTEA            NOT NULL,
    content_hash TEXT COLLATE "C" NOT NULL,
    key_id       TEXT COLLATE "C" NOT NULL,
    signature    TEXT COLLATE "C" NOT NULL,
    received_at  DOUBLE PRECISION NOT NULL,
    hop          TEXT COLLATE "C" NOT NULL,
    provisional  SMALLINT         NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, event_id)
);
CREATE INDEX events_by_author_seq ON events (group_id, author, seq);
CREATE TABLE outbox (
    peer_id  TEXT COLLATE "C" NOT NULL,
    group_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (peer_id, group_id, event_id)
);
CREATE TABLE pins (
    server_id TEXT COLLATE "C" PRIMARY KEY,
    doc       TEXT NOT NULL,
    source    TEXT NOT NULL
);
CREATE TABLE replay (
    key     TEXT COLLATE "C" PRIMARY KEY,
    seen_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX replay_by_seen_at ON replay (seen_at);
CREATE TABLE own_seq (
    group_id TEXT COLLATE "C" PRIMARY KEY,
    next_seq BIGINT NOT NULL
);
CREATE TABLE equivocators (
    group_id TEXT COLLATE "C" NOT NULL,
    author   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (group_id, author)
);
CREATE TABLE peer_ids (
    url       TEXT COLLATE "C" PRIMARY KEY,
    server_id TEXT NOT NULL
);
CREATE TABLE tapsim_schema (version INTEGER NOT NULL);
INSERT INTO tapsim_schema (version) VALUES (0)
"""
_TABLES_1 = frozenset(
    {"events", "outbox", "pins", "replay", "own_seq", "equivocators", "peer_ids", "tapsim_schema"}
)


def _to_2(db: psycopg.Connection) -> None:
    """Schema 2: ``meta`` holds small facts about the store itself (the write probe)."""
    db.execute('CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT)')


# MIGRATIONS[v] takes a store from schema v to v + 1 (as sqlite_schema.MIGRATIONS).
MIGRATIONS: dict[int, Callable[[psycopg.Connection], None]] = {1: _to_2}


def one_line(exc: BaseException) -> str:
    """libpq's messages run over several lines (a hint, a tab): one line of them."""
    return " ".join(str(exc).split()) or type(exc).__name__


def connect(url: str) -> psycopg.Connection:
    """A connection in autocommit mode (the store opens its own transactions)."""
    try:
        given = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreFileError(f"bad store URL {shown_url(url)}: {one_line(exc)}") from None
    extra: dict[str, object] = {"application_name": "tapsim"}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = CONNECT_TIMEOUT
    try:
        db = psycopg.connect(url, autocommit=True, **extra)
    except psycopg.Error as exc:
        words = one_line(exc).removeprefix("connection is bad: ")
        # libpq checks the values (sslmode=sometimes, a host name) before it connects.
        if "connection to server" not in words:
            raise StoreFileError(f"bad store URL {shown_url(url)}: {words}") from None
        raise StoreFileError(f"cannot reach the event store {shown_url(url)}: {words}") from None
    try:
        _durable_commits(db)
    except psycopg.Error as exc:
        db.close()
        raise StoreFileError(
            f"cannot use the event store {shown_url(url)}: {one_line(exc)}"
        ) from None
    return db


def _durable_commits(db: psycopg.Connection) -> None:
    """A COMMIT returns once the server has flushed it (§4.4: no ACK before that): a
    server or URL that turned ``synchronous_commit`` off gets it back on for this session
    (``local``, ``remote_write`` and ``remote_apply`` flush locally already)."""
    row = db.execute("SHOW synchronous_commit").fetchone()
    if row is not None and row[0] == "off":
        db.execute("SET synchronous_commit = on")


def open_database(url: str, worker: int | None = None) -> tuple[psycopg.Connection, int]:
    """Connect to the store at ``url``, locked for this node (or this worker), judged and
    migrated to :data:`SCHEMA_VERSION`. Returns the connection and the version it had
    (0: new)."""
    db = connect(url)
    try:
        lock(db, url, worker)
        # Workers share the schema: one at a time judges and creates or migrates it.
        db.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema()))", (_MIGRATE_KEY,))
        found = _judge(db, url)
        if found == 0:
            _step(db, _create_1, 1)
        for version in range(max(found, 1), SCHEMA_VERSION):
            _step(db, MIGRATIONS[version], version + 1)
        db.execute("SELECT pg_advisory_unlock(%s, hashtext(current_schema()))", (_MIGRATE_KEY,))
    except psycopg.Error as exc:
        db.close()
        raise StoreFileError(
            f"cannot open the event store {shown_url(url)}: {one_line(exc)}"
        ) from None
    except BaseException:
        db.close()
        raise
    return db, found


def lock(db: psycopg.Connection, url: str, worker: int | None = None) -> None:
    """This session's hold on the store's schema; StoreFileError if another node has it.

    A node holds the schema alone. Worker K of several (docs/scaling.md) shares it with
    the other workers and holds worker K alone: a second worker K, or a lone node on a
    schema the workers use, is refused.
    """
    row = db.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise StoreFileError(
            f"the event store {shown_url(url)} names no existing schema in its search_path: "
            "create the schema, or leave search_path out to use public"
        )
    how = "pg_advisory_lock" if worker is None else "pg_advisory_lock_shared"
    # A node killed a moment ago may still hold it until the server notices: wait a little.
    db.execute("SELECT set_config('lock_timeout', %s, false)", (f"{LOCK_WAIT * 1000:.0f}ms",))
    try:
        try:
            db.execute(f"SELECT {how}(%s, hashtext(current_schema()))", (_LOCK_KEY,))
        except psycopg.errors.LockNotAvailable:
            raise StoreFileError(
                f"the event store {shown_url(url)} (schema {row[0]}) is in use by another "
                "node: give each node its own database or schema"
                + ("" if worker is None else " (workers share one only with other workers)")
            ) from None
        if worker is None or worker == SHARED:
            return
        try:
            db.execute(
                "SELECT pg_advisory_lock(%s, hashtext(current_schema()))", (_WORKER_KEY + worker,)
            )
        except psycopg.errors.LockNotAvailable:
            raise StoreFileError(
                f"worker {worker} of the event store {shown_url(url)} (schema {row[0]}) runs "
                "already: give each worker its own K in --worker K/N"
            ) from None
    finally:
        db.execute("RESET lock_timeout")


def _judge(db: psycopg.Connection, url: str) -> int:
    """The schema version of a store we may open; raises for any other, writing nothing."""
    tables = {
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    if not tables:
        return 0
    schema = db.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
    if not tables >= _TABLES_1:
        raise StoreFileError(
            f"schema {schema} of {shown_url(url)} holds tables but is not a tapsim event "
            "store: use another database or schema"
        )
    row = db.execute("SELECT max(version) FROM tapsim_schema").fetchone()
    version = row[0] if row and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        raise StoreFileError(
            f"the event store {shown_url(url)} was written by a newer tapsim (store schema "
            f"{version}; this one reads up to {SCHEMA_VERSION}): upgrade tapsim, or use "
            "another --store"
        )
    if version == 0:  # a creation that did not commit cannot leave this: not ours
        raise StoreFileError(
            f"schema {schema} of {shown_url(url)} has an unversioned tapsim_schema table: "
            "use another database or schema"
        )
    return version


def _create_1(db: psycopg.Connection) -> None:
    for statement in _SCHEMA_1.split(";"):
        if statement.strip():
            db.execute(statement)  # type: ignore[arg-type]  # our own constant text


def _step(db: psycopg.Connection, migrate: Callable[[psycopg.Connection], None], to: int) -> None:
    """One version up, atomically with the new version."""
    with db.transaction():
        migrate(db)
        db.execute("UPDATE tapsim_schema SET version = %s", (to,))
