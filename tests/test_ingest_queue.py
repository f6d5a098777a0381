"""The ingest queue keeps the store on its one thread: the pool sees only bytes and keys."""

from __future__ import annotations

import asyncio
import threading

from node.protocol.identity import Identity
from node.protocol.ids import CROCKFORD
from node.protocol.session import Duplicate, Stored
from node.storage.ingest import Ingest
from node.storage.ingest_queue import IngestQueue
from node.storage.store_thread import StoreThread

G = "g!queue"


def ulid(n: int) -> str:
    return "01KB" + "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(21, -1, -1))


class OwnedStore:
    """The real store, noting every call made from a thread other than the store's."""

    def __init__(self, store) -> None:
        self._store = store
        self.strangers: list[tuple[str, str]] = []

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            thread = threading.current_thread().name
            if not thread.startswith("tapsim-store"):
                self.strangers.append((name, thread))
            return attr(*args, **kwargs)

        return call


async def test_only_the_store_thread_touches_the_store(stores):
    ident = Identity.from_seed(b"\x07" * 32, "server-alice")
    thread = StoreThread()
    store = OwnedStore(await thread.open(stores.location()))
    lookups: set[str] = set()

    def key_lookup(author: str, key_id: str) -> bytes | None:
        lookups.add(threading.current_thread().name)
        return ident.public_key

    stored: list[str] = []
    queue = IngestQueue(
        Ingest(store, key_lookup),  # type: ignore[arg-type]
        thread,
        lambda group_id: ["server-carol"],
        lambda group_id, events, hop: stored.extend(e.event_id for e in events),
    )
    queue.start()
    try:
        events = [ident.sign_event(G, ulid(n), n, f"body {n}".encode()) for n in range(1, 301)]
        first = await asyncio.gather(*(queue.process(G, e, "server-bob") for e in events))
        # again, so the duplicate screen has something to find
        again = await asyncio.gather(*(queue.process(G, e, "server-dave") for e in events[:50]))
    finally:
        await queue.stop()
        await thread.run(store.close)
        thread.close()
    assert [type(o) for o in first] == [Stored] * 300
    assert again == [Duplicate(e.event_id) for e in events[:50]]
    assert sorted(stored) == [e.event_id for e in events]
    assert store.strangers == []
    assert lookups == {threading.current_thread().name}  # the key store's thread: the loop
    assert thread.summary.group(G).count == 300
    assert thread.summary.outbox("server-carol", G) == 300
