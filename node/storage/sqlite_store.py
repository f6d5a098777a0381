"""The node's durable state on SQLite: :class:`SQLiteStore`, one implementation of ``Store``.

Why it is built this way:

- One connection, owned by one thread (the store thread). SQLite serialises writers
  anyway; a single owner keeps transactions and the in-memory index in lock step.
- WAL with ``synchronous=FULL``: every COMMIT fsyncs the WAL, so once a
  :meth:`SQLiteStore.transaction` block has exited, what it wrote survives a power cut.
  That is the precondition for sending an ACK (§4.4). Group commit (many events per
  transaction) pays for that fsync once per batch instead of once per event.
- Fingerprints, digests and per-author seqs (§5.1, §5.2) are answered from memory by the
  sorted index of :mod:`node.sync.index`, loaded at open and updated with every write;
  a rolled-back transaction reloads the groups it touched.
- The index's event-id → term map doubles as the duplicate check of §4.3: an event whose
  term equals the stored term has the same content hash (SHA-256 is collision
  resistant), so a duplicate is recognised without a database read.
- A write that cannot be made durable now (a full disk, a file size limit, an I/O error,
  another process holding the lock) is rolled back and raised as
  :class:`~node.storage.errors.StoreUnavailable`; :attr:`SQLiteStore.write_error` says
  why until a write succeeds again. The file itself is judged, versioned and migrated by
  :mod:`node.storage.sqlite_schema` before anything reads it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from node.storage.errors import StoreUnavailable
from node.storage.sqlite_records import NodeRecords
from node.storage.sqlite_schema import file_error, open_database
from node.storage.store import StoredEvent
from node.sync.digest import DEFAULT_BUCKETS
from node.sync.fingerprint import event_term
from node.sync.index import GroupIndex, Index

_SQL_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit


_COLUMNS = (
    "group_id, event_id, author, seq, ciphertext, content_hash, key_id, signature, "
    "received_at, hop, provisional"
)
_E_COLUMNS = ", ".join("e." + c.strip() for c in _COLUMNS.split(","))
_INSERT_EVENT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Primary result codes that mean "cannot write now, try again later", not "a bug".
_CANNOT_WRITE_NOW = frozenset(
    {
        sqlite3.SQLITE_FULL,  # no space, or max_page_count
        sqlite3.SQLITE_IOERR,  # EFBIG (RLIMIT_FSIZE), EIO, a failed fsync
        sqlite3.SQLITE_READONLY,  # the file or its filesystem became read-only
        sqlite3.SQLITE_BUSY,  # another process holds the write lock
        sqlite3.SQLITE_CANTOPEN,  # the WAL or shm file cannot be created
    }
)


def _cannot_write_now(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _CANNOT_WRITE_NOW


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
    ev.provisional = bool(ev.provisional)
    return ev


def _load_events(db: sqlite3.Connection, where: str, args: tuple) -> dict[str, GroupIndex]:
    """The sorted index of the groups the ``where`` clause selects, from the database."""
    fresh: dict[str, GroupIndex] = {}
    for group_id, event_id, content_hash in db.execute(
        f"SELECT group_id, event_id, content_hash FROM events{where} ORDER BY group_id, event_id",
        args,
    ):
        index = fresh.get(group_id)
        if index is None:
            index = fresh[group_id] = GroupIndex()
        index.add(event_id, event_term(event_id, content_hash))
    for group_id, author, seq in db.execute(
        f"SELECT group_id, author, seq FROM events{where} ORDER BY group_id, author, seq", args
    ):
        fresh[group_id].add_seq(author, seq)
    return fresh


class SQLiteStore(NodeRecords):
    """Durable events, outbox, pins, replay cache and own counters of one node."""

    def __init__(self, db: sqlite3.Connection, *, path: str = ":memory:") -> None:
        self._db = db
        self.path = path
        # Why the last write failed, until one succeeds again (None: writes succeed).
        self.write_error: str | None = None
        self._in_tx = False
        self._touched: set[str] = set()  # groups written by the open transaction
        self._index = Index()
        self._outbox_counts: dict[tuple[str, str], int] = {}
        self._equivocators: dict[str, set[str]] = {}
        self._last_prune: float | None = None
        # What changed since take_changes() last asked: everything, at first.
        self._changed: set[str] = set()
        self._outbox_changed = True
        self._reload(None)

    @classmethod
    def open(cls, path: str) -> SQLiteStore:
        """Open (creating if needed) the store at ``path``; ``":memory:"`` for tests.

        Raises :class:`~node.storage.errors.StoreFileError` for a file that is not a
        store this version can use (see :mod:`node.storage.sqlite_schema`).
        """
        db, _ = open_database(path)
        try:
            return cls(db, path=path)
        except sqlite3.DatabaseError as exc:  # damage the quick check did not see
            db.close()
            raise file_error(path, exc) from exc

    def close(self) -> None:
        self._db.close()

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
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if _cannot_write_now(exc):
                raise self._unavailable(exc) from exc
            raise
        self._in_tx = True
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._in_tx = False
            if self._db.in_transaction:
                # After SQLITE_FULL or an I/O error SQLite may have rolled back already.
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            self._reload(self._touched)
            self._touched = set()
            if _cannot_write_now(exc):
                raise self._unavailable(exc) from exc
            raise
        self._in_tx = False
        self._touched.clear()
        self.write_error = None

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        self.write_error = f"{exc} ({getattr(exc, 'sqlite_errorname', 'error')})"
        return StoreUnavailable(f"cannot write {self.path}: {self.write_error}")

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        """One statement, in a transaction (the open one, or its own)."""
        if self._in_tx:
            return self._db.execute(sql, args)
        with self.transaction():
            return self._db.execute(sql, args)

    def probe_write(self) -> None:
        """A small real write: returns once writes succeed again, raises while they fail."""
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES ('write_probe', ?)", (1,))

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
            self._index = Index()
            self._index.groups.update(_load_events(db, "", ()))
        elif groups:
            for g in groups:
                self._index.groups.pop(g, None)
            marks = ",".join("?" * len(groups))
            where = f" WHERE group_id IN ({marks})"
            self._index.groups.update(_load_events(db, where, tuple(groups)))
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
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE group_id = ? AND event_id = ?",
            (group_id, event_id),
        ).fetchone()
        return None if row is None else _from_row(row)

    def events_by_author_seq(self, group_id: str, author: str, seq: int) -> list[StoredEvent]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE group_id = ? AND author = ? AND seq = ? "
            "ORDER BY event_id",
            (group_id, author, seq),
        )
        return [_from_row(r) for r in rows]

    def insert_event(self, ev: StoredEvent) -> bool:
        """Store a new event; False (and nothing written) if its event_id is already held."""
        if self._index.holds(ev.group_id, ev.event_id):
            return False
        term = event_term(ev.event_id, ev.content_hash)
        if self._in_tx:
            self._db.execute(_INSERT_EVENT, _row(ev))
        else:
            self._write(_INSERT_EVENT, _row(ev))
        index = self._group(ev.group_id)
        index.add(ev.event_id, term)
        index.add_seq(ev.author, ev.seq)
        return True

    def insert_events(self, events: Sequence[StoredEvent]) -> int:
        """Store many new events with one statement; ids already held are skipped."""
        fresh: dict[tuple[str, str], StoredEvent] = {}
        for ev in events:
            key = (ev.group_id, ev.event_id)
            if key not in fresh and not self._index.holds(*key):
                fresh[key] = ev
        if not fresh:
            return 0
        with self.transaction():
            self._db.executemany(_INSERT_EVENT, [_row(ev) for ev in fresh.values()])
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
                "DELETE FROM events WHERE group_id = ? AND event_id = ?",
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
                "DELETE FROM events WHERE group_id = ? AND event_id = ?", (group_id, event_id)
            )
            for peer, n in self._db.execute(
                "SELECT peer_id, COUNT(*) FROM outbox WHERE group_id = ? AND event_id = ? "
                "GROUP BY peer_id",
                (group_id, event_id),
            ).fetchall():
                self._bump_outbox(peer, group_id, -n)
            self._db.execute(
                "DELETE FROM outbox WHERE group_id = ? AND event_id = ?", (group_id, event_id)
            )
            index = self._group(group_id)
            index.discard(event_id)
            index.remove_seq(stored.author, stored.seq)
        return True

    def provisional_events(self, author: str) -> list[StoredEvent]:
        """Events verified with an unconfirmed key of ``author``, to verify again (§3.2)."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE author = ? AND provisional = 1 "
            "ORDER BY group_id, event_id",
            (author,),
        )
        return [_from_row(r) for r in rows]

    def confirm_events(self, group_id: str, event_ids: Iterable[str]) -> None:
        """Clear the provisional mark of events whose key has been confirmed."""
        with self.transaction():  # one commit, not one per row
            self._db.executemany(
                "UPDATE events SET provisional = 0 WHERE group_id = ? AND event_id = ?",
                [(group_id, e) for e in event_ids],
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
        out: list[StoredEvent] = []
        for start in range(0, len(wanted), _SQL_CHUNK):
            chunk = wanted[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE group_id = ? AND event_id IN ({marks}) "
                "ORDER BY event_id",
                (group_id, *chunk),
            )
            out.extend(_from_row(r) for r in rows)
        return out

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
        with self.transaction():
            cur = self._db.executemany(
                "INSERT OR IGNORE INTO outbox (peer_id, group_id, event_id) VALUES (?, ?, ?)",
                [(peer_id, group_id, e) for e in event_ids],
            )
        added = max(cur.rowcount, 0)
        if added:
            self._bump_outbox(peer_id, group_id, added)
        return added

    def outbox_pending(
        self, peer_id: str, group_id: str, after: str = "", limit: int = 1000
    ) -> list[StoredEvent]:
        """Queued events with event_id > ``after``, in event_id order (the replay order)."""
        rows = self._db.execute(
            f"SELECT {_E_COLUMNS} FROM outbox o JOIN events e "
            "ON e.group_id = o.group_id AND e.event_id = o.event_id "
            "WHERE o.peer_id = ? AND o.group_id = ? AND o.event_id > ? "
            "ORDER BY o.event_id LIMIT ?",
            (peer_id, group_id, after, limit),
        )
        return [_from_row(r) for r in rows]

    def outbox_remove(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> int:
        # One transaction: outside one, executemany commits (and fsyncs) once per row.
        with self.transaction():
            cur = self._db.executemany(
                "DELETE FROM outbox WHERE peer_id = ? AND group_id = ? AND event_id = ?",
                [(peer_id, group_id, e) for e in event_ids],
            )
        removed = max(cur.rowcount, 0)
        if removed:
            self._bump_outbox(peer_id, group_id, -removed)
        return removed

    def outbox_holds(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> set[str]:
        """The ids among ``event_ids`` still queued for ``peer_id`` (not yet acknowledged)."""
        ids = list(event_ids)
        held: set[str] = set()
        for start in range(0, len(ids), _SQL_CHUNK):
            chunk = ids[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT event_id FROM outbox WHERE peer_id = ? AND group_id = ? "
                f"AND event_id IN ({marks})",
                (peer_id, group_id, *chunk),
            )
            held.update(r[0] for r in rows)
        return held

    def outbox_count(self, peer_id: str, group_id: str) -> int:
        return self._outbox_counts.get((peer_id, group_id), 0)

    def outbox_counts(self) -> dict[tuple[str, str], int]:
        """Every non-empty outbox: (peer_id, group_id) → queued events."""
        return dict(self._outbox_counts)

    # ------------------------------------------------------------------ own counter

    def next_own_seq(self, group_id: str, author: str | None = None) -> int:
        """The next ``seq`` this node may author in ``group_id``, durably reserved.

        Call it inside the transaction that stores the event: then a crash leaves either
        both (seq used) or neither (nothing was signed out of the store), never a reuse.
        With ``author`` the counter also skips past any seq of that author already held
        (own events learned back from peers after a data loss).
        """
        with self.transaction():
            row = self._db.execute(
                "SELECT next_seq FROM own_seq WHERE group_id = ?", (group_id,)
            ).fetchone()
            seq = 1 if row is None else row[0]
            if author is not None:
                seq = max(seq, self._index.get(group_id).max_seq(author) + 1)
            self._db.execute(
                "INSERT OR REPLACE INTO own_seq (group_id, next_seq) VALUES (?, ?)",
                (group_id, seq + 1),
            )
        return seq

    # ------------------------------------------------------------------ equivocation

    def mark_equivocating(self, group_id: str, author: str) -> None:
        held = self._equivocators.setdefault(group_id, set())
        if author in held:
            return
        self._write(
            "INSERT OR IGNORE INTO equivocators (group_id, author) VALUES (?, ?)",
            (group_id, author),
        )
        held.add(author)
        self._touch(group_id)

    def equivocators(self, group_id: str) -> list[str]:
        return sorted(self._equivocators.get(group_id, ()))
