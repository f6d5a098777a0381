"""The ingest queue keeps the store on its one thread: the pool sees only bytes and keys."""

from __future__ import annotations

import asyncio
import base64
import threading

from node.protocol.errors import ErrorCode
from node.protocol.frames import Event
from node.protocol.identity import Identity
from node.protocol.ids import CROCKFORD
from node.protocol.session import Duplicate, Rejected, Stored
from node.storage import ingest_queue
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


async def test_the_first_chunk_is_committed_while_the_rest_is_checked(tmp_path, monkeypatch):
    """A window of 256 EVENTs: the first chunk's outcomes (hence ACKs and credit) come
    once it is durable, without waiting for the verification of the chunks after it."""
    ident = Identity.from_seed(b"\x07" * 32, "server-alice")
    thread = StoreThread()
    store = await thread.open(str(tmp_path / "events.sqlite3"))
    release = threading.Event()
    check = ingest_queue._check

    def gated(group_id, items, held, keys):
        if items[0][0].seq != 1:  # every chunk but the first waits
            release.wait(30)
        return check(group_id, items, held, keys)

    monkeypatch.setattr(ingest_queue, "_check", gated)
    queue = IngestQueue(
        Ingest(store, lambda author, key_id: ident.public_key),
        thread,
        lambda g: [],
        lambda *a: None,
    )
    queue.start()
    try:
        events = [ident.sign_event(G, ulid(n), n, f"body {n}".encode()) for n in range(1, 257)]
        done: dict[str, object] = {}
        first_done, all_done = asyncio.Event(), asyncio.Event()

        def report(outcome) -> None:
            done[outcome.event_id] = outcome
            first_done.set()
            if len(done) == len(events):
                all_done.set()

        for e in events:
            queue.submit(G, e, "server-bob", report)
        await asyncio.wait_for(first_done.wait(), 30)
        first = set(done)
        assert 0 < len(first) < len(events)
        assert first == {e.event_id for e in events[: len(first)]}  # a prefix, in order
        assert await thread.run(lambda: all(store.has_event(G, i) for i in first))
        release.set()
        await asyncio.wait_for(all_done.wait(), 30)
    finally:
        release.set()
        await queue.stop()
        await thread.run(store.close)
        thread.close()
    assert [type(done[e.event_id]) for e in events] == [Stored] * 256


async def test_a_committed_event_sent_again_is_a_duplicate_without_a_store_turn(tmp_path):
    ident = Identity.from_seed(b"\x07" * 32, "server-alice")
    thread = StoreThread()
    store = await thread.open(str(tmp_path / "events.sqlite3"))
    queue = IngestQueue(
        Ingest(store, lambda author, key_id: ident.public_key),
        thread,
        lambda g: [],
        lambda *a: None,
    )
    queue.start()
    jobs: list[object] = []
    try:
        event = ident.sign_event(G, ulid(1), 1, b"body")
        assert await queue.process(G, event, "server-bob") == Stored(event.event_id)
        run, submit = thread.run, thread.submit
        thread.run = lambda fn, *a: jobs.append(fn) or run(fn, *a)  # type: ignore[method-assign]
        thread.submit = lambda fn, *a: jobs.append(fn) or submit(fn, *a)  # type: ignore[method-assign]
        assert await queue.process(G, event, "server-dave") == Duplicate(event.event_id)
        assert jobs == []
        # The hash is still checked first (§4.3): another ciphertext under the same claim
        # takes the full path and is rejected there.
        forged = Event(**{**event.to_dict(), "ciphertext": base64.b64encode(b"other").decode()})
        outcome = await queue.process(G, forged, "server-dave")
        assert type(outcome) is Rejected and outcome.code == ErrorCode.HASH_MISMATCH
        assert jobs != []
    finally:
        await queue.stop()
        await thread.run(store.close)
        thread.close()


