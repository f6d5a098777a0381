"""The sorted event index of §5: what a server answers fingerprints and digests from.

One implementation serves the store and the tests of the repair planner, so the planner
is tested against exactly what it runs against. Per group (:class:`GroupIndex`):

- the event ids, sorted (string order is ULID byte order), each with its fingerprint
  term (§5.1) and an O(1) accumulator of the whole group;
- prefix sums of the terms, recomputed lazily from the first position that changed. A
  range's fingerprint is the difference of two prefix sums found by bisection, so the
  buckets of a digest (§5.2) cost O(buckets · log n) and no scan, even right after a
  batch of inserts (the first read pays for the batch once);
- per author, (max_seq, contiguous_seq, count) kept incrementally (:class:`AuthorSeqs`).

:class:`Index` holds every group and answers group first, the shape of
``planner.DigestSource`` and ``checkpoint.CheckpointSource``. The index holds no event
contents: whoever owns it (the store) knows where they are.
"""

from __future__ import annotations

from bisect import bisect_left

from node.protocol.errors import ErrorCode, ProtocolError
from node.sync.digest import (
    DEFAULT_BUCKETS,
    EMPTY_FINGERPRINT,
    MAX_BUCKETS,
    is_bound,
)
from node.sync.fingerprint import MOD, Accumulator, event_term, fingerprint

_MASK = MOD - 1


class AuthorSeqs:
    """(max_seq, contiguous_seq, count) of one author in one group, kept incrementally.

    Held seqs are ``1..contiguous`` plus ``above``, so an author whose events arrive in
    order costs no memory beyond three integers. ``repeats`` counts the events beyond
    the first at one seq (an equivocating author): removing one of two such events
    leaves the seq held. Seqs are ≥ 1 (the frame rules refuse anything else); an event
    stored with another is counted and otherwise ignored.
    """

    __slots__ = ("above", "contiguous", "count", "max_seq", "repeats")

    def __init__(self) -> None:
        self.count = 0
        self.max_seq = 0
        self.contiguous = 0
        self.above: set[int] = set()
        self.repeats: dict[int, int] = {}

    def holds(self, seq: int) -> bool:
        return 0 < seq <= self.contiguous or seq in self.above

    def add(self, seq: int) -> None:
        self.count += 1
        if seq < 1:
            return
        if self.holds(seq):
            self.repeats[seq] = self.repeats.get(seq, 0) + 1
            return
        if seq > self.max_seq:
            self.max_seq = seq
        if seq != self.contiguous + 1:
            self.above.add(seq)
            return
        self.contiguous = seq
        above = self.above
        while above and self.contiguous + 1 in above:
            self.contiguous += 1
            above.remove(self.contiguous)

    def remove(self, seq: int) -> None:
        """Forget one event at ``seq`` (which must be held)."""
        self.count -= 1
        if seq < 1:
            return
        extra = self.repeats.get(seq)
        if extra:
            if extra == 1:
                del self.repeats[seq]
            else:
                self.repeats[seq] = extra - 1
            return
        if seq <= self.contiguous:
            self.above.update(range(seq + 1, self.contiguous + 1))
            self.contiguous = seq - 1
        else:
            self.above.remove(seq)
        if seq == self.max_seq:
            self.max_seq = max(self.above) if self.above else self.contiguous

    def as_dict(self) -> dict[str, int]:
        """The entry of the §5.2 ``authors`` map."""
        return {"max_seq": self.max_seq, "contiguous_seq": self.contiguous, "count": self.count}


