"""The replay cache of §3.3/§4.1: answered from memory, recorded in the store.

HELLOs are authenticated on the loop, inside the session, so the answer must be
synchronous; the durable record follows on the store thread in order, ahead of anything
the stream could lead to being acknowledged. A restart refills the memory from the
store, so it reopens no window.

Keys seen while a record is queued join it: one store-thread job, one transaction (one
fsync) for every key seen until the job runs, instead of one per signed request.
"""

from __future__ import annotations

import threading

from node.protocol.keystore import REPLAY_WINDOW, MemoryReplayCache
from node.storage.store import Store
from node.storage.store_thread import StoreThread


class DurableReplayCache:
    def __init__(self, store: Store, thread: StoreThread) -> None:
        self._memory = MemoryReplayCache()
        self._store = store
        self._thread = thread
        self._lock = threading.Lock()  # _queued is filled on the loop, taken on the store thread
        self._queued: list[tuple[str, float, float]] = []
        self._flush_queued = False

    def load(self, entries: list[tuple[str, float]]) -> None:
        for key, seen_at in entries:
            self._memory.check_and_record(key, seen_at)

    def check_and_record(self, key: str, now: float, window: float = REPLAY_WINDOW) -> bool:
        if not self._memory.check_and_record(key, now, window):
            return False
        with self._lock:
            self._queued.append((key, now, window))
            if self._flush_queued:  # the queued job has not taken the keys yet: it takes this one
                return True
            self._flush_queued = True
        self._thread.submit(self._flush)
        return True

    def _flush(self) -> None:
        """On the store thread: record every queued key in one transaction."""
        with self._lock:
            queued, self._queued = self._queued, []
            self._flush_queued = False
        store = self._store
        with store.transaction():
            for key, now, window in queued:
                store.check_and_record(key, now, window)
