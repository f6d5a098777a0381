"""Faults from the dashboard over REAL nodes, in both roles of a link.

bob dials alice: on alice's screen bob's row is an acceptor row, on bob's screen alice's
row is an initiator row. Each fault key is pressed on each side; the test then watches
both nodes' snapshots for the fault's effect (outbox filling, peer retrying, ACKs held,
credit shrunk) and presses the key again on the same row to undo it.
"""

from __future__ import annotations

import asyncio

import pytest

from node.runtime.config import NodeConfig, PeerConfig
from node.view import snapshot as snap
from node.view.commands import PublishEvent
from node.view.snapshot import NodeSnapshot, StreamSnapshot
from tapsim_tui.app import TapsimApp
from tapsim_tui.nodeprocess import NodeProcess
from widgets.digest_comparison import DigestComparison
from widgets.fault_badges import FaultBadges
from widgets.streams_table import StreamsTable

GROUP = "g!faults"
DEADLINE = 60.0  # generous: the suite must pass with one core busy


def _config(tmp_path, name: str, peers=()) -> NodeConfig:
    return NodeConfig(
        server_id=name,
        data_dir=tmp_path / name,
        listen_port=0,
        groups=(GROUP,),
        peers=[PeerConfig(url, (GROUP,)) for url in peers],
        ping_interval=1.0,
    )


def _row(node, peer: str, role: str) -> StreamSnapshot | None:
    shot: NodeSnapshot = node.snapshot()
    return next((s for s in shot.streams if s.peer_id == peer and s.role == role), None)


