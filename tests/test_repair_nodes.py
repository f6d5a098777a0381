"""Anti-entropy between real nodes (PROTOCOL §5, issue 4), over real HTTP/2 on loopback.

The shared history is built fast: events are signed once per module by three author
identities whose keys both nodes pin, and written straight into each node's store
before the nodes talk. The nodes learn each other's key documents the way an operator
would configure them (``keystore.repin``), so a repair can be started explicitly with
``node.repairs.start(peer, group)`` and measured on its own: no stream, no outbox and
no periodic repair can move an event behind its back. Everything the repair fetches
goes through the node's real ingest (verified, deduplicated) and everything it sends
through the peer's real ``send`` endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from dataclasses import dataclass

import orjson
import pytest
from ulid import ULID

from node.protocol.errors import ErrorCode
from node.protocol.frames import Checkpoint, Event, Frame, encode_frame, parse_frame
from node.protocol.identity import Identity
from node.protocol.ids import CROCKFORD
from node.protocol.session import Rejected, Stored
from node.runtime.config import PeerConfig
from node.storage.store import StoredEvent
from node.transport import FederationApp, start_server
from node.view.commands import AddPeer
from node.view.snapshot import (
    DIGEST_DIFFERS,
    DIGEST_EQUAL,
    DIGEST_EQUIVOCATION,
    DIGEST_FAILED,
    DIGEST_REPAIRING,
    DIGEST_UNKNOWN,
)
from tests.diffsets import split_sides
from tests.nodes import start_node, streams_up, wait_until
from widgets.range_heatmap import cells

# Every node of these tests keeps its events on SQLite, then on PostgreSQL.
pytestmark = pytest.mark.usefixtures("node_stores")

G = "g!test"
AUTHORS = ("author-a", "author-b", "author-c")
N = 10_000
MAX_D = 100


def encode_ulid(n: int) -> str:
    return "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(25, -1, -1))


def author_identity(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"repair-test:" + name.encode()).digest(), name)


@dataclass(frozen=True)
class Signed:
    event: Event
    ciphertext: bytes

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def author(self) -> str:
        return self.event.author

    def stored(self) -> StoredEvent:
        return StoredEvent.from_event(G, self.event, self.ciphertext, received_at=0.0, hop="")


def sign_universe(n: int, seed: int = 1) -> list[Signed]:
    """n events in event_id order, authored round-robin, each author's seq rising with id."""
    rng = random.Random(seed)
    idents = [author_identity(a) for a in AUTHORS]
    seqs = [0] * len(idents)
    ts = 1_760_000_000_000
    out = []
    for i in range(n):
        ts += rng.randint(1, 20)
        eid = encode_ulid((ts << 80) | rng.getrandbits(80))
        k = i % len(idents)
        seqs[k] += 1
        body = hashlib.sha256(b"%d/%d" % (seed, i)).digest() + b"\x00" * 16  # 48 bytes
        out.append(Signed(idents[k].sign_event(G, eid, seqs[k], body), body))
    return out


def split(events: list[Signed], n: int, d: int, kind: str) -> tuple[list[Signed], list[Signed]]:
    """Two sides sharing about n events, each holding d events the other lacks."""
    return split_sides(events[: n + 2 * d], d, kind, random.Random(1000 + d), AUTHORS)


def event_line_bytes(s: Signed) -> int:
    frame = Frame("EVENT", str(ULID()), "alice", 1, s.event, G)
    return len(encode_frame(frame))


@pytest.fixture(scope="module")
def universe() -> list[Signed]:
    return sign_universe(N + 2 * MAX_D)


def pin_all(*nodes) -> None:
    """What an operator's configuration does: every node pins the authors and the others."""
    for node in nodes:
        for name in AUTHORS:
            node.keystore.repin(author_identity(name).key_document())
        for other in nodes:
            if other is not node:
                node.keystore.repin(other.identity.key_document())


async def load(node, events: list[Signed]) -> None:
    await node.store_thread.run(node.store.insert_events, [e.stored() for e in events])


def digest_of(node) -> tuple[int, str]:
    return node.store.summary(G)


def repair_snapshot(node, peer: str):
    return next(
        (r for r in node.repairs.snapshots() if r.peer_id == peer and r.group_id == G), None
    )


