"""The durable store: events, fingerprints and digests (§5), outbox (§4), replay cache,
own seq counter, and that a committed transaction survives SIGKILL."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.ids import CROCKFORD
from node.protocol.signing import content_hash
from node.storage.backends import open_store
from node.storage.sqlite_store import SQLiteStore
from node.storage.store import StoredEvent
from node.sync.fingerprint import MOD, event_term, fingerprint

GROUP = "g!test"
EMPTY_FP = fingerprint(0, 0)


def ulid(n: int) -> str:
    """A canonical ULID whose order follows n."""
    out = []
    for _ in range(26):
        out.append(CROCKFORD[n & 31])
        n >>= 5
    return "".join(reversed(out))


def make(
    n: int, author: str = "server-alice", seq: int | None = None, body: bytes | None = None
) -> StoredEvent:
    body = body if body is not None else f"body-{n}".encode()
    return StoredEvent(
        GROUP,
        ulid(n),
        author,
        n if seq is None else seq,
        body,
        content_hash(body),
        "ed25519:AAAAAAAA",
        "sig",
        received_at=1.0,
        hop="server-bob",
    )


@pytest.fixture
def store(stores):
    s = open_store(stores.location())
    yield s
    s.close()


def scratch_summary(events: dict[str, str], lo: str = "", hi: str = "") -> tuple[int, str]:
    """§5.1 from scratch: the sum of every term in [lo, hi)."""
    chosen = [e for e in events if (not lo or e >= lo) and (not hi or e < hi)]
    total = sum(event_term(e, events[e]) for e in chosen) % MOD
    return len(chosen), fingerprint(total, len(chosen))


def scratch_authors(rows: dict[str, tuple[str, int]]) -> dict:
    out: dict[str, dict] = {}
    for author in sorted({a for a, _ in rows.values()}):
        seqs = [s for a, s in rows.values() if a == author]
        held = set(seqs)
        k = 0
        while k + 1 in held:
            k += 1
        out[author] = {"max_seq": max(seqs), "contiguous_seq": k, "count": len(seqs)}
    return out


# --------------------------------------------------------------------------- events


def test_insert_get_and_idempotent(store):
    ev = make(1)
    assert store.insert_event(ev) is True
    assert store.insert_event(make(1, body=b"other")) is False
    got = store.get_event(GROUP, ev.event_id)
    assert got == ev
    assert got.provisional is False
    assert store.count(GROUP) == 1
    assert store.groups() == [GROUP]
    assert store.match(GROUP, ev.event_id, ev.content_hash) is True
    assert store.match(GROUP, ev.event_id, content_hash(b"x")) is False
    assert store.match(GROUP, ulid(2), ev.content_hash) is None
    assert store.get_event(GROUP, ulid(2)) is None


def test_to_event_round_trips_ciphertext(store):
    ev = make(1, body=bytes(range(40)))
    frame_event = ev.to_event()
    assert frame_event.ciphertext_bytes() == bytes(range(40))
    assert frame_event.content_hash == ev.content_hash
    assert frame_event.event_id == ev.event_id


def test_replace_keeps_lower_content_hash(store):
    a, b = make(1, body=b"one"), make(1, body=b"two")
    low, high = sorted([a, b], key=lambda e: e.content_hash)
    store.insert_event(high)
    fp_high = store.summary(GROUP)
    assert store.replace_event(low) is True
    assert store.get_event(GROUP, low.event_id).content_hash == low.content_hash
    assert store.summary(GROUP) != fp_high
    assert store.summary(GROUP) == scratch_summary({low.event_id: low.content_hash})
    assert store.replace_event(high) is False
    assert store.get_event(GROUP, low.event_id).content_hash == low.content_hash
    assert store.count(GROUP) == 1


def test_events_by_author_seq_keeps_both(store):
    store.insert_event(make(1, seq=1))
    store.insert_event(make(2, seq=1))
    ids = [e.event_id for e in store.events_by_author_seq(GROUP, "server-alice", 1)]
    assert ids == [ulid(1), ulid(2)]
    assert store.authors(GROUP) == {"server-alice": {"max_seq": 1, "contiguous_seq": 1, "count": 2}}


def test_authors_contiguous_with_holes(store):
    for n, seq in [(1, 1), (2, 2), (3, 4), (4, 5), (5, 9)]:
        store.insert_event(make(n, seq=seq))
    store.insert_event(make(6, author="server-bob", seq=2))
    assert store.authors(GROUP) == {
        "server-alice": {"max_seq": 9, "contiguous_seq": 2, "count": 5},
        "server-bob": {"max_seq": 2, "contiguous_seq": 0, "count": 1},
    }
    store.insert_event(make(7, seq=3))  # fills the hole: 1..5 now contiguous
    assert store.authors(GROUP)["server-alice"] == {
        "max_seq": 9,
        "contiguous_seq": 5,
        "count": 6,
    }
    assert store.seq_held(GROUP, "server-alice", 9)
    assert not store.seq_held(GROUP, "server-alice", 6)


def test_delete_event_updates_everything(store):
    for n in range(1, 6):
        store.insert_event(make(n))
    store.outbox_add("server-carol", GROUP, [ulid(3), ulid(4)])
    assert store.delete_event(GROUP, ulid(3)) is True
    assert store.delete_event(GROUP, ulid(3)) is False
    assert store.authors(GROUP)["server-alice"] == {
        "max_seq": 5,
        "contiguous_seq": 2,
        "count": 4,
    }
    assert store.outbox_count("server-carol", GROUP) == 1
    assert store.ids_in_range(GROUP) == [ulid(n) for n in (1, 2, 4, 5)]
    held = {ulid(n): make(n).content_hash for n in (1, 2, 4, 5)}
    assert store.summary(GROUP) == scratch_summary(held)
    assert store.range_summary(GROUP, ulid(2), "") == scratch_summary(held, ulid(2), "")
    store.insert_event(make(3))  # seq 3 back: 1..5 contiguous again
    assert store.authors(GROUP)["server-alice"]["contiguous_seq"] == 5


def test_provisional_events_and_confirm(store):
    ev = make(1)
    ev.provisional = True
    store.insert_event(ev)
    store.insert_event(make(2))
    assert [e.event_id for e in store.provisional_events("server-alice")] == [ulid(1)]
    store.confirm_events(GROUP, [ulid(1)])
    assert store.provisional_events("server-alice") == []


# --------------------------------------------------------------------------- digests


def test_empty_group_digest(store):
    doc = store.digest(GROUP, "server-bob", "", "", 16)
    assert doc == {
        "group_id": GROUP,
        "server_id": "server-bob",
        "lo": "",
        "hi": "",
        "count": 0,
        "fingerprint": EMPTY_FP,
        "authors": {},
        "buckets": [{"lo": "", "hi": "", "count": 0, "fingerprint": EMPTY_FP}],
    }


@pytest.mark.parametrize(("lo", "hi"), [(5, 5), (7, 3)])
def test_lo_not_below_hi_is_an_empty_range(store, lo, hi):
    for n in range(1, 11):
        store.insert_event(make(n))
    doc = store.digest(GROUP, "server-bob", ulid(lo), ulid(hi), 4)
    assert doc["count"] == 0
    assert doc["fingerprint"] == EMPTY_FP
    assert "authors" not in doc
    assert doc["buckets"] == [{"lo": ulid(lo), "hi": ulid(hi), "count": 0, "fingerprint": EMPTY_FP}]
    assert store.range_summary(GROUP, ulid(lo), ulid(hi)) == (0, EMPTY_FP)
    assert store.ids_in_range(GROUP, ulid(lo), ulid(hi)) == []


def test_range_between_events_is_empty(store):
    store.insert_event(make(10))
    store.insert_event(make(20))
    doc = store.digest(GROUP, "server-bob", ulid(11), ulid(19), 16)
    assert doc["count"] == 0
    assert doc["buckets"] == [{"lo": ulid(11), "hi": ulid(19), "count": 0, "fingerprint": EMPTY_FP}]


def test_uneven_buckets_chain_and_cover_the_range(store):
    events = {}
    for n in range(1, 11):
        ev = make(n * 2)
        store.insert_event(ev)
        events[ev.event_id] = ev.content_hash
    doc = store.digest(GROUP, "server-bob", ulid(3), "", 3)
    buckets = doc["buckets"]
    assert [b["count"] for b in buckets] == [3, 3, 3]
    assert buckets[0]["lo"] == ulid(3)
    assert buckets[-1]["hi"] == ""
    for left, right in itertools.pairwise(buckets):
        assert left["hi"] == right["lo"]
    assert buckets[1]["lo"] == ulid(10)  # first event of the second bucket
    for b in buckets:
        assert (b["count"], b["fingerprint"]) == scratch_summary(events, b["lo"], b["hi"])
    # 11 events in 4 buckets: sizes differ by at most one
    store.insert_event(make(1))
    doc = store.digest(GROUP, "server-bob", "", "", 4)
    assert [b["count"] for b in doc["buckets"]] == [2, 3, 3, 3]
    store.delete_event(GROUP, ulid(1))
    # more buckets than events: one bucket per event
    doc = store.digest(GROUP, "server-bob", "", "", 256)
    assert [b["count"] for b in doc["buckets"]] == [1] * 10


@pytest.mark.parametrize(
    ("lo", "hi", "buckets"),
    [("01abc", "", 4), ("", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", 4), ("", "", 0), ("", "", 257)],
)
def test_digest_rejects_malformed_queries(store, lo, hi, buckets):
    with pytest.raises(ProtocolError) as err:
        store.digest(GROUP, "server-bob", lo, hi, buckets)
    assert err.value.code == ErrorCode.BAD_FRAME


class _NoDatabase:
    """Stands in for a store's connection: any use of it fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the database was used ({name})")


