"""Faults on links between real nodes on loopback: the fault follows its row, and a cut
link is cut for every request of the peer, not only its streams."""

from __future__ import annotations

from dataclasses import replace

import orjson

from node.runtime.node import Node
from node.runtime.request_signer import RequestSigner
from node.transport.media import FRAME_MEDIA_TYPE
from node.transport.routes import group_path
from node.view.commands import SetFault
from node.view.snapshot import DEAD, FAULT_ACK_PAUSED, FAULT_CUT
from tapsim_tui.launch import free_ports
from tests.nodes import node_config, start_node, streams_up, wait_until

GROUP = "g!test"


def row(node: Node, peer: str):
    return next((s for s in node.snapshot().streams if s.peer_id == peer), None)


async def test_a_fault_on_a_peer_named_by_its_url_follows_it_once_its_id_is_learned(tmp_path):
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    bob = await start_node(tmp_path, "bob", peers=[url], ping_interval=1.0)
    alice = Node(replace(node_config(tmp_path, "alice"), listen_port=port, ping_interval=1.0))
    try:
        # alice is not up yet: bob knows her only by her URL, and so does his row.
        await wait_until(lambda: row(bob, url) is not None, what="bob's row named by the URL")
        assert bob.execute(SetFault(url, GROUP, FAULT_CUT, True)) is None
        assert bob.execute(SetFault(url, GROUP, FAULT_ACK_PAUSED, True)) is None
        # Cut: bob does not dial the URL.
        await wait_until(lambda: row(bob, url).state == DEAD, what="the URL's link cut")
        await alice.start()
        assert bob.execute(SetFault(url, GROUP, FAULT_CUT, False)) is None
        await wait_until(lambda: streams_up(bob, "alice"), what="bob → alice up")

        # Her server id is learned: the fault left on the URL is hers now.
        assert bob.faults.active() == [("alice", GROUP, FAULT_ACK_PAUSED)]
        await wait_until(lambda: row(bob, url) is None, what="the URL-named row gone")
        assert row(bob, "alice").faults == frozenset({FAULT_ACK_PAUSED})
        runner = next(r for r in bob.streams if r.peer_id == "alice" and not r.finished)
        assert runner.acks_paused
    finally:
        await bob.stop()
        await alice.stop()


async def test_a_cut_link_refuses_the_peers_digest_checkpoint_and_send_requests(tmp_path):
    alice = await start_node(tmp_path, "alice", ping_interval=1.0)
    bob = await start_node(tmp_path, "bob", peers=[alice.url], ping_interval=1.0)
    try:
        await wait_until(lambda: streams_up(bob, "alice"), what="bob → alice up")
        client = bob.clients.for_url(alice.url)
        signer = RequestSigner(bob.identity)  # bob's own key: alice knows who asks

        async def ask(endpoint: str):
            method = "GET" if endpoint == "digest" else "POST"
            path = group_path(GROUP, endpoint) + ("?buckets=1" if method == "GET" else "")
            body = b"" if method == "GET" else b"{}\n"
            headers = [("authorization", signer.header("alice", method, path, body))]
            if body:
                headers += [("content-type", FRAME_MEDIA_TYPE), ("accept", FRAME_MEDIA_TYPE)]
            return await client.request(method, path, headers=headers, body=body)

        assert alice.execute(SetFault("bob", GROUP, FAULT_CUT, True)) is None
        await wait_until(lambda: not streams_up(bob, "alice"), what="the link cut")
        for endpoint in ("digest", "checkpoint", "send"):
            response = await ask(endpoint)
            assert response.status == 503, (endpoint, response.status, response.body)
            assert response.header("retry-after")
            error = orjson.loads(response.body)
            assert error["payload"]["code"] == "OVERLOADED"
            assert "link cut" in error["payload"]["message"]

        # A peer whose link is not cut is answered as before.
        assert alice.execute(SetFault("bob", GROUP, FAULT_CUT, False)) is None
        assert (await ask("digest")).status == 200
    finally:
        await bob.stop()
        await alice.stop()