async def repair_once(node, peer: str, timeout: float = 60.0):
    """Start one repair of ``node`` against ``peer`` and wait for its outcome."""
    assert node.repairs.start(peer, G)
    assert node.repairs.state_of(peer, G) == DIGEST_REPAIRING
    await wait_until(lambda: not node.repairs.running(peer, G), timeout, "the repair to end")
    snap = repair_snapshot(node, peer)
    assert snap is not None and snap.finished_at is not None
    return snap


@pytest.fixture
async def pair(tmp_path):
    alice = await start_node(tmp_path, "alice")
    bob = await start_node(tmp_path, "bob")
    pin_all(alice, bob)
    yield alice, bob
    await bob.stop()
    await alice.stop()


# --------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("kind", ["tails", "holes", "random"])
@pytest.mark.parametrize("d", [1, 10, 100])
async def test_one_repair_converges_within_d_log_n(pair, universe, kind, d):
    alice, bob = pair
    a_events, b_events = split(universe, N, d, kind)
    await load(alice, a_events)
    await load(bob, b_events)
    assert digest_of(alice) != digest_of(bob)
    # Before any repair the state is known to be unknown, not "equal" by default.
    assert bob.repairs.state_of("alice", G) == DIGEST_UNKNOWN

    snap = await repair_once(bob, "alice")

    assert snap.state == DIGEST_EQUAL, snap.error
    assert digest_of(alice) == digest_of(bob)
    assert alice.store.ids_in_range(G) == bob.store.ids_in_range(G)
    assert snap.events_fetched == d and snap.events_sent == d
    # The range heatmap's material: the snapshot tells which ranges differed and were
    # repaired, and the bar it draws ends with nothing differing.
    assert {mark for _lo, _hi, mark in snap.range_marks} >= {"differs", "repaired"}
    assert "differs" not in cells(snap.range_marks, 80)
    stats = bob.repairs.last_stats("alice", G)
    assert stats is not None and stats.converged
    # Round trips and bytes grow like d · log n, not n: the in-memory planner bound of
    # tests/test_antientropy.py, with real EVENT lines and real request bodies.
    line = max(event_line_bytes(e) for e in universe[:50])
    log_n = math.log2(N)
    assert snap.round_trips <= 6 + d * log_n / 2, snap.round_trips
    assert stats.rounds <= 6, stats.rounds  # sequential: all digests of a level at once
    bound = 2 * d * line + 1500 * d * log_n + 40_000
    assert snap.bytes_moved <= bound, (snap.bytes_moved, bound)
    assert snap.bytes_moved < N * line / 10  # a full transfer would move N lines
    print(
        f"\nreal nodes n={N} d={d} {kind}: requests={snap.round_trips} rounds={stats.rounds} "
        f"bytes={snap.bytes_moved} ({snap.bytes_moved / (N * line):.2%} of a full transfer) "
        f"duration={(snap.finished_at - snap.started_at) * 1000:.0f} ms"
    )
    # A second repair finds nothing to do: one digest round trip.
    again = await repair_once(bob, "alice")
    assert again.state == DIGEST_EQUAL and again.round_trips == 1


async def test_peer_lacking_5000_events_gets_them_through_more_pages(pair, universe):
    alice, bob = pair
    events = universe[:8000]
    rng = random.Random(5)
    missing = set(rng.sample(range(len(events)), 5000))
    await load(alice, events)
    await load(bob, [e for i, e in enumerate(events) if i not in missing])

    snap = await repair_once(bob, "alice")

    assert snap.state == DIGEST_EQUAL, snap.error
    assert snap.events_fetched == 5000 and snap.events_sent == 0
    assert digest_of(bob) == digest_of(alice)
    stats = bob.repairs.last_stats("alice", G)
    # 5000 events at ≤ 1000 per page: at least 5 pages, so at least 3 `more` pages
    # beyond the first request of each packed chain (3000 ids listed fit in 2 requests).
    assert stats.checkpoints >= 5, stats.checkpoints
    assert stats.pages >= 3, stats.pages


# --------------------------------------------------------------------------- equivocation


