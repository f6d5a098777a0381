"""The node's durable state on SQLite, and the in-memory indexes anti-entropy reads.

Why it is built this way:

- One connection, owned by one thread (the node's writer). SQLite serialises writers
  anyway; a single owner keeps transactions and the in-memory indexes in lock step.
- WAL with ``synchronous=FULL``: every COMMIT fsyncs the WAL, so once a
  :meth:`Store.transaction` block has exited, what it wrote survives a power cut. That is
  the precondition for sending an ACK (§4.4). Group commit (many events per transaction)
  pays for that fsync once per batch instead of once per event.
- Fingerprints and digests (§5.1, §5.2) are answered from memory. Per group the store
  keeps the sorted event ids, each event's fingerprint term, an O(1) accumulator for the
  whole group and prefix sums of the terms, recomputed lazily from the first position that
  changed. A range's fingerprint is then the difference of two prefix sums found by
  bisection, so a digest of a 100k-event group costs milliseconds, not a table scan.
- Per author the store tracks (max_seq, contiguous_seq, count) incrementally; only seqs
  above the contiguous prefix are kept in a set, so an in-order author costs no memory.
- The event-id → term map doubles as the duplicate check of §4.3: an event whose term
  equals the stored term has the same content hash (SHA-256 is collision resistant), so a
  duplicate is recognised without a database read.
"""

from __future__ import annotations

import base64
import sqlite3
from bisect import bisect_left
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import orjson

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import Event
from node.protocol.ids import is_ulid
from node.sync.fingerprint import Accumulator, event_term, fingerprint

_MASK = (1 << 256) - 1
_SCHEMA_VERSION = 1
# Rough size of an EVENT line around its variable fields (keys, quotes, frame envelope):
# used only to stop a checkpoint page near its byte cap (§5.3).
_EVENT_LINE_OVERHEAD = 256
_SQL_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
_REPLAY_PRUNE_EVERY = 60.0  # seconds of `now` between prunes of the replay cache

