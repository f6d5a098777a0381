"""A relay delivers a third author's event with a bad signature: refused every way in.

Every other forged-signature test sends the event from its own author, so a check that
only verified signatures when the hop is the author would pass them all. Here carol is
the author, her key is pinned, and someone else is the hop: a raw peer on a stream, the
same raw peer by ``send``, and a real node whose store holds the forgery and hands it
over in a checkpoint during repair. Each time the answer is ``BAD_SIGNATURE``, nothing is
stored, and nothing is queued for the target's other peer (dave); a genuine event of
carol's relayed the same way is stored and queued, so the checks can fail.
"""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from ulid import ULID

from node.protocol.identity import Identity
from node.protocol.signing import event_string
from node.runtime.config import PeerConfig
from node.storage.store import StoredEvent
from node.transport.client import FederationClient
from tests.nodes import start_node, streams_up, wait_until
from tests.rawpeer import CT, frame_line, group_path, handshake, make_identity

GROUP = "g!test"
WAIT = 30.0

carol = make_identity("carol", 21)
impostor = Identity.from_seed(bytes([22]) * 32, "carol")  # carol's name, another key


def genuine(seq: int, content: bytes) -> dict:
    return carol.sign_event(GROUP, str(ULID()), seq, content).to_dict()


def forged(seq: int, content: bytes) -> dict:
    """Carol's key id, a signature by another key over exactly her signing string."""
    event = genuine(seq, content)
    signed = event_string(GROUP, event["event_id"], "carol", seq, event["content_hash"])
    event["signature"] = impostor.sign(signed)
    return event


async def pin_carol(url: str, to: str) -> None:
    """Carol says HELLO to a node once: it pins her key."""
    async with FederationClient(url) as client:
        raw = await handshake(client, carol, GROUP, to)
        await raw.close()


async def holds(node, event_id: str) -> bool:
    return await node.store_thread.run(node.store.get_event, GROUP, event_id) is not None


async def queued(node, peer: str, event_id: str) -> bool:
    found = await node.store_thread.run(node.store.outbox_holds, peer, GROUP, [event_id])
    return event_id in found


@pytest.fixture
async def target_with_dave(tmp_path):
    """target, peering dave (so every event it stores is queued for dave), knows carol."""
    dave = await start_node(tmp_path, "dave")
    target = await start_node(tmp_path, "target", peers=[dave.url])
    await wait_until(lambda: streams_up(target, "dave"), WAIT, "target's stream to dave")
    await pin_carol(target.url, "target")
    assert target.keystore.pin("carol") is not None
    yield target, dave
    await target.stop()
    await dave.stop()


async def test_a_relayed_forgery_on_a_stream_is_bad_signature(target_with_dave):
    target, dave = target_with_dave
    async with FederationClient(target.url) as client:
        raw = await handshake(client, make_identity("relay", 23), GROUP, "target")
        bad, good = forged(1, b"forged by the relay"), genuine(2, b"relayed as signed")
        for event in (bad, good):
            await raw.write(frame_line("EVENT", "relay", raw.next_seq(), event, GROUP))
        last = raw.seq
        ack = await raw.wait_for(lambda f: f["type"] == "ACK" and f["payload"]["through"] >= last)
        errors = [f["payload"] for f in raw.frames if f["type"] == "ERROR"]
        assert [(e["code"], e["fatal"]) for e in errors] == [("BAD_SIGNATURE", False)]
        assert ack["payload"]["event_ids"] == [good["event_id"]]
        await raw.close()
    assert not await holds(target, bad["event_id"])
    assert not await queued(target, "dave", bad["event_id"])
    assert await holds(target, good["event_id"])
    await wait_until(lambda: dave.store_thread.summary.group(GROUP).count == 1, WAIT)
    assert not await holds(dave, bad["event_id"])


async def test_a_relayed_forgery_by_send_is_403_bad_signature(target_with_dave):
    target, dave = target_with_dave
    bad, good = forged(1, b"forged by the relay"), genuine(2, b"relayed as signed")
    async with FederationClient(target.url) as client:
        path = group_path(GROUP, "send")
        r = await client.request(
            "POST", path, headers=CT, body=frame_line("EVENT", "relay", 1, bad, GROUP)
        )
        assert r.status == 403, (r.status, r.body)
        assert orjson.loads(r.body)["payload"]["code"] == "BAD_SIGNATURE"
        r = await client.request(
            "POST", path, headers=CT, body=frame_line("EVENT", "relay", 1, good, GROUP)
        )
        assert r.status == 200, (r.status, r.body)
    assert not await holds(target, bad["event_id"])
    assert not await queued(target, "dave", bad["event_id"])
    assert await holds(target, good["event_id"])
    await wait_until(lambda: dave.store_thread.summary.group(GROUP).count == 1, WAIT)
    assert not await holds(dave, bad["event_id"])


def _as_stored(event: dict, hop: str) -> StoredEvent:
    ciphertext = base64.b64decode(event["ciphertext"])
    assert event["content_hash"] == "sha256:" + hashlib.sha256(ciphertext).hexdigest()
    return StoredEvent(
        GROUP,
        event["event_id"],
        event["author"],
        event["seq"],
        ciphertext,
        event["content_hash"],
        event["key_id"],
        event["signature"],
        hop=hop,
    )


async def test_a_relayed_forgery_in_checkpoint_results_is_bad_signature(tmp_path):
    """The relay is a real node whose store holds the forgery (written past its ingest);
    the target finds it by digest and fetches it by checkpoint when it repairs."""
    dave = await start_node(tmp_path, "dave")
    relay = await start_node(tmp_path, "relay")
    bad, good = forged(1, b"forged in the relay's store"), genuine(2, b"relayed as signed")
    await relay.store_thread.run(relay.store.insert_event, _as_stored(bad, "carol"))
    await relay.store_thread.run(relay.store.insert_event, _as_stored(good, "carol"))
    target = await start_node(tmp_path, "target", peers=[dave.url])
    try:
        await wait_until(lambda: streams_up(target, "dave"), WAIT, "target's stream to dave")
        await pin_carol(target.url, "target")
        target.add_peer(PeerConfig(relay.url, (GROUP,)))  # once carol is pinned
        await wait_until(
            lambda: any("events rejected (BAD_SIGNATURE" in line for line in target.log.lines),
            WAIT,
            "the repair to reject the forgery",
        )
        await wait_until(lambda: target.store_thread.summary.group(GROUP).count == 1, WAIT)
        assert await holds(target, good["event_id"])
        assert not await holds(target, bad["event_id"])
        for peer in ("dave", "relay"):
            assert not await queued(target, peer, bad["event_id"])
        assert await queued(target, "dave", good["event_id"]) or await holds(dave, good["event_id"])
    finally:
        await target.stop()
        await relay.stop()
        await dave.stop()