@pytest.mark.parametrize("repairer_holds", ["higher", "lower"])
async def test_equivocation_stays_flagged_and_does_not_loop(pair, universe, repairer_holds):
    alice, bob = pair
    events = universe[:3000]
    victim = events[1234]
    author = author_identity(victim.author)
    # Two validly signed contents for one event id (same author, id and seq).
    other_body = b"another content for the same id".ljust(48, b"\x00")
    other = Signed(author.sign_event(G, victim.event_id, victim.event.seq, other_body), other_body)
    assert other.event.content_hash != victim.event.content_hash
    lower = min(victim, other, key=lambda s: s.event.content_hash)
    higher = other if lower is victim else victim
    mine, theirs = (higher, lower) if repairer_holds == "higher" else (lower, higher)
    await load(alice, [*events[:1234], mine, *events[1235:]])
    await load(bob, [*events[:1234], theirs, *events[1235:]])

    snap = await repair_once(alice, "bob")

    assert snap.state == DIGEST_EQUIVOCATION, snap
    stats = alice.repairs.last_stats("bob", G)
    assert stats.equivocations == {victim.event_id}
    assert stats.passes <= 3 and snap.round_trips <= 12 and not stats.unresolved
    # Both nodes converge on the lower content hash (§4.3).
    assert digest_of(alice) == digest_of(bob)
    for node in (alice, bob):
        assert node.store.get_event(G, victim.event_id).content_hash == lower.event.content_hash
    # Every node that saw both versions flags the author. (When the repairer held the
    # higher one, it adopts the lower and sends that back: bob never sees a second
    # version, so there is nothing for bob to flag.)
    saw_both = (alice,) if repairer_holds == "higher" else (alice, bob)
    for node in saw_both:
        group = next(g for g in node.snapshot().groups if g.group_id == G)
        assert group.equivocating == (victim.author,)
    repair = next(r for r in alice.snapshot().repairs if r.peer_id == "bob")
    assert repair.state == DIGEST_EQUIVOCATION
    assert any("EQUIVOCATION" in line or "equivocation" in line for line in alice.log.lines)
    # A later repair has nothing left to do and ends at once; the flag stays.
    again = await repair_once(alice, "bob")
    assert again.round_trips == 1
    assert alice.store.equivocators(G) == [victim.author]


async def test_equivocation_is_flagged_before_any_repair(pair, universe):
    """The mismatch state of a peer and group is visible before any repair runs."""
    alice, bob = pair
    events = universe[:10]
    await load(alice, events)
    victim = events[3]
    ident = author_identity(victim.author)
    body = b"second version".ljust(48, b"\x00")
    second = ident.sign_event(G, victim.event_id, victim.event.seq, body)
    outcome = await alice.ingest_queue.process(G, second, victim.author)
    # kept (the lower hash) and reported, or refused as the higher one: both are flagged
    assert (type(outcome) is Stored and outcome.equivocation) or (
        type(outcome) is Rejected and outcome.code == ErrorCode.EQUIVOCATION
    )
    assert alice.store.equivocators(G) == [victim.author]
    # A stream to bob comes up; its digest state says equivocation before any repair.
    alice.execute(AddPeer(bob.url, (G,)))
    await wait_until(lambda: streams_up(alice, "bob"), what="stream up")
    # (The handshake starts a repair at once, which may already be running or done.)
    states = {s.digest_state for s in alice.snapshot().streams if s.peer_id == "bob"}
    assert states <= {DIGEST_EQUIVOCATION, DIGEST_REPAIRING}, states


# --------------------------------------------------------------------------- live traffic


async def test_repair_under_concurrent_live_traffic_converges(tmp_path, universe):
    alice = await start_node(tmp_path, "alice", ping_interval=1.0)
    bob = await start_node(tmp_path, "bob", ping_interval=1.0)
    try:
        pin_all(alice, bob)
        a_events, b_events = split(universe, 3000, 30, "random")
        await load(alice, a_events)
        await load(bob, b_events)
        bob.add_peer(PeerConfig(alice.url, (G,)))
        alice.add_peer(PeerConfig(bob.url, (G,)))
        await wait_until(lambda: streams_up(bob, "alice") and streams_up(alice, "bob"), what="up")
        # Live events on both sides while repairs run (each handshake started one).
        published = 0
        rounds = 0
        while rounds < 200 and (published < 200 or bob.repairs.running("alice", G)):
            rounds += 1
            await alice.publish_many(G, [b"live from alice %d" % rounds] * 1)
            await bob.publish_many(G, [b"live from bob %d" % rounds] * 1)
            published += 2
            if rounds % 20 == 0 and published < 200:
                bob.repairs.start("alice", G)  # on demand, in the middle of the traffic
        assert rounds < 200 or not bob.repairs.running("alice", G)
        await wait_until(
            lambda: not bob.repairs.running("alice", G) and not alice.repairs.running("bob", G),
            timeout=60,
            what="repairs to end",
        )
        # Live events travel by the streams; the differences by the repairs. Once the
        # traffic stops, at most one more repair converges whatever the last one missed.
        if digest_of(alice) != digest_of(bob):
            await wait_until(lambda: bob.ingest_queue.backlog == 0, what="ingest idle")
            await repair_once(bob, "alice")
        await wait_until(lambda: digest_of(alice) == digest_of(bob), timeout=60, what="converged")
        expected = len({e.event_id for e in a_events} | {e.event_id for e in b_events})
        assert digest_of(bob)[0] == expected + published
        snap = repair_snapshot(bob, "alice")
        assert snap.state in (DIGEST_EQUAL, DIGEST_DIFFERS)
    finally:
        await bob.stop()
        await alice.stop()


