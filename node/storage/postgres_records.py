"""The node's own records in its PostgreSQL schema, beside the events: pins, peer ids,
replays. The same tables and meaning as :mod:`node.storage.sqlite_records`, in
PostgreSQL's SQL; :class:`~node.storage.postgres_store.PostgresStore` takes them in as a
mixin.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager

import orjson
import psycopg

from node.protocol.keystore import REPLAY_WINDOW
from node.storage.ownership import hash_owner

_REPLAY_PRUNE_EVERY = 60.0  # seconds of `now` between prunes of the replay cache


class PostgresRecords:
    """Needs ``_read``, ``_write`` and ``transaction`` from the store it is mixed into."""

    _last_prune: float | None = None

    def _read(self, sql: str, args: tuple = ()) -> psycopg.Cursor:
        raise NotImplementedError

    def _write(self, sql: str, args: tuple = ()) -> psycopg.Cursor:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    # ------------------------------------------------------------------ pins, peers (§3.2)

    def save_pin(self, server_id: str, doc: dict, source: str) -> None:
        self._write(
            "INSERT INTO pins (server_id, doc, source) VALUES (%s, %s, %s) "
            "ON CONFLICT (server_id) DO UPDATE SET doc = EXCLUDED.doc, source = EXCLUDED.source",
            (server_id, orjson.dumps(doc).decode(), source),
        )

    def delete_pin(self, server_id: str) -> None:
        self._write("DELETE FROM pins WHERE server_id = %s", (server_id,))

    def load_pins(self) -> list[tuple[dict, str]]:
        rows = self._read("SELECT doc, source FROM pins ORDER BY server_id")
        return [(orjson.loads(doc), source) for doc, source in rows]

    def save_peer_id(self, url: str, server_id: str) -> None:
        """Remember which server answers at a configured peer URL (learnt from its caps)."""
        self._write(
            "INSERT INTO peer_ids (url, server_id) VALUES (%s, %s) "
            "ON CONFLICT (url) DO UPDATE SET server_id = EXCLUDED.server_id",
            (url, server_id),
        )

    def load_peer_ids(self) -> dict[str, str]:
        return dict(self._read("SELECT url, server_id FROM peer_ids"))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ replay cache

    def check_and_record(self, key: str, now: float, window: float = REPLAY_WINDOW) -> bool:
        """True if ``key`` was not seen in the last ``window`` seconds; records it durably.

        Durable so that a restart cannot reopen the replay window (§4.1, §3.3).
        """
        with self.transaction():
            row = self._write("SELECT seen_at FROM replay WHERE key = %s", (key,)).fetchone()
            if row is not None and now - row[0] <= window:
                return False
            self._write(
                "INSERT INTO replay (key, seen_at) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET seen_at = EXCLUDED.seen_at",
                (key, now),
            )
            if self._last_prune is None or abs(now - self._last_prune) >= _REPLAY_PRUNE_EVERY:
                self._last_prune = now
                self._write("DELETE FROM replay WHERE seen_at < %s", (now - window,))
        return True

    def replay_entries(self, since: float) -> list[tuple[str, float]]:
        """Keys recorded at or after ``since``: what a restarted node must still refuse."""
        rows = self._read(
            "SELECT key, seen_at FROM replay WHERE seen_at >= %s ORDER BY seen_at", (since,)
        )
        return [(key, seen_at) for key, seen_at in rows]

    # ------------------------------------------------------------------ workers (ownership)
    # In the ``meta`` table, as in SQLite: ``workers`` → the count, ``owner:{group}`` → the
    # worker. Claims are INSERT … ON CONFLICT DO NOTHING, so workers starting at once
    # agree: the first row written stands.

    def worker_count(self, proposed: int) -> int:
        with self.transaction():
            if proposed:
                self._write(
                    "INSERT INTO meta (key, value) VALUES ('workers', %s) "
                    "ON CONFLICT (key) DO NOTHING",
                    (str(proposed),),
                )
            row = self._write("SELECT value FROM meta WHERE key = 'workers'").fetchone()
        return int(row[0]) if row is not None else 0

    def set_worker_count(self, workers: int) -> None:
        self._write(
            "INSERT INTO meta (key, value) VALUES ('workers', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(workers),),
        )

    def claim_owners(self, groups: Iterable[str], workers: int) -> dict[str, int]:
        with self.transaction():
            for group in groups:
                self._write(
                    "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                    (_OWNER + group, str(hash_owner(group, workers))),
                )
        return self.owners()

    def set_owner(self, group_id: str, worker: int) -> None:
        self._write(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (_OWNER + group_id, str(worker)),
        )

    def owners(self) -> dict[str, int]:
        rows = self._read(
            "SELECT key, value FROM meta WHERE key >= %s AND key < %s", (_OWNER, _OWNER_END)
        )
        return {key[len(_OWNER) :]: int(value) for key, value in rows}


_OWNER = "owner:"
_OWNER_END = "owner;"  # the key just after every "owner:…" (meta.key is COLLATE "C")
