"""The store's own sorted index (node.sync.index) with event records beside it, no SQLite.

The planner and checkpoint tests need a set of events they can build, change and send
from quickly. :class:`EventSet` is a :class:`~node.sync.index.GroupIndex` (the very code
the store answers from) plus the records a checkpoint response carries;
:class:`MemorySource` puts several behind the group-first ``DigestSource`` and
``CheckpointSource`` interface, as the store does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from node.sync.fingerprint import event_term
from node.sync.index import GroupIndex, build_digest


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What the index needs of an event; ``author``/``seq`` (if any) feed the authors map."""

    event_id: str
    content_hash: str
    author: str = ""
    seq: int = 0


class EventSet:
    """One group's events, sorted by ``event_id`` (string order = ULID byte order)."""

    def __init__(self, events: Iterable[EventRecord] = ()) -> None:
        self.index = GroupIndex()
        self._records: dict[str, EventRecord] = {}
        for ev in sorted(events, key=lambda e: e.event_id):  # in order: appends only
            if not self.add(ev):
                raise ValueError(f"duplicate event id {ev.event_id}")

    def add(self, ev: EventRecord) -> bool:
        """Insert a new event; False (and no change) when the id is already held."""
        if ev.event_id in self._records:
            return False
        self._records[ev.event_id] = ev
        self.index.add(ev.event_id, event_term(ev.event_id, ev.content_hash))
        if ev.author:
            self.index.add_seq(ev.author, ev.seq)
        return True

    def replace(self, ev: EventRecord) -> None:
        """Swap the held version of ``ev.event_id`` (equivocation: §4.3 keeps the lower hash)."""
        old = self._records[ev.event_id]
        self._records[ev.event_id] = ev
        self.index.change(ev.event_id, event_term(ev.event_id, ev.content_hash))
        if old.author:
            self.index.remove_seq(old.author, old.seq)
        if ev.author:
            self.index.add_seq(ev.author, ev.seq)

    def remove(self, event_id: str) -> None:
        old = self._records.pop(event_id)
        self.index.discard(event_id)
        if old.author:
            self.index.remove_seq(old.author, old.seq)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._records

    def get(self, event_id: str) -> EventRecord | None:
        return self._records.get(event_id)

    def ids(self) -> list[str]:
        return list(self.index.ids)

    def authors(self) -> dict[str, dict[str, int]]:
        return self.index.authors_map()

    def summary(self) -> tuple[int, str]:
        return self.index.summary()

    def range_summary(self, lo: str, hi: str) -> tuple[int, str]:
        return self.index.range_summary(lo, hi)

    def ids_in_range(self, lo: str, hi: str) -> list[str]:
        return self.index.ids_in_range(lo, hi)

    def digest(self, group_id: str, server_id: str, lo: str, hi: str, buckets: int) -> dict:
        return build_digest(self.index, group_id, server_id, lo, hi, buckets)


class MemorySource:
    """Many groups' :class:`EventSet` behind the store-shaped, group-first interface."""

    def __init__(self, sets: dict[str, EventSet] | None = None) -> None:
        self.sets: dict[str, EventSet] = sets if sets is not None else {}

    def _set(self, group: str) -> EventSet:
        s = self.sets.get(group)
        if s is None:
            s = self.sets[group] = EventSet()
        return s

    def summary(self, group: str) -> tuple[int, str]:
        return self._set(group).summary()

    def authors(self, group: str) -> dict[str, dict[str, int]]:
        return self._set(group).authors()

    def range_summary(self, group: str, lo: str, hi: str) -> tuple[int, str]:
        return self._set(group).range_summary(lo, hi)

    def digest(self, group: str, server_id: str, lo: str, hi: str, buckets: int) -> dict:
        return self._set(group).digest(group, server_id, lo, hi, buckets)

    def ids_in_range(self, group: str, lo: str, hi: str) -> list[str]:
        return self._set(group).ids_in_range(lo, hi)

    def get_event(self, group: str, event_id: str) -> EventRecord | None:
        return self._set(group).get(event_id)
