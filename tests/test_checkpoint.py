"""CHECKPOINT (§5.3): request validation, the responder's paging, the requester's packing."""

from __future__ import annotations

import hashlib
import random
from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.eventset import EventRecord, EventSet, MemorySource

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import Checkpoint, Frame, encode_frame, parse_frame
from node.protocol.ids import CROCKFORD
from node.sync.checkpoint import (
    EVENT_BYTES_CAP,
    MAX_FETCH,
    MAX_IDS,
    CheckpointRange,
    CheckpointRequest,
    pack_requests,
    parse_checkpoint_request,
    parse_checkpoint_response,
    plan_response,
    request_bytes,
    respond,
)

G = "g!test"


def ulid(n: int) -> str:
    return "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(25, -1, -1))


def rec(n: int) -> EventRecord:
    return EventRecord(ulid(n), "sha256:" + hashlib.sha256(str(n).encode()).hexdigest())


def source(ns) -> MemorySource:
    return MemorySource({G: EventSet(rec(n) for n in ns)})


def bad(payload) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_checkpoint_request(payload)
    assert info.value.code == ErrorCode.BAD_FRAME
    return info.value


# --------------------------------------------------------------------------- request rules


def test_request_defaults_and_normalisation():
    req = parse_checkpoint_request(
        {"ranges": [{"lo": ulid(10), "hi": ulid(20), "ids": [ulid(15), ulid(5), ulid(12)]}]}
    )
    assert req.limit == 1000 and req.after == "" and req.fetch == ()
    # ids outside their range are ignored, the rest sorted
    assert req.ranges[0].ids == (ulid(12), ulid(15))
    req = parse_checkpoint_request(
        {"ranges": [{"ids": []}], "fetch": None, "after": None, "limit": None, "x": 1}
    )
    assert req.ranges[0].lo == req.ranges[0].hi == "" and req.limit == 1000


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {},
        {"ranges": []},
        {"ranges": {}},
        {"ranges": ["x"]},
        {"ranges": [{"lo": "", "hi": ""}]},  # ids missing
        {"ranges": [{"lo": "nope", "hi": "", "ids": []}]},
        {"ranges": [{"lo": ulid(0xABCDEF).lower(), "hi": "", "ids": []}]},
        {"ranges": [{"lo": "", "hi": "8" + "0" * 25, "ids": []}]},  # above 2^128 - 1
        {"ranges": [{"lo": "", "hi": "", "ids": ["x"]}]},
        {"ranges": [{"lo": "", "hi": "", "ids": None}]},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "limit": 0},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "limit": 10001},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "limit": True},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "limit": "5"},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "limit": 5.0},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "after": "x"},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "fetch": "x"},
        {"ranges": [{"lo": "", "hi": "", "ids": []}], "fetch": [ulid(1), 3]},
    ],
)
def test_request_violations_are_bad_frame(payload):
    bad(payload)


def test_ranges_must_not_overlap():
    r = lambda lo, hi: {"lo": lo, "hi": hi, "ids": []}  # noqa: E731
    bad({"ranges": [r(ulid(1), ulid(10)), r(ulid(5), ulid(20))]})
    bad({"ranges": [r(ulid(5), ""), r(ulid(10), ulid(20))]})
    bad({"ranges": [r("", ulid(10)), r("", ulid(3))]})
    bad({"ranges": [r(ulid(1), ulid(10)), r(ulid(1), ulid(10))]})
    # touching is fine, order is free, empty ranges (lo ≥ hi) overlap nothing
    ok = parse_checkpoint_request(
        {"ranges": [r(ulid(10), ""), r("", ulid(10)), r(ulid(50), ulid(40))]}
    )
    assert len(ok.ranges) == 3


def test_id_and_fetch_caps():
    ids = [ulid(i) for i in range(MAX_IDS + 1)]
    half = MAX_IDS // 2
    parse_checkpoint_request({"ranges": [{"ids": ids[:MAX_IDS]}]})
    bad({"ranges": [{"ids": ids}]})
    # the cap is over all ranges, counted as sent (outside-range ids included)
    bad(
        {
            "ranges": [
                {"lo": "", "hi": ids[half], "ids": ids[: half + 1]},
                {"lo": ids[half], "hi": "", "ids": ids[half:]},
            ]
        }
    )
    fetch = [ulid(i) for i in range(MAX_FETCH + 1)]
    parse_checkpoint_request({"ranges": [{"ids": []}], "fetch": fetch[:MAX_FETCH]})
    bad({"ranges": [{"ids": []}], "fetch": fetch})


