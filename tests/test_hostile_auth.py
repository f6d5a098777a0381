"""Who may get in, and with what: authentication and content checks against a real node.

A hand-written peer (tests/rawpeer.py) drives HELLOs and EVENTs over real HTTP/2 into a
real node: clock skew, forged signatures, a key swap for a pinned server id, replayed
HELLOs (also across a restart: the replay cache is durable), an event whose author key
is unknown, equivocation, and a closed node facing an unknown server. Each must be
refused with the code of PROTOCOL §4.6 and, where the contract says so, leave the stream
up; nothing refused may be stored.
"""

from __future__ import annotations

import orjson
import pytest
from ulid import ULID

from node.protocol.frames import encode_frame
from node.protocol.identity import Identity
from node.protocol.signing import event_string
from node.transport.client import FederationClient
from tests.nodes import start_node, wait_until
from tests.rawpeer import CT, RawStream, frame_line, group_path, handshake, make_identity

GROUP = "g!test"


@pytest.fixture
async def target(tmp_path):
    node = await start_node(tmp_path, "target")
    client = FederationClient(node.url)
    yield node, client
    await client.close()
    await node.stop()


def logged(node, *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in node.snapshot().log_lines)


async def refused_hello(client, identity: Identity, **kw) -> dict:
    raw = await RawStream.open(client, identity, GROUP)
    await raw.hello(kw.pop("to", "target"), **kw)
    err = await raw.error_frame()
    await raw.wait_end()
    assert err["fatal"] is True and "HELLO" not in raw.types()
    return err


@pytest.mark.parametrize("skew", [600.0, -600.0])
async def test_clock_skew_of_ten_minutes_is_auth_failed_and_reported(target, skew):
    node, client = target
    err = await refused_hello(client, make_identity("skewed", 3), skew=skew)
    assert err["code"] == "AUTH_FAILED"
    assert "clock skew 600 s exceeds 300 s" in err["message"]
    # The operator sees who and why, in the log and in the dashboard's snapshot.
    await wait_until(lambda: logged(node, "AUTH_FAILED", "skewed", "clock skew 600 s"))
    assert node.keystore.pin("skewed") is None


@pytest.mark.parametrize("skew", [240.0, -240.0])
async def test_clock_skew_of_four_minutes_is_accepted(target, skew):
    node, client = target
    raw = await RawStream.open(client, make_identity("skewed", 3), GROUP)
    await raw.hello("target", skew=skew)
    hello = await raw.wait_type("HELLO")
    await raw.wait_type("CREDIT")
    assert hello["payload"]["to"] == "skewed" and "ERROR" not in raw.types()
    assert node.keystore.pin("skewed") is not None
    await raw.close()


class Peer:
    """An authenticated raw stream that remembers the sequence of each frame it sent."""

    def __init__(self, raw: RawStream) -> None:
        self.raw = raw
        raw.sent_seq = {}

    async def event(self, event: dict) -> str:
        raw = self.raw
        line = frame_line("EVENT", raw.identity.server_id, raw.next_seq(), event, raw.group)
        frame_id = orjson.loads(line)["id"]
        raw.sent_seq[frame_id] = raw.seq
        await raw.write(line)
        return frame_id

    async def outcome(self, frame_id: str) -> dict:
        raw = self.raw
        frame = await raw.wait_for(
            lambda f: (
                (f["type"] == "ERROR" and f["payload"].get("ref") == frame_id)
                or (f["type"] == "ACK" and f["payload"]["through"] >= raw.sent_seq[frame_id])
            )
        )
        return frame


async def authenticated(client, identity) -> Peer:
    return Peer(await handshake(client, identity, GROUP, "target"))


def signed(identity: Identity, seq: int, content: bytes, event_id: str | None = None) -> dict:
    return identity.sign_event(GROUP, event_id or str(ULID()), seq, content).to_dict()


async def test_forged_signature_is_refused_and_the_stream_stays_up(target):
    node, client = target
    mallory = make_identity("mallory", 9)
    impostor = Identity.from_seed(bytes([10]) * 32, "mallory")  # same name, other key
    peer = await authenticated(client, mallory)
    forged = signed(mallory, 1, b"forged")
    chash = forged["content_hash"]
    forged["signature"] = impostor.sign(
        event_string(GROUP, forged["event_id"], "mallory", 1, chash)
    )
    fid = await peer.event(forged)
    answer = await peer.outcome(fid)
    assert answer["type"] == "ERROR" and answer["payload"]["code"] == "BAD_SIGNATURE"
    assert answer["payload"]["fatal"] is False
    # The stream is still up: the genuine event goes through and is acknowledged.
    genuine = signed(mallory, 1, b"genuine")
    answer = await peer.outcome(await peer.event(genuine))
    assert answer["type"] == "ACK" and genuine["event_id"] in answer["payload"]["event_ids"]
    assert node.store.has_event(GROUP, genuine["event_id"])
    assert not node.store.has_event(GROUP, forged["event_id"])
    # The same forgery by `send` is a 403.
    other = signed(mallory, 2, b"forged again")
    other["signature"] = forged["signature"]
    r = await client.request(
        "POST",
        group_path(GROUP, "send"),
        headers=CT,
        body=frame_line("EVENT", "mallory", 1, other, GROUP),
    )
    assert r.status == 403 and orjson.loads(r.body)["payload"]["code"] == "BAD_SIGNATURE"
    await peer.raw.close()


