"""Digests (§5.1, §5.2): the query, building from a sorted index, validating a peer's document."""

from __future__ import annotations

import copy
import hashlib
import json
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.eventset import EventRecord, EventSet

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.ids import CROCKFORD
from node.sync.digest import (
    DEFAULT_BUCKETS,
    EMPTY_FINGERPRINT,
    DigestQuery,
    parse_digest,
    parse_digest_query,
)
from node.sync.fingerprint import Accumulator, event_term
from node.sync.index import bucket_starts

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v1.json").read_text())
U1, U2 = "01KAZ2J2NV0000000000000034", "01KAZ2JCEB000000000000003E"


def ulid(n: int) -> str:
    return "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(25, -1, -1))


def rec(n: int, version: int = 0, author: str = "server-a", seq: int = 0) -> EventRecord:
    h = "sha256:" + hashlib.sha256(f"{n}/{version}".encode()).hexdigest()
    return EventRecord(ulid(n), h, author, seq or n + 1)


def brute(records, lo: str, hi: str) -> tuple[int, str]:
    acc = Accumulator()
    for r in records:
        if (not lo or r.event_id >= lo) and (not hi or r.event_id < hi):
            acc.add(event_term(r.event_id, r.content_hash))
    return acc.count, acc.fingerprint()


# --------------------------------------------------------------------------- vectors


def test_fingerprint_vectors():
    for case in VECTORS["fingerprints"]:
        s = EventSet(EventRecord(e["event_id"], e["content_hash"]) for e in case["events"])
        assert s.summary() == (case["count"], case["fingerprint"])
    assert VECTORS["fingerprints"][0]["fingerprint"] == EMPTY_FINGERPRINT


def _vector_set() -> EventSet:
    v = VECTORS["digest"]
    return EventSet(
        EventRecord(e["event_id"], e["content_hash"], e["author"], e["seq"]) for e in v["events"]
    )


def test_digest_vector_byte_for_byte():
    v = VECTORS["digest"]
    q = parse_digest_query(v["query"] | {"buckets": str(v["query"]["buckets"])})
    doc = _vector_set().digest("g!example", "server-bob", q.lo, q.hi, q.buckets)
    assert doc == v["document"]
    parsed = parse_digest(
        doc, group_id="g!example", lo="", hi="", buckets=4, server_id="server-bob"
    )
    assert parsed.authors["server-alice"].contiguous_seq == 6
    assert [b.count for b in parsed.buckets] == [10, 10, 10, 10]


# --------------------------------------------------------------------------- query


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", DigestQuery("", "", 16)),
        ("?buckets=1", DigestQuery("", "", 1)),
        ("buckets=256&lo=&hi=", DigestQuery("", "", 256)),
        (f"lo={U1}&hi={U2}&buckets=4", DigestQuery(U1, U2, 4)),
        (f"lo={U2}&hi={U1}", DigestQuery(U2, U1, 16)),  # lo ≥ hi: an empty range, not an error
        ("buckets=007&unknown=x", DigestQuery("", "", 7)),
        ({"lo": U1, "buckets": "2"}, DigestQuery(U1, "", 2)),
        ({"hi": [U2]}, DigestQuery("", U2, DEFAULT_BUCKETS)),
    ],
)
def test_digest_query_valid(query, expected):
    assert parse_digest_query(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "buckets=",
        "buckets",
        "buckets=0",
        "buckets=257",
        "buckets=-1",
        "buckets=+1",
        "buckets=%201",
        "buckets=1.0",
        "buckets=abc",
        "buckets=99999999999999999999",
        "lo=abc",
        f"lo={U1.lower()}",
        "hi=81KAZ2J2NV0000000000000034",
        f"hi={U1}0",
        f"lo={U1}&lo={U2}",
        "buckets=4&buckets=4",
        {"buckets": ""},
        {"lo": [U1, U2]},
    ],
)
def test_digest_query_invalid_is_bad_frame(query):
    with pytest.raises(ProtocolError) as info:
        parse_digest_query(query)
    assert info.value.code == ErrorCode.BAD_FRAME


def test_query_string_round_trip():
    q = DigestQuery(U1, U2, 9)
    assert parse_digest_query(q.to_query_string()) == q


# --------------------------------------------------------------------------- building