# --------------------------------------------------------------------------- responder


def test_response_want_events_and_ranges():
    src = source(range(0, 100, 2))  # responder holds evens
    mine = [ulid(n) for n in range(0, 50, 3)]  # requester holds multiples of 3 below 50
    req = parse_checkpoint_request({"ranges": [{"lo": "", "hi": ulid(50), "ids": mine}]})
    ids, payload = respond(req, src, G, lambda _i: 300)
    assert ids == [ulid(n) for n in range(0, 50, 2) if n % 3]
    assert payload["want"] == [ulid(n) for n in range(0, 50, 3) if n % 2]
    assert payload["more"] is False and "next" not in payload
    (rng,) = payload["ranges"]
    assert rng["count"] == 25 and rng["lo"] == "" and rng["hi"] == ulid(50)
    assert (rng["count"], rng["fingerprint"]) == src.range_summary(G, "", ulid(50))


def test_paging_by_limit_and_cursor():
    src = source(range(5000))
    req = parse_checkpoint_request({"ranges": [{"lo": "", "hi": "", "ids": []}], "limit": 1000})
    got, pages = [], 0
    while True:
        ids, payload = respond(req, src, G, lambda _i: 300)
        pages += 1
        got += ids
        assert len(ids) <= 1000
        if not payload["more"]:
            break
        assert payload["next"] == ids[-1]
        req = req.page_after(payload["next"])
    # exactly 5000 events: the fifth page is full but nothing is left, so more is false
    assert pages == 5 and got == [ulid(n) for n in range(5000)]


def test_one_mib_of_event_lines_cuts_a_page():
    src = source(range(3000))
    req = parse_checkpoint_request({"ranges": [{"ids": []}], "limit": 10000})
    ids, payload = respond(req, src, G, lambda _i: 1000)
    assert len(ids) == EVENT_BYTES_CAP // 1000 and payload["more"] is True
    assert payload["next"] == ids[-1]
    # a single line over the cap still goes out alone, so paging always progresses
    ids, payload = respond(req, src, G, lambda _i: EVENT_BYTES_CAP + 1)
    assert len(ids) == 1 and payload["more"] is True


def test_fetch_returns_held_ids_whatever_the_ranges_and_after_applies():
    src = source(range(100))
    req = parse_checkpoint_request(
        {
            "ranges": [{"lo": ulid(10), "hi": ulid(20), "ids": [ulid(n) for n in range(10, 20)]}],
            "fetch": [ulid(15), ulid(50), ulid(70), ulid(500)],  # 500 is not held
        }
    )
    ids, payload = respond(req, src, G, lambda _i: 300)
    assert ids == [ulid(15), ulid(50), ulid(70)] and payload["want"] == []
    ids, _ = respond(req.page_after(ulid(50)), src, G, lambda _i: 300)
    assert ids == [ulid(70)]


def test_empty_range_and_several_ranges_merge_in_order():
    src = source(range(100))
    req = parse_checkpoint_request(
        {
            "ranges": [
                {"lo": ulid(60), "hi": ulid(63), "ids": []},
                {"lo": ulid(10), "hi": ulid(12), "ids": []},
                {"lo": ulid(90), "hi": ulid(80), "ids": [ulid(85)]},
            ],
            "limit": 4,
        }
    )
    plan = plan_response(req, src, G)
    assert plan.candidates == [ulid(10), ulid(11), ulid(60), ulid(61)] and plan.truncated
    assert plan.payload()["next"] == ulid(61)
    assert [r["count"] for r in plan.payload()["ranges"]] == [3, 2, 0]
    assert plan.want == []  # ids of an empty range are outside it: ignored


def test_response_ranges_keep_the_order_of_the_request():
    # rev 6 (§5.3): in the order of the request's ranges, not sorted, empty ones included.
    src = source(range(100))
    order = [(ulid(60), ulid(63)), ("", ulid(5)), (ulid(90), ulid(80)), (ulid(95), "")]
    req = parse_checkpoint_request(
        {"ranges": [{"lo": lo, "hi": hi, "ids": []} for lo, hi in order]}
    )
    _ids, payload = respond(req, src, G, lambda _i: 300)
    assert [(r["lo"], r["hi"]) for r in payload["ranges"]] == order
    assert [r["count"] for r in payload["ranges"]] == [3, 5, 0, 5]