# --------------------------------------------------------------------------- hostile peers


class HostileHandler:
    """A federation server that answers digests and checkpoints with what ``mode`` says.

    Everything else is just enough to be a peer: caps, its key document, no streams.
    """

    def __init__(self, identity: Identity, mode: str, events: list[Signed]) -> None:
        self.identity = identity
        self.server_id = identity.server_id
        self.max_message_size = 65536
        self.mode = mode
        self.events = events
        self.requests: list[str] = []

    def caps(self) -> dict:
        return {"server_id": self.server_id, "versions": ["1.0.0"], "capabilities": []}

    def key_current(self) -> dict:
        return self.identity.key_document().to_dict()

    def key_document(self, server_id: str) -> dict | None:
        return self.key_current() if server_id == self.server_id else None

    def serves_group(self, group_id: str) -> bool:
        return True

    def authenticate_request(self, header, method, path_and_query, body) -> str | None:
        return None

    def admit(self, origin: str | None, group_id: str) -> None:
        pass

    def open_stream(self, group_id: str):
        from node.protocol.errors import ErrorCode, ProtocolError

        raise ProtocolError(ErrorCode.OVERLOADED, "no streams here")

    async def send(self, group_id: str, line: bytes, origin: str | None):
        raise AssertionError("a failed repair must not send anything")

    def _fp(self) -> str:
        return "0123456789abcdef" * 2

    async def digest(self, group_id: str, query: dict) -> object:
        self.requests.append("digest")
        doc = {
            "group_id": group_id,
            "server_id": self.server_id,
            "lo": "",
            "hi": "",
            "count": 1,
            "fingerprint": self._fp(),
            "authors": {AUTHORS[0]: {"max_seq": 1, "contiguous_seq": 1, "count": 1}},
            "buckets": [{"lo": "", "hi": "", "count": 1, "fingerprint": self._fp()}],
        }
        match self.mode:
            case "digest-count":
                doc["count"] = 5  # buckets and authors do not add up
            case "digest-buckets":
                doc["buckets"] = [{"lo": "", "hi": "x", "count": 1}]
            case "digest-array":
                return [doc]
            case "digest-authors":
                doc["authors"] = {"not a server id!": 3}
        return doc

    async def checkpoint(self, group_id: str, line: bytes):
        self.requests.append("checkpoint")
        frame = parse_frame(line)
        good = [
            encode_frame(Frame("EVENT", str(ULID()), self.server_id, i + 1, e.event, group_id))
            for i, e in enumerate(self.events)
        ]
        want = list(frame.payload.body["ranges"][0]["ids"])
        final = {"want": want, "more": False, "ranges": []}
        match self.mode:
            case "checkpoint-garbage":
                lines = [*good, b"this is not json"]
            case "checkpoint-no-final":
                lines = good
            case "checkpoint-bad-payload":
                final = {"want": "everything", "more": "maybe"}
                lines = [*good, self._final(final, group_id, len(good))]
            case "checkpoint-unlisted-want":
                final["want"] = ["7ZZZZZZZZZZZZZZZZZZZZZZZZZ"]
                lines = [*good, self._final(final, group_id, len(good))]
            case "checkpoint-more-without-next":
                final = {"want": [], "more": True, "ranges": []}
                lines = [*good, self._final(final, group_id, len(good))]
            case _:
                lines = [*good, self._final(final, group_id, len(good))]
        for out in lines:
            yield out.rstrip(b"\n")

    def _final(self, payload: dict, group_id: str, seq: int) -> bytes:
        return encode_frame(
            Frame("CHECKPOINT", str(ULID()), self.server_id, seq + 1, Checkpoint(payload), group_id)
        )


