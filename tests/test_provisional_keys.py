"""§3.2: events verified with a hop-supplied, unconfirmed key are checked again when a
HELLO pins the author's key, and lose their provisional mark."""

from __future__ import annotations

from node.runtime.config import PeerConfig
from tests.nodes import start_node, streams_up, summary, wait_until


async def test_provisional_events_are_confirmed_by_a_later_hello(tmp_path):
    a = await start_node(tmp_path, "a")
    b = await start_node(tmp_path, "b", peers=[a.url])
    await wait_until(lambda: streams_up(b, "a"), what="b up with a")
    for i in range(3):
        await a.publish("g!test", b"from a %d" % i)
    await wait_until(lambda: summary(b)[0] == 3, what="b holds a's events")
    await a.stop()  # a's own url no longer answers: c cannot confirm a's key at its source

    c = await start_node(tmp_path, "c", peers=[b.url])
    try:
        await wait_until(lambda: summary(c)[0] == 3, what="c holds a's events via b")
        pin = c.keystore.pin("a")
        assert pin is not None and pin.provisional and pin.via == "b"
        assert len(c.store.provisional_events("a")) == 3

        # a comes back (same data dir, same key) and reaches c directly: its HELLO pins.
        a = await start_node(tmp_path, "a")
        a.add_peer(PeerConfig(c.url, ("g!test",)))
        await wait_until(lambda: streams_up(c, "a"), what="a's stream to c")
        await wait_until(
            lambda: not c.keystore.pin("a").provisional, what="a's key pinned by HELLO"
        )
        await wait_until(
            lambda: c.store_thread.submit(c.store.provisional_events, "a").result() == [],
            what="a's events no longer provisional",
        )
        assert summary(c)[0] >= 3
    finally:
        await c.stop()
        await a.stop()
        await b.stop()
