"""What the layers above ask of the node's durable state: :class:`Store`, and the events in it.

The runtime, the view, the ingest and the repair planner program against this
protocol, never against a database: :func:`node.storage.backends.open_store` picks
the implementation (SQLite by default, :mod:`node.storage.sqlite_store`; PostgreSQL for a
``postgresql://`` URL, :mod:`node.storage.postgres_store`), so a backend is added below
this line without touching anything above it.

Every method runs on the store thread (:mod:`node.storage.store_thread`), the one owner
of the store and its in-memory index. What the event loop may read without asking that
thread is the immutable :class:`~node.storage.summary.StoreSummary` it publishes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from node.protocol.frames import Event


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


class Store(Protocol):
    """Durable events, outbox, pins, replay cache and own counters of one node.

    A write outside :meth:`transaction` is durable when the call returns; inside one,
    when the outermost block exits. A block that raises leaves nothing behind, the
    in-memory index included. A write that cannot be made durable now (disk full, a
    size limit, an I/O error) raises :class:`~node.storage.errors.StoreUnavailable`.
    """

    write_error: str | None
    """Why the last write failed, until a write succeeds again; None while writes succeed."""

    def close(self) -> None: ...

    def probe_write(self) -> None:
        """A small real write, to learn whether writes succeed again (raises while not)."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Group commit: the block's writes are durable once it exits; nesting joins."""
        ...

    def take_changes(self) -> tuple[set[str], bool]:
        """Groups whose events or equivocators changed, and whether any outbox count did,
        since the last call."""
        ...

    # ------------------------------------------------------------------ events (§4.3)

    def match(self, group_id: str, event_id: str, content_hash: str) -> bool | None:
        """Is the event held with this content hash? None when the id is not held."""
        ...

    def seq_held(self, group_id: str, author: str, seq: int) -> bool: ...

    def get_event(self, group_id: str, event_id: str) -> StoredEvent | None: ...

    def get_events(self, group_id: str, event_ids: Iterable[str]) -> list[StoredEvent]:
        """The held events among ``event_ids``, in event_id order."""
        ...

    def events_by_author_seq(self, group_id: str, author: str, seq: int) -> list[StoredEvent]: ...

    def insert_event(self, ev: StoredEvent) -> bool:
        """Store a new event; False (nothing written) if its id is already held."""
        ...

    def insert_events(self, events: Sequence[StoredEvent]) -> int:
        """Store many new events at once (ids already held are skipped); how many."""
        ...

    def replace_event(self, ev: StoredEvent) -> bool:
        """Two versions of one id (§4.3): the lower content hash is kept; True if ``ev``."""
        ...

    def delete_event(self, group_id: str, event_id: str) -> bool: ...

    def provisional_events(self, author: str) -> list[StoredEvent]: ...

    def confirm_events(self, group_id: str, event_ids: Iterable[str]) -> None: ...

    def groups(self) -> list[str]:
        """The groups holding at least one event, sorted."""
        ...

    # ------------------------------------------------------------------ anti-entropy (§5)

    def summary(self, group_id: str) -> tuple[int, str]:
        """(count, fingerprint) of the whole group."""
        ...

    def authors(self, group_id: str) -> dict[str, dict]:
        """The §5.2 ``authors`` map."""
        ...

    def range_summary(self, group_id: str, lo: str = "", hi: str = "") -> tuple[int, str]: ...

    def ids_in_range(self, group_id: str, lo: str = "", hi: str = "") -> list[str]: ...

    def digest(
        self, group_id: str, server_id: str, lo: str = "", hi: str = "", buckets: int = ...
    ) -> dict:
        """The §5.2 digest document; malformed bounds or buckets are BAD_FRAME."""
        ...

    def equivocators(self, group_id: str) -> list[str]: ...

    def mark_equivocating(self, group_id: str, author: str) -> None: ...

    # ------------------------------------------------------------------ outbox (§4)

    def outbox_add(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> int: ...

    def outbox_pending(
        self, peer_id: str, group_id: str, after: str = "", limit: int = ...
    ) -> list[StoredEvent]:
        """Queued events with event_id > ``after``, in event_id order."""
        ...

    def outbox_remove(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> int: ...

    def outbox_holds(self, peer_id: str, group_id: str, event_ids: Iterable[str]) -> set[str]: ...

    def outbox_count(self, peer_id: str, group_id: str) -> int: ...

    def outbox_counts(self) -> dict[tuple[str, str], int]:
        """Every non-empty outbox: (peer_id, group_id) → queued events."""
        ...

    # ------------------------------------------------------------------ pins, peers, replay

    def save_pin(self, server_id: str, doc: dict, source: str) -> None: ...

    def load_pins(self) -> list[tuple[dict, str]]: ...

    def save_peer_id(self, url: str, server_id: str) -> None: ...

    def load_peer_ids(self) -> dict[str, str]: ...

    def check_and_record(self, key: str, now: float, window: float = ...) -> bool:
        """True if ``key`` was not seen within ``window`` seconds; records it durably."""
        ...

    def replay_entries(self, since: float) -> list[tuple[str, float]]: ...

    # ------------------------------------------------------------------ own counter

    def next_own_seq(self, group_id: str, author: str | None = None) -> int:
        """The next seq this node may author in ``group_id``, durably reserved."""
        ...

    # ------------------------------------------------------------------ workers (ownership)

    def worker_count(self, proposed: int) -> int:
        """The server's recorded worker count; records ``proposed`` when none is
        (``proposed`` 0 only reads: 0 means none is recorded)."""
        ...

    def set_worker_count(self, workers: int) -> None:
        """Change the recorded worker count (rows already written keep their owner)."""
        ...

    def claim_owners(self, groups: Iterable[str], workers: int) -> dict[str, int]:
        """Write a row for each group without one (owner: ``hash_owner``); every row."""
        ...

    def set_owner(self, group_id: str, worker: int) -> None:
        """Move a group to ``worker`` (its row written or replaced)."""
        ...

    def owners(self) -> dict[str, int]:
        """Every group's row: group id → owning worker."""
        ...