class RawDigest:
    """ASGI wrapper: digests answered with bytes that are not JSON at all."""

    def __init__(self, app, body: bytes) -> None:
        self.app, self.body = app, body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/digest"):
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.body})
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def mallory_events(universe) -> list[Signed]:
    return universe[:3]


@pytest.mark.parametrize(
    "mode, words",
    [
        ("digest-count", "malformed digest"),
        ("digest-buckets", "malformed digest"),
        ("digest-array", "malformed digest"),
        ("digest-authors", "malformed digest"),
        ("digest-not-json", "not JSON"),
        ("checkpoint-garbage", "JSON"),
        ("checkpoint-no-final", "no CHECKPOINT"),
        ("checkpoint-bad-payload", "malformed checkpoint"),
        ("checkpoint-unlisted-want", "did not list"),
        ("checkpoint-more-without-next", "malformed checkpoint"),
    ],
)
async def test_malformed_peer_ends_the_repair_cleanly(
    tmp_path, universe, mallory_events, mode, words
):
    mallory = Identity.from_seed(b"m" * 32, "mallory")
    handler = HostileHandler(mallory, mode, mallory_events)
    app = FederationApp(handler)
    if mode == "digest-not-json":
        app = RawDigest(app, b'{"group_id": "g!test", "count": ')
    server = await start_server(app, "127.0.0.1", 0)
    node = await start_node(tmp_path, "victim")
    try:
        mallory.url = server.url
        pin_all(node)
        node.keystore.repin(mallory.key_document())
        await load(node, universe[100:110])
        before = digest_of(node)

        snap = await repair_once(node, "mallory")

        assert snap.state == DIGEST_FAILED
        assert snap.error and words in snap.error, snap.error
        assert any("repair mallory" in line and words in line for line in node.log.lines)
        assert node.repairs.state_of("mallory", G) == DIGEST_FAILED
        assert repair_snapshot(node, "mallory").state == DIGEST_FAILED
        # Nothing of a failed exchange is stored, even the valid events before the bad line.
        assert digest_of(node) == before
        if mode.startswith("checkpoint"):
            assert handler.requests == ["digest", "checkpoint"]
        # The node is unharmed: it still serves, and can repair again.
        assert node.snapshot().server_id == "victim"
        assert node.repairs.start("mallory", G)
        await wait_until(lambda: not node.repairs.running("mallory", G), what="second repair")
    finally:
        await node.stop()
        await server.stop()


async def test_differs_when_the_peer_never_supplies_what_it_advertises(tmp_path, universe):
    """A peer whose digest differs but whose checkpoint brings nothing: the repair ends
    (no loop) and the state says `differs`, not `equal` and not `failed`."""
    mallory = Identity.from_seed(b"n" * 32, "mallory")
    handler = HostileHandler(mallory, "empty", [])
    server = await start_server(FederationApp(handler), "127.0.0.1", 0)
    node = await start_node(tmp_path, "victim")
    try:
        mallory.url = server.url
        pin_all(node)
        node.keystore.repin(mallory.key_document())
        snap = await repair_once(node, "mallory")
        assert snap.state == DIGEST_DIFFERS, snap
        assert snap.error is None
        assert handler.requests.count("digest") <= 3
    finally:
        await node.stop()
        await server.stop()


def test_universe_is_validly_signed(universe):
    """The test data itself: canonical ids in order, seqs per author, real signatures."""
    from node.protocol.identity import verify_event

    ids = [e.event_id for e in universe]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for e in universe[:20]:
        key = base64.b64decode(author_identity(e.author).key_document().public_key_b64)
        assert verify_event(G, e.event, key)
    assert orjson.loads(orjson.dumps({"n": len(universe)}))["n"] == N + 2 * MAX_D


async def test_narrow_descent_converges_with_fewer_digest_bytes(pair, universe):
    """The `descent_levels` tuning (narrower digests below the top, one more round)
    still converges in one repair between real nodes, within its round budget."""
    alice, bob = pair
    a_events, b_events = split(universe, N, 10, "random")
    await load(alice, a_events)
    await load(bob, b_events)
    bob.repairs.planner_options = {"descent_levels": 3, "checkpoint_threshold": 32}
    snap = await repair_once(bob, "alice")
    assert snap.state == DIGEST_EQUAL, snap.error
    assert digest_of(alice) == digest_of(bob)
    stats = bob.repairs.last_stats("alice", G)
    # top digest, up to 3 levels, checkpoint, send, verifying digest
    assert stats.rounds <= 7 and stats.passes == 2
