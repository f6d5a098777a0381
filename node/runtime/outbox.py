"""The durable outboxes as the streams see them: pages to send, acknowledged ids to drop.

An outbox row is removed only when the peer acknowledges the event. ACKs come every 32
events or 5 ms, and each removal is a commit (an fsync) on the store thread that also
serves the streams' next pages, so removals are coalesced per (peer, group): one removal
takes whatever was acknowledged until it runs. The store thread runs in submission
order, so a later page never sees the removed ids.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from node.protocol.frames import Event
from node.storage.errors import StoreUnavailable
from node.storage.store import Store
from node.storage.store_thread import StoreThread


class Outbox:
    def __init__(self, store: Store, thread: StoreThread, log: Callable[[str], None]) -> None:
        self._store = store
        self._thread = thread
        self._log = log
        self._lock = threading.Lock()
        self._acked: dict[tuple[str, str], list[str]] = {}  # acknowledged, not yet removed

    async def pending(self, peer_id: str, group_id: str, after: str, limit: int) -> list[Event]:
        """Up to ``limit`` queued events for the peer, in event_id order after ``after``."""
        return await self._thread.run(self._pending, peer_id, group_id, after, limit)

    def _pending(self, peer_id: str, group_id: str, after: str, limit: int) -> list[Event]:
        """On the store thread: the page, already turned into EVENT payloads."""
        return [r.to_event() for r in self._store.outbox_pending(peer_id, group_id, after, limit)]

    async def holds(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> set[str]:
        """Which of ``event_ids`` are still queued for the peer."""
        return await self._thread.run(self._store.outbox_holds, peer_id, group_id, event_ids)

    def acknowledged(self, peer_id: str, group_id: str, event_ids: list[str]) -> None:
        """The peer acknowledged these: drop them from its outbox soon."""
        key = (peer_id, group_id)
        with self._lock:
            waiting = self._acked.get(key)
            if waiting is None:
                self._acked[key] = list(event_ids)
            else:
                waiting.extend(event_ids)
        if waiting is None:
            self._thread.submit(self._remove, key)

    def retry(self) -> None:
        """The store writes again: remove what was acknowledged while it could not."""
        with self._lock:
            keys = list(self._acked)
        for key in keys:
            self._thread.submit(self._remove, key)

    def _remove(self, key: tuple[str, str]) -> None:
        """On the store thread: one removal for everything acknowledged so far."""
        with self._lock:
            ids = self._acked.pop(key, [])
        if not ids:
            return
        try:
            self._store.outbox_remove(key[0], key[1], ids)
        except StoreUnavailable:
            # The store cannot write now (the node says so once): keep the ids until
            # retry(), without a removal per ACK meanwhile.
            with self._lock:
                self._acked.setdefault(key, [])[:0] = ids
        except Exception as exc:
            # e.g. a busy database: the next ACK's removal retries them (replayed ids are
            # harmless: receivers deduplicate).
            self.acknowledged(key[0], key[1], ids)
            self._log(f"{key[0]} {key[1]}: outbox removal failed ({exc}); will retry")

    async def drop(self, peer_id: str, groups: Iterable[str]) -> int:
        """Delete everything queued for a forgotten peer; returns how many events."""

        def drop_all() -> int:
            dropped = 0
            for group in groups:
                while rows := self._store.outbox_pending(peer_id, group, "", 1000):
                    dropped += self._store.outbox_remove(peer_id, group, [r.event_id for r in rows])
            return dropped

        return await self._thread.run(drop_all)