_SCHEMA = """
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

_COLUMNS = (
    "group_id, event_id, author, seq, ciphertext, content_hash, key_id, signature, "
    "received_at, hop, provisional"
)
_E_COLUMNS = ", ".join("e." + c.strip() for c in _COLUMNS.split(","))
_INSERT_EVENT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(slots=True)
class StoredEvent:
    """One event as held: the authored fields plus where and when it arrived."""

    group_id: str
    event_id: str
    author: str
    seq: int
    ciphertext: bytes
    content_hash: str
    key_id: str
    signature: str
    received_at: float = 0.0
    hop: str = ""
    provisional: bool = False

    @classmethod
    def from_event(
        cls,
        group_id: str,
        event: Event,
        ciphertext: bytes,
        *,
        received_at: float,
        hop: str,
        provisional: bool = False,
    ) -> StoredEvent:
        """From a checked EVENT payload; ``ciphertext`` is its already-decoded bytes."""
        return cls(
            group_id,
            event.event_id,
            event.author,
            event.seq,
            ciphertext,
            event.content_hash,
            event.key_id,
            event.signature,
            received_at,
            hop,
            provisional,
        )

    def to_event(self) -> Event:
        return Event(
            self.event_id,
            self.author,
            self.seq,
            base64.b64encode(self.ciphertext).decode("ascii"),
            self.content_hash,
            self.key_id,
            self.signature,
        )

    def _row(self) -> tuple:
        return (
            self.group_id,
            self.event_id,
            self.author,
            self.seq,
            self.ciphertext,
            self.content_hash,
            self.key_id,
            self.signature,
            self.received_at,
            self.hop,
            1 if self.provisional else 0,
        )


def _from_row(row: tuple) -> StoredEvent:
    ev = StoredEvent(*row)
    ev.provisional = bool(ev.provisional)
    return ev


def _line_estimate(ev: StoredEvent) -> int:
    """Bytes of the EVENT line that will carry ``ev``, near enough for a page cap."""
    return (
        (len(ev.ciphertext) + 2) // 3 * 4
        + len(ev.event_id)
        + len(ev.author)
        + len(ev.group_id)
        + len(ev.content_hash)
        + len(ev.key_id)
        + len(ev.signature)
        + _EVENT_LINE_OVERHEAD
    )


# --------------------------------------------------------------------------- in memory


class _AuthorSeqs:
    """(max_seq, contiguous_seq, count) of one author in one group, kept incrementally.

    Only seqs above the contiguous prefix are remembered (``above``): for an author
    whose events arrive in order that set stays empty.
    """

    __slots__ = ("above", "contiguous", "count", "max_seq")

    def __init__(self) -> None:
        self.count = 0
        self.max_seq = 0
        self.contiguous = 0
        self.above: set[int] = set()

    def holds(self, seq: int) -> bool:
        return seq <= self.contiguous or seq in self.above

    def add(self, seq: int) -> None:
        self.count += 1
        if seq > self.max_seq:
            self.max_seq = seq
        if seq == self.contiguous + 1:
            self.contiguous = seq
            above = self.above
            while above and self.contiguous + 1 in above:
                self.contiguous += 1
                above.remove(self.contiguous)
        elif seq > self.contiguous:
            self.above.add(seq)

    def remove(self, seq: int, still_held: bool, max_held: int) -> None:
        """Forget one event at ``seq``; the caller says what the database still holds."""
        self.count -= 1
        self.max_seq = max_held
        if still_held:
            return
        if seq <= self.contiguous:
            self.above.update(range(seq + 1, self.contiguous + 1))
            self.contiguous = seq - 1
        else:
            self.above.discard(seq)

    def as_dict(self) -> dict:
        return {"max_seq": self.max_seq, "contiguous_seq": self.contiguous, "count": self.count}


class _GroupIndex:
    """Sorted event ids of one group with their fingerprint terms and lazy prefix sums."""

    __slots__ = ("acc", "authors", "ids", "prefix", "terms", "valid")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.terms: dict[str, int] = {}
        # prefix[i] = sum of the terms of ids[:i] (mod 2^256), trustworthy for i <= valid.
        self.prefix: list[int] = [0]
        self.valid = 0
        self.acc = Accumulator()
        self.authors: dict[str, _AuthorSeqs] = {}

    def add(self, event_id: str, term: int) -> None:
        ids = self.ids
        if not ids or ids[-1] < event_id:
            pos = len(ids)
            ids.append(event_id)
        else:
            pos = bisect_left(ids, event_id)
            ids.insert(pos, event_id)
        self.terms[event_id] = term
        self.acc.add(term)
        if pos < self.valid:
            self.valid = pos

    def change(self, event_id: str, term: int) -> None:
        old = self.terms[event_id]
        self.terms[event_id] = term
        self.acc.remove(old)
        self.acc.add(term)
        pos = bisect_left(self.ids, event_id)
        if pos < self.valid:
            self.valid = pos

    def discard(self, event_id: str) -> None:
        term = self.terms.pop(event_id)
        pos = bisect_left(self.ids, event_id)
        del self.ids[pos]
        self.acc.remove(term)
        if pos < self.valid:
            self.valid = pos

    def author(self, author: str) -> _AuthorSeqs:
        state = self.authors.get(author)
        if state is None:
            state = self.authors[author] = _AuthorSeqs()
        return state

    def _prefix(self) -> list[int]:
        prefix = self.prefix
        n = len(self.ids)
        if self.valid < n or len(prefix) != n + 1:
            del prefix[self.valid + 1 :]
            total = prefix[-1]
            terms = self.terms
            append = prefix.append
            for event_id in self.ids[self.valid :]:
                total = (total + terms[event_id]) & _MASK
                append(total)
            self.valid = n
        return prefix

    def bounds(self, lo: str, hi: str) -> tuple[int, int]:
        """Positions [i, j) of the ids in [lo, hi); an empty bound is open (§5.1)."""
        ids = self.ids
        i = bisect_left(ids, lo) if lo else 0
        j = bisect_left(ids, hi) if hi else len(ids)
        return i, max(i, j)

    def summary(self, i: int, j: int) -> tuple[int, str]:
        if i == 0 and j == len(self.ids):
            return j, self.acc.fingerprint()
        prefix = self._prefix()
        return j - i, fingerprint(prefix[j] - prefix[i], j - i)


_EMPTY = _GroupIndex()


def _check_bound(value: str, name: str) -> None:
    if value and not is_ulid(value):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{name} must be empty or a canonical ULID")


# --------------------------------------------------------------------------- the store


class Store:
    """Durable events, outbox, pins, replay cache and own counters of one node."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._in_tx = False
        self._touched: set[str] = set()
        self._groups: dict[str, _GroupIndex] = {}
        self._outbox_counts: dict[tuple[str, str], int] = {}
        self._equivocators: dict[str, set[str]] = {}
        self._last_prune: float | None = None
        self._load()

    @classmethod
    def open(cls, path: str) -> Store:
        """Open (creating if needed) the store at ``path``; ``":memory:"`` for tests."""
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-65536")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        return cls(db)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group commit: the block's writes are durable once it exits without error.

        Nested use joins the outer transaction. On an exception everything is rolled
        back, the in-memory indexes included.
        """
        if self._in_tx:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._in_tx = False
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._reload(self._touched)
            self._touched = set()
            raise
        self._in_tx = False
        self._touched.clear()

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        self._reload(None)

    def _reload(self, groups: set[str] | None) -> None:
        """Rebuild in-memory state from the database (all groups, or those given)."""
        db = self._db
        if groups is None:
            self._groups = {}
            self._load_events("", ())
        elif groups:
            for g in groups:
                self._groups.pop(g, None)
            marks = ",".join("?" * len(groups))
            self._load_events(f" WHERE group_id IN ({marks})", tuple(groups))
        self._outbox_counts = {
            (peer, group): n
            for peer, group, n in db.execute(
                "SELECT peer_id, group_id, COUNT(*) FROM outbox GROUP BY peer_id, group_id"
            )
        }
        self._equivocators = {}
        for group_id, author in db.execute("SELECT group_id, author FROM equivocators"):
            self._equivocators.setdefault(group_id, set()).add(author)

    def _load_events(self, where: str, args: tuple) -> None:
        db = self._db
        fresh: dict[str, _GroupIndex] = {}
        for group_id, event_id, content_hash in db.execute(
            f"SELECT group_id, event_id, content_hash FROM events{where} "
            "ORDER BY group_id, event_id",
            args,
        ):
            index = fresh.get(group_id)
            if index is None:
                index = fresh[group_id] = _GroupIndex()
            term = event_term(event_id, content_hash)
            index.ids.append(event_id)
            index.terms[event_id] = term
            index.acc.add(term)
        for group_id, author, seq in db.execute(
            f"SELECT group_id, author, seq FROM events{where} ORDER BY group_id, author, seq",
            args,
        ):
            fresh[group_id].author(author).add(seq)
        self._groups.update(fresh)

    def _index(self, group_id: str) -> _GroupIndex:
        index = self._groups.get(group_id)
        if index is None:
            index = self._groups[group_id] = _GroupIndex()
        if self._in_tx:
            self._touched.add(group_id)
        return index

    # ------------------------------------------------------------------ events

    def match(self, group_id: str, event_id: str, content_hash: str) -> bool | None:
        """Is (group, event_id) held with this content hash? None when not held at all.

        No database read: the stored fingerprint term identifies the content hash.
        """
        index = self._groups.get(group_id)
        if index is None:
            return None
        stored = index.terms.get(event_id)
        if stored is None:
            return None
        return stored == event_term(event_id, content_hash)

    def has_event(self, group_id: str, event_id: str) -> bool:
        index = self._groups.get(group_id)
        return index is not None and event_id in index.terms

    def seq_held(self, group_id: str, author: str, seq: int) -> bool:
        """Is some event of ``author`` at ``seq`` held? (no database read)"""
        index = self._groups.get(group_id)
        if index is None:
            return False
        state = index.authors.get(author)
        return state is not None and state.holds(seq)

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
        index = self._index(ev.group_id)
        if ev.event_id in index.terms:
            return False
        term = event_term(ev.event_id, ev.content_hash)
        self._db.execute(_INSERT_EVENT, ev._row())
        index.add(ev.event_id, term)
        index.author(ev.author).add(ev.seq)
        return True

    def insert_events(self, events: Sequence[StoredEvent]) -> int:
        """Store many new events with one statement; ids already held are skipped."""
        rows = []
        fresh = []
        seen: set[tuple[str, str]] = set()
        for ev in events:
            key = (ev.group_id, ev.event_id)
            if key in seen or self.has_event(ev.group_id, ev.event_id):
                continue
            seen.add(key)
            rows.append(ev._row())
            fresh.append(ev)
        if not rows:
            return 0
        with self.transaction():
            self._db.executemany(_INSERT_EVENT, rows)
            for ev in fresh:
                index = self._index(ev.group_id)
                index.add(ev.event_id, event_term(ev.event_id, ev.content_hash))
                index.author(ev.author).add(ev.seq)
        return len(rows)

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
            self._db.execute(_INSERT_EVENT, ev._row())
            index = self._index(ev.group_id)
            index.change(ev.event_id, event_term(ev.event_id, ev.content_hash))
            if (stored.author, stored.seq) != (ev.author, ev.seq):
                index.author(ev.author).add(ev.seq)
                self._forget_author_seq(index, ev.group_id, stored.author, stored.seq)
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
            index = self._index(group_id)
            index.discard(event_id)
            self._forget_author_seq(index, group_id, stored.author, stored.seq)
        return True

    def _forget_author_seq(self, index: _GroupIndex, group_id: str, author: str, seq: int) -> None:
        """The database no longer holds one event of (author, seq): update the tracker."""
        still, max_held = self._db.execute(
            "SELECT COUNT(*) FILTER (WHERE seq = ?), COALESCE(MAX(seq), 0) FROM events "
            "WHERE group_id = ? AND author = ?",
            (seq, group_id, author),
        ).fetchone()
        state = index.author(author)
        state.remove(seq, still > 0, max_held)
        if state.count == 0:
            del index.authors[author]

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
        index = self._groups.get(group_id)
        return 0 if index is None else len(index.ids)

    def groups(self) -> list[str]:
        # list() copies in one step under the interpreter lock: the snapshot builder
        # calls this from the loop while the store thread may add a group.
        return sorted(g for g, index in list(self._groups.items()) if index.ids)

    def get_events(self, group_id: str, event_ids: Iterable[str]) -> list[StoredEvent]:
        """The held events among ``event_ids``, in event_id order; unknown ids are skipped."""
        index = self._groups.get(group_id)
        if index is None:
            return []
        wanted = sorted({e for e in event_ids if e in index.terms})
        return self._fetch(group_id, wanted)

    def _fetch(self, group_id: str, sorted_ids: list[str]) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for start in range(0, len(sorted_ids), _SQL_CHUNK):
            chunk = sorted_ids[start : start + _SQL_CHUNK]
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
        index = self._groups.get(group_id, _EMPTY)
        return len(index.ids), index.acc.fingerprint()

    def authors(self, group_id: str) -> dict[str, dict]:
        """The §5.2 ``authors`` map: author → {max_seq, contiguous_seq, count}."""
        index = self._groups.get(group_id, _EMPTY)
        authors = dict(index.authors)  # one step: another thread may be adding an author
        return {a: authors[a].as_dict() for a in sorted(authors)}

    def range_summary(self, group_id: str, lo: str = "", hi: str = "") -> tuple[int, str]:
        """(count, fingerprint) of the events with lo ≤ event_id < hi (empty = open)."""
        index = self._groups.get(group_id, _EMPTY)
        i, j = index.bounds(lo, hi)
        return index.summary(i, j)

    def ids_in_range(self, group_id: str, lo: str = "", hi: str = "") -> list[str]:
        index = self._groups.get(group_id, _EMPTY)
        i, j = index.bounds(lo, hi)
        return index.ids[i:j]

    def digest(
        self, group_id: str, server_id: str, lo: str = "", hi: str = "", buckets: int = 16
    ) -> dict:
        """The §5.2 digest document.

        ``min(buckets, count)`` buckets; bucket b holds positions
        ``[b*count//k, (b+1)*count//k)`` of the range, so sizes differ by at most one.
        """
        _check_bound(lo, "lo")
        _check_bound(hi, "hi")
        if type(buckets) is not int or not 1 <= buckets <= 256:
            raise ProtocolError(ErrorCode.BAD_FRAME, "buckets must be an integer 1–256")
        index = self._groups.get(group_id, _EMPTY)
        i, j = index.bounds(lo, hi)
        count, fp = index.summary(i, j)
        doc: dict = {
            "group_id": group_id,
            "server_id": server_id,
            "lo": lo,
            "hi": hi,
            "count": count,
            "fingerprint": fp,
        }
        if not lo and not hi:
            doc["authors"] = self.authors(group_id)
        if count == 0:
            doc["buckets"] = [{"lo": lo, "hi": hi, "count": 0, "fingerprint": fp}]
            return doc
        k = min(buckets, count)
        starts = [i + b * count // k for b in range(k)]
        ids = index.ids
        prefix = index._prefix()
        out = []
        for b, start in enumerate(starts):
            end = starts[b + 1] if b + 1 < k else j
            out.append(
                {
                    "lo": lo if b == 0 else ids[start],
                    "hi": hi if b + 1 == k else ids[end],
                    "count": end - start,
                    "fingerprint": fingerprint(prefix[end] - prefix[start], end - start),
                }
            )
        doc["buckets"] = out
        return doc

    def events_in_ranges(
        self,
        group_id: str,
        ranges: Iterable[tuple[str, str]],
        after: str = "",
        limit: int = 1000,
        byte_cap: int = 1 << 20,
        *,
        exclude: Collection[str] = (),
        extra: Iterable[str] = (),
    ) -> tuple[list[StoredEvent], bool]:
        """One checkpoint page (§5.3): held events in ``ranges`` not in ``exclude``, plus
        the held ``extra`` (``fetch``) ids, with event_id > ``after``, in event_id order.

        Stops at ``limit`` events or when the estimated EVENT lines would pass
        ``byte_cap`` (the first event always fits). Returns (events, more).
        """
        index = self._groups.get(group_id, _EMPTY)
        exclude = exclude if isinstance(exclude, set | frozenset | dict) else set(exclude)
        chosen: set[str] = {e for e in extra if e in index.terms}
        for lo, hi in ranges:
            i, j = index.bounds(lo, hi)
            chosen.update(e for e in index.ids[i:j] if e not in exclude)
        candidates = sorted(e for e in chosen if e > after) if after else sorted(chosen)
        more = len(candidates) > limit
        candidates = candidates[:limit]
        events: list[StoredEvent] = []
        used = 0
        for start in range(0, len(candidates), _SQL_CHUNK):
            for ev in self._fetch(group_id, candidates[start : start + _SQL_CHUNK]):
                size = _line_estimate(ev)
                if events and used + size > byte_cap:
                    return events, True
                used += size
                events.append(ev)
        return events, more

    # ------------------------------------------------------------------ outbox (§4)

    def _bump_outbox(self, peer_id: str, group_id: str, delta: int) -> None:
        key = (peer_id, group_id)
        n = self._outbox_counts.get(key, 0) + delta
        if n:
            self._outbox_counts[key] = n
        else:
            self._outbox_counts.pop(key, None)

    def outbox_add(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> int:
        """Queue events for a peer until it acknowledges them; returns how many were new."""
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

    # ------------------------------------------------------------------ pins (§3.2)

    def save_pin(self, server_id: str, doc: dict, source: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO pins (server_id, doc, source) VALUES (?, ?, ?)",
            (server_id, orjson.dumps(doc).decode(), source),
        )

    def delete_pin(self, server_id: str) -> None:
        self._db.execute("DELETE FROM pins WHERE server_id = ?", (server_id,))

    def load_pins(self) -> list[tuple[dict, str]]:
        rows = self._db.execute("SELECT doc, source FROM pins ORDER BY server_id")
        return [(orjson.loads(doc), source) for doc, source in rows]

    # ------------------------------------------------------------------ peers

    def save_peer_id(self, url: str, server_id: str) -> None:
        """Remember which server answers at a configured peer URL (learnt from its caps)."""
        self._db.execute(
            "INSERT OR REPLACE INTO peer_ids (url, server_id) VALUES (?, ?)", (url, server_id)
        )

    def load_peer_ids(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT url, server_id FROM peer_ids"))

    # ------------------------------------------------------------------ replay cache

    def check_and_record(self, key: str, now: float, window: float = 600.0) -> bool:
        """True if ``key`` was not seen in the last ``window`` seconds; records it durably.

        Durable so that a restart cannot reopen the replay window (§4.1, §3.3).
        """
        with self.transaction():
            row = self._db.execute("SELECT seen_at FROM replay WHERE key = ?", (key,)).fetchone()
            if row is not None and now - row[0] <= window:
                return False
            self._db.execute(
                "INSERT OR REPLACE INTO replay (key, seen_at) VALUES (?, ?)", (key, now)
            )
            if self._last_prune is None or abs(now - self._last_prune) >= _REPLAY_PRUNE_EVERY:
                self._last_prune = now
                self._db.execute("DELETE FROM replay WHERE seen_at < ?", (now - window,))
        return True

    def replay_entries(self, since: float) -> list[tuple[str, float]]:
        """Keys recorded at or after ``since``: what a restarted node must still refuse."""
        rows = self._db.execute(
            "SELECT key, seen_at FROM replay WHERE seen_at >= ? ORDER BY seen_at", (since,)
        )
        return [(key, seen_at) for key, seen_at in rows]

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
                state = self._groups.get(group_id, _EMPTY).authors.get(author)
                if state is not None and state.max_seq >= seq:
                    seq = state.max_seq + 1
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
        self._db.execute(
            "INSERT OR IGNORE INTO equivocators (group_id, author) VALUES (?, ?)",
            (group_id, author),
        )
        held.add(author)
        if self._in_tx:
            self._touched.add(group_id)

    def equivocators(self, group_id: str) -> list[str]:
        return sorted(self._equivocators.get(group_id, ()))