def test_digest_reads_no_sql(store):
    """Range summaries come from memory: no statement reaches the database."""
    for n in range(1, 200):
        store.insert_event(make(n))
    db, store._db = store._db, _NoDatabase()
    try:
        store.digest(GROUP, "server-bob", "", "", 16)
        store.digest(GROUP, "server-bob", ulid(50), ulid(150), 16)
        store.range_summary(GROUP, ulid(3), ulid(9))
        store.summary(GROUP)
    finally:
        store._db = db


ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "replace", "delete", "query"]),
        st.integers(1, 40),  # event id (or, for a query, its lower bound)
        st.integers(0, 3),  # body variant
        st.sampled_from(["server-alice", "server-bob"]),
        st.integers(1, 6),  # seq
    ),
    max_size=80,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=ops,
    bounds=st.lists(st.tuples(st.integers(0, 42), st.integers(0, 42)), min_size=1, max_size=4),
    buckets=st.integers(1, 12),
)
def test_indexes_equal_recomputation(ops, bounds, buckets):
    store = SQLiteStore.open(":memory:")
    model: dict[str, StoredEvent] = {}
    for op, n, variant, author, seq in ops:
        ev = make(n, author=author, seq=seq, body=f"{n}/{variant}".encode())
        if op == "insert":
            assert store.insert_event(ev) is (ev.event_id not in model)
            model.setdefault(ev.event_id, ev)
        elif op == "replace":
            store.replace_event(ev)
            old = model.get(ev.event_id)
            if old is None or ev.content_hash < old.content_hash:
                model[ev.event_id] = ev
        elif op == "delete":
            assert store.delete_event(GROUP, ev.event_id) is (ev.event_id in model)
            model.pop(ev.event_id, None)
        else:  # interleaved reads catch stale prefix sums and author trackers
            hashes = {e: v.content_hash for e, v in model.items()}
            assert store.range_summary(GROUP, ulid(n), "") == scratch_summary(hashes, ulid(n))
            rows = {e: (v.author, v.seq) for e, v in model.items()}
            assert store.authors(GROUP) == scratch_authors(rows)
    hashes = {e: ev.content_hash for e, ev in model.items()}
    assert store.summary(GROUP) == scratch_summary(hashes)
    assert store.count(GROUP) == len(model)
    assert store.authors(GROUP) == scratch_authors({e: (v.author, v.seq) for e, v in model.items()})
    for a, b in bounds:
        lo = ulid(a) if a else ""
        hi = ulid(b) if b else ""
        assert store.range_summary(GROUP, lo, hi) == scratch_summary(hashes, lo, hi)
        ids = sorted(e for e in hashes if (not lo or e >= lo) and (not hi or e < hi))
        if lo and hi and lo >= hi:
            ids = []
        assert store.ids_in_range(GROUP, lo, hi) == ids
        doc = store.digest(GROUP, "server-bob", lo, hi, buckets)
        assert (doc["count"], doc["fingerprint"]) == scratch_summary(hashes, lo, hi)
        assert ("authors" in doc) == (not lo and not hi)
        got = doc["buckets"]
        assert sum(b["count"] for b in got) == len(ids)
        assert len(got) == max(1, min(buckets, len(ids)))
        assert got[0]["lo"] == lo and got[-1]["hi"] == hi
        for left, right in itertools.pairwise(got):
            assert left["hi"] == right["lo"] and left["hi"] in hashes
        for bucket in got:
            assert (bucket["count"], bucket["fingerprint"]) == scratch_summary(
                hashes, bucket["lo"], bucket["hi"]
            )
        sizes = [b["count"] for b in got]
        assert max(sizes) - min(sizes) <= 1
    store.close()


