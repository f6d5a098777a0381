"""SIGKILL mid-burst, of the receiver and of the sender: nothing lost, nothing stored twice.

Issue 3 and issue 7: a node killed with SIGKILL (no cleanup of any kind) in the middle
of a 10k-event burst, then restarted on the same port with the same data directory.
The killed node is a real process (`tapsim node`, or tests/burst_node.py when it must
author the burst itself); its peer runs in-process so the test can read its store.

What is checked, beyond "the counts match in the end":

- ACK only after durable (§4.4): at the moment of the kill, every event the sender no
  longer holds in its outbox (so: acknowledged) is in the receiver's SQLite file.
- The kill really was mid-burst: the sender's outbox still held events the receiver
  did not have, so the restart had something to replay.
- At the end: the receiver's SQLite file holds exactly the sender's events, each once
  (event ids, (author, seq) pairs and contents are unique, seqs are 1..n), the
  fingerprints (§5.1) of both sides are equal, and the outbox is empty.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from node.transport.client import FederationClient
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.procnodes import (
    ProcNode,
    assert_exactly_once,
    db_outbox,
    db_rows,
    rows_fingerprint,
)

# Both nodes keep their events on SQLite, then on PostgreSQL.
pytestmark = pytest.mark.usefixtures("node_stores")

GROUP = "g!test"
N = 10_000
KILL_AT = 2_500  # events held by the receiver when the kill comes


async def remote_summary(client: FederationClient) -> tuple[int, str]:
    r = await client.request("GET", "/_taps/federation/encrypted-groups/g%21test/digest?buckets=1")
    assert r.status == 200, r.body
    doc = orjson.loads(r.body)
    return doc["count"], doc["fingerprint"]


async def test_sigkill_receiver_mid_burst_then_replay_from_the_outbox(tmp_path):
    bob = ProcNode(tmp_path, "bob")
    await bob.start()
    alice = await start_node(tmp_path, "alice", peers=[bob.url])
    client = FederationClient(bob.url, connect_timeout=30)
    try:
        await wait_until(lambda: streams_up(alice, "bob"), what="alice → bob up")

        async def burst() -> None:
            for i in range(0, N, 250):
                await alice.publish_many(GROUP, [b"burst-%06d" % k for k in range(i, i + 250)])
                await asyncio.sleep(0.02)

        publisher = asyncio.create_task(burst())
        held = [0]

        async def poll() -> None:
            while held[0] < KILL_AT:
                held[0] = (await remote_summary(client))[0]
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), 60)
        bob.kill()
        await client.close()
        # Everything alice no longer owes bob was acknowledged, so it is on bob's disk.
        published = set(await alice.store_thread.run(alice.store.ids_in_range, GROUP, "", ""))
        pending = {
            e.event_id
            for e in await alice.store_thread.run(
                alice.store.outbox_pending, "bob", GROUP, "", 1_000_000
            )
        }
        on_disk = {row[0] for row in db_rows(bob.db_path, GROUP)}
        assert published - pending <= on_disk, "an acknowledged event is not on bob's disk"
        assert pending, "the kill came after the burst: nothing left to replay"
        await publisher

        await bob.start()  # same port, same data
        client = FederationClient(bob.url, connect_timeout=30)
        await wait_until(
            lambda: alice.store.outbox_count("bob", GROUP) == 0, 60, "alice's outbox drained"
        )
        assert await remote_summary(client) == summary(alice) == (N, summary(alice)[1])
        assert await bob.stop() == 0
        rows = db_rows(bob.db_path, GROUP)
        assert rows_fingerprint(rows) == summary(alice)
        assert_exactly_once(rows, authors={"alice": N})
        assert bob.has_line("stream up: alice g!test (acceptor)")
    finally:
        await client.close()
        await alice.stop()
        bob.cleanup()


async def test_sigkill_sender_mid_burst_its_outbox_survives_and_drains(tmp_path):
    bob = await start_node(tmp_path, "bob", initial_credit_events=64)  # a backlog builds
    alice = ProcNode(
        tmp_path,
        "alice",
        peers=[bob.url],
        module="tests.burst_node",
        pre=("--count", str(N), "--batch", "250", "--pause", "0", "--"),
    )
    try:
        await alice.start()
        await wait_until(lambda: summary(bob)[0] >= KILL_AT, 60, "bob to hold some of the burst")
        alice.kill()
        rows = db_rows(alice.db_path, GROUP)
        outbox = db_outbox(alice.db_path, "bob", GROUP)
        published = [int(line.split()[1]) for line in alice.lines if line.startswith("published")]
        # Every batch alice reported committed survived the kill; an uncommitted batch is
        # simply not there (nobody was told it existed).
        assert len(rows) >= published[-1]
        assert_exactly_once(rows, authors={"alice": len(rows)})
        at_bob = set(await bob.store_thread.run(bob.store.ids_in_range, GROUP, "", ""))
        assert {r[0] for r in rows} - outbox <= at_bob, "acknowledged but not stored at bob"
        # Mid-burst: alice had more to publish, or bob still lacked some of her outbox.
        # (Outbox entries bob already holds are ACKs whose removal the kill cut short:
        # the restart replays them as duplicates, which bob must not store twice.)
        assert outbox, "the kill came after the burst: nothing left in the outbox"
        assert len(rows) < N or outbox - at_bob

        # Restart as the plain headless node: no more publishing, only the outbox drains.
        alice.module, alice.pre = "tapsim_tui.cli", ()
        await alice.start()
        await wait_until(lambda: summary(bob)[0] == len(rows), 60, "bob to hold alice's events")
        # Read alice's outbox from her live SQLite file (WAL lets a reader in).
        await wait_until(
            lambda: not db_outbox(alice.db_path, "bob", GROUP), 60, "alice's outbox to drain"
        )
        assert alice.has_line("stream up: bob g!test (initiator)")
        assert await alice.stop() == 0
        assert db_outbox(alice.db_path, "bob", GROUP) == set()
        after = db_rows(alice.db_path, GROUP)
        assert after == rows  # the sender lost nothing and re-authored nothing
        assert rows_fingerprint(after) == summary(bob)
        assert sorted(await bob.store_thread.run(bob.store.ids_in_range, GROUP, "", "")) == [
            r[0] for r in rows
        ]
    finally:
        alice.cleanup()
        await bob.stop()