class GroupIndex:
    """One group's sorted event ids, their terms, lazy prefix sums and author seqs."""

    __slots__ = ("acc", "authors", "ids", "prefix", "terms", "valid")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.terms: dict[str, int] = {}
        # prefix[i] = sum of the terms of ids[:i] (mod 2^256), trustworthy for i <= valid.
        self.prefix: list[int] = [0]
        self.valid = 0
        self.acc = Accumulator()
        self.authors: dict[str, AuthorSeqs] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.terms

    # ----------------------------------------------------------------- writes

    def add(self, event_id: str, term: int) -> None:
        """Insert an id not yet held, with its fingerprint term."""
        ids = self.ids
        if not ids or ids[-1] < event_id:
            pos = len(ids)
            ids.append(event_id)
        else:
            pos = bisect_left(ids, event_id)
            ids.insert(pos, event_id)
        self.terms[event_id] = term
        self.acc.add(term)
        if pos < self.valid:
            self.valid = pos

    def change(self, event_id: str, term: int) -> None:
        """Another version of a held id (§4.3 keeps the lower content hash)."""
        old = self.terms[event_id]
        self.terms[event_id] = term
        self.acc.remove(old)
        self.acc.add(term)
        pos = bisect_left(self.ids, event_id)
        if pos < self.valid:
            self.valid = pos

    def discard(self, event_id: str) -> None:
        term = self.terms.pop(event_id)
        pos = bisect_left(self.ids, event_id)
        del self.ids[pos]
        self.acc.remove(term)
        if pos < self.valid:
            self.valid = pos

    def add_seq(self, author: str, seq: int) -> None:
        state = self.authors.get(author)
        if state is None:
            state = self.authors[author] = AuthorSeqs()
        state.add(seq)

    def remove_seq(self, author: str, seq: int) -> None:
        state = self.authors[author]
        state.remove(seq)
        if state.count == 0:
            del self.authors[author]

    # ----------------------------------------------------------------- reads

    def match(self, event_id: str, content_hash: str) -> bool | None:
        """Is ``event_id`` held with this content hash? None when not held at all.

        Equal terms mean equal content hashes (SHA-256 is collision resistant), so this
        is the duplicate check of §4.3 without reading the event.
        """
        held = self.terms.get(event_id)
        if held is None:
            return None
        return held == event_term(event_id, content_hash)

    def seq_held(self, author: str, seq: int) -> bool:
        state = self.authors.get(author)
        return state is not None and state.holds(seq)

    def max_seq(self, author: str) -> int:
        state = self.authors.get(author)
        return 0 if state is None else state.max_seq

    def authors_map(self) -> dict[str, dict[str, int]]:
        """The §5.2 ``authors`` map, sorted by author."""
        authors = self.authors
        return {a: authors[a].as_dict() for a in sorted(authors)}

    def bounds(self, lo: str, hi: str) -> tuple[int, int]:
        """Positions [i, j) of the ids in [lo, hi); an empty bound is open (§5.1), and a
        range with lo ≥ hi holds nothing (§5.2)."""
        ids = self.ids
        i = bisect_left(ids, lo) if lo else 0
        j = bisect_left(ids, hi) if hi else len(ids)
        return i, max(i, j)

    def id_at(self, position: int) -> str:
        return self.ids[position]

    def ids_in_range(self, lo: str = "", hi: str = "") -> list[str]:
        i, j = self.bounds(lo, hi)
        return self.ids[i:j]

    def _prefix(self) -> list[int]:
        prefix = self.prefix
        n = len(self.ids)
        if self.valid < n or len(prefix) != n + 1:
            del prefix[self.valid + 1 :]
            total = prefix[-1]
            terms = self.terms
            append = prefix.append
            for event_id in self.ids[self.valid :]:
                total = (total + terms[event_id]) & _MASK
                append(total)
            self.valid = n
        return prefix

    def summary(self) -> tuple[int, str]:
        """(count, fingerprint) of the whole group, O(1)."""
        return len(self.ids), self.acc.fingerprint()

    def summary_between(self, i: int, j: int) -> tuple[int, str]:
        """(count, fingerprint) of the ids at positions [i, j)."""
        if j <= i:
            return 0, EMPTY_FINGERPRINT
        if i == 0 and j == len(self.ids):
            return self.summary()
        prefix = self._prefix()
        return j - i, fingerprint(prefix[j] - prefix[i], j - i)

    def range_summary(self, lo: str = "", hi: str = "") -> tuple[int, str]:
        """(count, fingerprint) of the events with lo ≤ event_id < hi (empty = open)."""
        return self.summary_between(*self.bounds(lo, hi))