@settings(max_examples=60, deadline=None)
@given(
    mine=st.sets(st.integers(0, 300)),
    theirs=st.sets(st.integers(0, 300)),
    cuts=st.lists(st.integers(0, 300), max_size=4, unique=True),
    limit=st.integers(1, 40),
)
def test_pages_deliver_exactly_the_difference(mine, theirs, cuts, limit):
    """Requester's ranges cover everything; paging yields theirs − mine, want = mine − theirs."""
    src = source(theirs)
    bounds = ["", *(ulid(c) for c in sorted(cuts)), ""]
    ranges = []
    for lo, hi in pairwise(bounds):
        ids = [ulid(n) for n in sorted(mine)]
        ranges.append({"lo": lo, "hi": hi, "ids": [i for i in ids if (not lo or i >= lo)]})
    payload = {"ranges": ranges, "limit": limit}
    if sum(len(r["ids"]) for r in ranges) > MAX_IDS:
        return
    req = parse_checkpoint_request(orjson.loads(orjson.dumps(payload)))
    got: list[str] = []
    while True:
        ids, resp = respond(req, src, G, lambda _i: 300)
        got += ids
        if not resp["more"]:
            break
        req = req.page_after(resp["next"])
    assert got == [ulid(n) for n in sorted(theirs - mine)]
    assert resp["want"] == [ulid(n) for n in sorted(mine - theirs)]


# --------------------------------------------------------------------------- requester


def _worst_case_line(req: CheckpointRequest) -> bytes:
    frame = Frame(
        "CHECKPOINT",
        ulid(2**127),
        "s" * 64,
        2**31,
        Checkpoint(req.to_payload()),
        "g!" + "x" * 128,
    )
    return encode_frame(frame)[:-1]


@pytest.mark.parametrize("max_message_size", [65536, 8000, 2000])
def test_packing_respects_both_limits_and_covers_exactly(max_message_size):
    rng = random.Random(max_message_size)
    ranges, start = [], 0
    for _ in range(40):
        width = rng.choice([5, 50, 500, 3000])
        held = sorted(rng.sample(range(start, start + width), rng.randint(0, width // 2)))
        ranges.append(CheckpointRange(ulid(start), ulid(start + width), tuple(map(ulid, held))))
        start += width
    reqs = pack_requests(ranges, max_message_size=max_message_size, limit=77)
    flat = [r for req in reqs for r in req.ranges]
    # the pieces tile the original ranges and partition their ids
    assert flat[0].lo == ranges[0].lo and flat[-1].hi == ranges[-1].hi
    for a, b in pairwise(flat):
        assert a.hi == b.lo
    assert [i for r in flat for i in r.ids] == [i for r in ranges for i in r.ids]
    for req in reqs:
        assert req.limit == 77
        assert sum(len(r.ids) for r in req.ranges) <= MAX_IDS
        line = _worst_case_line(req)
        assert len(line) <= max_message_size
        # and the responder accepts what we send
        parsed = parse_checkpoint_request(parse_frame(line).payload.body)
        assert parsed.ranges == req.ranges
    # as few requests as the limits allow: each but the last is full (greedy packing)
    for req in reqs[:-1]:
        ids = sum(len(r.ids) for r in req.ranges)
        assert ids == MAX_IDS or request_bytes(req) + 80 + 29 > max_message_size


def test_packing_batches_small_ranges_into_one_request():
    ranges = [
        CheckpointRange(ulid(i * 10), ulid(i * 10 + 10), (ulid(i * 10 + 1),)) for i in range(50)
    ]
    (req,) = pack_requests(ranges)
    assert len(req.ranges) == 50


def test_packing_refuses_an_impossible_message_size():
    with pytest.raises(ValueError):
        pack_requests([CheckpointRange("", "", ())], max_message_size=400)


def test_response_parsing():
    ok = parse_checkpoint_response(
        {
            "want": [ulid(1)],
            "more": True,
            "next": ulid(9),
            "ranges": [{"lo": "", "hi": ulid(3), "count": 2, "fingerprint": "0" * 32}],
            "extra": 1,
        }
    )
    assert ok.want == (ulid(1),) and ok.next == ulid(9) and ok.ranges[0].count == 2
    assert parse_checkpoint_response({"more": False, "next": "junk"}).next is None
    for payload in (
        None,
        {"more": "false"},
        {"more": True},
        {"more": False, "want": ["x"]},
        {"more": False, "ranges": {}},
        {"more": False, "ranges": [{"count": -1, "fingerprint": "0" * 32}]},
        {"more": False, "ranges": [{"count": 1, "fingerprint": "A" * 32}]},
        {"more": False, "ranges": [{"lo": "x", "count": 1, "fingerprint": "0" * 32}]},
    ):
        with pytest.raises(ProtocolError):
            parse_checkpoint_response(payload)
