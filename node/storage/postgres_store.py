"""The node's durable state on PostgreSQL: :class:`PostgresStore`, one implementation of ``Store``.

The same guarantees as :class:`~node.storage.sqlite_store.SQLiteStore`, on a server that
is backed up and replicated by the tools already trusted for that:

- One connection, owned by the store thread, like SQLite's: every call of the store runs
  on that thread, so a second connection would only wait for the first. Group commit is
  one PostgreSQL transaction per batch; its COMMIT returns once the server has flushed
  its WAL (``synchronous_commit`` is never ``off`` for the store's session), and only
  then may an ACK be sent (§4.4).
- The in-memory index of :mod:`node.sync.index` is rebuilt from the events at open and
  kept with every write, so fingerprints, digests and per-author seqs are the same as
  SQLite's for the same events and cost no query; a transaction that fails reloads the
  groups it touched.
- A write that cannot be made durable now (the server is gone or restarting, out of
  disk, read-only, a lock timeout) is rolled back and raised as
  :class:`~node.storage.errors.StoreUnavailable`; the next call reconnects. The store's
  schema is judged, locked and migrated by :mod:`node.storage.postgres_schema` first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import psycopg

from node.storage.errors import StoreFileError, StoreUnavailable
from node.storage.postgres_records import PostgresRecords
from node.storage.postgres_schema import connect, lock, one_line, open_database, shown_url
from node.storage.store import StoredEvent
from node.sync.digest import DEFAULT_BUCKETS
from node.sync.fingerprint import event_term
from node.sync.index import GroupIndex, Index

_COLUMNS = (
    "group_id, event_id, author, seq, ciphertext, content_hash, key_id, signature, "
    "received_at, hop, provisional"
)
_E_COLUMNS = ", ".join("e." + c.strip() for c in _COLUMNS.split(","))
_INSERT_EVENT = (
    f"INSERT INTO events ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_COPY_EVENTS = f"COPY events ({_COLUMNS}) FROM STDIN"


def _cannot_write_now(exc: BaseException) -> bool:
    """Connection lost, server shutting down, disk full, a lock or serialisation conflict
    (all OperationalError), or a read-only server (a standby): retry later, not a bug."""
    return isinstance(exc, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction)


def _row(ev: StoredEvent) -> tuple:
    return (
        ev.group_id,
        ev.event_id,
        ev.author,
        ev.seq,
        ev.ciphertext,
        ev.content_hash,
        ev.key_id,
        ev.signature,
        ev.received_at,
        ev.hop,
        1 if ev.provisional else 0,
    )


def _from_row(row: tuple) -> StoredEvent:
    ev = StoredEvent(*row)
    ev.ciphertext = bytes(ev.ciphertext)
    ev.provisional = bool(ev.provisional)
    return ev


def _load_events(db: psycopg.Connection, where: str, args: tuple) -> dict[str, GroupIndex]:
    """The sorted index of the groups the ``where`` clause selects, from the database."""
    fresh: dict[str, GroupIndex] = {}
    cur = db.cursor()
    for group_id, event_id, content_hash in cur.stream(
        f"SELECT group_id, event_id, content_hash FROM events{where} "  # type: ignore[arg-type]
        "ORDER BY group_id, event_id",
        args,
        size=5000,
    ):
        index = fresh.get(group_id)
        if index is None:
            index = fresh[group_id] = GroupIndex()
        index.add(event_id, event_term(event_id, content_hash))
    for group_id, author, seq in cur.stream(
        f"SELECT group_id, author, seq FROM events{where} "  # type: ignore[arg-type]
        "ORDER BY group_id, author, seq",
        args,
        size=5000,
    ):
        fresh[group_id].add_seq(author, seq)
    return fresh


class PostgresStore(PostgresRecords):
    """Durable events, outbox, pins, replay cache and own counters of one node."""

    def __init__(self, db: psycopg.Connection, *, url: str, worker: int | None = None) -> None:
        self._db = db
        self.url = url
        self._worker = worker  # which worker's lock to take again after a reconnect
        self.path = shown_url(url)  # what messages name, as SQLiteStore.path
        self.write_error: str | None = None
        self._in_tx = False
        self._touched: set[str] = set()  # groups written by the open transaction
        # After a failed transaction whose rollback could not be read back (the connection
        # was lost): the groups to reload, with the outbox counts, once it is back.
        self._stale: set[str] | None = None
        self._index = Index()
        self._outbox_counts: dict[tuple[str, str], int] = {}
        self._equivocators: dict[str, set[str]] = {}
        self._last_prune: float | None = None
        self._changed: set[str] = set()
        self._outbox_changed = True
        self._reload(None)

    @classmethod
    def open(cls, url: str, worker: int | None = None) -> PostgresStore:
        """Open (creating or migrating if needed) the store at ``url``.

        Raises :class:`~node.storage.errors.StoreFileError` when the database cannot be
        reached or holds something this version cannot use (one line, no password).
        """
        db, _ = open_database(url, worker)
        try:
            return cls(db, url=url, worker=worker)
        except psycopg.Error as exc:
            db.close()
            raise StoreFileError(
                f"cannot load the event store {shown_url(url)}: {one_line(exc)}"
            ) from None

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ connection

    def _connected(self) -> psycopg.Connection:
        """The connection, made again (and the store locked again) if it was lost; groups
        whose transaction failed while it was down are reloaded first."""
        if self._db.closed or self._db.broken:
            try:
                db = connect(self.url)
            except Exception as exc:
                raise self._unavailable(exc) from exc
            try:
                lock(db, self.url, self._worker)
            except Exception as exc:
                db.close()
                raise self._unavailable(exc) from exc
            self._db = db
        if self._stale is not None:
            try:
                self._reload(self._stale)
            except psycopg.Error as exc:
                raise self._unavailable(exc) from exc
            self._stale = None
        return self._db

    def _read(self, sql: str, args: tuple = ()) -> psycopg.Cursor:
        """One query: inside the open transaction, or on its own."""
        if self._in_tx:
            return self._db.execute(sql, args)  # type: ignore[arg-type]
        try:
            return self._connected().execute(sql, args)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group commit: the block's writes are durable once it exits without error.

        Nested use joins the outer transaction. On an exception everything is rolled
        back, the in-memory index included.
        """
        if self._in_tx:
            yield
            return
        db = self._connected()
        try:
            db.execute("BEGIN")
        except psycopg.Error as exc:
            if _cannot_write_now(exc):
                raise self._unavailable(exc) from exc
            raise
        self._in_tx = True
        try:
            yield
            db.execute("COMMIT")
        except BaseException as exc:
            self._in_tx = False
            if not db.broken:
                with contextlib.suppress(psycopg.Error):
                    db.execute("ROLLBACK")
            self._restore(self._touched)
            self._touched = set()
            if _cannot_write_now(exc):
                raise self._unavailable(exc) from exc
            raise
        self._in_tx = False
        self._touched.clear()
        self.write_error = None

    def _restore(self, groups: set[str]) -> None:
        """After a rollback: the touched groups as the database holds them, now or (the
        connection being lost) as soon as it is back."""
        try:
            if self._db.broken:
                raise psycopg.OperationalError("connection lost")
            self._reload(groups)
        except psycopg.Error:
            self._stale = (self._stale or set()) | groups

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        sqlstate = getattr(exc, "sqlstate", None)
        self.write_error = one_line(exc) + (f" ({sqlstate})" if sqlstate else "")
        return StoreUnavailable(f"cannot write {self.path}: {self.write_error}")

    def _write(self, sql: str, args: tuple = ()) -> psycopg.Cursor:
        """One statement, in a transaction (the open one, or its own)."""
        if self._in_tx:
            return self._db.execute(sql, args)  # type: ignore[arg-type]
        with self.transaction():
            return self._db.execute(sql, args)  # type: ignore[arg-type]

    def probe_write(self) -> None:
        """A small real write: returns once writes succeed again, raises while they fail."""
        self._write(
            "INSERT INTO meta (key, value) VALUES ('write_probe', '1') "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def take_changes(self) -> tuple[set[str], bool]:
        """Groups whose events or equivocators changed, and whether any outbox count did,
        since the last call (the store thread republishes its summary from this)."""
        groups, self._changed = self._changed, set()
        outbox, self._outbox_changed = self._outbox_changed, False
        return groups, outbox

    # ------------------------------------------------------------------ loading

    def _reload(self, groups: set[str] | None) -> None:
        """Rebuild in-memory state from the database (all groups, or those given)."""
        db = self._db
        if groups is None:
            fresh = _load_events(db, "", ())
            self._index = Index()
            self._index.groups.update(fresh)
        elif groups:
            fresh = _load_events(db, " WHERE group_id = ANY(%s)", (list(groups),))
            for g in groups:
                self._index.groups.pop(g, None)
            self._index.groups.update(fresh)
        self._outbox_counts = {
            (peer, group): n
            for peer, group, n in db.execute(
                "SELECT peer_id, group_id, COUNT(*) FROM outbox GROUP BY peer_id, group_id"
            )
        }
        self._equivocators = {}
        for group_id, author in db.execute("SELECT group_id, author FROM equivocators"):
            self._equivocators.setdefault(group_id, set()).add(author)
        self._changed.update(self._index.groups if groups is None else groups)
        self._changed.update(self._equivocators)
        self._outbox_changed = True

    def _touch(self, group_id: str) -> None:
        """A write to the group: reload it if the transaction rolls back, republish it."""
        if self._in_tx:
            self._touched.add(group_id)
        self._changed.add(group_id)

    def _group(self, group_id: str) -> GroupIndex:
        """The index of a group about to be written."""
        self._touch(group_id)
        return self._index.group(group_id)

    # ------------------------------------------------------------------ events

    def match(self, group_id: str, event_id: str, content_hash: str) -> bool | None:
        """Is (group, event_id) held with this content hash? None when not held at all."""
        return self._index.match(group_id, event_id, content_hash)

    def has_event(self, group_id: str, event_id: str) -> bool:
        return self._index.holds(group_id, event_id)

    def seq_held(self, group_id: str, author: str, seq: int) -> bool:
        """Is some event of ``author`` at ``seq`` held? (no database read)"""
        return self._index.seq_held(group_id, author, seq)

    def get_event(self, group_id: str, event_id: str) -> StoredEvent | None:
        row = self._read(
            f"SELECT {_COLUMNS} FROM events WHERE group_id = %s AND event_id = %s",
            (group_id, event_id),
        ).fetchone()
        return None if row is None else _from_row(row)

    def events_by_author_seq(self, group_id: str, author: str, seq: int) -> list[StoredEvent]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM events WHERE group_id = %s AND author = %s AND seq = %s "
            "ORDER BY event_id",
            (group_id, author, seq),
        )
        return [_from_row(r) for r in rows]

    def insert_event(self, ev: StoredEvent) -> bool:
        """Store a new event; False (and nothing written) if its event_id is already held."""
        if self._index.holds(ev.group_id, ev.event_id):
            return False
        term = event_term(ev.event_id, ev.content_hash)
        self._write(_INSERT_EVENT, _row(ev))
        index = self._group(ev.group_id)
        index.add(ev.event_id, term)
        index.add_seq(ev.author, ev.seq)
        return True

    def insert_events(self, events: Sequence[StoredEvent]) -> int:
        """Store many new events with one COPY; ids already held are skipped."""
        fresh: dict[tuple[str, str], StoredEvent] = {}
        for ev in events:
            key = (ev.group_id, ev.event_id)
            if key not in fresh and not self._index.holds(*key):
                fresh[key] = ev
        if not fresh:
            return 0
        with self.transaction():
            with self._db.cursor().copy(_COPY_EVENTS) as copy:
                for ev in fresh.values():
                    copy.write_row(_row(ev))
            for ev in fresh.values():
                index = self._group(ev.group_id)
                index.add(ev.event_id, event_term(ev.event_id, ev.content_hash))
                index.add_seq(ev.author, ev.seq)
        return len(fresh)

    def replace_event(self, ev: StoredEvent) -> bool:
        """Resolve two versions of one event_id (§4.3): the lower content_hash is kept.

        Returns True when ``ev`` is now the stored version (it was lower, or nothing was
        held), False when the stored version stays.
        """
        stored = self.get_event(ev.group_id, ev.event_id)
        if stored is None:
            return self.insert_event(ev)
        if ev.content_hash == stored.content_hash:
            return True
        if ev.content_hash > stored.content_hash:  # lowercase hex: string order = byte order
            return False
        with self.transaction():
            self._db.execute(
                "DELETE FROM events WHERE group_id = %s AND event_id = %s",
                (ev.group_id, ev.event_id),
            )
            self._db.execute(_INSERT_EVENT, _row(ev))
            index = self._group(ev.group_id)
            index.change(ev.event_id, event_term(ev.event_id, ev.content_hash))
            index.remove_seq(stored.author, stored.seq)
            index.add_seq(ev.author, ev.seq)
        return True

    def delete_event(self, group_id: str, event_id: str) -> bool:
        """Remove one event and its outbox entries (a provisional event that failed, §3.2)."""
        stored = self.get_event(group_id, event_id)
        if stored is None:
            return False
        with self.transaction():
            self._db.execute(
                "DELETE FROM events WHERE group_id = %s AND event_id = %s", (group_id, event_id)
            )
            removed = self._db.execute(
                "DELETE FROM outbox WHERE group_id = %s AND event_id = %s RETURNING peer_id",
                (group_id, event_id),
            ).fetchall()
            for (peer,) in removed:
                self._bump_outbox(peer, group_id, -1)
            index = self._group(group_id)
            index.discard(event_id)
            index.remove_seq(stored.author, stored.seq)
        return True

    def provisional_events(self, author: str) -> list[StoredEvent]:
        """Events verified with an unconfirmed key of ``author``, to verify again (§3.2)."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM events WHERE author = %s AND provisional = 1 "
            "ORDER BY group_id, event_id",
            (author,),
        )
        return [_from_row(r) for r in rows]

    def confirm_events(self, group_id: str, event_ids: Iterable[str]) -> None:
        """Clear the provisional mark of events whose key has been confirmed."""
        self._write(
            "UPDATE events SET provisional = 0 WHERE group_id = %s AND event_id = ANY(%s)",
            (group_id, list(event_ids)),
        )

    def count(self, group_id: str) -> int:
        return self._index.count(group_id)

    def groups(self) -> list[str]:
        """The groups holding at least one event, sorted."""
        return self._index.names()

    def get_events(self, group_id: str, event_ids: Iterable[str]) -> list[StoredEvent]:
        """The held events among ``event_ids``, in event_id order; unknown ids are skipped."""
        index = self._index.get(group_id)
        wanted = sorted({e for e in event_ids if e in index})
        if not wanted:
            return []
        rows = self._read(
            f"SELECT {_COLUMNS} FROM events WHERE group_id = %s AND event_id = ANY(%s) "
            "ORDER BY event_id",
            (group_id, wanted),
        )
        return [_from_row(r) for r in rows]

    # ------------------------------------------------------------------ anti-entropy (§5)

    def summary(self, group_id: str) -> tuple[int, str]:
        """(count, fingerprint) of the whole group, O(1)."""
        return self._index.summary(group_id)

    def authors(self, group_id: str) -> dict[str, dict]:
        """The §5.2 ``authors`` map: author → {max_seq, contiguous_seq, count}."""
        return self._index.authors(group_id)

    def range_summary(self, group_id: str, lo: str = "", hi: str = "") -> tuple[int, str]:
        """(count, fingerprint) of the events with lo ≤ event_id < hi (empty = open)."""
        return self._index.range_summary(group_id, lo, hi)

    def ids_in_range(self, group_id: str, lo: str = "", hi: str = "") -> list[str]:
        return self._index.ids_in_range(group_id, lo, hi)

    def digest(
        self,
        group_id: str,
        server_id: str,
        lo: str = "",
        hi: str = "",
        buckets: int = DEFAULT_BUCKETS,
    ) -> dict:
        """The §5.2 digest document, from memory (no SQL)."""
        return self._index.digest(group_id, server_id, lo, hi, buckets)

    # ------------------------------------------------------------------ outbox (§4)

    def _bump_outbox(self, peer_id: str, group_id: str, delta: int) -> None:
        key = (peer_id, group_id)
        n = self._outbox_counts.get(key, 0) + delta
        if n:
            self._outbox_counts[key] = n
        else:
            self._outbox_counts.pop(key, None)
        self._outbox_changed = True

    def outbox_add(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> int:
        """Queue events for a peer until it acknowledges them; returns how many were new."""
        ids = list(event_ids)
        if not ids:
            return 0
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO outbox (peer_id, group_id, event_id) "
                "SELECT %s, %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (peer_id, group_id, ids),
            )
            added = max(cur.rowcount, 0)
            if added:
                self._bump_outbox(peer_id, group_id, added)
        return added

    def outbox_pending(
        self, peer_id: str, group_id: str, after: str = "", limit: int = 1000
    ) -> list[StoredEvent]:
        """Queued events with event_id > ``after``, in event_id order (the replay order)."""
        rows = self._read(
            f"SELECT {_E_COLUMNS} FROM outbox o JOIN events e "
            "ON e.group_id = o.group_id AND e.event_id = o.event_id "
            "WHERE o.peer_id = %s AND o.group_id = %s AND o.event_id > %s "
            "ORDER BY o.event_id LIMIT %s",
            (peer_id, group_id, after, limit),
        )
        return [_from_row(r) for r in rows]

    def outbox_remove(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> int:
        ids = list(event_ids)
        if not ids:
            return 0
        with self.transaction():
            cur = self._db.execute(
                "DELETE FROM outbox WHERE peer_id = %s AND group_id = %s AND event_id = ANY(%s)",
                (peer_id, group_id, ids),
            )
            removed = max(cur.rowcount, 0)
            if removed:
                self._bump_outbox(peer_id, group_id, -removed)
        return removed

    def outbox_holds(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> set[str]:
        """The ids among ``event_ids`` still queued for ``peer_id`` (not yet acknowledged)."""
        ids = list(event_ids)
        if not ids:
            return set()
        rows = self._read(
            "SELECT event_id FROM outbox WHERE peer_id = %s AND group_id = %s "
            "AND event_id = ANY(%s)",
            (peer_id, group_id, ids),
        )
        return {r[0] for r in rows}

    def outbox_count(self, peer_id: str, group_id: str) -> int:
        return self._outbox_counts.get((peer_id, group_id), 0)

    def outbox_counts(self) -> dict[tuple[str, str], int]:
        """Every non-empty outbox: (peer_id, group_id) → queued events."""
        return dict(self._outbox_counts)

    # ------------------------------------------------------------------ own counter

    def next_own_seq(self, group_id: str, author: str | None = None) -> int:
        """The next ``seq`` this node may author in ``group_id``, durably reserved.

        Call it inside the transaction that stores the event: then a crash leaves either
        both (seq used) or neither, never a reuse (as SQLiteStore.next_own_seq).
        """
        with self.transaction():
            row = self._db.execute(
                "SELECT next_seq FROM own_seq WHERE group_id = %s FOR UPDATE", (group_id,)
            ).fetchone()
            seq = 1 if row is None else row[0]
            if author is not None:
                seq = max(seq, self._index.get(group_id).max_seq(author) + 1)
            self._db.execute(
                "INSERT INTO own_seq (group_id, next_seq) VALUES (%s, %s) "
                "ON CONFLICT (group_id) DO UPDATE SET next_seq = EXCLUDED.next_seq",
                (group_id, seq + 1),
            )
        return seq

    # ------------------------------------------------------------------ equivocation

    def mark_equivocating(self, group_id: str, author: str) -> None:
        held = self._equivocators.setdefault(group_id, set())
        if author in held:
            return
        self._write(
            "INSERT INTO equivocators (group_id, author) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (group_id, author),
        )
        held.add(author)
        self._touch(group_id)

    def equivocators(self, group_id: str) -> list[str]:
        return sorted(self._equivocators.get(group_id, ()))
