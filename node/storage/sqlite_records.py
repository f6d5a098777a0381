"""The node's own records in its SQLite file, beside the events: pins, peer ids, replays.

Small tables that are read once at start and written now and then: the key pins of §3.2,
the server ids learnt at configured peer URLs, and the durable replay cache of §3.3/§4.1.
:class:`~node.storage.sqlite_store.SQLiteStore` takes them in as a mixin, so the store
stays one object on one thread while its event logic reads on its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager

import orjson

from node.protocol.keystore import REPLAY_WINDOW
from node.storage.ownership import hash_owner

_REPLAY_PRUNE_EVERY = 60.0  # seconds of `now` between prunes of the replay cache


class NodeRecords:
    """Needs ``_db``, ``_write`` and ``transaction`` from the store it is mixed into."""

    _db: sqlite3.Connection
    _last_prune: float | None = None

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    # ------------------------------------------------------------------ pins, peers (§3.2)

    def save_pin(self, server_id: str, doc: dict, source: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO pins (server_id, doc, source) VALUES (?, ?, ?)",
            (server_id, orjson.dumps(doc).decode(), source),
        )

    def delete_pin(self, server_id: str) -> None:
        self._write("DELETE FROM pins WHERE server_id = ?", (server_id,))

    def load_pins(self) -> list[tuple[dict, str]]:
        rows = self._db.execute("SELECT doc, source FROM pins ORDER BY server_id")
        return [(orjson.loads(doc), source) for doc, source in rows]

    def save_peer_id(self, url: str, server_id: str) -> None:
        """Remember which server answers at a configured peer URL (learnt from its caps)."""
        self._write(
            "INSERT OR REPLACE INTO peer_ids (url, server_id) VALUES (?, ?)", (url, server_id)
        )

    def load_peer_ids(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT url, server_id FROM peer_ids"))

    # ------------------------------------------------------------------ replay cache

    def check_and_record(self, key: str, now: float, window: float = REPLAY_WINDOW) -> bool:
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

    # ------------------------------------------------------------------ workers (ownership)
    # In the ``meta`` table: ``workers`` → the count, ``owner:{group}`` → the worker.

    def worker_count(self, proposed: int) -> int:
        with self.transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'workers'").fetchone()
            if row is not None or not proposed:
                return int(row[0]) if row is not None else 0
            self._db.execute("INSERT INTO meta (key, value) VALUES ('workers', ?)", (proposed,))
        return proposed

    def set_worker_count(self, workers: int) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES ('workers', ?)", (workers,))

    def claim_owners(self, groups: Iterable[str], workers: int) -> dict[str, int]:
        with self.transaction():
            for group in groups:
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    (_OWNER + group, hash_owner(group, workers)),
                )
        return self.owners()

    def set_owner(self, group_id: str, worker: int) -> None:
        self._write(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_OWNER + group_id, worker)
        )

    def owners(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE key >= ? AND key < ?", (_OWNER, _OWNER_END)
        )
        return {key[len(_OWNER) :]: int(value) for key, value in rows}


_OWNER = "owner:"
_OWNER_END = "owner;"  # the key just after every "owner:…"