def test_bucket_starts():
    assert bucket_starts(0, 16) == [0]
    assert bucket_starts(3, 16) == [0, 1, 2]
    assert bucket_starts(40, 4) == [0, 10, 20, 30]
    starts = bucket_starts(103, 16)
    sizes = [b - a for a, b in pairwise([*starts, 103])]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 103


def test_empty_ranges_have_one_empty_bucket():
    s = EventSet(rec(n) for n in range(10))
    for lo, hi in ((ulid(5), ulid(5)), (ulid(7), ulid(3)), (ulid(100), "")):
        doc = s.digest("g!x", "server-a", lo, hi, 16)
        assert doc["count"] == 0 and doc["fingerprint"] == EMPTY_FINGERPRINT
        assert doc["buckets"] == [
            {"lo": lo, "hi": hi, "count": 0, "fingerprint": EMPTY_FINGERPRINT}
        ]
        assert "authors" not in doc
        parse_digest(doc, group_id="g!x", lo=lo, hi=hi, buckets=16)
    doc = EventSet().digest("g!x", "server-a", "", "", 16)
    assert doc["authors"] == {} and len(doc["buckets"]) == 1
    parse_digest(doc, group_id="g!x", lo="", hi="", buckets=16)


def test_authors_map_with_holes_and_double_seqs():
    s = EventSet(
        [
            rec(1, author="a", seq=1),
            rec(2, author="a", seq=2),
            rec(3, author="a", seq=4),
            rec(4, author="b", seq=2),
            rec(5, author="c", seq=1),
            rec(6, author="c", seq=1),  # same (author, seq), another id: both kept
        ]
    )
    assert s.authors() == {
        "a": {"max_seq": 4, "contiguous_seq": 2, "count": 3},
        "b": {"max_seq": 2, "contiguous_seq": 0, "count": 1},
        "c": {"max_seq": 1, "contiguous_seq": 1, "count": 2},
    }
    s.add(rec(7, author="a", seq=3))
    s.add(rec(8, author="b", seq=1))
    assert s.authors()["a"]["contiguous_seq"] == 4
    assert s.authors()["b"]["contiguous_seq"] == 2
    s.remove(ulid(2))
    assert s.authors()["a"] == {"max_seq": 4, "contiguous_seq": 1, "count": 3}
    s.remove(ulid(5))
    assert s.authors()["c"] == {"max_seq": 1, "contiguous_seq": 1, "count": 1}
    doc = s.digest("g!x", "server-a", "", "", 3)
    parse_digest(doc, group_id="g!x", lo="", hi="", buckets=3)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "replace", "remove"]), st.integers(0, 200)),
        max_size=120,
    ),
    bounds=st.lists(st.integers(0, 210), min_size=2, max_size=2),
    buckets=st.integers(1, 20),
)
def test_index_matches_a_from_scratch_recomputation(ops, bounds, buckets):
    s = EventSet(rec(n) for n in range(0, 200, 5))
    model = {ulid(n): rec(n) for n in range(0, 200, 5)}
    for version, (op, n) in enumerate(ops, 1):
        eid = ulid(n)
        if op == "add" and eid not in model:
            model[eid] = rec(n, version)
            assert s.add(model[eid])
        elif op == "replace" and eid in model:
            model[eid] = rec(n, version)
            s.replace(model[eid])
        elif op == "remove" and eid in model:
            del model[eid]
            s.remove(eid)
        # interleave reads so lazily rebuilt prefix sums are exercised mid-way
        if version % 7 == 0:
            assert s.summary() == brute(model.values(), "", "")
    records = sorted(model.values(), key=lambda r: r.event_id)
    assert s.ids() == [r.event_id for r in records]
    assert s.summary() == brute(records, "", "")
    lo, hi = (ulid(b) if b < 205 else "" for b in bounds)
    assert s.range_summary(lo, hi) == brute(records, lo, hi)
    doc = s.digest("g!x", "server-a", lo, hi, buckets)
    parse_digest(doc, group_id="g!x", lo=lo, hi=hi, buckets=buckets)
    for b in doc["buckets"]:
        assert (b["count"], b["fingerprint"]) == brute(records, b["lo"], b["hi"])
    assert (doc["count"], doc["fingerprint"]) == brute(records, lo, hi)


