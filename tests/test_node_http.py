"""Every status and error body of PROTOCOL §3, answered by a REAL node over real HTTP/2.

tests/test_transport_http.py proves the transport with an echo handler; this file
proves the node behind it: its caps and key documents, its ``send`` (ACK, duplicate,
every content rejection with its status), request authentication, the closed
federation, digest queries, and 503 while stopping. Authors other than the node are
test-made identities whose keys the node pins the way the contract says: from a HELLO
read on a real stream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import socket
import time
from types import SimpleNamespace

import orjson
import pytest
from ulid import ULID

from node.protocol.frames import Frame, encode_frame, parse_frame
from node.protocol.identity import Identity, KeyDocument, verify_key_document
from node.protocol.ids import format_rfc3339
from node.protocol.signing import content_hash
from node.runtime.config import PeerConfig
from node.transport import FRAME_MEDIA_TYPE, FederationClient
from tests.nodes import start_node, streams_up, summary, wait_until

P = "/_taps/federation"
G = "g!test"
CT = ("content-type", FRAME_MEDIA_TYPE)
WAIT = 20.0
CURL = shutil.which("curl")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
async def alice(tmp_path):
    node = await start_node(tmp_path, "alice")
    client = FederationClient(node.url)
    yield SimpleNamespace(node=node, client=client, url=node.url)
    await client.close()
    await node.stop()


def author(name: str) -> Identity:
    return Identity.from_seed(os.urandom(32), name)


def error_of(response, origin: str = "alice") -> dict:
    """The one ERROR frame of an error response, checked for the §3 envelope."""
    assert response.header("content-type") == FRAME_MEDIA_TYPE, response
    assert response.body.endswith(b"\n") and response.body.count(b"\n") == 1, response.body
    raw = orjson.loads(response.body)
    assert raw["type"] == "ERROR" and raw["sequence"] == 1 and raw["origin"] == origin
    frame = parse_frame(response.body[:-1])
    assert frame.type == "ERROR"
    return raw["payload"]


def event_line(
    ident: Identity,
    seq: int,
    ciphertext: bytes,
    *,
    group: str = G,
    event_id: str | None = None,
    origin: str | None = None,
    sequence: int = 1,
    **override,
) -> tuple[bytes, str, str]:
    """One EVENT frame line authored by ``ident``: (line with \\n, frame id, event id)."""
    eid = event_id or str(ULID())
    payload = ident.sign_event(group, eid, seq, ciphertext).to_dict()
    payload.update(override)
    fid = str(ULID())
    frame = {
        "type": "EVENT",
        "id": fid,
        "origin": origin or ident.server_id,
        "sequence": sequence,
        "group_id": group,
        "payload": payload,
    }
    return orjson.dumps(frame) + b"\n", fid, eid


async def post(client, path: str, body: bytes, headers=(CT,)):
    return await asyncio.wait_for(
        client.request("POST", path, headers=list(headers), body=body), WAIT
    )


async def get(client, path: str, headers=()):
    return await asyncio.wait_for(client.request("GET", path, headers=list(headers)), WAIT)


def lines_of(response) -> list[dict]:
    assert response.header("content-type") == FRAME_MEDIA_TYPE
    return [orjson.loads(line) for line in response.body.splitlines() if line]


async def pin_by_hello(node, ident: Identity, group: str = G) -> None:
    """Make ``node`` pin ``ident``'s key the contract's way: a HELLO on a real stream."""
    now = time.time()
    hello = ident.make_hello(
        to=node.server_id,
        group_id=group,
        frame_id=str(ULID.from_timestamp(now)),
        timestamp=format_rfc3339(now),
        max_message_size=65536,
        ping_interval_ms=30000,
        capabilities=["stream", "ack", "credit", "ping"],
        supported_groups=["*"],
    )
    async with FederationClient(node.url) as client:
        stream = await client.open_stream(
            f"{P}/encrypted-groups/{group}/stream", [CT, ("accept", FRAME_MEDIA_TYPE)]
        )
        await stream.write(encode_frame(hello))
        status, _ = await asyncio.wait_for(stream.response(), WAIT)
        assert status == 200
        received = b""
        while b"\n" not in received:
            chunk = await asyncio.wait_for(stream.read(), WAIT)
            assert chunk is not None, "the acceptor ended without a HELLO"
            received += chunk
        first = orjson.loads(received.split(b"\n", 1)[0])
        assert first["type"] == "HELLO" and first["payload"]["to"] == ident.server_id
        stream.end()  # orderly close (§4.6): the acceptor then ends its side
        while await asyncio.wait_for(stream.read(), WAIT) is not None:
            pass
    assert node.keystore.pin(ident.server_id) is not None


# --------------------------------------------------------------------------- documents


async def test_caps_document_is_exactly_3_1(alice):
    r = await get(alice.client, f"{P}/caps", [("accept", "text/html")])  # JSON ignores Accept
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    assert orjson.loads(r.body) == {
        "server_id": "alice",
        "versions": ["1.0.0"],
        "capabilities": [
            "stream",
            "send",
            "ack",
            "credit",
            "ping",
            "digest",
            "checkpoint",
            "relay",
        ],
        "supported_groups": [G],
        "max_message_size": 65536,
        "limits": {
            "max_concurrent_streams": 100,
            "initial_credit": {"events": 256, "bytes": 1048576},
            "ping_interval_ms": 30000,
        },
    }


async def test_key_documents_are_exactly_3_2(alice):
    r = await get(alice.client, f"{P}/keys/current")
    assert r.status == 200 and r.header("content-type") == "application/json"
    doc = orjson.loads(r.body)
    assert set(doc) == {
        "server_id", "key_id", "algorithm", "public_key", "url", "valid_until", "signature"
    }  # fmt: skip
    assert doc["server_id"] == "alice" and doc["algorithm"] == "ed25519"
    assert doc["url"] == alice.url
    public_key = base64.b64decode(doc["public_key"], validate=True)
    assert len(public_key) == 32
    digest = base64.urlsafe_b64encode(hashlib.sha256(public_key).digest()).rstrip(b"=")
    assert doc["key_id"] == "ed25519:" + digest[:8].decode()
    assert doc["valid_until"].endswith("Z") and len(doc["valid_until"]) == 24
    verify_key_document(KeyDocument.from_dict(doc), time.time())  # raises when it fails
    # Its own id serves the same document.
    r = await get(alice.client, f"{P}/keys/alice")
    assert r.status == 200 and orjson.loads(r.body) == doc


async def test_keys_of_a_pinned_peer_are_served_unchanged(tmp_path):
    alice = await start_node(tmp_path, "alice")
    bob = await start_node(tmp_path, "bob", peers=[alice.url])
    try:
        await wait_until(lambda: streams_up(alice, "bob"), what="bob's stream at alice")
        async with FederationClient(bob.url) as to_bob, FederationClient(alice.url) as to_alice:
            published = orjson.loads((await get(to_bob, f"{P}/keys/current")).body)
            r = await get(to_alice, f"{P}/keys/bob")
            assert r.status == 200 and r.header("content-type") == "application/json"
            assert orjson.loads(r.body) == published  # every field as bob signed it
            r = await get(to_alice, f"{P}/keys/nobody")
            assert r.status == 404 and error_of(r)["code"] == "NOT_FOUND"
    finally:
        await bob.stop()
        await alice.stop()


# --------------------------------------------------------------------------- routing


SEND = f"{P}/encrypted-groups/{G}/send"
JSON_CT = ("content-type", "application/json")


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code", "allow"),
    [
        ("GET", f"{P}/nope", [], 404, "NOT_FOUND", None),
        ("GET", f"{P}/caps/extra", [], 404, "NOT_FOUND", None),
        ("POST", f"{P}/encrypted-groups/{G}/frobnicate", [CT], 404, "NOT_FOUND", None),
        ("GET", "/", [], 404, "NOT_FOUND", None),
        ("GET", SEND, [], 405, "METHOD_NOT_ALLOWED", "POST"),
        ("POST", f"{P}/caps", [CT], 405, "METHOD_NOT_ALLOWED", "GET"),
        ("PUT", f"{P}/encrypted-groups/{G}/stream", [CT], 405, "METHOD_NOT_ALLOWED", "POST"),
        ("POST", f"{P}/encrypted-groups/{G}/digest", [], 405, "METHOD_NOT_ALLOWED", "GET"),
        ("POST", SEND, [JSON_CT], 415, "BAD_MEDIA_TYPE", None),
        ("POST", SEND, [], 415, "BAD_MEDIA_TYPE", None),
        ("POST", f"{P}/encrypted-groups/{G}/stream", [JSON_CT], 415, "BAD_MEDIA_TYPE", None),
        ("POST", f"{P}/encrypted-groups/g!other/send", [CT], 404, "GROUP_UNSUPPORTED", None),
        ("POST", f"{P}/encrypted-groups/g!other/stream", [CT], 404, "GROUP_UNSUPPORTED", None),
        (
            "POST",
            f"{P}/encrypted-groups/g%21other/checkpoint",
            [CT],
            404,
            "GROUP_UNSUPPORTED",
            None,
        ),
        ("GET", f"{P}/encrypted-groups/g!other/digest", [], 404, "GROUP_UNSUPPORTED", None),
        ("GET", f"{P}/encrypted-groups/not-a-group/digest", [], 404, "GROUP_UNSUPPORTED", None),
    ],
)
async def test_path_method_media_type_and_group_errors(
    alice, method, path, headers, status, code, allow
):
    body = b"{}\n" if method in ("POST", "PUT") else b""
    r = await asyncio.wait_for(alice.client.request(method, path, headers=headers, body=body), WAIT)
    assert r.status == status
    payload = error_of(r)
    assert payload["code"] == code
    assert payload["fatal"] is (code in ("BAD_MEDIA_TYPE", "GROUP_UNSUPPORTED"))
    assert r.header("allow") == allow


@pytest.mark.parametrize("endpoint", ["send", "stream", "checkpoint"])
async def test_406_with_an_empty_body_when_accept_refuses_frames(alice, endpoint):
    path = f"{P}/encrypted-groups/{G}/{endpoint}"
    r = await post(alice.client, path, b"{}\n", [CT, ("accept", "application/json")])
    assert r.status == 406 and r.body == b""
    # Accept that admits frames (or */*, application/*) goes on to the body checks.
    for accept in ("*/*", "application/*", "Application/X-NDJSON; Profile=_taps.v1.frames"):
        r = await post(alice.client, SEND, b"not json\n", [CT, ("accept", accept)])
        assert r.status == 400, accept


async def test_stream_to_an_unserved_group_is_refused_before_any_frame(alice):
    stream = await alice.client.open_stream(
        f"{P}/encrypted-groups/g!elsewhere/stream", [CT, ("accept", FRAME_MEDIA_TYPE)]
    )
    status, _ = await asyncio.wait_for(stream.response(), WAIT)
    assert status == 404
    body = b""
    while (chunk := await asyncio.wait_for(stream.read(), WAIT)) is not None:
        body += chunk
    stream.reset()
    assert orjson.loads(body)["payload"]["code"] == "GROUP_UNSUPPORTED"


# --------------------------------------------------------------------------- send


async def test_send_round_trip_ack_then_duplicate_ack(alice):
    bob = author("bob")
    await pin_by_hello(alice.node, bob)
    line, _fid, eid = event_line(bob, 1, b"sealed bytes")
    r = await post(alice.client, SEND, line)
    assert r.status == 200
    (ack,) = lines_of(r)
    assert ack["type"] == "ACK" and ack["sequence"] == 1 and ack["origin"] == "alice"
    assert ack["payload"] == {"through": 1, "event_ids": [eid]}
    held = alice.node.store.get_event(G, eid)
    assert held is not None and held.author == "bob" and held.hop == "bob"
    # The same event again (a retransmission, new frame id): ACK, nothing newly stored.
    line2, _, _ = event_line(bob, 1, b"sealed bytes", event_id=eid)
    r = await post(alice.client, SEND, line2)
    assert r.status == 200
    (ack,) = lines_of(r)
    assert ack["type"] == "ACK" and ack["payload"]["through"] == 1
    assert not ack["payload"].get("event_ids")
    assert summary(alice.node)[0] == 1
    # A trailing \r and blank lines around the one frame are fine (§2).
    line3, _, eid3 = event_line(bob, 2, b"crlf")
    r = await post(alice.client, SEND, b"\n" + line3[:-1] + b"\r\n\n")
    assert r.status == 200 and lines_of(r)[0]["payload"]["event_ids"] == [eid3]


async def test_send_bad_json_and_bad_frame_are_400(alice):
    bob = author("bob")
    await pin_by_hello(alice.node, bob)
    good, _, _ = event_line(bob, 1, b"x")
    cases = {
        b"not json\n": "BAD_JSON",
        b"[1, 2]\n": "BAD_JSON",
        b"\xff\xfe{}\n": "BAD_JSON",
        b'{"type": "EVENT"}\n': "BAD_FRAME",
        event_line(bob, 1, b"x", sequence=2)[0]: "BAD_FRAME",  # one-shot bodies use 1
        event_line(bob, 1, b"x", group="g!test2")[0]: "BAD_FRAME",  # group ≠ URL
        event_line(bob, 1, b"x", event_id="01kb1rmdyk0000000000000001")[0]: "BAD_FRAME",
        good + good: "BAD_FRAME",  # exactly one frame
        b"\n": "BAD_FRAME",
    }
    ping = {"type": "PING", "id": str(ULID()), "origin": "bob", "sequence": 1, "payload": {}}
    cases[orjson.dumps(ping) + b"\n"] = "BAD_FRAME"  # send takes one EVENT
    for body, code in cases.items():
        r = await post(alice.client, SEND, body)
        assert r.status == 400, (body, r.body)
        payload = error_of(r)
        assert payload["code"] == code, (body, payload)
        assert payload["fatal"] is True
    assert summary(alice.node)[0] == 0


async def test_send_over_max_message_size_is_413(alice):
    bob = author("bob")
    await pin_by_hello(alice.node, bob)
    line, _, _ = event_line(bob, 1, os.urandom(60_000))  # base64 makes it > 65536
    assert len(line) > 65537
    r = await post(alice.client, SEND, line)
    assert r.status == 413
    assert error_of(r)["code"] == "MESSAGE_TOO_LARGE"
    # A body far beyond the limit is cut off without being buffered whole.
    r = await post(alice.client, SEND, b"x" * (4 * 1024 * 1024))
    assert r.status == 413 and error_of(r)["code"] == "MESSAGE_TOO_LARGE"
    assert summary(alice.node)[0] == 0


async def test_send_content_rejections(alice):
    bob = author("bob")
    await pin_by_hello(alice.node, bob)
    other = author("bob")  # another key under the same server id
    carol = author("carol")  # never pinned

    wrong_hash = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    line, fid, _ = event_line(bob, 1, b"payload", content_hash=wrong_hash)
    r = await post(alice.client, SEND, line)
    assert r.status == 422
    assert error_of(r) == {
        "code": "HASH_MISMATCH", "message": error_of(r)["message"], "ref": fid, "fatal": False
    }  # fmt: skip

    line, fid, _ = event_line(carol, 1, b"who is carol")
    r = await post(alice.client, SEND, line)
    assert r.status == 403
    assert (error_of(r)["code"], error_of(r)["ref"]) == ("UNKNOWN_KEY", fid)

    line, fid, _ = event_line(other, 1, b"not bob's pinned key")
    r = await post(alice.client, SEND, line)
    assert r.status == 403
    assert (error_of(r)["code"], error_of(r)["ref"]) == ("UNKNOWN_KEY", fid)

    forged = other.sign_event(G, str(ULID()), 1, b"forged").signature  # right key id, bad sig
    line, fid, _ = event_line(bob, 1, b"forged", signature=forged)
    r = await post(alice.client, SEND, line)
    assert r.status == 403
    assert error_of(r)["code"] == "BAD_SIGNATURE"
    assert error_of(r)["ref"] == fid and error_of(r)["fatal"] is False

    assert summary(alice.node)[0] == 0
    assert alice.node.counters.events_rejected >= 4


async def test_equivocation_on_send_keeps_the_lower_hash(alice):
    bob = author("bob")
    await pin_by_hello(alice.node, bob)
    eid = str(ULID())
    versions = sorted(
        (content_hash(c), c) for c in (b"version one", b"version two")
    )  # §4.3: the lower content_hash (as bytes) is kept
    (low_hash, low), (high_hash, high) = versions

    line, _, _ = event_line(bob, 1, high, event_id=eid)
    r = await post(alice.client, SEND, line)
    assert r.status == 200 and lines_of(r)[0]["payload"]["event_ids"] == [eid]

    # The lower version replaces it: stored, acknowledged, and reported.
    line, fid, _ = event_line(bob, 1, low, event_id=eid)
    r = await post(alice.client, SEND, line)
    assert r.status == 200
    ack, err = lines_of(r)
    assert ack["type"] == "ACK" and ack["sequence"] == 1
    assert ack["payload"] == {"through": 1, "event_ids": [eid]}
    assert err["type"] == "ERROR" and err["sequence"] == 2 and err["origin"] == "alice"
    assert err["payload"]["code"] == "EQUIVOCATION"
    assert err["payload"]["ref"] == fid and err["payload"]["fatal"] is False
    assert alice.node.store.get_event(G, eid).content_hash == low_hash

    # The higher one again is the version not kept: 409, and the store keeps the lower.
    line, fid, _ = event_line(bob, 1, high, event_id=eid)
    r = await post(alice.client, SEND, line)
    assert r.status == 409
    assert (error_of(r)["code"], error_of(r)["ref"]) == ("EQUIVOCATION", fid)
    assert alice.node.store.get_event(G, eid).content_hash == low_hash
    assert high_hash != low_hash
    assert "bob" in alice.node.store.equivocators(G)
    assert summary(alice.node)[0] == 1


# --------------------------------------------------------------------------- §5.3


def _response_line_size(event, sequence: int, origin: str = "alice") -> int:
    """The length of the EVENT line a checkpoint answer carries (``\\n`` excluded)."""
    frame = Frame("EVENT", str(ULID()), origin, sequence, event, G)
    return len(encode_frame(frame)) - 1


async def test_checkpoint_page_cap_counts_each_line_with_its_newline(tmp_path):
    """rev 6 (§5.3): 1 MiB of EVENT lines counts each line's ``\\n``. The events are sized
    so that the first 11 lines fit the cap without their newlines but not with them."""
    node = await start_node(tmp_path, "alice", max_message_size=1 << 18)
    client = FederationClient(node.url)
    bob = author("bob")
    try:
        await pin_by_hello(node, bob)
        base = int(ULID()) & ~((1 << 80) - 1)
        ids = [str(ULID.from_int(base + n)) for n in range(1, 13)]
        events = [bob.sign_event(G, ids[n], n + 1, os.urandom(72_000)) for n in range(10)]
        budget = (1 << 20) - sum(_response_line_size(e, n + 1) for n, e in enumerate(events))
        # The 11th line: its length without `\n` in [budget - 10, budget], i.e. the 11
        # lines fit without their newlines (≤ 1 MiB) and do not with them (> 1 MiB).
        envelope = _response_line_size(bob.sign_event(G, ids[10], 11, b""), 11)
        start = max(0, (budget - envelope) * 3 // 4 - 8)
        for raw in range(start, start + 32):
            last = bob.sign_event(G, ids[10], 11, os.urandom(raw))
            if budget - 10 <= _response_line_size(last, 11) <= budget:
                break
        else:
            raise AssertionError("no ciphertext size puts the 11th line at the cap")
        events += [last, bob.sign_event(G, ids[11], 12, b"tail")]
        for e in events:
            frame = Frame("EVENT", str(ULID()), "bob", 1, e, G)
            r = await post(client, f"{P}/encrypted-groups/{G}/send", encode_frame(frame))
            assert r.status == 200, r.body
        request = {
            "type": "CHECKPOINT",
            "id": str(ULID()),
            "origin": "bob",
            "sequence": 1,
            "group_id": G,
            "payload": {"ranges": [{"lo": "", "hi": "", "ids": []}], "limit": 1000},
        }
        r = await post(client, f"{P}/encrypted-groups/{G}/checkpoint", orjson.dumps(request))
        assert r.status == 200
        lines = r.body.splitlines(keepends=True)
        *event_lines, final = lines
        assert all(orjson.loads(line)["type"] == "EVENT" for line in event_lines)
        assert sum(len(line) for line in event_lines) <= 1 << 20
        assert len(event_lines) == 10
        payload = orjson.loads(final)["payload"]
        assert payload["more"] is True and payload["next"] == ids[9]
    finally:
        await client.close()
        await node.stop()


# --------------------------------------------------------------------------- §3.3


def signed(ident: Identity, receiver: str, path: str, body: bytes, *, method="POST", ts=None):
    ts = ts or format_rfc3339(time.time())
    header = ident.authorization_header(
        receiver=receiver, method=method, path_and_query=path, body=body, ts=ts
    )
    return ("authorization", header)


async def test_request_authentication_on_an_open_node(alice):
    bob = author("bob")
    await pin_by_hello(alice.node, bob)
    line, _, eid = event_line(bob, 1, b"signed request")

    # A header that is present and fails is 403 even on an open node.
    for header in (
        ("authorization", "Taps garbage"),
        ("authorization", "Bearer abc"),
        signed(author("carol"), "alice", SEND, line),  # origin without a pin
        signed(bob, "alice", SEND, b"another body"),  # body hash differs
        signed(bob, "alice", f"{P}/encrypted-groups/g!x/send", line),  # path differs
        signed(bob, "someone-else", SEND, line),  # addressed to another receiver
        signed(bob, "alice", SEND, line, ts=format_rfc3339(time.time() - 1000)),  # clock
    ):
        r = await post(alice.client, SEND, line, [CT, header])
        assert r.status == 403, header
        assert error_of(r)["code"] == "AUTH_FAILED", header
    assert summary(alice.node)[0] == 0

    good = signed(bob, "alice", SEND, line)
    r = await post(alice.client, SEND, line, [CT, good])
    assert r.status == 200 and lines_of(r)[0]["payload"]["event_ids"] == [eid]
    # The same signature again is a replay (§3.3).
    r = await post(alice.client, SEND, line, [CT, good])
    assert r.status == 403 and error_of(r)["code"] == "AUTH_FAILED"
    # Digest requests are signed over path and query as sent.
    path = f"{P}/encrypted-groups/{G}/digest?buckets=4"
    r = await get(alice.client, path, [signed(bob, "alice", path, b"", method="GET")])
    assert r.status == 200 and orjson.loads(r.body)["count"] == 1


async def test_a_signed_sends_header_origin_is_the_hop_for_an_unknown_authors_key(alice, tmp_path):
    """§3.3 / §4.3 (rev 6): the author's key is fetched from the header's origin, whatever
    origin the EVENT frame claims."""
    relay = await start_node(tmp_path, "relay")
    try:
        dan = author("dan")  # no URL of its own: only the relay can vouch for its key
        await pin_by_hello(relay, dan)
        await pin_by_hello(alice.node, relay.identity)  # alice knows the relay and its URL
        line, _, eid = event_line(dan, 1, b"relayed by send", origin="somebody-else")
        r = await post(alice.client, SEND, line, [CT, signed(relay.identity, "alice", SEND, line)])
        assert r.status == 200, r.body
        assert lines_of(r)[0]["payload"]["event_ids"] == [eid]
        pin = alice.node.keystore.pin("dan")
        assert pin is not None and pin.provisional and pin.via == "relay"
    finally:
        await relay.stop()


async def test_closed_node(tmp_path):
    """Closed: only configured peers stream in, and one-shot requests must be signed."""
    bob = await start_node(tmp_path, "bob")
    alice = await start_node(tmp_path, "alice", peers=[bob.url], closed=True)
    carol = await start_node(tmp_path, "carol", peers=[alice.url])
    try:
        bob.add_peer(PeerConfig(alice.url, (G,)))
        await wait_until(
            lambda: any(
                r.peer_id == "bob" and r.role.value == "acceptor" and r.session.state == "up"
                for r in alice.streams
            ),
            what="alice accepting bob's stream",
        )
        await wait_until(
            lambda: any("AUTH_FAILED" in line for line in carol.log.lines),
            what="carol refused with AUTH_FAILED",
        )
        assert any("AUTH_FAILED to" in line and "carol" in line for line in alice.log.lines)
        assert not streams_up(alice, "carol")
        assert not any(r.peer_id == "carol" and r.session.state == "up" for r in alice.streams)

        async with FederationClient(alice.url) as client:
            line, _, eid = event_line(bob.identity, 1000, b"closed world")
            r = await post(client, SEND, line)  # unsigned
            assert r.status == 403 and error_of(r)["code"] == "AUTH_FAILED"
            r = await post(client, SEND, line, [CT, signed(carol.identity, "alice", SEND, line)])
            assert r.status == 403 and error_of(r)["code"] == "AUTH_FAILED"
            r = await post(client, SEND, line, [CT, signed(bob.identity, "alice", SEND, line)])
            assert r.status == 200 and lines_of(r)[0]["payload"]["event_ids"] == [eid]
            # JSON documents stay public on a closed node.
            assert (await get(client, f"{P}/caps")).status == 200
    finally:
        for node in (carol, alice, bob):
            await node.stop()


# --------------------------------------------------------------------------- digest


@pytest.mark.parametrize(
    "query",
    ["buckets=0", "buckets=257", "buckets=", "buckets=x", "lo=not-a-ulid", "hi=01kb", "lo=&lo="],
)
async def test_bad_digest_query_is_400_bad_frame(alice, query):
    r = await get(alice.client, f"{P}/encrypted-groups/{G}/digest?{query}")
    assert r.status == 400
    assert error_of(r)["code"] == "BAD_FRAME"


async def test_digest_of_the_whole_group(alice):
    await alice.node.publish(G, b"one")
    r = await get(alice.client, f"{P}/encrypted-groups/g%21test/digest?buckets=16")
    assert r.status == 200 and r.header("content-type") == "application/json"
    doc = orjson.loads(r.body)
    assert doc["group_id"] == G and doc["server_id"] == "alice" and doc["count"] == 1
    assert doc["authors"] == {"alice": {"max_seq": 1, "contiguous_seq": 1, "count": 1}}
    assert len(doc["buckets"]) == 1


# --------------------------------------------------------------------------- 503


async def test_503_shutdown_while_stopping(tmp_path):
    """While a stopping node waits for its links, new streams get 503 SHUTDOWN."""
    # A configured peer that accepts TCP but never speaks keeps stop() busy for the
    # links' close grace, long enough to ask for a stream meanwhile.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        alice = await start_node(tmp_path, "alice", peers=[f"http://127.0.0.1:{port}"])
        client = FederationClient(alice.url)
        await get(client, f"{P}/caps")  # connect before the listener begins to stop
        stopping = asyncio.create_task(alice.stop())
        await wait_until(lambda: alice._stopping, what="stop() begun")
        try:
            r = await post(client, f"{P}/encrypted-groups/{G}/stream", b"", [CT])
            assert r.status == 503
            assert r.header("retry-after") is not None and int(r.header("retry-after")) >= 1
            payload = error_of(r)
            assert payload["code"] == "SHUTDOWN" and payload["fatal"] is True
        finally:
            await client.close()
            await stopping
    finally:
        silent.close()


# --------------------------------------------------------------------------- curl


async def _curl(*args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        CURL, "--http2-prior-knowledge", "-sS", "--max-time", "20", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out


@pytest.mark.skipif(CURL is None, reason="curl is not installed on this machine")
async def test_curl_against_caps_and_send(alice, tmp_path):
    out = await _curl("-o", "-", "-w", "\n%{http_version} %{http_code}", f"{alice.url}{P}/caps")
    body, _, status = out.rpartition(b"\n")
    assert status == b"2 200"
    assert orjson.loads(body)["server_id"] == "alice"

    bob = author("bob")
    await pin_by_hello(alice.node, bob)
    line, _, eid = event_line(bob, 1, b"from curl")
    (tmp_path / "event.ndjson").write_bytes(line)
    fmt = "\n%{http_version} %{http_code} %{content_type}"
    args = ["-o", "-", "-w", fmt, "-H", f"Content-Type: {FRAME_MEDIA_TYPE}"]
    out = await _curl(*args, "--data-binary", f"@{tmp_path / 'event.ndjson'}", alice.url + SEND)
    body, _, status = out.rpartition(b"\n")
    assert status == f"2 200 {FRAME_MEDIA_TYPE}".encode()
    ack = orjson.loads(body)
    assert ack["type"] == "ACK" and ack["payload"] == {"through": 1, "event_ids": [eid]}
    assert alice.node.store.get_event(G, eid) is not None
