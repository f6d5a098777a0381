"""Links that break, stall or crawl, between real nodes on loopback (issue 7, faults).

bob initiates to alice through a :class:`tests.chaosproxy.ChaosProxy`, which can cut
the TCP connection, freeze it (the peer goes silent without any error) or pace it.
Every test ends with the same accounting as the kill tests: nothing lost (outbox
empty, fingerprints equal), nothing stored twice (alice's SQLite file, read after stop).
"""

from __future__ import annotations

import asyncio
import time

from node.protocol.session import UP
from tests.chaosproxy import ChaosProxy
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.procnodes import assert_exactly_once, db_rows

GROUP = "g!test"


def runner_to(node, peer: str):
    return next(
        (r for r in node.streams if r.peer_id == peer and not r.finished and r.session.state == UP),
        None,
    )


async def stop_and_check_exactly_once(alice, bob, authors: dict[str, int]) -> None:
    """Stop both; alice's file holds bob's events once each, with the same fingerprint."""
    expected = summary(bob)
    await bob.stop()
    await alice.stop()
    rows = db_rows(alice.config.data_dir / "events.sqlite3", GROUP)
    assert (len(rows), expected[0]) == (expected[0], sum(authors.values()))
    assert_exactly_once(rows, authors=authors)


async def test_repeated_link_cuts_during_a_burst_lose_and_duplicate_nothing(tmp_path):
    n = 4000
    alice = await start_node(tmp_path, "alice")
    proxy = await ChaosProxy.to(alice.url)
    bob = await start_node(tmp_path, "bob", peers=[proxy.url])
    try:
        await wait_until(lambda: streams_up(bob, "alice"), what="bob → alice up")

        async def burst() -> None:
            for i in range(0, n, 100):
                await bob.publish_many(GROUP, [b"cut-%06d" % k for k in range(i, i + 100)])
                await asyncio.sleep(0.01)

        publisher = asyncio.create_task(burst())
        cuts = 0
        for threshold in (600, 1500, 2500):
            await wait_until(
                lambda t=threshold: summary(alice)[0] >= t, 30, f"{threshold} at alice"
            )
            await wait_until(lambda: streams_up(bob, "alice"), what="bob → alice up again")
            cuts += proxy.cut()
        await publisher
        assert cuts >= 3
        await wait_until(lambda: bob.store.outbox_count("alice", GROUP) == 0, 60, "outbox drained")
        assert summary(alice) == summary(bob)
        assert proxy.connections >= 4
        assert bob.counters.streams_initiated >= 4
        await stop_and_check_exactly_once(alice, bob, {"bob": n})
    finally:
        await bob.stop()
        await alice.stop()
        await proxy.close()


async def test_dead_peer_is_detected_after_three_ping_intervals_and_bob_reconnects(tmp_path):
    alice = await start_node(tmp_path, "alice", ping_interval=1.0)
    proxy = await ChaosProxy.to(alice.url)
    bob = await start_node(tmp_path, "bob", peers=[proxy.url], ping_interval=1.0)
    try:
        await wait_until(lambda: streams_up(bob, "alice"), what="bob → alice up")
        first = runner_to(bob, "alice")
        await bob.publish(GROUP, b"before the silence")
        await wait_until(lambda: summary(alice)[0] == 1, what="first event")
        frozen_at = time.monotonic()
        assert proxy.freeze() == 1  # alice goes silent: no bytes, no FIN, no RST
        await wait_until(lambda: first.finished, what="bob to declare the stream dead")
        detected = time.monotonic() - frozen_at
        assert 2.5 <= detected <= 10.0, detected  # 3 × ping interval of 1 s, plus a loaded machine
        assert first.session.end_code.value == "TIMEOUT"
        assert any("TIMEOUT to alice" in line for line in bob.log.lines)
        # Bob reconnects (new TCP connection, after a backoff) and delivers what he wrote.
        await bob.publish(GROUP, b"after the silence")
        await wait_until(lambda: runner_to(bob, "alice") not in (None, first), what="reconnect")
        assert any("connection silent, dropped" in line for line in bob.log.lines)
        again = runner_to(bob, "alice")
        assert again.started_at - frozen_at >= detected + 0.3  # waited out a backoff
        assert proxy.connections == 2
        await wait_until(lambda: summary(alice) == summary(bob), what="delivery after reconnect")
        await stop_and_check_exactly_once(alice, bob, {"bob": 2})
    finally:
        await bob.stop()
        await alice.stop()
        await proxy.close()


async def test_no_false_timeout_during_a_slow_bulk_transfer(tmp_path):
    """16 MB through a link paced at 4 MB/s (4 s) with a 1 s ping interval on both sides:
    any frame read counts as life, so the stream must stay up the whole time."""
    alice = await start_node(tmp_path, "alice", ping_interval=1.0)
    proxy = await ChaosProxy.to(alice.url)
    bob = await start_node(tmp_path, "bob", peers=[proxy.url], ping_interval=1.0)
    try:
        await wait_until(lambda: streams_up(bob, "alice"), what="bob → alice up")
        sender = runner_to(bob, "alice")
        receiver = runner_to(alice, "bob")
        proxy.rate = 4_000_000
        count, size = 400, 40_000  # base64 makes each EVENT line about 53 KB
        started = time.monotonic()
        for i in range(0, count, 50):
            await bob.publish_many(
                GROUP, [bytes([k % 251]) * (size - 8) + b"%08d" % k for k in range(i, i + 50)]
            )
        # Only ACKs read on this stream empty the outbox (alice's own repair may fetch
        # some events by checkpoint meanwhile), so this waits for all of it to cross.
        await wait_until(
            lambda: bob.store.outbox_count("alice", GROUP) == 0, 60, "bulk sent and acked"
        )
        took = time.monotonic() - started
        assert took > 3.0, f"the transfer took {took:.1f} s: too fast to prove anything"
        assert summary(alice) == summary(bob)
        assert runner_to(bob, "alice") is sender and runner_to(alice, "bob") is receiver
        assert not sender.finished and not receiver.finished
        assert sender.session.counters.bytes_out > 16_000_000
        assert not [line for line in [*bob.log.lines, *alice.log.lines] if "TIMEOUT" in line]
        await stop_and_check_exactly_once(alice, bob, {"bob": count})
    finally:
        await bob.stop()
        await alice.stop()
        await proxy.close()
