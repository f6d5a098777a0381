"""Property tests of the NDJSON decoder and the frame codec (PROTOCOL §2, §4).

Whatever a peer sends, the decoder and parser may only ever answer with frames or a
:class:`ProtocolError`; any other exception would kill a stream task instead of
producing the ERROR frame the contract asks for.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.protocol.decoder import LineDecoder
from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import (
    INT64_MAX,
    INT64_MIN,
    MAX_CREDIT,
    Ack,
    Checkpoint,
    Credit,
    Error,
    Event,
    Frame,
    Hello,
    Ping,
    Pong,
    b64decode_canonical,
    encode_frame,
    frame_from_dict,
    parse_frame,
)
from node.protocol.ids import CROCKFORD, is_server_id

VECTORS = Path(__file__).parent / "vectors"

# --------------------------------------------------------------------------- decoder


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


_line_bytes = st.lists(
    st.one_of(st.binary(max_size=40), st.sampled_from([b"\n", b"\r\n", b"\r", b"{}", b"\n\n"])),
    max_size=20,
).map(b"".join)


@settings(max_examples=300)
@given(_line_bytes, st.lists(st.integers(0, 400), max_size=8), st.integers(1, 64))
def test_decoder_only_yields_lines_or_a_final_protocol_error(data, cuts, max_line):
    decoder = LineDecoder(max_line)
    got: list[bytes] = []
    error: ProtocolError | None = None
    for piece in _chunks(data, cuts):
        items = decoder.feed(piece)
        if error is not None:
            assert len(items) == 1 and isinstance(items[0], ProtocolError)
            continue
        for i, item in enumerate(items):
            if isinstance(item, ProtocolError):
                assert i == len(items) - 1  # the error is always the last item
                assert item.code == ErrorCode.MESSAGE_TOO_LARGE and item.fatal
                error = item
            else:
                assert type(item) is bytes
                got.append(item)
        assert decoder.buffered <= max_line
    # The lines match a one-shot split of the same bytes, up to any overflow.
    complete = data.split(b"\n")[:-1]
    expected = [line for line in complete if line not in (b"", b"\r")]
    for line in got:
        assert b"\n" not in line and line not in (b"", b"\r") and len(line) <= max_line
    if error is None:
        assert got == expected
        assert all(len(line) <= max_line for line in complete)
        assert len(data.rsplit(b"\n", 1)[-1]) <= max_line
    else:
        assert got == expected[: len(got)]


def test_decoder_refuses_mid_line_without_buffering_more():
    decoder = LineDecoder(10)
    assert decoder.feed(b"12345") == []
    assert decoder.feed(b"67890") == []
    [error] = decoder.feed(b"1")  # 11 bytes without a newline: refused at once
    assert error.code == ErrorCode.MESSAGE_TOO_LARGE
    assert decoder.buffered == 0
    assert isinstance(decoder.feed(b"\n")[0], ProtocolError)


def test_decoder_keeps_carriage_return_for_credit():
    decoder = LineDecoder(100)
    assert decoder.feed(b'{"a":1}\r\n\r\n\n{"b"') == [b'{"a":1}\r']
    assert decoder.feed(b":2}\n") == [b'{"b":2}']


# --------------------------------------------------------------------------- parser


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parse_frame_raises_only_protocol_errors_on_bytes(line):
    try:
        frame = parse_frame(line)
    except ProtocolError as exc:
        assert exc.code in ErrorCode.__members__.values()
    else:
        assert isinstance(frame, Frame)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_frame_keys = st.sampled_from(
    ["type", "id", "origin", "sequence", "group_id", "timestamp", "payload"]
)
_payload_keys = st.sampled_from(
    [
        "events", "bytes", "through", "event_ids", "ping_id", "code", "message", "ref", "fatal",
        "event_id", "author", "seq", "ciphertext", "content_hash", "key_id", "signature",
        "server_id", "version", "capabilities", "supported_groups", "max_message_size",
        "ping_interval_ms", "public_key", "url", "valid_until", "key_signature", "to",
    ]
)  # fmt: skip


@st.composite
def _frame_like(draw) -> dict:
    """Dicts that look like frames, so the parser's deeper branches are reached."""
    d = draw(st.dictionaries(_frame_keys, _json, max_size=7))
    if draw(st.booleans()):
        d["type"] = draw(st.sampled_from(["HELLO", "CREDIT", "EVENT", "ACK", "PING", "PONG",
                                          "ERROR", "CHECKPOINT", "X"]))  # fmt: skip
        d["id"] = "01KAZ2J2NV0000000000000001"
        d["origin"] = "server-alice"
        d["sequence"] = draw(st.integers(-1, 3))
        d["group_id"] = draw(st.sampled_from(["g!x", "bad", None]))
        d["timestamp"] = draw(st.sampled_from(["2026-01-01T00:00:00Z", "yesterday", None, 5]))
        d["payload"] = draw(st.dictionaries(_payload_keys, _json, max_size=12))
    return d


