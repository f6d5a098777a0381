"""Adding a peer that is one already, and forgetting a peer: real nodes on loopback,
driven by the dashboard's commands (``node.view.commands``)."""

from __future__ import annotations

from node.view.commands import AddPeer, ForgetPeer
from tests.nodes import start_node, streams_up, wait_until

G = "g!test"


def _logged(node, words: str) -> bool:
    return any(words in line for line in node.log.lines)


async def test_adding_a_known_peer_says_so_instead_of_a_second_stream(tmp_path):
    b = await start_node(tmp_path, "b")
    a = await start_node(tmp_path, "a", peers=[b.urls[0]])
    try:
        await wait_until(lambda: streams_up(a, "b"), what="a's stream to b up")
        port = b.urls[0].rsplit(":", 1)[1]
        a.execute(AddPeer(b.urls[0], (G,)))  # the same URL
        await wait_until(lambda: _logged(a, f"peer not added: {b.urls[0]} is already a peer"))
        a.execute(AddPeer(f"http://localhost:{port}", (G,)))  # another URL, the same server
        await wait_until(
            lambda: _logged(
                a, f"peer not added: http://localhost:{port} is b, already a peer ({b.urls[0]})"
            ),
            what="a says b is already a peer",
        )
        a.execute(AddPeer(a.urls[0], (G,)))  # ourselves
        await wait_until(lambda: _logged(a, "is this node itself"))
        assert list(a.peers.links) == [b.urls[0]]
        assert [p.url for p in a.directory.configs] == [b.urls[0]]
        assert sum(1 for r in a.streams if r.peer_id == "b" and not r.finished) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_an_unreachable_peer_is_added_then_forgotten(tmp_path):
    a = await start_node(tmp_path, "a")
    try:
        url = "http://127.0.0.1:9"  # discard: nothing answers
        a.execute(AddPeer(url, (G,)))
        await wait_until(lambda: url in a.peers.links, what="the peer added anyway")
        assert _logged(a, f"{url} did not answer")
        a.execute(ForgetPeer(url))
        await wait_until(lambda: _logged(a, f"peer forgotten: {url}"), what="forgotten")
        assert url not in a.peers.links and not a.directory.configured(url)
        assert not any(s.url == url for s in a.peers.statuses())  # no more retries shown
    finally:
        await a.stop()


async def _a_with_queued_events_for_b(tmp_path):
    b = await start_node(tmp_path, "b")
    a = await start_node(tmp_path, "a", peers=[b.urls[0]])
    await wait_until(lambda: streams_up(a, "b"), what="a's stream to b up")
    url = b.urls[0]
    await b.stop()
    await a.publish_many(G, [b"sealed one", b"sealed two"])
    await wait_until(lambda: a.store.outbox_count("b", G) == 2, what="two events queued for b")
    return a, url


async def test_forgetting_a_peer_keeps_its_outbox_and_pin_by_default(tmp_path):
    a, url = await _a_with_queued_events_for_b(tmp_path)
    try:
        assert await a.forget_peer(url)
        assert url not in a.peers.links
        assert a.store.outbox_count("b", G) == 2 and a.keystore.pin("b") is not None
        assert _logged(a, f"peer forgotten: {url} (b); its outbox and pin kept")
    finally:
        await a.stop()


async def test_forgetting_a_peer_can_drop_its_outbox_and_pin(tmp_path):
    a, url = await _a_with_queued_events_for_b(tmp_path)
    try:
        assert await a.forget_peer(url, drop=True)
        assert a.store.outbox_count("b", G) == 0 and a.keystore.pin("b") is None
        assert _logged(a, f"peer forgotten: {url} (b); its outbox (2 events) and pin dropped")
        pins = await a.store_thread.run(a.store.load_pins)
        assert all(doc["server_id"] != "b" for doc, _ in pins)
    finally:
        await a.stop()
