"""Our key pair, key documents and the never-raising verifiers (node.identity)."""

from __future__ import annotations

import base64
import os
import pickle
import stat

import pytest

from node.protocol import frames, signing
from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.identity import (
    KEY_LIFETIME,
    Identity,
    KeyDocument,
    pairing_code_for,
    parse_authorization,
    verify_key_document,
    verify_signature,
)
from node.protocol.ids import CROCKFORD, parse_rfc3339
from node.runtime.seed_file import SEED_FILE, IdentityError, load_identity

NOW = 1_764_126_952.123  # 2025-11-26T03:15:52.123Z
SEED = bytes(range(32))


def make(server_id="server-alice", url="http://127.0.0.1:8448", seed=SEED, now=NOW):
    return Identity.from_seed(seed, server_id, url, now=now)


# --------------------------------------------------------------------------- key file


def test_key_file_is_created_0600_and_reloads_the_same_key(tmp_path):
    data_dir = tmp_path / "nested" / "data"
    first = load_identity(data_dir, "server-alice")
    key_file = data_dir / SEED_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.stat().st_size == 32
    second = load_identity(data_dir, "server-alice", "http://127.0.0.1:9000")
    assert second.public_key == first.public_key
    assert second.key_id == first.key_id
    assert [p.name for p in data_dir.iterdir()] == [SEED_FILE]  # no temp file left behind


def test_two_directories_give_two_keys(tmp_path):
    a = load_identity(tmp_path / "a", "server-a")
    b = load_identity(tmp_path / "b", "server-b")
    assert a.public_key != b.public_key


def test_loose_key_file_mode_is_tightened(tmp_path):
    load_identity(tmp_path, "server-alice")
    key_file = tmp_path / SEED_FILE
    os.chmod(key_file, 0o644)
    load_identity(tmp_path, "server-alice")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"", b"short", bytes(33)])
def test_corrupt_key_file_is_a_clear_error(tmp_path, content):
    (tmp_path / SEED_FILE).write_bytes(content)
    with pytest.raises(IdentityError, match="corrupt"):
        load_identity(tmp_path, "server-alice")


def test_unreadable_key_file_is_a_clear_error(tmp_path):
    (tmp_path / SEED_FILE).mkdir()  # a directory where the key should be
    with pytest.raises(IdentityError, match="identity key"):
        load_identity(tmp_path, "server-alice")


def test_valid_until_defaults_to_a_year_and_renews_late(tmp_path):
    ident = load_identity(tmp_path, "server-alice", now=NOW)
    assert ident.valid_until_ts == pytest.approx(NOW + KEY_LIFETIME, abs=0.001)
    assert not ident.renew_if_due(NOW + 300 * 86400)
    old_doc = ident.key_document()
    later = NOW + 340 * 86400  # 25 days left
    assert ident.renew_if_due(later)
    assert ident.valid_until_ts == pytest.approx(later + KEY_LIFETIME, abs=0.001)
    doc = ident.key_document()
    assert doc.public_key == old_doc.public_key and doc.signature != old_doc.signature
    verify_key_document(doc, later)


# --------------------------------------------------------------------------- secrecy


def test_repr_and_str_never_show_the_seed():
    ident = make()
    text = repr(ident) + str(ident) + f"{ident}"
    for secret in (SEED.hex(), SEED.hex().upper(), base64.b64encode(SEED).decode(), repr(SEED)):
        assert secret not in text
    assert "server-alice" in text and ident.key_id in text
    with pytest.raises(TypeError):
        pickle.dumps(ident)


# --------------------------------------------------------------------------- public facts


def test_url_is_settable_and_resigns_the_document():
    ident = make(url="")
    assert ident.key_document().url == ""
    ident.url = "http://[::1]:8448"
    doc = ident.key_document()
    assert doc.url == "http://[::1]:8448"
    verify_key_document(doc, NOW)
    with pytest.raises(ValueError):
        ident.url = "http://host/path"


def test_pairing_code_is_four_groups_of_crockford():
    ident = make()
    code = ident.pairing_code
    groups = code.split("-")
    assert len(groups) == 4 and all(len(g) == 4 for g in groups)
    assert all(c in CROCKFORD for c in "".join(groups))
    assert code == pairing_code_for(ident.public_key) == ident.key_document().pairing_code
    assert code != make(seed=bytes(32)).pairing_code


def test_invalid_construction_is_refused():
    with pytest.raises(ValueError):
        Identity.from_seed(b"short", "server-alice")
    with pytest.raises(ValueError):
        Identity.from_seed(SEED, "bad id!")
    with pytest.raises(ValueError):
        Identity.from_seed(SEED, "server-alice", valid_until="tomorrow")


# --------------------------------------------------------------------------- documents


def test_key_document_round_trip_and_verify():
    doc = make().key_document()
    again = KeyDocument.from_dict(doc.to_dict())
    assert again == doc
    verify_key_document(again, NOW)