EMPTY = GroupIndex()
"""The index of a group nobody has written to; never written to itself."""


def bucket_starts(count: int, buckets: int) -> list[int]:
    """Offsets (from the range start) of the first event of each bucket.

    ``min(buckets, count)`` buckets whose sizes differ by at most one; one bucket when
    the range is empty.
    """
    k = max(1, min(buckets, count))
    return [(b * count) // k for b in range(k)]


def build_digest(
    index: GroupIndex, group_id: str, server_id: str, lo: str, hi: str, buckets: int
) -> dict:
    """The §5.2 document for ``[lo, hi)``; ``authors`` only for the whole group.

    Bucket b holds positions ``[b*count//k, (b+1)*count//k)`` of the range. Malformed
    bounds or bucket counts are BAD_FRAME whoever asks.
    """
    if not is_bound(lo):
        raise ProtocolError(ErrorCode.BAD_FRAME, "lo must be empty or a canonical ULID")
    if not is_bound(hi):
        raise ProtocolError(ErrorCode.BAD_FRAME, "hi must be empty or a canonical ULID")
    if type(buckets) is not int or not 1 <= buckets <= MAX_BUCKETS:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"buckets must be an integer 1–{MAX_BUCKETS}")
    i, j = index.bounds(lo, hi)
    count, fp = index.summary_between(i, j)
    doc: dict = {
        "group_id": group_id,
        "server_id": server_id,
        "lo": lo,
        "hi": hi,
        "count": count,
        "fingerprint": fp,
    }
    if not lo and not hi:
        doc["authors"] = index.authors_map()
    starts = bucket_starts(count, buckets)
    k = len(starts)
    ids = index.ids
    out = []
    for b, start in enumerate(starts):
        end = starts[b + 1] if b + 1 < k else count
        b_count, b_fp = index.summary_between(i + start, i + end)
        out.append(
            {
                "lo": lo if b == 0 else ids[i + start],
                "hi": hi if b + 1 == k else ids[i + end],
                "count": b_count,
                "fingerprint": b_fp,
            }
        )
    doc["buckets"] = out
    return doc


class Index:
    """Every group's :class:`GroupIndex`, read group first as the planner and the
    checkpoint responder ask (``DigestSource``, ``CheckpointSource`` minus the events)."""

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[str, GroupIndex] = {}

    def group(self, group_id: str) -> GroupIndex:
        """The group's index, created empty on first write."""
        index = self.groups.get(group_id)
        if index is None:
            index = self.groups[group_id] = GroupIndex()
        return index

    def get(self, group_id: str) -> GroupIndex:
        """The group's index for reading (an empty one if the group is unknown)."""
        return self.groups.get(group_id, EMPTY)

    def names(self) -> list[str]:
        """The groups holding at least one event, sorted."""
        return sorted(g for g, index in self.groups.items() if index.ids)

    def count(self, group_id: str) -> int:
        return len(self.get(group_id))

    def holds(self, group_id: str, event_id: str) -> bool:
        return event_id in self.get(group_id)

    def match(self, group_id: str, event_id: str, content_hash: str) -> bool | None:
        return self.get(group_id).match(event_id, content_hash)

    def seq_held(self, group_id: str, author: str, seq: int) -> bool:
        return self.get(group_id).seq_held(author, seq)

    def summary(self, group_id: str) -> tuple[int, str]:
        return self.get(group_id).summary()

    def authors(self, group_id: str) -> dict[str, dict[str, int]]:
        return self.get(group_id).authors_map()

    def range_summary(self, group_id: str, lo: str = "", hi: str = "") -> tuple[int, str]:
        return self.get(group_id).range_summary(lo, hi)

    def ids_in_range(self, group_id: str, lo: str = "", hi: str = "") -> list[str]:
        return self.get(group_id).ids_in_range(lo, hi)

    def digest(
        self,
        group_id: str,
        server_id: str,
        lo: str = "",
        hi: str = "",
        buckets: int = DEFAULT_BUCKETS,
    ) -> dict:
        return build_digest(self.get(group_id), group_id, server_id, lo, hi, buckets)
