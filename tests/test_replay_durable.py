"""The replay cache survives a restart (§4.1: "a restart cannot reopen the window")."""

from __future__ import annotations

from node.protocol.keystore import REPLAY_WINDOW
from node.runtime.replay_cache import DurableReplayCache
from node.storage.backends import open_store
from node.storage.store_thread import StoreThread


def test_replay_window_survives_restart(stores):
    path = stores.location()
    thread = StoreThread()
    store = open_store(path)
    cache = DurableReplayCache(store, thread)
    assert cache.check_and_record("hello:01KAZ2J2NV0000000000000001", 1000.0)
    assert not cache.check_and_record("hello:01KAZ2J2NV0000000000000001", 1001.0)
    thread.close()  # waits for the durable write
    store.close()

    thread = StoreThread()
    store = open_store(path)
    restarted = DurableReplayCache(store, thread)
    restarted.load(store.replay_entries(1200.0 - REPLAY_WINDOW))
    assert not restarted.check_and_record("hello:01KAZ2J2NV0000000000000001", 1200.0)
    # Outside the window the same key is fresh again.
    assert restarted.check_and_record("hello:01KAZ2J2NV0000000000000001", 1700.0)
    thread.close()
    store.close()