_FRAME = {"id": "01KAZ2J2NV0000000000000001", "origin": "server-alice", "group_id": "g!x"}


@settings(max_examples=300)
@given(_frame_like())
@example({**_FRAME, "type": "PING", "sequence": 2**63, "payload": {}})
@example({**_FRAME, "type": "CREDIT", "sequence": 1, "payload": {"events": 2**64, "bytes": 1}})
@example({**_FRAME, "type": "ACK", "sequence": 1, "payload": {"through": -(2**64)}})
@example({**_FRAME, "type": "EVENT", "sequence": 1, "payload": {"seq": 1e300}})
@example({**_FRAME, "type": "HELLO", "sequence": 1.0, "payload": {"version": "1.0.0"}})
@example({**_FRAME, "type": "X", "sequence": 1, "x": [float("inf"), -0.0, 2**64]})
def test_frame_from_dict_raises_only_protocol_errors(obj):
    for candidate in (obj, json.dumps(obj).encode()):
        try:
            if isinstance(candidate, dict):
                frame_from_dict(candidate)
            else:
                parse_frame(candidate)
        except ProtocolError:
            pass


def test_conformance_vector_frames_parse():
    for name in ("hello.ndjson", "event.ndjson"):
        for line in (VECTORS / name).read_bytes().splitlines():
            if line.strip():
                frame = parse_frame(line)
                assert frame.known and frame.size == len(line)


# --------------------------------------------------------------------------- round trip

_ulid = st.tuples(st.sampled_from("01234567"), st.text(CROCKFORD, min_size=25, max_size=25)).map(
    "".join
)
_server_id = st.text(
    "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789._-", min_size=1, max_size=64
).filter(lambda s: s != "current")  # reserved (§2)
_group_id = st.text("abcxyzABC019._-", min_size=1, max_size=128).map(lambda s: "g!" + s)
_b64_64 = st.binary(min_size=64, max_size=64).map(lambda b: base64.b64encode(b).decode())
_b64_32 = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
_key_id = st.text("ABCdef0189_-", min_size=8, max_size=8).map(lambda s: "ed25519:" + s)
_hash = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda s: "sha256:" + s)
_count = st.integers(0, MAX_CREDIT)

_payloads = {
    "HELLO": st.builds(
        Hello,
        server_id=_server_id,
        version=st.sampled_from(["1.0.0", "1.2.3", "1.0"]),
        capabilities=st.lists(st.text(max_size=10), max_size=5),
        supported_groups=st.lists(st.one_of(st.just("*"), _group_id), max_size=3),
        max_message_size=st.integers(1, MAX_CREDIT),
        ping_interval_ms=st.integers(1000, 300000),
        key_id=_key_id,
        public_key=_b64_32,
        url=st.sampled_from(["", "http://127.0.0.1:8448", "https://[::1]:443", "http://h:1"]),
        valid_until=st.just("2027-11-26T00:00:00.000Z"),
        key_signature=_b64_64,
        to=_server_id,
        signature=_b64_64,
    ),
    "CREDIT": st.builds(Credit, events=_count, bytes=_count),
    "EVENT": st.builds(
        Event,
        event_id=_ulid,
        author=_server_id,
        seq=st.integers(1, 2**53),
        ciphertext=st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        content_hash=_hash,
        key_id=_key_id,
        signature=_b64_64,
    ),
    "ACK": st.builds(Ack, through=st.integers(0, 2**40), event_ids=st.lists(_ulid, max_size=5)),
    "PING": st.builds(Ping),
    "PONG": st.builds(Pong, ping_id=_ulid),
    "ERROR": st.builds(
        Error,
        code=st.sampled_from([c.value for c in ErrorCode]),
        message=st.text(max_size=40),
        ref=st.one_of(st.none(), _ulid),
        fatal=st.booleans(),
    ),
    "CHECKPOINT": st.builds(
        Checkpoint,
        body=st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), max_size=3),
    ),
}


@st.composite
def _valid_frames(draw) -> Frame:
    ftype = draw(st.sampled_from(sorted(_payloads)))
    needs_group = ftype in ("HELLO", "EVENT", "CHECKPOINT")
    group = draw(_group_id) if needs_group else draw(st.one_of(st.none(), _group_id))
    timestamp = "2026-11-26T03:15:52.123Z" if ftype == "HELLO" else None
    return Frame(
        ftype,
        draw(_ulid),
        draw(_server_id),
        draw(st.integers(1, 2**53)),
        draw(_payloads[ftype]),
        group,
        timestamp,
    )


@settings(max_examples=400)
@given(_valid_frames(), st.booleans())
def test_encode_parse_round_trip(frame, crlf):
    line = encode_frame(frame)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    body = line[:-1] + (b"\r" if crlf else b"")
    parsed = parse_frame(body)
    frame.size = len(body)  # what CREDIT counts: the line with `\r`, without `\n`
    assert parsed == frame
    assert encode_frame(parsed) == line