async def test_a_provisional_event_is_not_answered_from_the_committed_view(tmp_path):
    """A provisionally trusted event may be removed later (§3.2): sent again after that,
    it is checked and stored again, not called a duplicate of what is gone."""
    ident = Identity.from_seed(b"\x07" * 32, "server-alice")
    thread = StoreThread()
    store = await thread.open(str(tmp_path / "events.sqlite3"))
    ingest = Ingest(store, lambda author, key_id: ident.public_key, lambda author, key_id: True)
    queue = IngestQueue(ingest, thread, lambda g: [], lambda *a: None)
    queue.start()
    try:
        event = ident.sign_event(G, ulid(1), 1, b"body")
        assert await queue.process(G, event, "server-bob") == Stored(event.event_id)
        assert await thread.run(store.delete_event, G, event.event_id)  # what a recheck does
        assert await queue.process(G, event, "server-bob") == Stored(event.event_id)
    finally:
        await queue.stop()
        await thread.run(store.close)
        thread.close()


async def test_a_version_replaced_by_equivocation_leaves_the_committed_view(tmp_path):
    """Two versions of one event_id: the lower content_hash wins (§4.3). The loser, sent
    again once the winner is stored, is refused, not answered as a duplicate."""
    ident = Identity.from_seed(b"\x07" * 32, "server-alice")
    thread = StoreThread()
    store = await thread.open(str(tmp_path / "events.sqlite3"))
    queue = IngestQueue(
        Ingest(store, lambda author, key_id: ident.public_key),
        thread,
        lambda g: [],
        lambda *a: None,
    )
    queue.start()
    try:
        low, high = sorted(
            (ident.sign_event(G, ulid(1), 1, body) for body in (b"one", b"two")),
            key=lambda e: e.content_hash,
        )
        assert await queue.process(G, high, "server-bob") == Stored(high.event_id)
        replaced = await queue.process(G, low, "server-bob")
        assert type(replaced) is Stored and replaced.equivocation
        again = await queue.process(G, high, "server-bob")
        assert type(again) is Rejected and again.code == ErrorCode.EQUIVOCATION
    finally:
        await queue.stop()
        await thread.run(store.close)
        thread.close()


async def test_a_held_event_is_a_duplicate_before_its_key_and_signature(tmp_path):
    """No screen on the store thread: the commit applies the duplicate check in its §4.3
    place, so an event already held (here stored before this queue ran, so it is not in
    the queue's committed view) is a duplicate even when its key is unknown to us or
    its signature does not verify, and a new event with either is refused."""
    ident = Identity.from_seed(b"\x07" * 32, "server-alice")
    thread = StoreThread()
    store = await thread.open(str(tmp_path / "events.sqlite3"))
    held = [ident.sign_event(G, ulid(n), n, f"body {n}".encode()) for n in (1, 2, 3)]
    ingest = Ingest(store, lambda author, key_id: ident.public_key)
    assert await thread.run(
        lambda: ingest.process(G, [(e, "server-bob") for e in held], now=1.0)
    ) == [Stored(e.event_id) for e in held]
    known = {"yes"}
    queue = IngestQueue(
        Ingest(store, lambda author, key_id: ident.public_key if known else None),
        thread,
        lambda g: [],
        lambda *a: None,
    )
    queue.start()
    bad = base64.b64encode(b"\x01" * 64).decode()
    try:
        resigned = Event(**{**held[1].to_dict(), "signature": bad})
        fresh = ident.sign_event(G, ulid(4), 4, b"body 4")
        forged = Event(**{**fresh.to_dict(), "signature": bad})
        assert await queue.process(G, held[0], "server-dave") == Duplicate(held[0].event_id)
        assert await queue.process(G, resigned, "server-dave") == Duplicate(held[1].event_id)
        outcome = await queue.process(G, forged, "server-dave")
        assert type(outcome) is Rejected and outcome.code == ErrorCode.BAD_SIGNATURE
        known.clear()  # from now on no author key is known
        assert await queue.process(G, held[2], "server-dave") == Duplicate(held[2].event_id)
        outcome = await queue.process(G, fresh, "server-dave")
        assert type(outcome) is Rejected and outcome.code == ErrorCode.UNKNOWN_KEY
    finally:
        await queue.stop()
        await thread.run(store.close)
        thread.close()
