"""PROTOCOL §6: every key id, signing string and signature of vectors/v1.json, from the seeds.

Ed25519 is deterministic, so signing the vector inputs with the vector seeds must give
the vector signatures byte for byte; anything else means a signing string differs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from node.protocol import frames, signing
from node.protocol.identity import Identity, KeyDocument, verify_event, verify_key_document
from node.protocol.ids import parse_rfc3339

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v1.json").read_text())
SERVERS = VECTORS["servers"]
DOC = VECTORS["key_document"]["document"]
HELLO = VECTORS["hello"]["frame"]
EVENT = VECTORS["event"]


def identity(name: str) -> Identity:
    server = SERVERS[name]
    return Identity.from_seed(
        bytes.fromhex(server["seed_hex"]),
        name,
        server["url"],
        valid_until=DOC["valid_until"],
    )


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_public_key_and_key_id_from_seed(name):
    ident = identity(name)
    assert ident.public_key_b64 == SERVERS[name]["public_key"]
    assert ident.key_id == SERVERS[name]["key_id"]
    assert (
        signing.key_id_for(base64.b64decode(SERVERS[name]["public_key"]))
        == (SERVERS[name]["key_id"])
    )


def test_key_document_signing_string_and_signature():
    doc = identity("server-alice").key_document()
    assert doc.signing_string().decode() == VECTORS["key_document"]["signing_string"]
    assert doc.to_dict() == DOC
    assert list(doc.to_dict()) == list(DOC)  # the §3.2 field order, for humans reading it


def test_key_document_from_dict_verifies():
    doc = KeyDocument.from_dict(DOC)
    verify_key_document(doc, now=parse_rfc3339(HELLO["timestamp"]))
    assert doc.to_dict() == DOC


def test_hello_signing_string_and_frame():
    p = HELLO["payload"]
    expected_string = VECTORS["hello"]["signing_string"]
    assert (
        signing.hello_string(
            p["server_id"],
            p["to"],
            HELLO["group_id"],
            HELLO["id"],
            HELLO["timestamp"],
            p["key_id"],
            p["version"],
            p["max_message_size"],
            p["url"],
        ).decode()
        == expected_string
    )
    frame = identity("server-alice").make_hello(
        to=p["to"],
        group_id=HELLO["group_id"],
        frame_id=HELLO["id"],
        timestamp=HELLO["timestamp"],
        max_message_size=p["max_message_size"],
        ping_interval_ms=p["ping_interval_ms"],
        capabilities=p["capabilities"],
        supported_groups=p["supported_groups"],
        sequence=HELLO["sequence"],
    )
    assert frame.to_dict() == HELLO
    # and it survives the wire: what we encode parses back to the same frame
    assert frames.parse_frame(frames.encode_frame(frame)[:-1]).to_dict() == HELLO


def test_hello_ndjson_vector_matches_v1():
    line = (Path(__file__).parent / "vectors" / "hello.ndjson").read_bytes().splitlines()[0]
    assert frames.parse_frame(line).to_dict() == HELLO


def test_event_signing_string_and_signature():
    ciphertext = bytes.fromhex(EVENT["ciphertext_hex"])
    p = EVENT["frame"]["payload"]
    group_id = EVENT["frame"]["group_id"]
    assert signing.content_hash(ciphertext) == p["content_hash"]
    assert (
        signing.event_string(
            group_id, p["event_id"], p["author"], p["seq"], p["content_hash"]
        ).decode()
        == EVENT["signing_string"]
    )
    event = identity("server-alice").sign_event(group_id, p["event_id"], p["seq"], ciphertext)
    assert event.to_dict() == p


def test_event_vector_verifies():
    p = EVENT["frame"]["payload"]
    event = frames.Event.from_dict(p)
    alice = base64.b64decode(SERVERS["server-alice"]["public_key"])
    bob = base64.b64decode(SERVERS["server-bob"]["public_key"])
    assert verify_event(EVENT["frame"]["group_id"], event, alice)
    assert not verify_event(EVENT["frame"]["group_id"], event, bob)
    assert not verify_event("g!other", event, alice)


@pytest.mark.parametrize("reason", ["signature of another event", "seq changed after signing"])
def test_negative_signature_vectors_fail(reason):
    (case,) = [c for c in VECTORS["negative_events"] if c["reason"] == reason]
    assert case["expect"] == "BAD_SIGNATURE"
    frame = frames.frame_from_dict(case["frame"])
    alice = base64.b64decode(SERVERS["server-alice"]["public_key"])
    assert not verify_event(frame.group_id, frame.payload, alice)


def test_equivocation_vectors_are_validly_signed():
    """Equivocation needs *both* versions validly signed (§4.3): the vectors must verify."""
    alice = base64.b64decode(SERVERS["server-alice"]["public_key"])
    ident = identity("server-alice")
    for case in VECTORS["equivocation"]:
        frame = frames.frame_from_dict(case["frame"])
        event = frame.payload
        assert verify_event(frame.group_id, event, alice), case["reason"]
        resigned = ident.sign_event(
            frame.group_id, event.event_id, event.seq, event.ciphertext_bytes()
        )
        assert resigned.to_dict() == event.to_dict()


def test_request_signing_round_trip():
    """No request vector exists: check our header against the §3.3 string written out by hand."""
    bob = identity("server-bob")
    ts = "2025-11-26T03:15:52.123Z"
    path = "/_taps/federation/encrypted-groups/g!example/send"
    body = b'{"x":1}\n'
    header = bob.authorization_header(
        receiver="server-alice", method="POST", path_and_query=path, body=body, ts=ts
    )
    expected = (
        f"taps.v1.request\nserver-bob\nserver-alice\nPOST\n{path}\n{ts}\n"
        + hashlib.sha256(body).hexdigest()
    ).encode()
    assert signing.request_string("server-bob", "server-alice", "POST", path, ts, body) == expected
    assert header == (
        f'Taps origin="server-bob", key="{bob.key_id}", ts="{ts}", sig="{bob.sign(expected)}"'
    )