def test_indexes_rebuilt_on_reopen(stores):
    path = stores.location()
    store = open_store(path)
    for n in range(60, 0, -1):
        store.insert_event(make(n, author=("server-alice", "server-bob")[n % 2], seq=n // 2))
    store.replace_event(make(7, author="server-bob", seq=3, body=b"\x00"))
    store.replace_event(make(7, author="server-bob", seq=3, body=b"\x01"))
    before = (store.digest(GROUP, "s", "", "", 7), store.digest(GROUP, "s", ulid(9), ulid(50), 5))
    store.close()
    store = open_store(path)
    after = (store.digest(GROUP, "s", "", "", 7), store.digest(GROUP, "s", ulid(9), ulid(50), 5))
    assert after == before
    store.close()


def test_rollback_restores_memory(store):
    store.insert_event(make(1))
    before = store.digest(GROUP, "s", "", "", 4)
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_event(make(2, seq=2))
        store.outbox_add("server-carol", GROUP, [ulid(2)])
        store.mark_equivocating(GROUP, "server-alice")
        assert store.count(GROUP) == 2
        raise RuntimeError("boom")
    assert store.digest(GROUP, "s", "", "", 4) == before
    assert store.get_event(GROUP, ulid(2)) is None
    assert store.outbox_count("server-carol", GROUP) == 0
    assert store.equivocators(GROUP) == []
    # and the store still works afterwards
    assert store.insert_event(make(2, seq=2)) is True


def test_get_events_in_id_order_skipping_unknown_ids(store):
    for n in range(1, 6):
        store.insert_event(make(n))
    got = store.get_events(GROUP, [ulid(3), ulid(1), ulid(77), ulid(3)])
    assert [e.event_id for e in got] == [ulid(1), ulid(3)]
    assert store.get_events("g!unknown", [ulid(1)]) == []


# --------------------------------------------------------------------------- outbox


def test_outbox_order_removal_and_count(stores):
    path = stores.location()
    store = open_store(path)
    for n in (5, 1, 3, 2, 4):
        store.insert_event(make(n))
    assert store.outbox_add("server-bob", GROUP, [ulid(n) for n in (5, 1, 3)]) == 3
    assert store.outbox_add("server-bob", GROUP, [ulid(3), ulid(2)]) == 1  # 3 already queued
    store.outbox_add("server-carol", GROUP, [ulid(4)])
    assert store.outbox_count("server-bob", GROUP) == 4
    pending = store.outbox_pending("server-bob", GROUP)
    assert [e.event_id for e in pending] == [ulid(n) for n in (1, 2, 3, 5)]
    assert pending[0].ciphertext == b"body-1"
    after = [e.event_id for e in store.outbox_pending("server-bob", GROUP, after=ulid(2), limit=1)]
    assert after == [ulid(3)]
    assert store.outbox_remove("server-bob", GROUP, [ulid(1), ulid(3), ulid(4)]) == 2
    assert store.outbox_count("server-bob", GROUP) == 2
    store.close()
    store = open_store(path)
    assert store.outbox_count("server-bob", GROUP) == 2
    assert store.outbox_count("server-carol", GROUP) == 1
    pending = store.outbox_pending("server-bob", GROUP)
    assert [e.event_id for e in pending] == [ulid(2), ulid(5)]
    store.close()


# --------------------------------------------------------------------------- pins, replay, seq


def test_pins_round_trip(stores):
    path = stores.location()
    store = open_store(path)
    doc = {"server_id": "server-alice", "key_id": "ed25519:NHUPmL1Z", "url": ""}
    store.save_pin("server-alice", doc, "hello")
    store.save_pin("server-bob", {"server_id": "server-bob"}, "config")
    store.save_pin("server-alice", {**doc, "url": "http://h:1"}, "hello")
    store.close()
    store = open_store(path)
    assert store.load_pins() == [
        ({**doc, "url": "http://h:1"}, "hello"),
        ({"server_id": "server-bob"}, "config"),
    ]
    store.delete_pin("server-bob")
    assert len(store.load_pins()) == 1
    store.close()


def test_replay_cache_is_durable_and_expires(stores):
    path = stores.location()
    store = open_store(path)
    assert store.check_and_record("hello:01A", now=1000.0) is True
    assert store.check_and_record("hello:01A", now=1300.0) is False
    store.close()
    store = open_store(path)
    assert store.check_and_record("hello:01A", now=1599.0) is False  # a restart reopens nothing
    assert store.check_and_record("hello:01B", now=1599.0) is True
    assert store.check_and_record("hello:01A", now=1601.0) is True  # outside the window
    assert store.check_and_record("hello:01A", now=1700.0) is False
    # old entries are pruned
    store.check_and_record("hello:01C", now=5000.0)
    assert store._db.execute("SELECT COUNT(*) FROM replay").fetchone()[0] == 1
    store.close()


def test_own_seq_never_reused(stores):
    path = stores.location()
    store = open_store(path)
    assert [store.next_own_seq(GROUP) for _ in range(3)] == [1, 2, 3]
    assert store.next_own_seq("g!other") == 1
    store.close()
    store = open_store(path)
    assert store.next_own_seq(GROUP) == 4
    # seqs of our own events learned back from peers are skipped too
    store.insert_event(make(1, author="server-me", seq=10))
    assert store.next_own_seq(GROUP, author="server-me") == 11
    assert store.next_own_seq(GROUP, author="server-me") == 12
    store.close()


def test_equivocators_are_durable(stores):
    path = stores.location()
    store = open_store(path)
    store.mark_equivocating(GROUP, "server-bob")
    store.mark_equivocating(GROUP, "server-bob")
    store.mark_equivocating(GROUP, "server-alice")
    store.close()
    store = open_store(path)
    assert store.equivocators(GROUP) == ["server-alice", "server-bob"]
    assert store.equivocators("g!other") == []
    store.close()


# --------------------------------------------------------------------------- crash safety


def _run_until(path: str, mode: str, event_id: str, line: str) -> None:
    """Start the writer, wait for it to say ``line``, then SIGKILL it at once."""
    helper = Path(__file__).with_name("crash_writer.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(helper), path, mode, event_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        got = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert got == line, proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL


def test_committed_transaction_survives_sigkill(stores):
    path = stores.location()
    _run_until(path, "commit", ulid(1), "committed")
    _run_until(path, "open-tx", ulid(2), "inside")
    store = open_store(path)
    ev = store.get_event("g!crash", ulid(1))
    assert ev is not None and ev.ciphertext == ulid(1).encode()
    assert store.get_event("g!crash", ulid(2)) is None  # never committed
    assert store.outbox_count("server-bob", "g!crash") == 1
    assert store.count("g!crash") == 1
    # seq 1 was used by the committed event; the aborted one left no trace
    assert store.next_own_seq("g!crash") == 2
    store.close()
