"""The sorted index of node.sync.index: author seqs and lazily rebuilt prefix sums.

The store's and the event set's hypothesis tests compare the whole index with a
recomputation; these pin down the cases random operations rarely reach.
"""

from __future__ import annotations

import hashlib

from node.protocol.ids import CROCKFORD
from node.sync.fingerprint import Accumulator, event_term
from node.sync.index import AuthorSeqs, GroupIndex, Index


def ulid(n: int) -> str:
    return "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(25, -1, -1))


def chash(n: int, version: int = 0) -> str:
    return "sha256:" + hashlib.sha256(f"{n}/{version}".encode()).hexdigest()


def triple(s: AuthorSeqs) -> tuple[int, int, int]:
    return s.max_seq, s.contiguous, s.count


def test_two_events_at_one_seq_hold_it_until_both_are_gone():
    s = AuthorSeqs()
    for seq in (1, 1, 2):
        s.add(seq)
    assert triple(s) == (2, 2, 3)
    s.remove(1)
    assert triple(s) == (2, 2, 2) and s.holds(1)
    s.remove(1)
    assert triple(s) == (2, 0, 1) and not s.holds(1) and s.holds(2)
    s.add(1)
    assert triple(s) == (2, 2, 2)


def test_holes_fill_and_reopen():
    s = AuthorSeqs()
    for seq in (1, 2, 4, 5, 9):
        s.add(seq)
    assert triple(s) == (9, 2, 5)
    s.add(3)
    assert triple(s) == (9, 5, 6) and not s.above - {9}
    s.remove(2)
    assert triple(s) == (9, 1, 5) and s.holds(3) and not s.holds(2)
    s.remove(9)  # the maximum goes: the next one held is the new maximum
    assert triple(s) == (5, 1, 4)
    s.remove(5)
    s.remove(4)
    s.remove(3)
    assert triple(s) == (1, 1, 1)


def test_prefix_sums_follow_out_of_order_writes():
    g = GroupIndex()
    terms = {}
    for n in (50, 10, 40, 20, 30, 5, 45):
        terms[ulid(n)] = event_term(ulid(n), chash(n))
        g.add(ulid(n), terms[ulid(n)])
        assert g.range_summary(ulid(10), ulid(41)) == scratch(terms, ulid(10), ulid(41))
    g.change(ulid(20), event_term(ulid(20), chash(20, 1)))
    terms[ulid(20)] = event_term(ulid(20), chash(20, 1))
    assert g.range_summary(ulid(6), "") == scratch(terms, ulid(6), "")
    g.discard(ulid(5))
    del terms[ulid(5)]
    assert g.range_summary("", ulid(21)) == scratch(terms, "", ulid(21))
    assert g.summary() == scratch(terms, "", "")
    assert g.range_summary(ulid(30), ulid(30)) == (0, Accumulator().fingerprint())


def scratch(terms: dict[str, int], lo: str, hi: str) -> tuple[int, str]:
    acc = Accumulator()
    for event_id, term in terms.items():
        if (not lo or event_id >= lo) and (not hi or event_id < hi):
            acc.add(term)
    return acc.count, acc.fingerprint()


def test_index_lists_only_groups_holding_events():
    index = Index()
    index.group("g!b").add(ulid(1), 1)
    index.group("g!a").add(ulid(2), 2)
    index.group("g!a").discard(ulid(2))
    assert index.names() == ["g!b"]
    assert index.count("g!a") == 0 and index.count("g!unknown") == 0
    assert index.match("g!b", ulid(1), chash(1)) is False  # held, with another term
    assert index.match("g!b", ulid(3), chash(3)) is None
