"""The repair planner driven against a real responder, in-process, over in-memory sets.

Every exchange goes through the real code of both ends: the digest query is parsed
and the document built by the responder and validated by the planner; CHECKPOINT
payloads are JSON round-tripped, parsed by the responder's validator and answered by
its paging logic. Fingerprints are the real ones of §5.1. The "shell" here stores
what the planner accepted, applying the lower-content-hash rule of §4.3, and counts
approximate wire bytes (JSON bodies plus EVENT lines of ~300 bytes).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.eventset import EventRecord, EventSet, MemorySource

from node.protocol.ids import CROCKFORD, is_ulid
from node.sync.checkpoint import FRAME_OVERHEAD, parse_checkpoint_request, respond
from node.sync.digest import parse_digest_query
from node.sync.planner import (
    Done,
    Failed,
    FetchDigest,
    RepairPlanner,
    SendCheckpoint,
    SendEvents,
    ulid_successor,
)
from node.view.builder import repair_snapshot
from node.view.snapshot import DIGEST_EQUAL, DIGEST_EQUIVOCATION, DIGEST_FAILED
from tests.diffsets import split_sides

G = "g!test"
PEER = "server-bob"
EVENT_LINE = 300  # approximate bytes of one EVENT line
AUTHORS = ("server-alice", "server-bob", "server-carol")


def encode_ulid(n: int) -> str:
    return "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(25, -1, -1))


def universe(n: int, seed: int = 1) -> list[EventRecord]:
    """n events in id order, authored round-robin, seqs increasing with time."""
    rng = random.Random(seed)
    out = []
    seqs = dict.fromkeys(AUTHORS, 0)
    ts = 1_760_000_000_000
    for i in range(n):
        ts += rng.randint(1, 20)
        eid = encode_ulid((ts << 80) | rng.getrandbits(80))
        author = AUTHORS[i % len(AUTHORS)]
        seqs[author] += 1
        h = "sha256:" + hashlib.sha256(f"{seed}/{i}".encode()).hexdigest()
        out.append(EventRecord(eid, h, author, seqs[author]))
    return out


def split(n: int, d: int, kind: str, seed: int = 1) -> tuple[list, list]:
    """Two sides sharing n events, each holding d events the other lacks."""
    return split_sides(universe(n + 2 * d, seed), d, kind, random.Random(seed * 7 + d), AUTHORS)


def store(s: EventSet, ev: EventRecord, lower_hash_rule: bool = True) -> None:
    held = s.get(ev.event_id)
    if held is None:
        s.add(ev)
    elif lower_hash_rule and ev.content_hash < held.content_hash:
        s.replace(ev)


@dataclass
class Result:
    outcome: Done | Failed
    planner: RepairPlanner
    rounds: int
    requests: list = field(default_factory=list)
    max_request_line: int = 0


def drive(
    local: EventSet,
    remote: EventSet,
    *,
    lower_hash_rule: bool = True,
    during=None,
    tamper=None,
    max_steps: int = 100_000,
    **options,
) -> Result:
    """Run one repair of ``local`` against ``remote`` until Done or Failed.

    Requests are answered in FIFO order, which is what a shell running each round's
    requests concurrently sees; ``rounds`` is the longest chain of dependent
    exchanges (the latency in round trips).
    """
    src_local, src_remote = MemorySource({G: local}), MemorySource({G: remote})
    planner = RepairPlanner(src_local, G, PEER, **options)
    queue = deque((a, 1) for a in planner.start(0.0))
    rounds = 0
    result = Result(None, planner, 0)  # type: ignore[arg-type]
    steps = 0
    while queue:
        steps += 1
        assert steps < max_steps, "planner does not terminate"
        action, rnd = queue.popleft()
        now = float(steps)
        if during is not None:
            during(steps, local, remote)
        if isinstance(action, Done | Failed):
            result.outcome = action
            result.rounds = rounds
            return result
        rounds = max(rounds, rnd)
        result.requests.append(action)
        if isinstance(action, FetchDigest):
            query = parse_digest_query(action.query.to_query_string())
            doc = src_remote.digest(G, PEER, query.lo, query.hi, query.buckets)
            if tamper is not None:
                doc = tamper(action, doc)
            body = orjson.dumps(doc)
            nbytes = 200 + len(body)  # request line and headers, roughly
            new = planner.on_digest(action, orjson.loads(body), nbytes, now)
        elif isinstance(action, SendCheckpoint):
            line = orjson.dumps(action.payload)
            result.max_request_line = max(result.max_request_line, len(line) + FRAME_OVERHEAD)
            req = parse_checkpoint_request(orjson.loads(line))
            ids, payload = respond(req, src_remote, G, lambda _i: EVENT_LINE)
            events = [remote.get(i) for i in ids]
            if tamper is not None:
                events, payload = tamper(action, (events, payload))
            body = orjson.dumps(payload)
            nbytes = 200 + len(line) + EVENT_LINE * len(events) + len(body)
            new = planner.on_checkpoint_response(action, events, orjson.loads(body), nbytes, now)
            if not any(isinstance(a, Failed) for a in new):
                for ev in events:
                    store(local, ev, lower_hash_rule)
        elif isinstance(action, SendEvents):
            for eid in action.event_ids:
                ev = local.get(eid)
                if ev is not None:
                    store(remote, ev, lower_hash_rule)
            new = planner.on_events_sent(action, EVENT_LINE * len(action.event_ids), now)
        else:  # pragma: no cover
            raise AssertionError(action)
        queue.extend((a, rnd + 1) for a in new)
    raise AssertionError("planner stopped without Done or Failed")


def assert_equal_sets(a: EventSet, b: EventSet) -> None:
    assert a.summary() == b.summary()
    assert a.ids() == b.ids()


def full_transfer_bytes(n: int) -> int:
    return n * EVENT_LINE


# --------------------------------------------------------------------------- convergence


def test_equal_sets_finish_in_one_round_trip():
    events = universe(2000)
    r = drive(EventSet(events), EventSet(events))
    assert isinstance(r.outcome, Done)
    s = r.outcome.stats
    assert s.converged is True and s.round_trips == 1 and r.planner.state == DIGEST_EQUAL
    assert s.events_fetched == s.events_sent == 0


@pytest.mark.parametrize("kind", ["tails", "holes", "random"])
@pytest.mark.parametrize("d", [1, 10, 100])
def test_repair_converges_within_d_log_n(kind, d):
    n = 10_000
    a_events, b_events = split(n, d, kind)
    a, b = EventSet(a_events), EventSet(b_events)
    r = drive(a, b)
    assert isinstance(r.outcome, Done), r.outcome
    s = r.outcome.stats
    assert s.converged is True
    assert_equal_sets(a, b)
    assert s.events_fetched == d and s.events_sent == d
    # the authors maps give lower bounds, exact when only tails differ
    assert s.we_lack_at_least <= d and s.peer_lacks_at_least <= d
    if kind == "tails":
        assert s.we_lack_at_least == s.peer_lacks_at_least == d
    assert s.tails_only == (kind == "tails")
    # The bound grows like d · log n, never like n (2d events must move anyway; the
    # constant covers the verifying digest and a tail checkpoint of ≤ 1024 ids).
    log_n = math.log2(n)
    assert s.round_trips <= 6 + d * log_n / 2, s.round_trips
    assert s.bytes <= 2 * d * EVENT_LINE + 1200 * d * log_n + 32_000, s.bytes
    assert s.bytes < full_transfer_bytes(n) / 10
    assert r.rounds <= 6


def test_cost_scales_with_log_n_and_d(capsys):
    def cost(n, d):
        a_events, b_events = split(n, d, "random", seed=3)
        a, b = EventSet(a_events), EventSet(b_events)
        t0 = time.perf_counter()
        r = drive(a, b)
        elapsed = time.perf_counter() - t0
        s = r.outcome.stats
        assert s.converged is True
        assert_equal_sets(a, b)
        if n == 100_000:  # the numbers of the closing note (shown with -s)
            full = full_transfer_bytes(n)
            with capsys.disabled():
                print(
                    f"\nn={n} d={d} random: round_trips={s.round_trips} rounds={r.rounds} "
                    f"digests={s.digests} checkpoints={s.checkpoints} sends={s.sends} "
                    f"ranges_compared={s.ranges_compared} bytes={s.bytes} "
                    f"(of which events {2 * d * EVENT_LINE}) full_transfer={full} "
                    f"ratio={s.bytes / full:.3%} planner+responder wall={elapsed * 1000:.0f} ms"
                )
        return s.round_trips, s.bytes

    rt_small, bytes_small = cost(10_000, 10)
    rt_big, bytes_big = cost(100_000, 10)
    # n × 10 adds one level of descent (log_16 (n / threshold) goes from 2 to 3 levels
    # below the top): the cost grows by about that ratio, nowhere near × 10.
    assert rt_big <= 2.5 * rt_small, (rt_small, rt_big)
    assert bytes_big <= 2.5 * bytes_small, (bytes_small, bytes_big)
    assert bytes_big < full_transfer_bytes(100_000) / 100
    for rt, nbytes, n in ((rt_small, bytes_small, 10_000), (rt_big, bytes_big, 100_000)):
        assert rt <= 6 + 10 * math.log2(n) / 2 and nbytes <= 1200 * 10 * math.log2(n) + 32_000
    rt_d1, bytes_d1 = cost(10_000, 1)
    rt_d100, bytes_d100 = cost(10_000, 100)
    # d × 100 costs at most about d × 100 (sublinear: differences share top buckets).
    assert rt_d100 <= 100 * rt_d1 and bytes_d100 <= 100 * bytes_d1
    assert bytes_d100 >= 5 * bytes_d1  # and it is not free: the bound is tight in d


def test_tails_repair_in_one_checkpoint_round():
    a_events, b_events = split(15_000, 10, "tails")  # last bucket: ~940 ids
    a, b = EventSet(a_events), EventSet(b_events)
    r = drive(a, b)
    s = r.outcome.stats
    assert s.converged and s.tails_only
    # digest, checkpoint, send, verifying digest: no descent at all
    assert s.digests == 2 and s.checkpoints == 1 and s.round_trips == 4
    assert_equal_sets(a, b)


def test_one_side_empty_pages_through_everything():
    events = universe(3000)
    a, b = EventSet(), EventSet(events)
    r = drive(a, b, limit=1000)
    s = r.outcome.stats
    assert s.converged and s.events_fetched == 3000 and s.events_sent == 0
    assert_equal_sets(a, b)
    # and the other way round: we hold everything, the peer nothing
    a, b = EventSet(events), EventSet()
    s = drive(a, b).outcome.stats
    assert s.converged and s.events_sent == 3000 and s.events_fetched == 0
    assert_equal_sets(a, b)


def test_peer_lacking_5000_events_gets_them_through_more_pages():
    events = universe(8000, seed=5)
    rng = random.Random(5)
    missing = set(rng.sample(range(8000), 5000))
    lacking = EventSet(e for i, e in enumerate(events) if i not in missing)
    full = EventSet(events)
    pages = []
    r = drive(lacking, full, limit=1000)
    for act in r.requests:
        if isinstance(act, SendCheckpoint):
            pages.append(act.request.after)
    s = r.outcome.stats
    assert s.converged and s.events_fetched == 5000
    assert sum(1 for p in pages if p) >= 4  # several continuation pages
    assert_equal_sets(lacking, full)


def test_small_limits_are_respected():
    a_events, b_events = split(6000, 100, "random", seed=9)
    a, b = EventSet(a_events), EventSet(b_events)
    r = drive(a, b, max_ids_per_request=100, max_message_size=6000, limit=7, buckets=4)
    assert r.outcome.stats.converged
    assert_equal_sets(a, b)
    for act in r.requests:
        if isinstance(act, SendCheckpoint):
            assert sum(len(x.ids) for x in act.request.ranges) <= 100
    assert r.max_request_line <= 6000


@settings(max_examples=40, deadline=None)
@given(
    ours=st.dictionaries(st.integers(0, 400), st.integers(0, 1), max_size=300),
    theirs=st.dictionaries(st.integers(0, 400), st.integers(0, 1), max_size=300),
    buckets=st.integers(2, 8),
    threshold=st.integers(1, 20),
)
def test_any_two_sets_converge(ours, theirs, buckets, threshold):
    """Arbitrary differences, equivocations included (two versions per id), small fan-outs."""

    def records(side):
        return [
            EventRecord(
                encode_ulid(n << 40),
                "sha256:" + hashlib.sha256(f"{n}/{v}".encode()).hexdigest(),
                "server-alice",
                n + 1,
            )
            for n, v in side.items()
        ]

    a, b = EventSet(records(ours)), EventSet(records(theirs))
    r = drive(a, b, buckets=buckets, checkpoint_threshold=threshold)
    assert isinstance(r.outcome, Done)
    assert r.outcome.stats.converged is True
    assert_equal_sets(a, b)
    assert r.outcome.stats.round_trips <= 2 + 3 * 2 * (len(ours) + len(theirs) + 1)


# --------------------------------------------------------------------------- equivocation


def _equivocated(n: int = 5000, which: int = 1234):
    events = universe(n, seed=11)
    ev = events[which]
    other = EventRecord(ev.event_id, "sha256:" + "0" * 64, ev.author, ev.seq)
    higher = EventRecord(ev.event_id, "sha256:" + "f" * 64, ev.author, ev.seq)
    a = EventSet([*events[:which], higher, *events[which + 1 :]])
    b = EventSet([*events[:which], other, *events[which + 1 :]])
    return a, b, ev.event_id


def test_equivocation_is_resolved_by_the_lower_hash_rule_and_flagged():
    a, b, eid = _equivocated()
    r = drive(a, b)
    s = r.outcome.stats
    assert s.converged is True
    assert s.equivocations == {eid}
    assert r.planner.state == DIGEST_EQUIVOCATION
    assert a.get(eid).content_hash == "sha256:" + "0" * 64
    assert_equal_sets(a, b)


def test_equivocation_we_hold_the_lower_version_is_sent_back():
    b, a, eid = _equivocated()  # now we hold the lower hash
    r = drive(a, b)
    s = r.outcome.stats
    assert s.converged is True and s.equivocations == {eid}
    sent = [x for x in r.requests if isinstance(x, SendEvents) and x.equivocation]
    assert sent and sent[0].event_ids == (eid,)
    assert_equal_sets(a, b)


def test_unresolvable_equivocation_stays_flagged_and_does_not_loop():
    a, b, eid = _equivocated()
    r = drive(a, b, lower_hash_rule=False)  # e.g. one version fails verification
    s = r.outcome.stats
    assert isinstance(r.outcome, Done)
    assert s.converged is False
    assert s.equivocations == {eid} and s.unresolved
    assert r.planner.state == DIGEST_EQUIVOCATION
    assert s.passes <= 3 and s.round_trips <= 25


def test_equivocation_hidden_behind_other_differences_is_found_next_pass():
    a, b, eid = _equivocated(which=100)
    # the same range also lacks an event on our side
    victim = a.ids()[101]
    a.remove(victim)
    r = drive(a, b)
    s = r.outcome.stats
    assert s.converged and eid in s.equivocations and s.passes >= 2
    assert_equal_sets(a, b)


# --------------------------------------------------------------------------- bad peers


def _tamper_digest(mutate):
    def tamper(action, doc):
        return mutate(doc) if isinstance(action, FetchDigest) else doc

    return tamper


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: {**d, "count": d["count"] + 1}, "add up"),
        (lambda d: {**d, "group_id": "g!other"}, "group_id"),
        (lambda d: {**d, "server_id": "server-mallory"}, "server_id"),
        (lambda d: {k: v for k, v in d.items() if k != "authors"}, "authors"),
        (lambda d: {**d, "buckets": d["buckets"][::-1]}, "bucket"),
        (lambda d: {**d, "fingerprint": "XYZ"}, "fingerprint"),
        (lambda d: [d], "object"),
    ],
)
def test_malformed_digest_fails_cleanly(mutate, words):
    a_events, b_events = split(3000, 5, "random")
    a, b = EventSet(a_events), EventSet(b_events)
    before = a.summary()
    r = drive(a, b, tamper=_tamper_digest(mutate))
    assert isinstance(r.outcome, Failed)
    assert "malformed digest" in r.outcome.reason and words in r.outcome.reason
    assert r.planner.state == DIGEST_FAILED and repair_snapshot(r.planner).error
    assert a.summary() == before


def _tamper_checkpoint(mutate):
    def tamper(action, value):
        return mutate(action, *value) if isinstance(action, SendCheckpoint) else value

    return tamper


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda a, ev, p: (ev, {**p, "want": [*p["want"], encode_ulid(5)]}), "did not list"),
        (lambda a, ev, p: (ev, {**p, "more": True, "next": encode_ulid(5)}), "next"),
        (lambda a, ev, p: (ev, {**p, "more": "no"}), "boolean"),
        (lambda a, ev, p: (ev[::-1], p), "order"),
        (
            lambda a, ev, p: ([*ev, EventRecord("7" + "Z" * 25, "sha256:" + "1" * 64)], p),
            "outside",
        ),
        (lambda a, ev, p: (ev, {**p, "ranges": [{"lo": "x"}]}), "malformed"),
    ],
)
def test_malformed_checkpoint_fails_without_storing(mutate, words):
    a_events, b_events = split(3000, 5, "random")
    a, b = EventSet(a_events), EventSet(b_events)
    before = a.summary()
    r = drive(a, b, tamper=_tamper_checkpoint(mutate))
    assert isinstance(r.outcome, Failed), r.outcome
    assert "malformed checkpoint" in r.outcome.reason or "did not list" in r.outcome.reason
    assert words in r.outcome.reason
    assert a.summary() == before  # the shell stored nothing from the bad response


def test_event_we_hold_is_rejected_unless_fetched():
    a_events, b_events = split(3000, 5, "random")
    a, b = EventSet(a_events), EventSet(b_events)

    def tamper(action, value):
        if not isinstance(action, SendCheckpoint):
            return value
        events, payload = value
        held = action.request.ranges[0].ids
        extra = [b.get(i) for i in held[:1] if b.get(i)]
        return sorted([*events, *extra], key=lambda e: e.event_id), payload

    r = drive(a, b, tamper=tamper)
    assert isinstance(r.outcome, Failed) and "did not fetch" in r.outcome.reason


def test_request_budget_ends_the_repair():
    a_events, b_events = split(10_000, 50, "random")
    r = drive(EventSet(a_events), EventSet(b_events), max_requests=5)
    assert isinstance(r.outcome, Failed) and "budget" in r.outcome.reason


def test_late_and_foreign_answers_are_ignored():
    events = universe(100)
    planner = RepairPlanner(MemorySource({G: EventSet(events)}), G, PEER)
    (top,) = planner.start(0.0)
    stranger = FetchDigest("", "", 16)
    assert planner.on_digest(stranger, {}, 0, 1.0) == []
    doc = EventSet(events).digest(G, PEER, "", "", 16)
    (done,) = planner.on_digest(top, doc, 10, 1.0)
    assert isinstance(done, Done)
    assert planner.on_digest(top, doc, 10, 2.0) == []
    assert planner.on_failure(top, "late", 3.0) == []
    snap = repair_snapshot(planner)
    assert snap.state == DIGEST_EQUAL and snap.round_trips == 1 and snap.bytes_moved == 10


def test_transport_failure_fails_the_repair():
    planner = RepairPlanner(MemorySource({G: EventSet(universe(10))}), G, PEER)
    (top,) = planner.start(5.0)
    (failed,) = planner.on_failure(top, "connection lost", 6.0)
    assert isinstance(failed, Failed) and failed.reason == "connection lost"
    assert failed.stats.duration == 1.0


# --------------------------------------------------------------------------- live traffic


def test_repair_under_concurrent_live_traffic_terminates_then_converges():
    a_events, b_events = split(5000, 20, "random", seed=21)
    later = universe(200, seed=22)
    a, b = EventSet(a_events), EventSet(b_events)
    fresh = iter(later)

    def during(step, local, remote):
        # new events keep arriving on both sides (as the stream would deliver them)
        ev = next(fresh, None)
        if ev is not None:
            (local if step % 2 else remote).add(ev)

    r = drive(a, b, during=during)
    assert isinstance(r.outcome, Done)
    assert r.outcome.stats.passes <= 3
    # once traffic stops, one more repair leaves both sides equal
    for ev in fresh:
        a.add(ev)
    s = drive(a, b).outcome.stats
    assert s.converged
    assert_equal_sets(a, b)


# --------------------------------------------------------------------------- helpers


def test_ulid_successor():
    assert ulid_successor("00000000000000000000000000") == "00000000000000000000000001"
    assert ulid_successor("0000000000000000000000000Z") == "00000000000000000000000010"
    assert ulid_successor("7ZZZZZZZZZZZZZZZZZZZZZZZZZ") == ""
    rng = random.Random(4)
    for _ in range(200):
        n = rng.getrandbits(128)
        assert ulid_successor(encode_ulid(n)) == encode_ulid(n + 1)
        assert is_ulid(encode_ulid(n))