async def _until(pilot, condition, what: str, timeout: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not reached in time: {what}"
        await pilot.pause(0.05)


def _get(node, peer: str, role: str, name: str, default=None):
    """A field of the row, or `default` while there is no row."""
    row = _row(node, peer, role)
    return default if row is None else getattr(row, name)


def _up(node, peer: str, role: str) -> bool:
    row = _row(node, peer, role)
    return row is not None and row.state == snap.UP


def _stored(node) -> int:
    return sum(g.count for g in node.snapshot().groups)


@pytest.fixture
def pair(tmp_path):
    alice = NodeProcess(_config(tmp_path, "alice"))
    alice.start()
    bob = NodeProcess(_config(tmp_path, "bob", peers=[alice.url]))
    bob.start()
    yield alice, bob
    bob.stop()
    alice.stop()


# (whose screen, the row's peer, the row's role on that screen)
SIDES = [
    pytest.param("alice", "bob", "acceptor", id="acceptor-side"),
    pytest.param("bob", "alice", "initiator", id="initiator-side"),
]


async def _open(app, pilot, nodes, screen: str, peer: str, role: str):
    alice, bob = nodes
    await _until(pilot, lambda: _up(alice, "bob", "acceptor"), "alice sees bob up")
    await _until(pilot, lambda: _up(bob, "alice", "initiator"), "bob sees alice up")
    if screen == "bob":
        await pilot.press("n")
    key = f"{peer}|{GROUP}|{role}"
    table = app.main_screen.query_one(StreamsTable)
    await _until(pilot, lambda: key in table.rows, "the row is in the table")
    table.select_key(key)
    await pilot.pause()
    return key, table


@pytest.mark.parametrize(("screen", "peer", "role"), SIDES)
async def test_cut_keeps_the_row_fills_the_outbox_and_the_same_key_restores(
    pair, screen, peer, role
):
    alice, bob = pair
    app = TapsimApp([alice, bob])
    async with app.run_test(size=(160, 48)) as pilot:
        key, table = await _open(app, pilot, pair, screen, peer, role)
        await pilot.press("x")
        # Both ends lose the stream; the row on our screen stays, selected, saying "cut".
        await _until(pilot, lambda: not _up(bob, "alice", "initiator"), "bob's stream ends")
        await _until(
            pilot,
            lambda: str(table.get_cell(key, "state")) == "cut" if key in table.rows else False,
            "the row shows the cut",
        )
        assert table.selected_key == key
        badges = app.main_screen.query_one(FaultBadges)
        await _until(pilot, lambda: len(badges.faults) == 1, "one FAULTS badge")
        # bob keeps publishing: it queues for alice, durable, while the link is cut.
        before = _stored(alice)
        for i in range(5):
            bob.submit(PublishEvent(GROUP, f"during the cut {i}".encode()))
        await _until(
            pilot,
            lambda: _get(bob, "alice", "initiator", "outbox", 0) >= 5,
            "bob's outbox for alice fills",
        )
        # The acceptor's row of bob is still there and says what is queued for bob.
        alice_row = _row(alice, "bob", "acceptor")
        assert alice_row is not None and alice_row.state in (snap.DEAD, snap.GONE)
        if screen == "alice":
            assert alice_row.faults == {snap.FAULT_CUT}
            # bob's streams are refused while the cut is on: he retries with backoff.
            await _until(
                pilot,
                lambda: _get(bob, "alice", "initiator", "state") == snap.BACKOFF,
                "bob retries with backoff",
            )
        assert _stored(alice) == before
        await pilot.press("x")  # the same key on the same row undoes it
        await _until(pilot, lambda: _up(bob, "alice", "initiator"), "bob reconnects")
        await _until(pilot, lambda: _stored(alice) >= before + 5, "the outbox replays to alice")
        await _until(
            pilot,
            lambda: _get(bob, "alice", "initiator", "outbox", 0) == 0,
            "bob's outbox drains",
        )
        await _until(pilot, lambda: badges.faults == (), "the badge goes")
        assert table.selected_key == key


@pytest.mark.parametrize(("screen", "peer", "role"), SIDES)
async def test_ack_pause_holds_the_peers_events_unacknowledged_until_undone(
    pair, screen, peer, role
):
    alice, bob = pair
    app = TapsimApp([alice, bob])
    async with app.run_test(size=(160, 48)) as pilot:
        key, table = await _open(app, pilot, pair, screen, peer, role)
        await pilot.press("k")
        sender, receiver = (bob, alice) if screen == "alice" else (alice, bob)
        sender_view = ("alice", "initiator") if sender is bob else ("bob", "acceptor")
        await _until(
            pilot,
            lambda: snap.FAULT_ACK_PAUSED in _get(receiver, peer, role, "faults", ()),
            "the fault is on the row",
        )
        for i in range(3):
            sender.submit(PublishEvent(GROUP, f"unacked {i}".encode()))
        await _until(pilot, lambda: _stored(receiver) >= 3, "the events are stored")
        # Stored, but not acknowledged: the sender's ACK lag grows.
        await _until(
            pilot,
            lambda: _get(sender, *sender_view, "unacked", 0) >= 3,
            "the sender waits for ACKs",
        )
        lag = _get(sender, *sender_view, "ack_lag_ms")
        assert lag is not None and lag > 0
        await _until(
            pilot, lambda: str(table.get_cell(key, "state")) == "acks paused", "the row says so"
        )
        await pilot.press("k")
        await _until(
            pilot,
            lambda: _get(sender, *sender_view, "unacked", 0) == 0,
            "the ACKs flow again",
        )
        row = _row(sender, *sender_view)
        assert row is not None and row.ack_lag_ms == 0 and row.ack_rtt_ms is not None


@pytest.mark.parametrize(("screen", "peer", "role"), SIDES)
async def test_credit_one_shrinks_the_window_we_grant_on_either_role(pair, screen, peer, role):
    alice, bob = pair
    app = TapsimApp([alice, bob])
    node = alice if screen == "alice" else bob
    async with app.run_test(size=(160, 48)) as pilot:
        key, table = await _open(app, pilot, pair, screen, peer, role)
        await pilot.press("c")
        await _until(
            pilot,
            lambda: _get(node, peer, role, "window_events", 0) == 1,
            "we grant a window of one event",
        )
        await _until(
            pilot, lambda: str(table.get_cell(key, "state")) == "credit 1", "the row says so"
        )
        await pilot.press("c")
        await _until(
            pilot,
            lambda: _get(node, peer, role, "window_events", 0) > 1,
            "the full window again",
        )


async def test_digest_panel_compares_with_the_peers_fetched_digest_and_ack_lag_is_zero(pair):
    """The pane asks for the peer's digest while shown; the table's digest column and
    the panel's marks come from it; the ACK-lag column reads 0 once all is acknowledged."""
    alice, bob = pair
    app = TapsimApp([alice, bob])
    async with app.run_test(size=(160, 48)) as pilot:
        key, table = await _open(app, pilot, pair, "alice", "bob", "acceptor")
        for i in range(4):
            bob.submit(PublishEvent(GROUP, f"compare {i}".encode()))
        await _until(pilot, lambda: _stored(alice) == 4, "alice holds bob's events")

        def fetched():
            return next(
                (d for d in alice.snapshot().peer_digests if d.peer_id == "bob" and d.count == 4),
                None,
            )

        await _until(pilot, lambda: fetched() is not None, "bob's digest fetched by alice")
        digest = fetched()
        assert digest.equal and digest.local_count == 4 and digest.error is None
        await _until(
            pilot, lambda: str(table.get_cell(key, "digest")) == "✓ equal", "table says equal"
        )
        panel = app.main_screen.query_one(DigestComparison)
        await _until(pilot, lambda: "ago)" in str(panel.render()), "the peer side has an age")
        text = str(panel.render())
        assert "✗" not in text and "✓" in text
        bob_row = _row(bob, "alice", "initiator")
        assert bob_row is not None and bob_row.ack_lag_ms == 0 and bob_row.ack_rtt_ms > 0
        # The peer's key and pairing code, for the read-aloud check.
        alice_row = _row(alice, "bob", "acceptor")
        assert alice_row.peer_pairing_code == bob.snapshot().pairing_code
        assert alice_row.peer_key_id == bob.snapshot().key_id
