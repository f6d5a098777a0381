"""The §4.3 content checks against the conformance vectors, and group-committed storing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest
from nacl.signing import SigningKey

from node.protocol.errors import ErrorCode
from node.protocol.frames import Event, parse_frame
from node.protocol.ids import CROCKFORD
from node.protocol.session import Duplicate, Rejected, Stored
from node.protocol.signing import content_hash, event_string
from node.storage.backends import open_store
from node.storage.ingest import Ingest, check_signatures
from node.sync.fingerprint import event_term, fingerprint
from tests.support.stores import statements_of

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v1.json").read_text())
SERVERS = VECTORS["servers"]
GROUP = "g!example"
CONTENT_CODES = {"BAD_SIGNATURE", "HASH_MISMATCH", "UNKNOWN_KEY"}


def pinned_lookup(author: str, key_id: str) -> bytes | None:
    """The vectors' pins: each server's own key, by key_id."""
    server = SERVERS.get(author)
    if server is None or server["key_id"] != key_id:
        return None
    return base64.b64decode(server["public_key"])


def event_of(frame: dict) -> Event:
    return parse_frame(orjson.dumps(frame)).payload


def ulid(n: int) -> str:
    out = []
    for _ in range(26):
        out.append(CROCKFORD[n & 31])
        n >>= 5
    return "01KB" + "".join(reversed(out))[4:]


def signed_event(author: str, n: int, seq: int | None = None, body: bytes | None = None) -> Event:
    """A validly signed event of a vector server (its seed is test-only)."""
    key = SigningKey(bytes.fromhex(SERVERS[author]["seed_hex"]))
    body = body if body is not None else f"ciphertext {author} {n}".encode()
    chash = content_hash(body)
    seq = n if seq is None else seq
    event_id = ulid(n)
    sig = key.sign(event_string(GROUP, event_id, author, seq, chash)).signature
    return Event(
        event_id,
        author,
        seq,
        base64.b64encode(body).decode(),
        chash,
        SERVERS[author]["key_id"],
        base64.b64encode(sig).decode(),
    )


@pytest.fixture
def store(stores):
    s = open_store(stores.location())
    yield s
    s.close()


@pytest.fixture
def ingest(store):
    return Ingest(store, pinned_lookup)


POSITIVE = event_of(VECTORS["event"]["frame"])


def test_positive_vector_is_stored(ingest, store):
    [out] = ingest.process(GROUP, [(POSITIVE, "server-alice")], now=100.0)
    assert out == Stored(POSITIVE.event_id)
    held = store.get_event(GROUP, POSITIVE.event_id)
    assert held.ciphertext == bytes.fromhex(VECTORS["event"]["ciphertext_hex"])
    assert held.to_event() == POSITIVE
    assert (held.hop, held.received_at) == ("server-alice", 100.0)


@pytest.mark.parametrize(
    "case",
    [c for c in VECTORS["negative_events"] if c["expect"] in CONTENT_CODES],
    ids=lambda c: c["reason"],
)
def test_negative_vectors(ingest, store, case):
    [out] = ingest.process(GROUP, [(event_of(case["frame"]), "server-alice")], now=1.0)
    assert type(out) is Rejected
    assert out.code == ErrorCode(case["expect"])
    assert out.event_id == event_of(case["frame"]).event_id
    assert store.count(GROUP) == 0


def test_every_content_vector_is_covered():
    codes = [c["expect"] for c in VECTORS["negative_events"] if c["expect"] in CONTENT_CODES]
    assert sorted(codes) == ["BAD_SIGNATURE", "BAD_SIGNATURE", "HASH_MISMATCH", "UNKNOWN_KEY"]


def test_duplicate_is_acknowledged_without_reverifying(store):
    calls = []

    def lookup(author, key_id):
        calls.append(author)
        return pinned_lookup(author, key_id)

    ingest = Ingest(store, lookup)
    ingest.process(GROUP, [(POSITIVE, "server-alice")], now=1.0)
    calls.clear()
    [out] = ingest.process(GROUP, [(POSITIVE, "server-bob")], ["server-carol"], now=2.0)
    assert out == Duplicate(POSITIVE.event_id)
    assert calls == []  # no key lookup, so no signature check either
    assert store.count(GROUP) == 1
    assert store.outbox_count("server-carol", GROUP) == 0  # a duplicate is not relayed again


@pytest.mark.parametrize("first_original", [True, False])
def test_equivocation_same_event_id_converges(ingest, store, first_original):
    case = VECTORS["equivocation"][0]
    other = event_of(case["frame"])
    order = [POSITIVE, other] if first_original else [other, POSITIVE]
    first = ingest.process(GROUP, [(order[0], "server-alice")], ["server-carol"], now=1.0)
    second = ingest.process(GROUP, [(order[1], "server-alice")], ["server-carol"], now=2.0)
    assert first[0] == Stored(order[0].event_id)
    kept = case["kept_content_hash"]
    if order[1].content_hash == kept:  # the newcomer is lower: it replaces, is reported
        assert type(second[0]) is Stored and second[0].equivocation
        assert "this one is kept" in second[0].message
    else:
        assert type(second[0]) is Rejected and second[0].code == ErrorCode.EQUIVOCATION
    assert store.get_event(GROUP, POSITIVE.event_id).content_hash == kept
    assert store.count(GROUP) == 1
    assert store.equivocators(GROUP) == ["server-alice"]
    assert store.summary(GROUP) == (1, fingerprint(event_term(POSITIVE.event_id, kept), 1))
    # whichever version was stored first was queued; the queue now carries the kept one
    [queued] = store.outbox_pending("server-carol", GROUP)
    assert queued.content_hash == kept


def test_equivocation_same_seq_keeps_both(ingest, store):
    case = VECTORS["equivocation"][1]
    assert case["both_kept"] is True
    other = event_of(case["frame"])
    ingest.process(GROUP, [(POSITIVE, "server-alice")], now=1.0)
    [out] = ingest.process(GROUP, [(other, "server-alice")], ["server-carol"], now=2.0)
    assert type(out) is Stored and out.equivocation and out.event_id == other.event_id
    assert POSITIVE.event_id in out.message  # names the other event at that seq
    assert store.count(GROUP) == 2
    assert store.authors(GROUP)["server-alice"] == {"max_seq": 1, "contiguous_seq": 1, "count": 2}
    assert store.equivocators(GROUP) == ["server-alice"]
    assert [e.event_id for e in store.outbox_pending("server-carol", GROUP)] == [other.event_id]


@pytest.mark.parametrize("case", [0, 1], ids=["same-event-id", "same-seq"])
def test_equivocation_within_one_batch_is_decided_as_across_batches(case, stores):
    # New events of a batch are inserted together; one that meets an earlier one of the
    # same batch (same event_id, or same author and seq) must still see it stored.
    other = event_of(VECTORS["equivocation"][case]["frame"])
    items = [(POSITIVE, "server-alice"), (other, "server-alice")]
    apart, together = open_store(stores.location("apart")), open_store(stores.location("together"))
    try:
        one_by_one = [
            Ingest(apart, pinned_lookup).process(GROUP, [item], now=1.0)[0] for item in items
        ]
        batched = Ingest(together, pinned_lookup).process(GROUP, items, now=1.0)
        assert batched == one_by_one
        assert together.summary(GROUP) == apart.summary(GROUP)
        assert together.equivocators(GROUP) == apart.equivocators(GROUP) == ["server-alice"]
    finally:
        apart.close()
        together.close()


def test_malformed_ciphertext_is_bad_frame(ingest, store):
    ev = signed_event("server-alice", 1)
    ev.ciphertext = "not*base64"
    [out] = ingest.process(GROUP, [(ev, "server-alice")], now=1.0)
    assert out == Rejected(ErrorCode.BAD_FRAME, "ciphertext is not base64", ev.event_id)


def test_batch_is_one_transaction_with_relay_and_outcomes_in_order(ingest, store):
    good = [
        signed_event(a, n + offset, seq=n)
        for n in range(1, 21)
        for a, offset in (("server-alice", 0), ("server-bob", 1000))
    ]
    bad = signed_event("server-alice", 99)
    bad.seq = 100  # signature no longer covers it
    items = [(ev, ev.author) for ev in good]
    items.insert(7, (bad, "server-alice"))
    items.append((good[0], "server-alice"))  # the same event twice in one batch
    with statements_of(store) as statements:
        outcomes = ingest.process(
            GROUP, items, ["server-alice", "server-bob", "server-carol"], now=5.0
        )
    commits = [s for s in statements if s.strip().upper().startswith(("COMMIT", "BEGIN"))]
    assert [c.split()[0] for c in commits] == ["BEGIN", "COMMIT"]
    assert [o.event_id for o in outcomes] == [ev.event_id for ev, _ in items]
    assert outcomes[7].code == ErrorCode.BAD_SIGNATURE
    assert type(outcomes[-1]) is Duplicate
    assert sum(type(o) is Stored for o in outcomes) == 40
    assert store.count(GROUP) == 40
    # each stored event goes to every relay peer but the one it came from
    assert store.outbox_count("server-carol", GROUP) == 40
    assert store.outbox_count("server-alice", GROUP) == 20
    alice_queue = store.outbox_pending("server-alice", GROUP, limit=100)
    assert {e.author for e in alice_queue} == {"server-bob"}
    assert store.authors(GROUP) == {
        "server-alice": {"max_seq": 20, "contiguous_seq": 20, "count": 20},
        "server-bob": {"max_seq": 20, "contiguous_seq": 20, "count": 20},
    }


def test_failed_batch_stores_nothing(ingest, store):
    items = [(signed_event("server-alice", n), "server-alice") for n in (1, 2)]
    batch = ingest.prepare(GROUP, items)
    # a batch that breaks mid-commit (here: one verdict too many, so the strict zip raises
    # after the first insert) leaves nothing behind, in the database or in memory
    batch.verified = [True, True, True]
    with pytest.raises(ValueError):
        ingest.commit(batch, ["server-carol"], now=1.0)
    assert store.count(GROUP) == 0
    assert store.outbox_count("server-carol", GROUP) == 0


def test_split_steps_recheck_the_store_at_commit(ingest, store):
    ev = signed_event("server-alice", 1)
    batch = ingest.prepare(GROUP, [(ev, "server-bob")])
    assert len(batch.candidates) == 1
    # another stream stores the same event while the signatures are being checked
    ingest.process(GROUP, [(ev, "server-carol")], now=1.0)
    batch.verified = check_signatures(batch.candidates)
    [out] = ingest.commit(batch, ["server-dave"], now=2.0)
    assert type(out) is Duplicate
    assert store.outbox_count("server-dave", GROUP) == 0


def test_provisional_keys_mark_events(store):
    ingest = Ingest(store, pinned_lookup, lambda author, key_id: author == "server-bob")
    ingest.process(
        GROUP,
        [(signed_event("server-alice", 1), "x"), (signed_event("server-bob", 2), "x")],
        now=1.0,
    )
    assert [e.event_id for e in store.provisional_events("server-bob")] == [ulid(2)]
    assert store.provisional_events("server-alice") == []