async def test_key_swap_for_a_pinned_server_id_is_refused(target):
    node, client = target
    mallory = make_identity("mallory", 9)
    peer = await authenticated(client, mallory)  # pins mallory's key (trust on first use)
    pinned = node.keystore.pin("mallory").key_id
    thief = Identity.from_seed(bytes([11]) * 32, "mallory")
    err = await refused_hello(client, thief)
    assert err["code"] == "AUTH_FAILED" and "differs from its pinned key" in err["message"]
    assert node.keystore.pin("mallory").key_id == pinned
    # An event "by mallory" under the thief's key, even on mallory's own stream.
    answer = await peer.outcome(await peer.event(signed(thief, 1, b"swapped")))
    assert answer["type"] == "ERROR" and answer["payload"]["code"] == "UNKNOWN_KEY"
    assert node.store.count(GROUP) == 0
    await peer.raw.close()


async def test_replayed_hello_is_refused_even_after_a_restart(tmp_path):
    node = await start_node(tmp_path, "target")
    client = FederationClient(node.url)
    mallory = make_identity("mallory", 9)
    try:
        raw = await RawStream.open(client, mallory, GROUP)
        captured = encode_frame(raw.hello_frame("target"))
        await raw.write(captured)
        await raw.wait_type("CREDIT")
        await raw.close()
        replay = await RawStream.open(client, mallory, GROUP)
        await replay.write(captured)
        err = await replay.error_frame()
        assert err["code"] == "AUTH_FAILED" and "replayed" in err["message"]
        # The replay cache is durable: a restart does not reopen the window (§4.1).
        await client.close()
        await node.stop()
        node = await start_node(tmp_path, "target")
        client = FederationClient(node.url)
        replay = await RawStream.open(client, mallory, GROUP)
        await replay.write(captured)
        err = await replay.error_frame()
        assert err["code"] == "AUTH_FAILED" and "replayed" in err["message"]
        # A HELLO captured on its way to another server is no good here either.
        err = await refused_hello(client, mallory, to="someone-else")
        assert err["code"] == "AUTH_FAILED" and "addressed to someone-else" in err["message"]
    finally:
        await client.close()
        await node.stop()


async def test_event_whose_author_key_is_unknown_is_refused(target):
    node, client = target
    peer = await authenticated(client, make_identity("mallory", 9))
    ghost = make_identity("ghost", 12)  # never seen; mallory serves no URL to fetch it from
    answer = await peer.outcome(await peer.event(signed(ghost, 1, b"boo")))
    assert answer["type"] == "ERROR" and answer["payload"]["code"] == "UNKNOWN_KEY"
    assert answer["payload"]["fatal"] is False
    assert node.store.count(GROUP) == 0
    await peer.raw.close()


async def test_equivocation_is_reported_and_converges(target):
    node, client = target
    mallory = make_identity("mallory", 9)
    peer = await authenticated(client, mallory)
    eid = str(ULID())
    a, b = signed(mallory, 1, b"version a", eid), signed(mallory, 1, b"version b", eid)
    first = await peer.outcome(await peer.event(a))
    assert first["type"] == "ACK"
    answer = await peer.outcome(await peer.event(b))
    assert answer["type"] == "ERROR" and answer["payload"]["code"] == "EQUIVOCATION"
    assert answer["payload"]["fatal"] is False
    # Every node keeps the version with the lower content hash.
    kept = min(a["content_hash"], b["content_hash"])
    assert node.store.get_event(GROUP, eid).content_hash == kept
    # Same seq, another event id: both kept, still reported.
    c = signed(mallory, 1, b"version c")
    answer = await peer.outcome(await peer.event(c))
    assert answer["type"] == "ERROR" and answer["payload"]["code"] == "EQUIVOCATION"
    await wait_until(lambda: node.store.has_event(GROUP, c["event_id"]), what="c stored")
    assert "mallory" in node.store.equivocators(GROUP)
    # By `send`, the version that is not kept is a 409.
    loser = a if a["content_hash"] != kept else b
    r = await client.request(
        "POST",
        group_path(GROUP, "send"),
        headers=CT,
        body=frame_line("EVENT", "mallory", 1, loser, GROUP),
    )
    assert r.status == 409 and orjson.loads(r.body)["payload"]["code"] == "EQUIVOCATION"
    assert node.store.get_event(GROUP, eid).content_hash == kept
    await peer.raw.close()


async def test_closed_node_refuses_an_unknown_server(tmp_path):
    friend = await start_node(tmp_path, "friend")
    node = await start_node(tmp_path, "fortress", closed=True, peers=[friend.url])
    client = FederationClient(node.url)
    try:
        stranger = make_identity("stranger", 13)
        err = await refused_hello(client, stranger, to="fortress")
        assert err["code"] == "AUTH_FAILED" and "not in the peer list" in err["message"]
        assert node.keystore.pin("stranger") is None
        body = frame_line("EVENT", "stranger", 1, signed(stranger, 1, b"let me in"), GROUP)
        r = await client.request("POST", group_path(GROUP, "send"), headers=CT, body=body)
        assert r.status == 403 and orjson.loads(r.body)["payload"]["code"] == "AUTH_FAILED"
        path = group_path(GROUP, "send")
        ts = "2026-01-01T00:00:00.000Z"
        auth = stranger.authorization_header(
            receiver="fortress", method="POST", path_and_query=path, body=body, ts=ts
        )
        r = await client.request("POST", path, headers=[*CT, ("authorization", auth)], body=body)
        assert r.status == 403 and orjson.loads(r.body)["payload"]["code"] == "AUTH_FAILED"
        assert node.store.count(GROUP) == 0
        # The configured peer is let in.
        await wait_until(
            lambda: any(r.peer_id == "friend" and r.session.state == "up" for r in node.streams),
            what="fortress → friend up",
        )
    finally:
        await client.close()
        await node.stop()
        await friend.stop()