# --------------------------------------------------------------------------- validation


def _doc():
    return copy.deepcopy(VECTORS["digest"]["document"])


def _check(doc, **kw):
    args = {"group_id": "g!example", "lo": "", "hi": "", "buckets": 4, "server_id": "server-bob"}
    return parse_digest(doc, **(args | kw))


def _mutations():
    def m(fn):
        def apply():
            d = _doc()
            return fn(d) or d

        return apply

    return {
        "not an object": lambda: [],
        "other group": m(lambda d: d.update(group_id="g!other")),
        "other server": m(lambda d: d.update(server_id="server-eve")),
        "bad server id": m(lambda d: d.update(server_id="bad id")),
        "lo echo": m(lambda d: d.update(lo=U1)),
        "count type": m(lambda d: d.update(count="40")),
        "count bool": m(lambda d: d.update(count=True)),
        "fingerprint case": m(lambda d: d.update(fingerprint=d["fingerprint"].upper())),
        "fingerprint len": m(lambda d: d.update(fingerprint="00")),
        "authors missing": m(lambda d: d.pop("authors")),
        "authors not object": m(lambda d: d.update(authors=[])),
        "author id": m(lambda d: d["authors"].update({"bad id": d["authors"]["server-bob"]})),
        "author sum": m(lambda d: d["authors"]["server-bob"].update(count=19)),
        "author contiguous": m(lambda d: d["authors"]["server-bob"].update(contiguous_seq=30)),
        "author max_seq": m(lambda d: d["authors"]["server-bob"].update(max_seq=0)),
        "buckets missing": m(lambda d: d.pop("buckets")),
        "buckets empty": m(lambda d: d.update(buckets=[])),
        "too few buckets": m(lambda d: d.update(buckets=d["buckets"][:3])),
        "gap": m(lambda d: d["buckets"][1].update(lo=U1)),
        "first lo": m(lambda d: d["buckets"][0].update(lo=U1)),
        "last hi": m(lambda d: d["buckets"][3].update(hi=U1)),
        "boundary not ulid": m(
            lambda d: (d["buckets"][0].update(hi="x"), d["buckets"][1].update(lo="x"))
        ),
        "boundary order": m(
            lambda d: (
                d["buckets"][1].update(hi=U1),
                d["buckets"][2].update(lo=U1),
            )
        ),
        "bucket count sum": m(lambda d: d["buckets"][0].update(count=9)),
        "empty bucket": m(
            lambda d: (d["buckets"][0].update(count=0), d["buckets"][1].update(count=20))
        ),
        "bucket fingerprint": m(lambda d: d["buckets"][2].update(fingerprint="zz")),
        "bucket not object": m(lambda d: d["buckets"].__setitem__(1, "b")),
    }


@pytest.mark.parametrize("name", list(_mutations()))
def test_malformed_digest_documents_are_rejected(name):
    doc = _mutations()[name]()
    with pytest.raises(ProtocolError) as info:
        _check(doc)
    assert info.value.code == ErrorCode.BAD_FRAME


def test_digest_validation_of_ranges():
    s = _vector_set()
    doc = s.digest("g!example", "server-bob", U1, U2, 4)
    _check(doc, lo=U1, hi=U2)
    with pytest.raises(ProtocolError):
        _check(doc | {"authors": {}}, lo=U1, hi=U2)  # authors only for the whole group
    with pytest.raises(ProtocolError):
        _check(doc, lo=U1, hi=U2, buckets=16)  # fewer buckets than min(16, count)
    with pytest.raises(ProtocolError):  # a single bucket carries the whole range's print
        _check(
            s.digest("g!example", "server-bob", U1, U2, 1)
            | {"fingerprint": EMPTY_FINGERPRINT.replace("2", "3")},
            lo=U1,
            hi=U2,
            buckets=1,
        )
    empty = s.digest("g!example", "server-bob", U2, U1, 4)
    empty["fingerprint"] = "0" * 32
    empty["buckets"][0]["fingerprint"] = "0" * 32
    with pytest.raises(ProtocolError):
        _check(empty, lo=U2, hi=U1)  # an empty range has the empty fingerprint
    # no expected server id: any valid one is accepted
    assert parse_digest(_doc(), group_id="g!example", lo="", hi="", buckets=4).count == 40