def test_unknown_type_parses_as_unknown():
    frame = parse_frame(
        b'{"type":"GOSSIP","id":"01KAZ2J2NV0000000000000001","origin":"a","sequence":7}'
    )
    assert not frame.known and frame.payload is None and frame.sequence == 7


# --------------------------------------------------------------------------- rev 6, §2


def _ping(**extra) -> bytes:
    d = {"type": "PING", "id": "01KAZ2J2NV0000000000000001", "origin": "a", "sequence": 1}
    d.update(extra)
    return json.dumps(d).encode()


def _event_dict(**override) -> dict:
    payload = {
        "event_id": "01KAZ2J2NV0000000000000002",
        "author": "server-alice",
        "seq": 1,
        "ciphertext": base64.b64encode(b"sealed").decode(),
        "content_hash": "sha256:" + "0" * 64,
        "key_id": "ed25519:AAAAAAAA",
        "signature": base64.b64encode(bytes(64)).decode(),
    }
    payload.update(override)
    return {
        "type": "EVENT",
        "id": "01KAZ2J2NV0000000000000001",
        "origin": "server-alice",
        "sequence": 1,
        "group_id": "g!x",
        "payload": payload,
    }


def _code(line: bytes) -> ErrorCode | None:
    try:
        parse_frame(line)
    except ProtocolError as exc:
        return exc.code
    return None


def test_integers_at_the_signed_64_bit_bounds_are_read():
    assert parse_frame(_ping(payload={"n": INT64_MAX})).type == "PING"
    assert parse_frame(_ping(payload={"n": INT64_MIN})).type == "PING"
    line = json.dumps(_event_dict(seq=INT64_MAX)).encode()
    assert parse_frame(line).payload.seq == INT64_MAX


def test_an_integer_outside_the_signed_64_bit_range_is_bad_json():
    # orjson reads 2^63 … 2^64−1 as int and wider ones as float: both are refused,
    # wherever they stand (an unknown field, the payload, a list, the sequence).
    for value in (INT64_MAX + 1, 2**64 - 1, 2**64, 10**30, INT64_MIN - 1, -(2**64) - 1):
        assert _code(_ping(payload={"n": value})) == ErrorCode.BAD_JSON, value
        assert _code(_ping(extra=[[{"deep": value}]])) == ErrorCode.BAD_JSON, value
        assert _code(_ping(sequence=value)) == ErrorCode.BAD_JSON, value
        assert _code(json.dumps(_event_dict(seq=value)).encode()) == ErrorCode.BAD_JSON, value


def test_a_wide_float_is_not_an_integer():
    # 1e19 and 2^64 as a float are numbers, not integer literals: an unknown field may hold them.
    for literal in (b"1e19", b"-1e19", b"18446744073709551616.0", b"1.5e300"):
        line = _ping()[:-1] + b', "x": ' + literal + b"}"
        assert parse_frame(line).type == "PING", literal


_wide = st.integers(min_value=INT64_MAX + 1) | st.integers(max_value=INT64_MIN - 1)


@given(_wide, st.booleans())
def test_any_wide_integer_anywhere_is_bad_json(value, in_payload):
    obj = _event_dict() if in_payload else {"type": "X", "id": "01KAZ2J2NV0000000000000001"}
    obj["payload" if in_payload else "x"] = {**obj.get("payload", {}), "n": [value]}
    assert _code(json.dumps(obj).encode()) == ErrorCode.BAD_JSON


def test_base64_must_be_canonical():
    assert b64decode_canonical("QQ==") == b"A"
    assert b64decode_canonical("QUI=") == b"AB"
    assert b64decode_canonical("QUJD") == b"ABC"
    assert b64decode_canonical("") == b""
    # Same bytes, non-zero unused bits: not canonical.
    for bad in ("QR==", "QX==", "QUJ=", "QUL=", "QQ", "QQ=", "QQ==\n", " QQ==", "QQ-_", "Q===", 5):
        assert b64decode_canonical(bad) is None, bad


def test_non_canonical_ciphertext_and_signature_are_bad_frame():
    sig = base64.b64encode(bytes(63) + b"\x01").decode()
    assert sig.endswith("AQ==")
    cases = {
        "ciphertext": "c2VhbB==",  # canonical: c2VhbA== ("seal")
        "signature": sig[:-3] + "R==",  # canonical: …AQ==
    }
    assert base64.b64decode(cases["ciphertext"]) == b"seal"
    assert base64.b64decode(cases["signature"]) == base64.b64decode(sig)
    for name, value in cases.items():
        line = json.dumps(_event_dict(**{name: value})).encode()
        assert _code(line) == ErrorCode.BAD_FRAME, name
    assert _code(json.dumps(_event_dict(signature=sig)).encode()) is None


def test_current_is_not_a_server_id():
    assert is_server_id("server-alice") and is_server_id("Current") and is_server_id("current2")
    assert not is_server_id("current")
    assert _code(_ping(origin="current")) == ErrorCode.BAD_FRAME
    assert _code(json.dumps(_event_dict(author="current")).encode()) == ErrorCode.BAD_FRAME
