"""Real nodes federating over real HTTP/2 on loopback (hypercorn server, our h2 client)."""

from __future__ import annotations

import pytest

from node.view.snapshot import FAULT_CUT
from tests.nodes import start_node, streams_up, summary, wait_until

# Every node of these tests keeps its events on SQLite, then on PostgreSQL.
pytestmark = pytest.mark.usefixtures("node_stores")


@pytest.fixture
async def pair(tmp_path):
    alice = await start_node(tmp_path, "alice", ping_interval=1.0)
    bob = await start_node(tmp_path, "bob", peers=[alice.url], ping_interval=1.0)
    yield alice, bob
    await bob.stop()
    await alice.stop()


async def test_handshake_and_events_both_ways(pair):
    alice, bob = pair
    await wait_until(lambda: streams_up(bob, "alice") and streams_up(alice, "bob"), what="up")
    for i in range(20):
        await alice.publish("g!test", b"from alice %d" % i)
        await bob.publish("g!test", b"from bob %d" % i)
    await wait_until(lambda: summary(alice)[0] == 40 and summary(bob)[0] == 40, what="40 each")
    assert summary(alice) == summary(bob)
    # Both outboxes drained: everything was acknowledged after being stored.
    await wait_until(lambda: alice.store.outbox_count("bob", "g!test") == 0, what="alice outbox")
    await wait_until(lambda: bob.store.outbox_count("alice", "g!test") == 0, what="bob outbox")


async def test_ping_pong_measures_rtt(pair):
    _alice, bob = pair
    await wait_until(lambda: streams_up(bob, "alice"), what="up")
    runner = next(r for r in bob.streams if r.peer_id == "alice")
    await wait_until(lambda: runner.session.rtt is not None, what="an RTT sample")
    assert 0 < runner.session.rtt < 5.0  # seconds, on loopback (generous for a loaded machine)
    assert runner.session.pongs_received >= 1


async def test_relay_a_to_b_to_c(tmp_path):
    a = await start_node(tmp_path, "a")
    b = await start_node(tmp_path, "b", peers=[a.url])
    c = await start_node(tmp_path, "c", peers=[b.url])
    try:
        await wait_until(lambda: streams_up(b, "a") and streams_up(c, "b"), what="chain up")
        ids = [await a.publish("g!test", b"relay me %d" % i) for i in range(5)]
        await wait_until(lambda: summary(c)[0] == 5, what="events at c")
        assert summary(a) == summary(b) == summary(c)
        held = c.store.get_event("g!test", ids[0])
        assert held is not None and held.author == "a" and held.hop == "b"
    finally:
        for n in (c, b, a):
            await n.stop()


async def test_one_event_credit_window_still_delivers_everything(tmp_path):
    alice = await start_node(tmp_path, "alice", initial_credit_events=1)
    bob = await start_node(tmp_path, "bob", peers=[alice.url], initial_credit_events=1)
    try:
        await wait_until(lambda: streams_up(bob, "alice"), what="up")
        runner = next(r for r in bob.streams if r.peer_id == "alice")
        for i in range(50):
            await bob.publish("g!test", b"tiny window %d" % i)
        await wait_until(lambda: summary(alice)[0] == 50, what="50 events at alice")
        # Never more than one of our events in flight on a one-event window.
        assert runner.session.window_events == 1
        assert summary(alice) == summary(bob)
    finally:
        await bob.stop()
        await alice.stop()


async def test_cut_link_then_replay_from_outbox(pair):
    alice, bob = pair
    await wait_until(lambda: streams_up(bob, "alice"), what="up")
    bob.faults.set("alice", "g!test", FAULT_CUT, True)
    await wait_until(lambda: not streams_up(bob, "alice"), what="link cut")
    for i in range(30):
        await bob.publish("g!test", b"while cut %d" % i)
    assert bob.store.outbox_count("alice", "g!test") == 30
    assert summary(alice)[0] == 0
    bob.faults.set("alice", "g!test", FAULT_CUT, False)
    await wait_until(lambda: summary(alice)[0] == 30, what="replay after the cut")
    await wait_until(lambda: bob.store.outbox_count("alice", "g!test") == 0, what="outbox drained")
    assert summary(alice) == summary(bob)


async def test_repair_after_handshake_fetches_history(tmp_path):
    alice = await start_node(tmp_path, "alice")
    for i in range(300):
        await alice.publish("g!test", b"history %d" % i)
    bob = await start_node(tmp_path, "bob", peers=[alice.url])
    try:
        # Events stored before the peering travel by anti-entropy, not the outbox (§4).
        await wait_until(lambda: summary(bob) == summary(alice), what="repair converged")
    finally:
        await bob.stop()
        await alice.stop()


async def test_outbox_fills_after_a_restart_while_the_peer_is_away(tmp_path):
    alice = await start_node(tmp_path, "alice")
    bob = await start_node(tmp_path, "bob", peers=[alice.url])
    await wait_until(lambda: streams_up(bob, "alice"), what="up")
    url = alice.url
    await alice.stop()
    await bob.stop()
    # bob restarts while alice is away: he still knows who answers at her URL.
    bob = await start_node(tmp_path, "bob", peers=[url])
    try:
        for i in range(5):
            await bob.publish("g!test", b"while alice is away %d" % i)
        assert bob.store.outbox_count("alice", "g!test") == 5
    finally:
        await bob.stop()


async def test_a_burst_of_publish_commands_is_authored_in_one_transaction(tmp_path):
    from node.view.commands import PublishEvent

    alice = await start_node(tmp_path, "alice")
    try:
        calls = []  # one call of Publisher._author is one transaction on the store thread
        original = alice.publisher._author

        def counting(*args):
            calls.append(len(args[1]))
            return original(*args)

        alice.publisher._author = counting
        for i in range(100):
            alice.execute(PublishEvent("g!test", b"burst %d" % i))
        await wait_until(lambda: summary(alice)[0] == 100, what="100 events")
        assert calls == [100]
        seqs = sorted(a["max_seq"] for a in alice.store.authors("g!test").values())
        assert seqs == [100]
    finally:
        await alice.stop()
