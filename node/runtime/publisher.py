"""Events this node authors: the dashboard's test events, signed and stored like any other.

Each event takes the next sequence number of our own (author, group) and is signed and
stored in the same transaction, so a crash leaves neither a reused sequence nor a hole.
Events asked for together (a burst of commands in one loop turn) share one transaction:
one fsync for a burst of 100.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ulid import ULID

from node.protocol.frames import Event
from node.protocol.identity import Identity
from node.protocol.ids import is_group_id
from node.protocol.session import Outcome, Rejected, Stored
from node.runtime.activity import Counters
from node.storage.ingest import Ingest
from node.storage.store import Store
from node.storage.store_thread import StoreThread


class Publisher:
    def __init__(
        self,
        *,
        identity: Identity,
        store: Store,
        thread: StoreThread,
        ingest: Ingest,
        relay_peers: Callable[[str], list[str]],
        on_stored: Callable[[str, list[Event], str], None],
        counters: Counters,
        log: Callable[[str], None],
    ) -> None:
        self._identity = identity
        self._store = store
        self._thread = thread
        self._ingest = ingest
        self._relay_peers = relay_peers
        self._on_stored = on_stored
        self._counters = counters
        self._log = log
        self._queued: dict[str, list[bytes]] = {}  # asked for, not yet authored
        self._tasks: set[asyncio.Task] = set()

    def queue(self, group_id: str, ciphertext: bytes) -> None:
        """Author an event soon; those queued in the same loop turn share a transaction."""
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._publish_queued)
        self._queued.setdefault(group_id, []).append(ciphertext)

    def _publish_queued(self) -> None:
        queued, self._queued = self._queued, {}
        loop = asyncio.get_running_loop()
        for group, ciphertexts in queued.items():
            task = loop.create_task(self.publish_many(group, ciphertexts))
            self._tasks.add(task)
            task.add_done_callback(self._publish_done)

    def _publish_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log(f"publishing a test event failed: {task.exception()}")

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def publish_many(self, group_id: str, ciphertexts: list[bytes]) -> list[str]:
        """Author, sign, store and relay events carrying client-made ciphertext."""
        if not is_group_id(group_id):
            raise ValueError(f"invalid group id {group_id!r}")
        relay = self._relay_peers(group_id)
        events, outcomes = await self._thread.run(self._author, group_id, ciphertexts, relay)
        stored = [e for e, o in zip(events, outcomes, strict=True) if type(o) is Stored]
        self._counters.events_published += len(stored)
        for o in outcomes:
            if type(o) is Rejected:
                self._counters.events_rejected += 1
                self._log(f"own event rejected: {o.code} {o.message}")
        if stored:
            self._on_stored(group_id, stored, self._identity.server_id)
        return [e.event_id for e in events]

    def _author(
        self, group_id: str, ciphertexts: list[bytes], relay: list[str]
    ) -> tuple[list[Event], list[Outcome]]:
        """On the store thread: reserve each seq, sign and store, in one transaction."""
        store, me = self._store, self._identity.server_id
        with store.transaction():
            events = [
                self._identity.sign_event(
                    group_id, str(ULID()), store.next_own_seq(group_id, me), c
                )
                for c in ciphertexts
            ]
            outcomes = self._ingest.process(
                group_id, [(e, me) for e in events], relay, now=time.time()
            )
        return events, outcomes
