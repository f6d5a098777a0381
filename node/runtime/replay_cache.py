"""The replay cache of §3.3/§4.1: answered from memory, recorded in the store.

HELLOs are authenticated on the loop, inside the session, so the answer must be
synchronous; the durable record follows on the store thread in order, ahead of anything
the stream could lead to being acknowledged. A restart refills the memory from the
store, so it reopens no window.
"""

from __future__ import annotations

from node.protocol.keystore import REPLAY_WINDOW, MemoryReplayCache
from node.storage.store import Store
from node.storage.store_thread import StoreThread


class DurableReplayCache:
    def __init__(self, store: Store, thread: StoreThread) -> None:
        self._memory = MemoryReplayCache()
        self._store = store
        self._thread = thread

    def load(self, entries: list[tuple[str, float]]) -> None:
        for key, seen_at in entries:
            self._memory.check_and_record(key, seen_at)

    def check_and_record(self, key: str, now: float, window: float = REPLAY_WINDOW) -> bool:
        if not self._memory.check_and_record(key, now, window):
            return False
        self._thread.submit(self._store.check_and_record, key, now, window)
        return True
