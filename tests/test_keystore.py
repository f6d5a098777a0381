"""Pins (§3.2), HELLO authentication (§4.1) and request authentication (§3.3), real crypto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.protocol import frames, signing
from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.identity import Identity, KeyDocument
from node.protocol.ids import format_rfc3339
from node.protocol.keystore import (
    CONFIGURED,
    CONFIRMED,
    HELLO,
    PROVISIONAL,
    HelloAuthenticator,
    KeyStore,
    MemoryReplayCache,
    RequestAuthenticator,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v1.json").read_text())
NOW = 1_764_126_952.123  # the vector HELLO's timestamp
GROUP = "g!example"
SEED_A = bytes.fromhex(VECTORS["servers"]["server-alice"]["seed_hex"])
SEED_A2 = bytes([7]) * 32  # alice's key after a (suspicious) change
SEED_C = bytes([9]) * 32

_ids = iter(range(1, 10**6))


def next_id() -> str:
    return f"01KAZ2J2NV{next(_ids):016d}"


def alice(seed=SEED_A, valid_for=365 * 86400.0, server_id="server-alice") -> Identity:
    return Identity.from_seed(
        seed, server_id, "http://127.0.0.1:8448", now=NOW - 365 * 86400 + valid_for
    )


def hello_from(
    ident: Identity, *, to="server-bob", at=NOW, frame_id=None, origin=None
) -> frames.Frame:
    frame = ident.make_hello(
        to=to,
        group_id=GROUP,
        frame_id=frame_id or next_id(),
        timestamp=format_rfc3339(at),
        max_message_size=65536,
        ping_interval_ms=30000,
        capabilities=["stream", "ack", "credit", "ping"],
        supported_groups=["*"],
    )
    d = frame.to_dict()
    if origin is not None:
        d["origin"] = origin
    # through the wire codec, so the authenticator sees what a peer would send
    return frames.parse_frame(frames.encode_dict(d)[:-1])


def tampered(frame: frames.Frame, **payload_changes) -> frames.Frame:
    d = frame.to_dict()
    d["payload"].update(payload_changes)
    return frames.frame_from_dict(d)


def auth_for(keystore=None, server_id="server-bob"):
    keystore = keystore or KeyStore()
    return HelloAuthenticator(server_id, keystore, MemoryReplayCache()), keystore


def auth_error(fn, *args, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        fn(*args, **kwargs)
    return err.value


# --------------------------------------------------------------------------- HELLO


def test_vector_hello_is_accepted_and_pinned():
    authenticate, keystore = auth_for()
    frame = frames.frame_from_dict(VECTORS["hello"]["frame"])
    doc = authenticate(frame, NOW)
    assert doc.to_dict() == VECTORS["key_document"]["document"]
    pin = keystore.pin("server-alice")
    assert pin is not None and pin.source == HELLO
    assert keystore.document("server-alice") == VECTORS["key_document"]["document"]
    assert authenticate.last_update is not None and authenticate.last_update.kind == "new"


def test_origin_differs_from_server_id_is_bad_frame():
    authenticate, keystore = auth_for()
    frame = hello_from(alice(), origin="server-mallory")
    err = auth_error(authenticate, frame, NOW)
    assert err.code == ErrorCode.BAD_FRAME and err.ref == frame.id
    assert keystore.pins() == []


def test_bad_key_document_signature():
    authenticate, _ = auth_for()
    frame = hello_from(alice())
    forged = tampered(frame, key_signature=alice().sign(b"something else"))
    err = auth_error(authenticate, forged, NOW)
    assert err.code == ErrorCode.AUTH_FAILED
    assert "key document" in err.message and "signature" in err.message
    assert err.ref == frame.id


def test_expired_key_document():
    authenticate, _ = auth_for()
    err = auth_error(authenticate, hello_from(alice(valid_for=-1.0)), NOW)
    assert err.code == ErrorCode.AUTH_FAILED and "expired" in err.message


def test_key_id_not_matching_the_public_key():
    """A document and HELLO correctly signed by the key but naming another key id."""
    authenticate, _ = auth_for()
    ident = alice()
    frame = hello_from(ident)
    p = frame.payload
    wrong = Identity.from_seed(SEED_C, "server-c").key_id
    key_sig = ident.sign(signing.key_string(p.server_id, wrong, p.public_key, p.url, p.valid_until))
    hello_sig = ident.sign(
        signing.hello_string(
            p.server_id, p.to, GROUP, frame.id, frame.timestamp, wrong, p.version,
            p.max_message_size, p.url,
        )
    )  # fmt: skip
    forged = tampered(frame, key_id=wrong, key_signature=key_sig, signature=hello_sig)
    err = auth_error(authenticate, forged, NOW)
    assert err.code == ErrorCode.AUTH_FAILED and "does not match its public key" in err.message


def test_bad_hello_signature():
    authenticate, _ = auth_for()
    frame = hello_from(alice())
    err = auth_error(authenticate, tampered(frame, max_message_size=1024), NOW)
    assert err.code == ErrorCode.AUTH_FAILED and "HELLO signature" in err.message


def test_hello_for_another_receiver():
    authenticate, keystore = auth_for()
    err = auth_error(authenticate, hello_from(alice(), to="server-carol"), NOW)
    assert err.code == ErrorCode.AUTH_FAILED and "addressed to server-carol" in err.message
    assert keystore.pins() == []


def test_initiator_checks_the_acceptor_is_who_it_addressed():
    authenticate, _ = auth_for()
    err = auth_error(authenticate, hello_from(alice()), NOW, expect_server_id="server-dave")
    assert err.code == ErrorCode.AUTH_FAILED and "server-dave" in err.message
    assert authenticate(hello_from(alice()), NOW, expect_server_id="server-alice")


@pytest.mark.parametrize("skew", [-600.0, 600.0, -300.5, 300.5])
def test_clock_skew_rejected(skew):
    authenticate, _ = auth_for()
    err = auth_error(authenticate, hello_from(alice(), at=NOW + skew), NOW)
    assert err.code == ErrorCode.AUTH_FAILED
    assert f"clock skew {abs(skew):.0f} s exceeds 300 s" in err.message


@pytest.mark.parametrize("skew", [-240.0, 240.0, 0.0, 299.9])
def test_clock_skew_accepted(skew):
    authenticate, _ = auth_for()
    assert authenticate(hello_from(alice(), at=NOW + skew), NOW).server_id == "server-alice"


def test_replayed_hello_id():
    authenticate, _ = auth_for()
    frame = hello_from(alice())
    authenticate(frame, NOW)
    err = auth_error(authenticate, frame, NOW + 5)
    assert err.code == ErrorCode.AUTH_FAILED and "replayed" in err.message


def test_key_swap_for_a_pinned_server_is_refused():
    authenticate, keystore = auth_for()
    authenticate(hello_from(alice()), NOW)
    err = auth_error(authenticate, hello_from(alice(seed=SEED_A2)), NOW + 1)
    assert err.code == ErrorCode.AUTH_FAILED and "pinned key" in err.message
    assert keystore.pin("server-alice").doc.public_key == alice().public_key


def test_lapsed_pin_is_replaced_by_the_next_hello():
    authenticate, keystore = auth_for()
    short = alice(valid_for=100.0)
    authenticate(hello_from(short), NOW)
    swapped = alice(seed=SEED_A2, valid_for=1000.0)
    # before the lapse another key is refused …
    auth_error(authenticate, hello_from(swapped, at=NOW + 50), NOW + 50)
    # … after it the next HELLO-verified document replaces the pin
    authenticate(hello_from(swapped, at=NOW + 200), NOW + 200)
    pin = keystore.pin("server-alice")
    assert pin.doc.public_key == swapped.public_key and pin.source == HELLO
    assert authenticate.last_update.kind == "replaced"


def test_closed_federation_refuses_unknown_servers():
    keystore = KeyStore(closed=True, allowed={"server-carol"})
    authenticate, _ = auth_for(keystore)
    err = auth_error(authenticate, hello_from(alice()), NOW)
    assert err.code == ErrorCode.AUTH_FAILED and "closed federation" in err.message
    assert keystore.pins() == []  # nothing pinned for a refused server
    keystore.allow("server-alice")
    assert authenticate(hello_from(alice()), NOW).server_id == "server-alice"


def test_checks_run_in_protocol_order():
    keystore = KeyStore(closed=True)
    authenticate, _ = auth_for(keystore)
    # `to` comes before clock
    err = auth_error(authenticate, hello_from(alice(), to="server-x", at=NOW + 900), NOW)
    assert "addressed to" in err.message
    # pin comes before closed
    keystore.repin(alice().key_document())
    err = auth_error(authenticate, hello_from(alice(seed=SEED_A2)), NOW)
    assert "pinned key" in err.message
    # replay is recorded before pin/closed are judged, clock before replay
    frame = hello_from(alice(), at=NOW + 900)
    assert "clock skew" in auth_error(authenticate, frame, NOW).message
    assert "clock skew" in auth_error(authenticate, frame, NOW).message


def test_non_hello_frame_is_hello_required():
    authenticate, _ = auth_for()
    ping = frames.Frame("PING", next_id(), "server-alice", 1, frames.Ping())
    assert auth_error(authenticate, ping, NOW).code == ErrorCode.HELLO_REQUIRED


# --------------------------------------------------------------------------- KeyStore


class Recorder:
    def __init__(self):
        self.changes: list[tuple[dict, str]] = []
        self.replaced: list[tuple[str, str]] = []

    def on_change(self, doc: KeyDocument, source: str) -> None:
        self.changes.append((doc.to_dict(), source))

    def on_provisional_replaced(self, old, new) -> None:
        self.replaced.append((old.key_id, new.key_id))

    def store(self, **kwargs) -> KeyStore:
        return KeyStore(
            on_change=self.on_change, on_provisional_replaced=self.on_provisional_replaced, **kwargs
        )


def test_tofu_then_renewal_by_the_same_key():
    rec = Recorder()
    ks = rec.store()
    first = alice(valid_for=1000.0).key_document()
    assert ks.pin_hello(first, NOW).kind == "new"
    later = alice(valid_for=5000.0).key_document()
    update = ks.pin_hello(later, NOW)
    assert update.kind == "renewed" and ks.pin("server-alice").doc == later
    # an older document of the same key is accepted but does not roll the pin back
    assert ks.pin_hello(first, NOW).kind == "unchanged"
    assert ks.pin("server-alice").doc == later
    assert [src for _, src in rec.changes] == [HELLO, HELLO]
    assert rec.changes[-1][0] == later.to_dict()


def test_another_key_is_refused_until_repinned():
    ks = KeyStore()
    ks.pin_hello(alice().key_document(), NOW)
    new = alice(seed=SEED_A2).key_document()
    err = auth_error(ks.pin_hello, new, NOW)
    assert err.code == ErrorCode.AUTH_FAILED
    update = ks.repin(new)
    assert update.kind == "replaced" and ks.pin("server-alice").source == CONFIGURED
    # HELLO renewal of a configured key keeps it configured
    renewed = alice(seed=SEED_A2, valid_for=400 * 86400.0).key_document()
    ks.pin_hello(renewed, NOW)
    assert ks.pin("server-alice").source == CONFIGURED
    assert ks.pin("server-alice").doc == renewed


def test_configured_pin_is_not_overridden_by_tofu():
    ks = KeyStore()
    ks.repin(alice(seed=SEED_A2).key_document(), NOW)
    with pytest.raises(ProtocolError):
        ks.pin_hello(alice().key_document(), NOW)


def test_repin_still_requires_a_self_signed_document():
    ks = KeyStore()
    d = alice().key_document().to_dict()
    d["url"] = "http://elsewhere:1"
    with pytest.raises(ProtocolError):
        ks.repin(KeyDocument.from_dict(d))
    assert ks.pins() == []


def test_provisional_document_rules():
    rec = Recorder()
    ks = rec.store()
    prov = alice(seed=SEED_A2).key_document()
    update = ks.pin_provisional(prov, NOW, via="server-bob")
    assert (
        update is not None and update.new.source == PROVISIONAL and update.new.via == "server-bob"
    )
    assert ks.is_provisional("server-alice")
    assert ks.key_for("server-alice", prov.key_id) == prov.public_key  # verifies events …
    assert ks.document("server-alice") is None  # … but is not served as pinned
    # another provisional key does not displace the first
    assert ks.pin_provisional(alice(seed=SEED_C).key_document(), NOW, via="server-x") is None
    # a HELLO-verified document replaces it, and the replacement is reported
    real = alice().key_document()
    update = ks.pin_hello(real, NOW)
    assert update.replaced_provisional and update.kind == "replaced"
    assert rec.replaced == [(prov.key_id, real.key_id)]
    assert ks.key_for("server-alice", prov.key_id) is None
    # and a provisional document never overrides that pin
    assert ks.pin_provisional(prov, NOW, via="server-bob") is None
    assert ks.pin("server-alice").source == HELLO


def test_confirmed_document_replaces_provisional():
    rec = Recorder()
    ks = rec.store()
    doc = alice().key_document()
    ks.pin_provisional(doc, NOW, via="server-bob")
    update = ks.pin_confirmed(doc, NOW)
    assert update.replaced_provisional and update.kind == "renewed"
    assert ks.pin("server-alice").source == CONFIRMED
    assert ks.document("server-alice") == doc.to_dict()
    assert rec.replaced == [(doc.key_id, doc.key_id)]


def test_expired_provisional_or_confirmed_document_is_refused():
    ks = KeyStore()
    expired = alice(valid_for=-1.0).key_document()
    with pytest.raises(ProtocolError):
        ks.pin_provisional(expired, NOW, via="server-bob")
    with pytest.raises(ProtocolError):
        ks.pin_confirmed(expired, NOW)


def test_key_for_matches_key_id_and_survives_a_lapse():
    ks = KeyStore()
    doc = alice(valid_for=10.0).key_document()
    ks.pin_hello(doc, NOW)
    assert ks.key_for("server-alice", doc.key_id) == doc.public_key
    assert ks.key_for("server-alice", "ed25519:AAAAAAAA") is None
    assert ks.key_for("server-nobody", doc.key_id) is None
    assert ks.pin("server-alice").lapsed(NOW + 11)
    assert ks.key_for("server-alice", doc.key_id) == doc.public_key


def test_persistence_round_trip_through_callbacks():
    rec = Recorder()
    ks = rec.store()
    ks.pin_hello(alice().key_document(), NOW)
    ks.repin(Identity.from_seed(SEED_C, "server-carol", now=NOW).key_document())
    ks.pin_provisional(Identity.from_seed(SEED_A2, "server-dan", now=NOW).key_document(), NOW, "x")

    saved: dict[str, tuple[dict, str]] = {d["server_id"]: (d, s) for d, s in rec.changes}
    tampered_row = dict(saved["server-carol"][0], url="http://evil:1")
    rows = [*saved.values(), (tampered_row, CONFIGURED), (saved["server-alice"][0], "bogus")]

    fresh = KeyStore()
    assert fresh.load(rows) == 3
    assert [(p.server_id, p.source) for p in fresh.pins()] == [
        ("server-alice", HELLO),
        ("server-carol", CONFIGURED),
        ("server-dan", PROVISIONAL),
    ]
    assert fresh.document("server-alice") == ks.document("server-alice")


# --------------------------------------------------------------------------- replay cache


def test_memory_replay_cache_window_and_bound():
    cache = MemoryReplayCache(max_entries=3)
    assert cache.check_and_record("a", 0.0)
    assert not cache.check_and_record("a", 599.0)
    assert cache.check_and_record("a", 601.0)  # outside the window: fresh again
    for key, t in (("b", 602.0), ("c", 603.0), ("d", 604.0)):
        assert cache.check_and_record(key, t)
    assert len(cache) == 3  # bounded: the oldest went first
    assert cache.check_and_record("x", 2000.0)
    assert len(cache) == 1  # expired entries are dropped


# --------------------------------------------------------------------------- requests

PATH = "/_taps/federation/encrypted-groups/g!example/send"
BODY = b'{"type":"EVENT"}\n'


def request_setup(*, closed=False, allowed=("server-alice",)):
    ks = KeyStore(closed=closed, allowed=allowed)
    ident = alice()
    ks.pin_hello(ident.key_document(), NOW)
    return RequestAuthenticator("server-bob", ks, MemoryReplayCache(), closed=closed), ident


def header(ident, *, at=NOW, receiver="server-bob", method="POST", path=PATH, body=BODY):
    return ident.authorization_header(
        receiver=receiver, method=method, path_and_query=path, body=body, ts=format_rfc3339(at)
    )


def test_request_without_header():
    open_auth, _ = request_setup()
    assert open_auth.check(None, "POST", PATH, BODY, NOW) is None
    closed_auth, _ = request_setup(closed=True)
    err = auth_error(closed_auth.check, None, "POST", PATH, BODY, NOW)
    assert err.code == ErrorCode.AUTH_FAILED and "requires" in err.message


def test_request_signed_is_accepted():
    check, ident = request_setup(closed=True)
    assert check.check(header(ident), "POST", PATH, BODY, NOW) == "server-alice"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b"other"}, "does not verify"),
        ({"path": PATH + "?x=1"}, "does not verify"),
        ({"method": "PUT"}, "does not verify"),
        ({"receiver": "server-carol"}, "does not verify"),
        ({"at": NOW + 600}, "clock skew 600 s exceeds 300 s"),
        ({"at": NOW - 600}, "clock skew 600 s exceeds 300 s"),
    ],
)
def test_request_failures(change, message):
    check, ident = request_setup()
    err = auth_error(check.check, header(ident, **change), "POST", PATH, BODY, NOW)
    assert err.code == ErrorCode.AUTH_FAILED and message in err.message


def test_request_skew_within_limit_is_accepted():
    check, ident = request_setup()
    assert check.check(header(ident, at=NOW - 240), "POST", PATH, BODY, NOW) == "server-alice"


def test_request_from_unpinned_origin_or_other_key():
    check, _ = request_setup()
    carol = Identity.from_seed(SEED_C, "server-carol", now=NOW)
    err = auth_error(check.check, header(carol), "POST", PATH, BODY, NOW)
    assert "no pinned key for server-carol" in err.message
    impostor = alice(seed=SEED_A2)
    err = auth_error(check.check, header(impostor), "POST", PATH, BODY, NOW)
    assert "not the pinned key" in err.message


def test_request_replayed_signature():
    check, ident = request_setup()
    h = header(ident)
    assert check.check(h, "POST", PATH, BODY, NOW) == "server-alice"
    err = auth_error(check.check, h, "POST", PATH, BODY, NOW + 1)
    assert "replayed" in err.message


def test_request_closed_and_not_in_peer_list():
    check, ident = request_setup(closed=True, allowed=("server-carol",))
    err = auth_error(check.check, header(ident), "POST", PATH, BODY, NOW)
    assert "closed federation" in err.message


def test_malformed_header_fails_even_on_an_open_node():
    check, _ = request_setup()
    err = auth_error(check.check, "Bearer abc", "POST", PATH, BODY, NOW)
    assert err.code == ErrorCode.AUTH_FAILED


def test_unparseable_ts_is_refused():
    check, ident = request_setup()
    h = ident.authorization_header(
        receiver="server-bob", method="POST", path_and_query=PATH, body=BODY, ts="yesterday"
    )
    err = auth_error(check.check, h, "POST", PATH, BODY, NOW)
    assert err.code == ErrorCode.AUTH_FAILED and "not an RFC 3339 time" in err.message