def test_key_document_keeps_strings_as_published():
    """A valid_until written with another offset must be served back unchanged."""
    ident = Identity.from_seed(SEED, "server-alice", valid_until="2027-11-26T01:00:00+01:00")
    d = ident.key_document().to_dict()
    doc = KeyDocument.from_dict(d)
    assert doc.valid_until == "2027-11-26T01:00:00+01:00"
    assert doc.valid_until_ts == parse_rfc3339("2027-11-26T00:00:00Z")
    verify_key_document(doc, NOW)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("server_id", "bad id!"),
        ("server_id", None),
        ("key_id", "rsa:12345678"),
        ("public_key", "not base64!"),
        ("public_key", base64.b64encode(bytes(31)).decode()),
        ("url", "ftp://x:1"),
        ("valid_until", "next year"),
        ("signature", "AAAA"),
        ("signature", 5),
        ("algorithm", "rsa"),
    ],
)
def test_malformed_key_document_is_auth_failed(field, value):
    d = make().key_document().to_dict()
    if value is None:
        del d[field]
    else:
        d[field] = value
    with pytest.raises(ProtocolError) as err:
        KeyDocument.from_dict(d)
    assert err.value.code == ErrorCode.AUTH_FAILED
    assert field.split("_")[0] in err.value.message or field == "algorithm"


def test_key_document_not_an_object():
    with pytest.raises(ProtocolError) as err:
        KeyDocument.from_dict(["x"])
    assert err.value.code == ErrorCode.AUTH_FAILED


def test_verify_key_document_failures():
    ident = make()
    d = ident.key_document().to_dict()
    other = make(seed=bytes(32))

    tampered = KeyDocument.from_dict({**d, "url": "http://evil:1"})
    with pytest.raises(ProtocolError, match="signature does not verify"):
        verify_key_document(tampered, NOW)

    # a key_id that is not this key's, signed correctly by that key: only the id check fails
    wrong_id = other.key_id
    s = ident.sign(
        signing.key_string("server-alice", wrong_id, d["public_key"], d["url"], d["valid_until"])
    )
    with pytest.raises(ProtocolError, match="does not match its public key"):
        verify_key_document(KeyDocument.from_dict({**d, "key_id": wrong_id, "signature": s}), NOW)

    doc = ident.key_document()
    with pytest.raises(ProtocolError, match="expired") as err:
        verify_key_document(doc, doc.valid_until_ts)
    assert err.value.code == ErrorCode.AUTH_FAILED


def test_verify_signature_never_raises_on_garbage():
    ident = make()
    msg = b"hello"
    sig = ident.sign(msg)
    assert verify_signature(ident.public_key, msg, sig)
    assert not verify_signature(ident.public_key, b"hellO", sig)
    for bad in ("", "!!!!", sig[:-2], sig + "AAAA", "A" * 88, base64.b64encode(bytes(63)).decode()):
        assert not verify_signature(ident.public_key, msg, bad)
    assert not verify_signature(b"short", msg, sig)
    assert not verify_signature(bytes(32), msg, sig)  # a low-order / invalid point


def test_sign_event_produces_a_valid_event():
    ident = make()
    event = ident.sign_event("g!x", "01KAZ2J2R80000000000000002", 7, b"\x00secret")
    assert event.author == "server-alice" and event.seq == 7 and event.key_id == ident.key_id
    assert event.ciphertext_bytes() == b"\x00secret"
    assert event.content_hash == signing.content_hash(b"\x00secret")
    assert frames.Event.from_dict(event.to_dict()) == event


# --------------------------------------------------------------------------- Authorization


def test_parse_authorization_accepts_the_header_we_write():
    ident = make()
    header = ident.authorization_header(
        receiver="server-bob",
        method="GET",
        path_and_query="/x?a=1",
        body=b"",
        ts="2025-11-26T03:15:52.123Z",
    )
    parsed = parse_authorization(header)
    assert parsed is not None
    assert parsed["origin"] == "server-alice" and parsed["key"] == ident.key_id
    assert parsed["ts"] == "2025-11-26T03:15:52.123Z"
    assert base64.b64decode(parsed["sig"])  # kept with its padding


def test_parse_authorization_is_flexible_about_form():
    parsed = parse_authorization(
        'taps  sig="c2ln", ts=2025-11-26T03:15:52Z ,KEY="k" , origin="o", extra="1"'
    )
    assert parsed == {"origin": "o", "key": "k", "ts": "2025-11-26T03:15:52Z", "sig": "c2ln"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Taps",
        'Bearer origin="o", key="k", ts="t", sig="s"',
        'Taps origin="o", key="k", ts="t"',
        'Taps origin="o", origin="p", key="k", ts="t", sig="s"',
        'Taps origin="o" key="k", ts="t", sig="s"',
        'Taps origin="o, key="k", ts="t", sig="s"',
    ],
)
def test_parse_authorization_rejects_malformed(value):
    assert parse_authorization(value) is None
