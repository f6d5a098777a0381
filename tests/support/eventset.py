"""An in-memory sorted index of one group's events with prefix fingerprint sums.

It has exactly the digest semantics of §5.1/§5.2 that the store must have, so the
anti-entropy core can be tested (and benchmarked) without SQLite, and the store can
reuse it as its range index: ids are kept sorted with their fingerprint terms, and
prefix sums of the terms are rebuilt lazily from the first changed position, so a
range summary is two bisections and a subtraction, and a digest of a large group
costs O(buckets · log n) after a batch of appends.

:class:`MemorySource` adapts a dict of sets to the ``DigestSource`` and
``CheckpointSource`` protocols (methods taking the group first), as the store does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from node.sync.digest import EMPTY_FINGERPRINT, build_digest, is_empty_range
from node.sync.fingerprint import MOD, event_term, fingerprint


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What the index needs of an event; ``author``/``seq`` feed the authors map."""

    event_id: str
    content_hash: str
    author: str = ""
    seq: int = 0


class _AuthorSeqs:
    __slots__ = ("contiguous", "count", "seqs")

    def __init__(self) -> None:
        self.seqs: dict[int, int] = {}  # seq -> number of events holding it
        self.count = 0
        self.contiguous = 0

    def add(self, seq: int) -> None:
        self.seqs[seq] = self.seqs.get(seq, 0) + 1
        self.count += 1
        while self.contiguous + 1 in self.seqs:
            self.contiguous += 1

    def remove(self, seq: int) -> None:
        left = self.seqs[seq] - 1
        if left:
            self.seqs[seq] = left
        else:
            del self.seqs[seq]
            if seq <= self.contiguous:
                self.contiguous = seq - 1
        self.count -= 1

    def as_dict(self) -> dict[str, int]:
        return {"max_seq": max(self.seqs), "contiguous_seq": self.contiguous, "count": self.count}


class EventSet:
    """One group's events, sorted by ``event_id`` (string order = ULID byte order)."""

    def __init__(self, events: Iterable[EventRecord] = ()) -> None:
        self._records: dict[str, EventRecord] = {}
        self._terms: dict[str, int] = {}
        self._authors: dict[str, _AuthorSeqs] = {}
        for ev in events:
            if ev.event_id in self._records:
                raise ValueError(f"duplicate event id {ev.event_id}")
            self._index_record(ev)
        self._ids: list[str] = sorted(self._records)
        self._prefix: list[int] = [0]  # valid prefix sums: _prefix[k] = sum of first k terms

    # ----------------------------------------------------------------- mutation

    def _index_record(self, ev: EventRecord) -> None:
        self._records[ev.event_id] = ev
        self._terms[ev.event_id] = event_term(ev.event_id, ev.content_hash)
        if ev.author:
            self._authors.setdefault(ev.author, _AuthorSeqs()).add(ev.seq)

    def _unindex_record(self, ev: EventRecord) -> None:
        del self._records[ev.event_id]
        del self._terms[ev.event_id]
        if ev.author:
            seqs = self._authors[ev.author]
            seqs.remove(ev.seq)
            if not seqs.count:
                del self._authors[ev.author]

    def _invalidate(self, pos: int) -> None:
        if len(self._prefix) > pos + 1:
            del self._prefix[pos + 1 :]

    def add(self, ev: EventRecord) -> bool:
        """Insert a new event; False (and no change) when the id is already held."""
        if ev.event_id in self._records:
            return False
        self._index_record(ev)
        pos = bisect_left(self._ids, ev.event_id)
        self._ids.insert(pos, ev.event_id)
        self._invalidate(pos)
        return True

    def replace(self, ev: EventRecord) -> None:
        """Swap the stored version of ``ev.event_id`` (equivocation: §4.3 keeps the lower hash)."""
        old = self._records[ev.event_id]
        self._unindex_record(old)
        self._index_record(ev)
        self._invalidate(bisect_left(self._ids, ev.event_id))

    def remove(self, event_id: str) -> None:
        self._unindex_record(self._records[event_id])
        pos = bisect_left(self._ids, event_id)
        del self._ids[pos]
        self._invalidate(pos)

    # ----------------------------------------------------------------- reads

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._records

    def get(self, event_id: str) -> EventRecord | None:
        return self._records.get(event_id)

    def ids(self) -> list[str]:
        return list(self._ids)

    def authors(self) -> dict[str, dict[str, int]]:
        return {a: s.as_dict() for a, s in sorted(self._authors.items())}

    def span(self, lo: str, hi: str) -> tuple[int, int]:
        if is_empty_range(lo, hi):
            return 0, 0
        i = bisect_left(self._ids, lo) if lo else 0
        j = bisect_left(self._ids, hi) if hi else len(self._ids)
        return i, j

    def id_at(self, index: int) -> str:
        return self._ids[index]

    def _prefix_at(self, k: int) -> int:
        prefix = self._prefix
        if k >= len(prefix):
            ids, terms = self._ids, self._terms
            acc = prefix[-1]
            for n in range(len(prefix) - 1, k):
                acc += terms[ids[n]]
                prefix.append(acc)
        return prefix[k]

    def summary_between(self, i: int, j: int) -> tuple[int, str]:
        if j <= i:
            return 0, EMPTY_FINGERPRINT
        return j - i, fingerprint((self._prefix_at(j) - self._prefix_at(i)) % MOD, j - i)

    def summary(self) -> tuple[int, str]:
        return self.summary_between(0, len(self._ids))

    def range_summary(self, lo: str, hi: str) -> tuple[int, str]:
        return self.summary_between(*self.span(lo, hi))

    def ids_in_range(self, lo: str, hi: str) -> list[str]:
        i, j = self.span(lo, hi)
        return self._ids[i:j]

    def digest(self, group_id: str, server_id: str, lo: str, hi: str, buckets: int) -> dict:
        authors = self.authors() if lo == "" and hi == "" else None
        return build_digest(self, group_id, server_id, lo, hi, buckets, authors)


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
