"""The sans-IO stream session (PROTOCOL §2, §4), driven without sockets.

Two sessions are piped into each other (``data_to_send`` of one into ``receive_data``
of the other) under a fake clock, or one session is fed hand-written lines by a
:class:`RawPeer` to provoke each ERROR of §4.6. HELLOs are really signed (Ed25519
over the §4.1 signing string) and really verified.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import time

import nacl.exceptions
import nacl.signing
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import MAX_CREDIT, PROTOCOL_VERSION, Event, Frame, Hello, parse_frame
from node.protocol.ids import CROCKFORD, format_rfc3339
from node.protocol.session import (
    CLOSED,
    CLOSING,
    HANDSHAKING,
    UP,
    CreditAvailable,
    Duplicate,
    ErrorReceived,
    ErrorSent,
    EventReceived,
    EventsAcknowledged,
    EventTooLarge,
    HandshakeComplete,
    PongReceived,
    Rejected,
    Role,
    SessionConfig,
    Stalled,
    Stored,
    StreamEnded,
    StreamSession,
    default_new_id,
)
from node.protocol.signing import content_hash, hello_string, key_id_for, key_string

GROUP = "g!test"
T0 = 1_760_000_000.0


# --------------------------------------------------------------------------- helpers


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class Signer:
    """A minimal real signer: a key document and signed HELLOs for one server id."""

    def __init__(self, server_id: str, seed_byte: int) -> None:
        self.server_id = server_id
        self.sk = nacl.signing.SigningKey(bytes([seed_byte]) * 32)
        pub = bytes(self.sk.verify_key)
        self.public_key = _b64(pub)
        self.key_id = key_id_for(pub)
        self.url = ""
        self.valid_until = "2099-01-01T00:00:00.000Z"
        self.key_signature = _b64(
            self.sk.sign(
                key_string(server_id, self.key_id, self.public_key, self.url, self.valid_until)
            ).signature
        )
        self._ids = itertools.count(1)

    def new_id(self, now: float) -> str:
        return ulid_at(now, next(self._ids))

    def hello(
        self,
        to: str,
        now: float,
        *,
        group_id: str = GROUP,
        max_message_size: int = 65536,
        ping_interval_ms: int = 30000,
        version: str = PROTOCOL_VERSION,
        frame_id: str | None = None,
    ) -> Frame:
        fid = frame_id or self.new_id(now)
        ts = format_rfc3339(now)
        sig = self.sk.sign(
            hello_string(
                self.server_id,
                to,
                group_id,
                fid,
                ts,
                self.key_id,
                version,
                max_message_size,
                self.url,
            )
        ).signature
        payload = Hello(
            self.server_id,
            version,
            ["stream", "ack", "credit", "ping"],
            ["*"],
            max_message_size,
            ping_interval_ms,
            self.key_id,
            self.public_key,
            self.url,
            self.valid_until,
            self.key_signature,
            to,
            _b64(sig),
        )
        return Frame("HELLO", fid, self.server_id, 1, payload, group_id, ts)


def authenticator(server_id: str):
    """Verify a HELLO as §4.1 asks (signature, key id, `to`), return a key document."""

    def authenticate(frame: Frame, now: float) -> dict:
        h: Hello = frame.payload
        pub = base64.b64decode(h.public_key)
        if key_id_for(pub) != h.key_id:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "key_id does not match public_key")
        message = hello_string(
            h.server_id,
            h.to,
            frame.group_id,
            frame.id,
            frame.timestamp,
            h.key_id,
            h.version,
            h.max_message_size,
            h.url,
        )
        try:
            nacl.signing.VerifyKey(pub).verify(message, base64.b64decode(h.signature))
        except nacl.exceptions.BadSignatureError:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "bad HELLO signature") from None
        if h.to != server_id:
            raise ProtocolError(ErrorCode.AUTH_FAILED, f"HELLO is for {h.to}")
        return {"server_id": h.server_id, "key_id": h.key_id}

    return authenticate


def ulid_at(now: float, n: int) -> str:
    """A canonical ULID: ``now`` in ms, then a counter (deterministic, unique)."""
    value = (int(now * 1000) << 80) | n
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


_event_counter = itertools.count(1)


def make_event(author: str = "server-alice", size: int = 32, n: int | None = None) -> Event:
    if n is None:
        n = next(_event_counter)
    ciphertext = hashlib.sha256(b"%d" % n).digest() * (size // 32 + 1)
    ciphertext = ciphertext[:size]
    return Event(
        event_id=ulid_at(T0, n),
        author=author,
        seq=n,
        ciphertext=_b64(ciphertext),
        content_hash=content_hash(ciphertext),
        key_id="ed25519:AAAAAAAA",
        signature=_b64(bytes(64)),
    )


def frames_of(data: bytes) -> list[Frame]:
    return [parse_frame(line) for line in data.split(b"\n") if line]


def of_type(events, cls) -> list:
    return [e for e in events if isinstance(e, cls)]


class Side:
    """One session plus what it told us; stores every EVENT at once unless told not to."""

    def __init__(self, session: StreamSession, *, auto: bool = True) -> None:
        self.s = session
        self.auto = auto
        self.log: list = []
        self.pending: list[EventReceived] = []
        self.wire_out: list[bytes] = []

    def handle(self, events: list, now: float) -> None:
        self.log.extend(events)
        for ev in events:
            if isinstance(ev, EventReceived):
                if self.auto:
                    self.log.extend(
                        self.s.event_processed(ev.sequence, Stored(ev.event.event_id), now)
                    )
                else:
                    self.pending.append(ev)

    def process(self, outcome_for=None, now: float = T0, count: int | None = None) -> None:
        take = self.pending[:count] if count is not None else list(self.pending)
        del self.pending[: len(take)]
        for ev in take:
            outcome = outcome_for(ev) if outcome_for else Stored(ev.event.event_id)
            self.log.extend(self.s.event_processed(ev.sequence, outcome, now))

    def out(self, now: float) -> bytes:
        data = self.s.data_to_send(now)
        if data:
            self.wire_out.append(data)
        return data

    def acked_ids(self) -> list[str]:
        return [i for e in of_type(self.log, EventsAcknowledged) for i in e.event_ids]


def new_session(
    server_id: str,
    role: Role,
    clock: Clock,
    signer: Signer,
    *,
    peer_id: str | None = None,
    new_id=None,
    **config,
) -> StreamSession:
    cfg = SessionConfig(
        server_id=server_id,
        group_id=GROUP,
        role=role,
        peer_id=peer_id,
        **config,
    )
    mms = cfg.max_message_size
    ping_ms = int(cfg.ping_interval * 1000)
    return StreamSession(
        cfg,
        make_hello=lambda to, now: signer.hello(
            to, now, max_message_size=mms, ping_interval_ms=max(1000, min(300000, ping_ms))
        ),
        authenticate=authenticator(server_id),
        now=clock.t,
        new_id=new_id or signer.new_id,
    )


ALICE = "server-alice"
BOB = "server-bob"


def make_pair(clock: Clock, *, a_cfg=None, b_cfg=None, a_auto=True, b_auto=True):
    """Alice initiates to Bob. Returns the two sides, not yet connected."""
    a = new_session(ALICE, Role.INITIATOR, clock, Signer(ALICE, 1), peer_id=BOB, **(a_cfg or {}))
    b = new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2), **(b_cfg or {}))
    return Side(a, auto=a_auto), Side(b, auto=b_auto)


def pump(a: Side, b: Side, clock: Clock, *, latency: float = 0.0, rounds: int = 100) -> None:
    """Exchange bytes until both sides are quiet (each delivery takes ``latency``)."""
    for _ in range(rounds):
        da = a.out(clock.t)
        db = b.out(clock.t)
        if not da and not db:
            return
        if latency:
            clock.advance(latency)
        if da:
            b.handle(b.s.receive_data(da, clock.t), clock.t)
        if db:
            a.handle(a.s.receive_data(db, clock.t), clock.t)
    raise AssertionError("sessions never went quiet")


def connected(clock: Clock, **kw) -> tuple[Side, Side]:
    a, b = make_pair(clock, **kw)
    a.s.initiate(clock.t)
    pump(a, b, clock)
    assert a.s.state == UP and b.s.state == UP
    return a, b


class RawPeer:
    """A hand-driven peer that writes exact lines, numbering them itself."""

    def __init__(self, server_id: str = ALICE, seed: int = 1) -> None:
        self.server_id = server_id
        self.signer = Signer(server_id, seed)
        self.seq = 0

    def line(
        self,
        ftype: str,
        payload: dict | None = None,
        *,
        seq: int | None = None,
        origin: str | None = None,
        group_id: str | None = None,
        fid: str | None = None,
        now: float = T0,
    ) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        d = {
            "type": ftype,
            "id": fid or self.signer.new_id(now),
            "origin": origin or self.server_id,
            "sequence": seq,
        }
        if group_id is not None:
            d["group_id"] = group_id
        d["payload"] = payload if payload is not None else {}
        return orjson.dumps(d) + b"\n"

    def hello_line(self, to: str, now: float = T0, **kw) -> bytes:
        self.seq += 1
        frame = self.signer.hello(to, now, **kw)
        frame.sequence = self.seq
        return orjson.dumps(frame.to_dict()) + b"\n"

    def event_line(self, event: Event | None = None, **kw) -> bytes:
        kw.setdefault("group_id", GROUP)
        return self.line("EVENT", (event or make_event(self.server_id)).to_dict(), **kw)


def acceptor_with_raw(clock: Clock, **config) -> tuple[Side, RawPeer, list[Frame]]:
    """Bob (acceptor) after a raw Alice's HELLO; returns Bob's answer frames too."""
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2), **config), auto=False)
    raw = RawPeer()
    bob.handle(bob.s.receive_data(raw.hello_line(BOB, clock.t), clock.t), clock.t)
    assert bob.s.state == UP, bob.log
    return bob, raw, frames_of(bob.out(clock.t))


def fatal_sent(side: Side) -> ErrorSent:
    sent = [e for e in of_type(side.log, ErrorSent) if e.fatal]
    assert len(sent) == 1, side.log
    return sent[0]


def assert_fatal(side: Side, code: ErrorCode, clock: Clock) -> Frame:
    """The session sent exactly one fatal ERROR with ``code`` and ended its side."""
    assert fatal_sent(side).code == code
    ended = of_type(side.log, StreamEnded)
    assert len(ended) == 1 and ended[0].code == code and not ended[0].by_peer
    assert side.s.state == CLOSED and side.s.ended
    out = frames_of(side.out(clock.t))
    errors = [f for f in out if f.type == "ERROR"]
    assert len(errors) == 1 and errors[0].payload.code == code and errors[0].payload.fatal
    assert out[-1].type == "ERROR"  # nothing follows a fatal ERROR
    assert side.s.data_to_send(clock.t) == b""
    return errors[0]


# --------------------------------------------------------------------------- handshake


def test_handshake_initiator_and_acceptor():
    clock = Clock()
    a, b = make_pair(clock)
    a.s.initiate(clock.t)
    first = frames_of(a.out(clock.t))
    assert [f.type for f in first] == ["HELLO"]
    assert first[0].sequence == 1 and first[0].payload.to == BOB
    assert a.s.state == HANDSHAKING

    b.handle(b.s.receive_data(b"".join(a.wire_out), clock.t), clock.t)
    answer = frames_of(b.out(clock.t))
    # The acceptor answers with its HELLO, then a CREDIT (§4.1), numbered from 1.
    assert [f.type for f in answer][:2] == ["HELLO", "CREDIT"]
    assert [f.sequence for f in answer] == list(range(1, len(answer) + 1))
    assert answer[0].payload.to == ALICE and answer[0].payload.server_id == BOB
    assert answer[1].payload.events == 256 and answer[1].payload.bytes == 1 << 20
    assert b.s.peer_id == ALICE and b.s.state == UP
    [hs] = of_type(b.log, HandshakeComplete)
    assert hs.peer_id == ALICE and hs.key_doc == {"server_id": ALICE, "key_id": hs.hello.key_id}

    a.handle(a.s.receive_data(b.wire_out[-1], clock.t), clock.t)
    assert a.s.state == UP and a.s.peer_id == BOB
    reply = frames_of(a.out(clock.t))
    # The initiator sends its CREDIT after reading the acceptor's HELLO.
    assert reply[0].type == "CREDIT" and reply[0].sequence == 2
    assert of_type(a.log, HandshakeComplete)[0].peer_id == BOB
    assert a.s.credit_out_events == 256 and a.s.credit_out_bytes == 1 << 20


def test_no_event_before_credit():
    clock = Clock()
    a, b = make_pair(clock)
    a.s.initiate(clock.t)
    assert not a.s.send_event(make_event(), clock.t)  # handshaking, no credit
    b.handle(b.s.receive_data(a.out(clock.t), clock.t), clock.t)
    assert b.s.state == UP
    # Bob has answered but not yet read Alice's CREDIT: he may not send.
    assert not b.s.send_event(make_event(BOB), clock.t)
    assert b.s.credit_out_events == 0


def test_events_both_ways_are_acknowledged():
    clock = Clock()
    a, b = connected(clock)
    sent_a = [make_event(ALICE) for _ in range(10)]
    sent_b = [make_event(BOB) for _ in range(7)]
    assert all(a.s.send_event(e, clock.t) for e in sent_a)
    assert all(b.s.send_event(e, clock.t) for e in sent_b)
    pump(a, b, clock)
    clock.advance(0.01)
    a.handle(a.s.tick(clock.t), clock.t)
    b.handle(b.s.tick(clock.t), clock.t)
    pump(a, b, clock)
    assert [e.event.event_id for e in of_type(b.log, EventReceived)] == [e.event_id for e in sent_a]
    assert a.acked_ids() == [e.event_id for e in sent_a]
    assert b.acked_ids() == [e.event_id for e in sent_b]
    assert a.s.unacked == 0 and b.s.unacked == 0
    assert a.s.counters.events_out == 10 and b.s.counters.events_in == 10
    assert a.s.ack_lag(clock.t) is None


# --------------------------------------------------------------------------- ACK


def _ack_frames(data: bytes) -> list[Frame]:
    return [f for f in frames_of(data) if f.type == "ACK"]


def test_ack_coalescing_32_at_once_else_5ms():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    events = [make_event(ALICE) for _ in range(40)]
    assert all(a.s.send_event(e, clock.t) for e in events)
    b.handle(b.s.receive_data(a.out(clock.t), clock.t), clock.t)
    assert len(b.pending) == 40
    seqs = [ev.sequence for ev in b.pending]

    b.process(count=31, now=clock.t)
    assert _ack_frames(b.s.data_to_send(clock.t)) == []  # not 32 yet, not 5 ms yet
    b.handle(b.s.tick(clock.t + 0.004), clock.t + 0.004)
    assert _ack_frames(b.s.data_to_send(clock.t)) == []

    b.process(count=1, now=clock.t + 0.004)
    [ack] = _ack_frames(b.s.data_to_send(clock.t + 0.004))  # 32: at once
    assert ack.payload.through == seqs[31]
    assert ack.payload.event_ids == [e.event_id for e in events[:32]]

    clock.advance(0.01)
    b.process(count=3, now=clock.t)
    assert _ack_frames(b.s.data_to_send(clock.t)) == []
    assert b.s.next_deadline() == pytest.approx(clock.t + 0.005)
    b.handle(b.s.tick(clock.t + 0.0049), clock.t)
    assert _ack_frames(b.s.data_to_send(clock.t)) == []
    b.handle(b.s.tick(clock.t + 0.005), clock.t)
    [ack] = _ack_frames(b.s.data_to_send(clock.t + 0.005))
    assert ack.payload.through == seqs[34]
    assert ack.payload.event_ids == [e.event_id for e in events[32:35]]


def test_ack_goes_at_once_when_nothing_else_is_being_checked():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    e1, e2 = make_event(ALICE), make_event(ALICE)
    assert a.s.send_event(e1, clock.t)
    b.handle(b.s.receive_data(a.out(clock.t), clock.t), clock.t)
    b.process(count=1, now=clock.t)
    [ack] = _ack_frames(b.s.data_to_send(clock.t))  # no 5 ms wait: nothing to coalesce
    assert ack.payload.event_ids == [e1.event_id]
    # With another EVENT still in the store's hands, the 5 ms coalescing applies.
    assert a.s.send_event(e2, clock.t) and a.s.send_event(make_event(ALICE), clock.t)
    b.handle(b.s.receive_data(a.out(clock.t), clock.t), clock.t)
    b.process(count=1, now=clock.t)
    assert _ack_frames(b.s.data_to_send(clock.t)) == []


def test_ack_never_passes_an_event_still_in_flight():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    e1, e2, e3 = (make_event(ALICE) for _ in range(3))
    for e in (e1, e2, e3):
        assert a.s.send_event(e, clock.t)
    b.handle(b.s.receive_data(a.out(clock.t), clock.t), clock.t)
    r1, r2, r3 = b.pending
    mark = len(b.wire_out)
    # The store finishes 2 and 3 before 1: nothing may be acknowledged yet.
    b.log += b.s.event_processed(r3.sequence, Stored(e3.event_id), clock.t)
    b.log += b.s.event_processed(r2.sequence, Duplicate(), clock.t)
    b.handle(b.s.tick(clock.t + 1), clock.t + 1)
    assert _ack_frames(b.out(clock.t + 1)) == []
    b.log += b.s.event_processed(r1.sequence, Stored(e1.event_id), clock.t + 1)
    b.handle(b.s.tick(clock.t + 1.01), clock.t + 1.01)
    [ack] = _ack_frames(b.out(clock.t + 1.01))
    assert ack.payload.through == r3.sequence
    assert ack.payload.event_ids == [e1.event_id, e3.event_id]  # not the duplicate
    a.handle(a.s.receive_data(b"".join(b.wire_out[mark:]), clock.t + 1.02), clock.t + 1.02)
    assert a.acked_ids() == [e1.event_id, e2.event_id, e3.event_id]


def _line(frame: Frame) -> list[bytes]:
    return [orjson.dumps(frame.to_dict()) + b"\n"]


def test_event_processed_for_unknown_sequence_is_a_caller_bug():
    clock = Clock()
    _a, b = connected(clock)
    with pytest.raises(ValueError):
        b.s.event_processed(99, Duplicate(), clock.t)


# --------------------------------------------------------------------------- CREDIT


def test_one_event_window_blocks_sender_until_receiver_processes():
    clock = Clock()
    a, b = connected(clock, b_cfg={"initial_credit_events": 1}, b_auto=False)
    assert a.s.credit_out_events == 1
    e1, e2 = make_event(ALICE), make_event(ALICE)
    assert a.s.send_event(e1, clock.t)
    assert not a.s.send_event(e2, clock.t)  # sender must wait
    assert not a.s.credit_available(10)
    pump(a, b, clock)
    assert len(b.pending) == 1 and b.s.credit_in_events == 0
    assert not a.s.send_event(e2, clock.t)
    b.process(now=clock.t)
    pump(a, b, clock)  # below half the window: Bob grants at once
    assert of_type(a.log, CreditAvailable)
    assert a.s.credit_out_events == 1
    assert a.s.send_event(e2, clock.t)
    pump(a, b, clock)
    assert [ev.event.event_id for ev in b.pending] == [e2.event_id]


def test_byte_window_blocks_sender():
    clock = Clock()
    a, b = connected(clock, b_cfg={"initial_credit_bytes": 3000}, b_auto=False)
    big = make_event(ALICE, size=900)
    assert a.s.send_event(big, clock.t)
    assert not a.s.send_event(make_event(ALICE, size=900), clock.t)
    assert a.s.send_event(make_event(ALICE, size=10), clock.t)
    pump(a, b, clock)
    sizes = sum(ev.size for ev in b.pending)
    assert b.s.credit_in_bytes == 3000 - sizes
    assert a.s.credit_out_bytes == 3000 - sizes  # both sides count the same bytes


def test_credit_top_up_within_250ms_when_above_half():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    assert a.s.send_event(make_event(ALICE), clock.t)
    pump(a, b, clock)
    b.process(now=clock.t)
    # Still well above half the window: no grant at once ...
    assert [f for f in frames_of(b.s.data_to_send(clock.t)) if f.type == "CREDIT"] == []
    assert b.s.next_deadline() <= clock.t + 0.25
    clock.advance(0.25)
    b.handle(b.s.tick(clock.t), clock.t)
    grants = [f for f in frames_of(b.s.data_to_send(clock.t)) if f.type == "CREDIT"]
    # ... but within 250 ms of processing, up to processed + window.
    assert len(grants) == 1 and grants[0].payload.events == 1
    assert b.s.credit_in_events == 256


def test_over_credit_event_is_flow_control_violation():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock, initial_credit_events=2)
    data = raw.event_line() + raw.event_line() + raw.event_line()
    bob.handle(bob.s.receive_data(data, clock.t), clock.t)
    assert len(bob.pending) == 2
    error = assert_fatal(bob, ErrorCode.FLOW_CONTROL_VIOLATION, clock)
    assert error.payload.ref is not None


def test_over_credit_bytes_is_flow_control_violation():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock, initial_credit_bytes=300)
    bob.handle(bob.s.receive_data(raw.event_line(make_event(size=400)), clock.t), clock.t)
    assert bob.pending == []
    assert_fatal(bob, ErrorCode.FLOW_CONTROL_VIOLATION, clock)


def test_credit_overflow_is_flow_control_violation():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    ok = raw.line("CREDIT", {"events": MAX_CREDIT, "bytes": 10})
    bob.handle(bob.s.receive_data(ok, clock.t), clock.t)
    assert bob.s.credit_out_events == MAX_CREDIT
    bob.handle(bob.s.receive_data(raw.line("CREDIT", {"events": 1, "bytes": 0}), clock.t), 0)
    assert_fatal(bob, ErrorCode.FLOW_CONTROL_VIOLATION, clock)


def test_negative_credit_is_flow_control_violation():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    bob.handle(bob.s.receive_data(raw.line("CREDIT", {"events": -1, "bytes": 0}), 0), 0)
    assert_fatal(bob, ErrorCode.FLOW_CONTROL_VIOLATION, clock)


def test_credit_counts_the_carriage_return():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    line = raw.event_line()
    crlf = line[:-1] + b"\r\n"
    bob.handle(bob.s.receive_data(crlf, clock.t), clock.t)
    [ev] = bob.pending
    assert ev.size == len(line)  # the line without `\n`, with `\r`
    assert bob.s.credit_in_bytes == (1 << 20) - len(line)


# --------------------------------------------------------------------------- §4.6 codes


def test_bad_json():
    for junk in (b"not json\n", b"[1, 2]\n", b'{"type": "PING"\n', b"\xff\xfe{}\n"):
        clock = Clock()
        bob, _raw, _ = acceptor_with_raw(clock)
        bob.handle(bob.s.receive_data(junk, clock.t), clock.t)
        assert_fatal(bob, ErrorCode.BAD_JSON, clock)


def test_bad_json_before_hello():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    bob.handle(bob.s.receive_data(b"hello?\n", clock.t), clock.t)
    error = assert_fatal(bob, ErrorCode.BAD_JSON, clock)
    assert error.sequence == 1  # a fatal ERROR may be the first and only frame


def test_integer_outside_64_bits_is_bad_json_not_answered():
    # rev 6 (§2): a PING holding 2^63 is not answered with a PONG.
    for value in (2**63, 2**64, -(2**63) - 1):
        clock = Clock()
        bob, raw, _ = acceptor_with_raw(clock)
        line = raw.line("PING")[:-2] + b',"n":%d}\n' % value
        bob.handle(bob.s.receive_data(line, clock.t), clock.t)
        assert fatal_sent(bob).code == ErrorCode.BAD_JSON
        assert [f.type for f in frames_of(bob.out(clock.t))] == ["ERROR"]  # no PONG


def test_non_canonical_base64_in_an_event_is_bad_frame():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    event = make_event(ALICE).to_dict()
    text = event["ciphertext"]
    assert text.endswith("=") and not text.endswith("==")  # 2 bits of the last char unused
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[-2])
    event["ciphertext"] = text[:-2] + alphabet[(last & ~3) | 1] + "="
    assert base64.b64decode(event["ciphertext"]) == base64.b64decode(text)
    bob.handle(bob.s.receive_data(raw.line("EVENT", event, group_id=GROUP), clock.t), clock.t)
    assert not of_type(bob.log, EventReceived)
    assert_fatal(bob, ErrorCode.BAD_FRAME, clock)


def test_hello_from_the_reserved_server_id_current_is_bad_frame():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    raw = RawPeer("current", 7)
    bob.handle(bob.s.receive_data(raw.hello_line(BOB, clock.t), clock.t), clock.t)
    assert bob.s.peer_id is None and not of_type(bob.log, HandshakeComplete)
    assert_fatal(bob, ErrorCode.BAD_FRAME, clock)


def test_bad_frame_missing_field_refs_the_frame():
    clock = Clock()
    bob, _raw, _ = acceptor_with_raw(clock)
    fid = ulid_at(T0, 999)
    line = orjson.dumps({"type": "ACK", "id": fid, "origin": ALICE, "sequence": 2, "payload": {}})
    bob.handle(bob.s.receive_data(line + b"\n", clock.t), clock.t)
    assert assert_fatal(bob, ErrorCode.BAD_FRAME, clock).payload.ref == fid


def test_bad_frame_origin_mismatch():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    bob.handle(bob.s.receive_data(raw.line("PING", origin="server-mallory"), clock.t), 0)
    assert_fatal(bob, ErrorCode.BAD_FRAME, clock)


def test_bad_frame_hello_server_id_not_origin():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    raw = RawPeer()
    d = orjson.loads(raw.hello_line(BOB, clock.t))
    d["origin"] = "server-carol"
    bob.handle(bob.s.receive_data(orjson.dumps(d) + b"\n", clock.t), clock.t)
    assert_fatal(bob, ErrorCode.BAD_FRAME, clock)


@pytest.mark.parametrize("ftype", ["EVENT", "PING", "HELLO"])
def test_bad_frame_wrong_group(ftype):
    clock = Clock()
    if ftype == "HELLO":
        bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
        line = RawPeer().hello_line(BOB, clock.t, group_id="g!other")
    else:
        bob, raw, _ = acceptor_with_raw(clock)
        if ftype == "EVENT":
            line = raw.event_line(group_id="g!other")
        else:
            line = raw.line("PING", group_id="g!other")
    bob.handle(bob.s.receive_data(line, clock.t), clock.t)
    assert_fatal(bob, ErrorCode.BAD_FRAME, clock)
    assert bob.pending == []


@pytest.mark.parametrize("ftype", ["FROBNICATE", "CHECKPOINT"])
def test_unknown_type_is_non_fatal_and_consumes_a_sequence(ftype):
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    fid = ulid_at(T0, 4242)
    strange = raw.line(ftype, {"ranges": []}, group_id=GROUP, fid=fid)
    event = make_event()
    bob.handle(bob.s.receive_data(strange + raw.event_line(event), clock.t), clock.t)
    [sent] = of_type(bob.log, ErrorSent)
    assert sent.code == ErrorCode.UNKNOWN_TYPE and not sent.fatal and sent.ref == fid
    assert bob.s.state == UP
    [ev] = bob.pending  # the next sequence was accepted
    bob.process(now=clock.t)
    bob.handle(bob.s.tick(clock.t + 0.01), clock.t + 0.01)
    out = frames_of(bob.out(clock.t + 0.01))
    [error] = [f for f in out if f.type == "ERROR"]
    assert error.payload.code == "UNKNOWN_TYPE" and error.payload.ref == fid
    assert not error.payload.fatal
    [ack] = [f for f in out if f.type == "ACK"]
    assert ack.payload.through == ev.sequence == 3  # HELLO 1, strange 2, EVENT 3


def test_hello_required_first_frame_not_hello():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    bob.handle(bob.s.receive_data(RawPeer().line("PING"), clock.t), clock.t)
    assert_fatal(bob, ErrorCode.HELLO_REQUIRED, clock)


def test_hello_required_second_hello():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    bob.handle(bob.s.receive_data(raw.hello_line(BOB, clock.t), clock.t), clock.t)
    assert_fatal(bob, ErrorCode.HELLO_REQUIRED, clock)


def test_hello_required_late():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    assert bob.s.next_deadline() == pytest.approx(T0 + 10)
    bob.handle(bob.s.tick(T0 + 9.99), T0 + 9.99)
    assert bob.s.state == HANDSHAKING
    bob.handle(bob.s.tick(T0 + 10), T0 + 10)
    assert_fatal(bob, ErrorCode.HELLO_REQUIRED, clock)


@pytest.mark.parametrize("role", [Role.ACCEPTOR, Role.INITIATOR])
def test_keepalive_waits_for_the_handshake(role):
    """rev 6 (§4.1, §4.5): with a 1 s ping interval a silent new stream is not dead at
    3 s; only the 10 s HELLO deadline applies, and no PING goes out before it."""
    clock = Clock()
    peer = BOB if role is Role.INITIATOR else None
    side = Side(new_session(ALICE, role, clock, Signer(ALICE, 1), peer_id=peer, ping_interval=1.0))
    if role is Role.INITIATOR:
        side.s.initiate(clock.t)
        assert [f.type for f in frames_of(side.out(clock.t))] == ["HELLO"]
    assert side.s.next_deadline() == pytest.approx(T0 + 10)
    for t in (T0 + 1, T0 + 3, T0 + 3.5, T0 + 6, T0 + 9.99):
        side.handle(side.s.tick(t), t)
        assert side.s.state == HANDSHAKING and not side.s.ended, side.log
        assert side.out(t) == b""  # no PING, no TIMEOUT
        assert side.s.next_deadline() == pytest.approx(T0 + 10)
    clock.t = T0 + 10
    side.handle(side.s.tick(clock.t), clock.t)
    assert_fatal(side, ErrorCode.HELLO_REQUIRED, clock)


def test_keepalive_starts_at_the_handshake():
    clock = Clock(T0 + 5)  # the stream opened at T0; HELLO read 5 s later
    bob = Side(new_session(BOB, Role.ACCEPTOR, Clock(), Signer(BOB, 2), ping_interval=1.0))
    bob.handle(bob.s.receive_data(RawPeer().hello_line(BOB, clock.t), clock.t), clock.t)
    assert bob.s.state == UP
    assert "PING" in [f.type for f in frames_of(bob.out(clock.t))]
    bob.handle(bob.s.tick(T0 + 7.99), T0 + 7.99)
    assert bob.s.state == UP
    clock.t = T0 + 8
    bob.handle(bob.s.tick(clock.t), clock.t)
    assert_fatal(bob, ErrorCode.TIMEOUT, clock)


def test_hello_required_initiator_never_answered():
    clock = Clock()
    a, _ = make_pair(clock)
    a.s.initiate(clock.t)
    a.out(clock.t)
    a.handle(a.s.tick(T0 + 10), T0 + 10)
    assert_fatal(a, ErrorCode.HELLO_REQUIRED, clock)


def test_version_unsupported():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    line = RawPeer().hello_line(BOB, clock.t, version="2.0.0")
    bob.handle(bob.s.receive_data(line, clock.t), clock.t)
    assert_fatal(bob, ErrorCode.VERSION_UNSUPPORTED, clock)


def test_minor_version_difference_is_accepted():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    line = RawPeer().hello_line(BOB, clock.t, version="1.3.0")
    bob.handle(bob.s.receive_data(line, clock.t), clock.t)
    assert bob.s.state == UP


def test_auth_failed_bad_signature_passes_through():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    d = orjson.loads(RawPeer().hello_line(BOB, clock.t))
    d["payload"]["signature"] = _b64(bytes(64))
    bob.handle(bob.s.receive_data(orjson.dumps(d) + b"\n", clock.t), clock.t)
    error = assert_fatal(bob, ErrorCode.AUTH_FAILED, clock)
    assert error.payload.ref == d["id"]
    assert bob.s.peer_hello is None


def test_auth_failed_hello_for_someone_else():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    bob.handle(bob.s.receive_data(RawPeer().hello_line("server-carol", clock.t), 0), 0)
    assert_fatal(bob, ErrorCode.AUTH_FAILED, clock)


def test_auth_failed_initiator_answered_by_another_server():
    clock = Clock()
    a, _ = make_pair(clock)
    a.s.initiate(clock.t)
    a.out(clock.t)
    carol = RawPeer("server-carol", 3)  # answers in Bob's place, validly signed
    a.handle(a.s.receive_data(carol.hello_line(ALICE, clock.t), clock.t), clock.t)
    assert_fatal(a, ErrorCode.AUTH_FAILED, clock)


def test_authenticator_crash_is_internal_not_an_exception():
    clock = Clock()

    def broken(frame, now):
        raise RuntimeError("keystore unavailable")

    cfg = SessionConfig(server_id=BOB, group_id=GROUP, role=Role.ACCEPTOR)
    s = StreamSession(cfg, make_hello=Signer(BOB, 2).hello, authenticate=broken, now=clock.t)
    bob = Side(s)
    bob.handle(s.receive_data(RawPeer().hello_line(BOB, clock.t), clock.t), clock.t)
    assert_fatal(bob, ErrorCode.INTERNAL, clock)


def test_sequence_violation():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    bob.handle(bob.s.receive_data(raw.line("PING", seq=3), clock.t), clock.t)
    assert_fatal(bob, ErrorCode.SEQUENCE_VIOLATION, clock)


def test_sequence_violation_on_hello():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    raw = RawPeer()
    raw.seq = 4
    bob.handle(bob.s.receive_data(raw.hello_line(BOB, clock.t), clock.t), clock.t)
    assert_fatal(bob, ErrorCode.SEQUENCE_VIOLATION, clock)


def _bob_sent_events(count: int) -> tuple[Side, RawPeer, Clock, int]:
    """Bob (acceptor) after sending ``count`` EVENTs to a raw Alice; and his last sequence."""
    clock = Clock()
    bob, raw, answer = acceptor_with_raw(clock)
    bob.handle(
        bob.s.receive_data(raw.line("CREDIT", {"events": 10, "bytes": 1 << 20}), clock.t),
        clock.t,
    )
    for _ in range(count):
        assert bob.s.send_event(make_event(BOB), clock.t)
    sent = answer + frames_of(bob.out(clock.t))
    assert [f.sequence for f in sent] == list(range(1, len(sent) + 1))
    return bob, raw, clock, len(sent)


def test_ack_beyond_what_was_sent_is_sequence_violation():
    bob, raw, clock, last = _bob_sent_events(2)
    bob.handle(bob.s.receive_data(raw.line("ACK", {"through": last + 1}), clock.t), clock.t)
    assert not of_type(bob.log, EventsAcknowledged)
    assert_fatal(bob, ErrorCode.SEQUENCE_VIOLATION, clock)


def test_ack_going_backwards_is_sequence_violation():
    bob, raw, clock, last = _bob_sent_events(2)
    for through in (last, last):  # the same `through` again is fine
        bob.handle(bob.s.receive_data(raw.line("ACK", {"through": through}), clock.t), clock.t)
    assert len(of_type(bob.log, EventsAcknowledged)) == 1 and bob.s.state == UP
    bob.handle(bob.s.receive_data(raw.line("ACK", {"through": last - 1}), clock.t), clock.t)
    assert_fatal(bob, ErrorCode.SEQUENCE_VIOLATION, clock)


def test_ack_of_exactly_what_was_sent_is_fine():
    bob, raw, clock, last = _bob_sent_events(1)
    bob.handle(bob.s.receive_data(raw.line("ACK", {"through": last - 1}), clock.t), clock.t)
    bob.handle(bob.s.receive_data(raw.line("ACK", {"through": last}), clock.t), clock.t)
    assert bob.s.state == UP and bob.s.unacked == 0 and not of_type(bob.log, ErrorSent)


def test_message_too_large_mid_line():
    clock = Clock()
    bob, _raw, _ = acceptor_with_raw(clock, max_message_size=1000)
    bob.handle(bob.s.receive_data(b'{"type":"EVENT",' + b" " * 600, clock.t), clock.t)
    assert bob.s.state == UP  # 616 bytes held, still within the limit
    bob.handle(bob.s.receive_data(b" " * 600, clock.t), clock.t)  # no newline yet
    assert_fatal(bob, ErrorCode.MESSAGE_TOO_LARGE, clock)
    assert bob.s.receive_data(b"more\n", clock.t) == []


def test_lines_before_an_oversized_line_are_still_processed():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock, max_message_size=1000)
    bob.handle(bob.s.receive_data(raw.event_line() + b"x" * 1001, clock.t), clock.t)
    assert len(bob.pending) == 1
    assert_fatal(bob, ErrorCode.MESSAGE_TOO_LARGE, clock)


@pytest.mark.parametrize(
    "code", [ErrorCode.HASH_MISMATCH, ErrorCode.UNKNOWN_KEY, ErrorCode.BAD_SIGNATURE]
)
def test_content_rejection_is_non_fatal_error_with_ref_and_counts_as_processed(code):
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    e1, e2 = make_event(ALICE), make_event(ALICE)
    assert a.s.send_event(e1, clock.t) and a.s.send_event(e2, clock.t)
    pump(a, b, clock)
    r1, r2 = b.pending
    b.process(lambda ev: Rejected(code, "nope") if ev is r1 else Stored(ev.event.event_id))
    [sent] = of_type(b.log, ErrorSent)
    assert sent.code == code and sent.ref == r1.frame_id and not sent.fatal
    clock.advance(0.01)
    b.handle(b.s.tick(clock.t), clock.t)
    out = frames_of(b.out(clock.t))
    types = [f.type for f in out]
    assert types.index("ERROR") < types.index("ACK")  # the rejection is said before the ACK
    [ack] = [f for f in out if f.type == "ACK"]
    assert ack.payload.through == r2.sequence and ack.payload.event_ids == [e2.event_id]
    assert b.s.state == UP
    a.handle(a.s.receive_data(b.wire_out[-1], clock.t), clock.t)
    [got] = of_type(a.log, ErrorReceived)
    assert got.code == code and got.ref == r1.frame_id and not got.fatal
    assert got.event_id == e1.event_id  # the ref resolved to our event
    assert a.acked_ids() == [e1.event_id, e2.event_id]  # covered: the outbox drops both
    assert a.s.state == UP


def test_equivocation_kept_is_stored_and_reported():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    e = make_event(ALICE)
    assert a.s.send_event(e, clock.t)
    pump(a, b, clock)
    [r] = b.pending
    b.process(lambda ev: Stored(ev.event.event_id, equivocation=True))
    [sent] = of_type(b.log, ErrorSent)
    assert sent.code == ErrorCode.EQUIVOCATION and sent.ref == r.frame_id and not sent.fatal
    b.handle(b.s.tick(clock.t + 0.01), clock.t + 0.01)
    out = frames_of(b.out(clock.t + 0.01))
    assert [f.type for f in out] == ["ERROR", "ACK"]
    assert out[1].payload.event_ids == [e.event_id]


def test_equivocation_not_kept_is_a_rejection():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    assert a.s.send_event(make_event(ALICE), clock.t)
    pump(a, b, clock)
    b.process(lambda ev: Rejected(ErrorCode.EQUIVOCATION, "other version kept"))
    [sent] = of_type(b.log, ErrorSent)
    assert sent.code == ErrorCode.EQUIVOCATION and not sent.fatal
    assert b.s.state == UP


def test_fatal_outcome_ends_the_stream():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    assert a.s.send_event(make_event(ALICE), clock.t)
    pump(a, b, clock)
    b.process(lambda ev: Rejected(ErrorCode.OVERLOADED, "store full"))
    assert_fatal(b, ErrorCode.OVERLOADED, clock)


def test_timeout_when_nothing_is_read():
    clock = Clock()
    a, _b = connected(clock, a_cfg={"ping_interval": 1.0})
    a.handle(a.s.tick(clock.t + 2.99), clock.t + 2.99)
    assert a.s.state == UP
    assert a.s.next_deadline() <= clock.t + 3.0
    clock.advance(3.0)
    a.handle(a.s.tick(clock.t), clock.t)
    assert_fatal(a, ErrorCode.TIMEOUT, clock)


def test_no_false_timeout_while_data_flows():
    clock = Clock()
    a, b = connected(clock, a_cfg={"ping_interval": 1.0}, b_cfg={"ping_interval": 1000.0})
    # Bob never pings (1000 s interval); only his ACKs and PONGs reach Alice.
    for _ in range(50):
        clock.advance(0.5)
        assert a.s.send_event(make_event(ALICE), clock.t)
        for side in (a, b):
            side.handle(side.s.tick(clock.t), clock.t)
        pump(a, b, clock)
        clock.advance(0.01)
        b.handle(b.s.tick(clock.t), clock.t)
        pump(a, b, clock)
    assert a.s.state == UP and not of_type(a.log, StreamEnded)
    assert a.s.pings_sent >= 20 and a.s.pongs_received >= 20


def test_shutdown_via_close_and_peer_reads_fatal_error():
    clock = Clock()
    a, b = connected(clock)
    assert a.s.send_event(make_event(ALICE), clock.t)  # queued, not yet handed out
    a.handle(a.s.close(clock.t, ErrorCode.SHUTDOWN, "stopping"), clock.t)
    data = a.out(clock.t)
    out = frames_of(data)
    assert [f.type for f in out] == ["ERROR"]  # the queued EVENT is dropped, not sent
    assert out[0].payload.code == "SHUTDOWN" and out[0].payload.fatal
    [ended] = of_type(a.log, StreamEnded)
    assert ended.code == ErrorCode.SHUTDOWN and not ended.by_peer
    assert not a.s.send_event(make_event(ALICE), clock.t)

    b.handle(b.s.receive_data(data, clock.t), clock.t)
    [got] = of_type(b.log, ErrorReceived)
    assert got.code == ErrorCode.SHUTDOWN and got.fatal and got.message == "stopping"
    [ended] = of_type(b.log, StreamEnded)
    assert ended.by_peer and ended.code == ErrorCode.SHUTDOWN
    assert b.s.state == CLOSED and b.s.data_to_send(clock.t) == b""
    assert b.s.receive_data(b"anything\n", clock.t) == []
    assert b.s.next_deadline() is None


def test_non_fatal_error_read_keeps_the_stream():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    err = {"code": "BAD_SIGNATURE", "message": "x", "ref": None, "fatal": False}
    bob.handle(bob.s.receive_data(raw.line("ERROR", err), clock.t), clock.t)
    [got] = of_type(bob.log, ErrorReceived)
    assert not got.fatal and bob.s.state == UP


def test_fatal_error_as_first_frame_ends_initiator():
    clock = Clock()
    a, _ = make_pair(clock)
    a.s.initiate(clock.t)
    a.out(clock.t)
    err = {"code": "OVERLOADED", "message": "busy", "ref": None, "fatal": True}
    a.handle(a.s.receive_data(RawPeer(BOB, 2).line("ERROR", err), clock.t), clock.t)
    [ended] = of_type(a.log, StreamEnded)
    assert ended.by_peer and ended.code == ErrorCode.OVERLOADED
    assert a.s.state == CLOSED and a.s.data_to_send(clock.t) == b""


# --------------------------------------------------------------------------- PING / PONG


def test_ping_pong_rtt_is_timed_from_the_write():
    clock = Clock()
    a, b = connected(clock, a_cfg={"ping_interval": 5.0})
    clock.advance(5.0)
    a.handle(a.s.tick(clock.t), clock.t)
    clock.advance(1.0)  # queued, but written only now
    ping = a.out(clock.t)
    assert [f.type for f in frames_of(ping)] == ["PING"]
    clock.advance(0.02)
    b.handle(b.s.receive_data(ping, clock.t), clock.t)
    pong = b.out(clock.t)
    [f] = frames_of(pong)
    assert f.type == "PONG" and f.payload.ping_id == frames_of(ping)[0].id
    clock.advance(0.03)
    a.handle(a.s.receive_data(pong, clock.t), clock.t)
    rtts = of_type(a.log, PongReceived)
    assert rtts[-1].rtt == pytest.approx(0.05)
    assert a.s.rtt == pytest.approx(0.05) and len(a.s.rtt_history) == 2  # + the first PING
    assert a.s.pings_sent == 2 and a.s.pongs_received == 2 and a.s.missed_pongs == 0


def test_pong_goes_ahead_of_queued_events():
    clock = Clock()
    a, b = connected(clock)
    events = [make_event(ALICE) for _ in range(5)]
    assert all(a.s.send_event(e, clock.t) for e in events)
    clock.advance(30)
    b.handle(b.s.tick(clock.t), clock.t)
    ping = b.out(clock.t)
    assert [f.type for f in frames_of(ping)] == ["PING"]
    a.handle(a.s.receive_data(ping, clock.t), clock.t)
    out = frames_of(a.out(clock.t))
    assert out[0].type == "PONG"
    assert [f.type for f in out[1:6]] == ["EVENT"] * 5
    assert [f.sequence for f in out] == list(range(out[0].sequence, out[0].sequence + len(out)))
    # Bob accepts all of it: sequences and credit are exact.
    b.handle(b.s.receive_data(b"".join(_line(f)[0] for f in out), clock.t), clock.t)
    assert b.s.state == UP and len(of_type(b.log, EventReceived)) == 5


def test_missed_pongs_are_counted():
    clock = Clock()
    a, _ = connected(clock, a_cfg={"ping_interval": 1.0})
    for _ in range(2):
        clock.advance(1.0)
        a.handle(a.s.tick(clock.t), clock.t)
        a.out(clock.t)
    # The first PING was answered during the handshake; the second was not when the
    # third went out (the third is still within its interval).
    assert a.s.pings_sent == 3 and a.s.pongs_received == 1 and a.s.missed_pongs == 1


def test_stalled_is_reported_not_fatal():
    clock = Clock()
    a, b = connected(clock, a_cfg={"ping_interval": 1.0}, b_auto=False)
    assert a.s.send_event(make_event(ALICE), clock.t)
    pump(a, b, clock)
    for _ in range(40):  # 4 s of PING/PONG, no ACK: Bob never reports the outcome
        clock.advance(0.1)
        for side in (a, b):
            side.handle(side.s.tick(clock.t), clock.t)
        pump(a, b, clock)
    assert [e.stalled for e in of_type(a.log, Stalled)] == [True]
    assert a.s.stalled and a.s.state == UP
    assert a.s.ack_lag(clock.t) == pytest.approx(4.0)
    b.process(now=clock.t)
    clock.advance(0.01)
    b.handle(b.s.tick(clock.t), clock.t)
    pump(a, b, clock)
    assert [e.stalled for e in of_type(a.log, Stalled)] == [True, False]
    assert not a.s.stalled


# --------------------------------------------------------------------------- closing


def test_orderly_close_by_peer_acks_what_was_read_then_ends():
    clock = Clock()
    a, b = connected(clock, b_auto=False)
    sent = [make_event(ALICE) for _ in range(3)]
    assert all(a.s.send_event(e, clock.t) for e in sent)
    a.handle(a.s.close(clock.t), clock.t)  # Alice ends her body in order
    [ended] = of_type(a.log, StreamEnded)
    assert ended.code is None and not ended.by_peer and a.s.state == CLOSING
    pump(a, b, clock)
    assert [f.type for f in frames_of(a.wire_out[-1])].count("ERROR") == 0
    # The EVENTs queued before close() never went out: the outbox replays them.
    assert b.pending == []

    a2, b2 = connected(clock, b_auto=False)
    assert all(a2.s.send_event(e, clock.t) for e in sent)
    pump(a2, b2, clock)
    a2.handle(a2.s.close(clock.t), clock.t)
    pump(a2, b2, clock)
    b2.handle(b2.s.receive_eof(clock.t), clock.t)
    assert b2.s.state == CLOSING and not of_type(b2.log, StreamEnded)
    b2.process(count=2, now=clock.t)
    assert not of_type(b2.log, StreamEnded)
    b2.process(now=clock.t)
    [ended] = of_type(b2.log, StreamEnded)
    assert ended.by_peer and ended.code is None and b2.s.state == CLOSED
    final = frames_of(b2.out(clock.t))
    assert [f.type for f in final] == ["ACK"]
    assert final[0].payload.event_ids == [e.event_id for e in sent]
    a2.handle(a2.s.receive_data(b2.wire_out[-1], clock.t), clock.t)
    assert a2.acked_ids() == [e.event_id for e in sent]  # still read after our close
    a2.handle(a2.s.receive_eof(clock.t), clock.t)
    assert a2.s.state == CLOSED


def test_eof_with_nothing_in_flight_ends_at_once():
    clock = Clock()
    a, _b = connected(clock)
    a.handle(a.s.receive_eof(clock.t), clock.t)
    [ended] = of_type(a.log, StreamEnded)
    assert ended.by_peer and ended.code is None and a.s.state == CLOSED


def test_eof_before_hello():
    clock = Clock()
    bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
    bob.handle(bob.s.receive_eof(clock.t), clock.t)
    assert_fatal(bob, ErrorCode.HELLO_REQUIRED, clock)


def test_last_line_without_newline_at_eof_is_read():
    clock = Clock()
    bob, raw, _ = acceptor_with_raw(clock)
    bob.handle(bob.s.receive_data(raw.event_line()[:-1], clock.t), clock.t)
    assert bob.pending == []
    bob.handle(bob.s.receive_eof(clock.t), clock.t)
    assert len(bob.pending) == 1 and bob.s.state == CLOSING


# --------------------------------------------------------------------------- sending edge


def test_event_larger_than_peer_max_message_size():
    clock = Clock()
    a, _b = connected(clock, b_cfg={"max_message_size": 1000})
    with pytest.raises(EventTooLarge):
        a.s.send_event(make_event(ALICE, size=1000), clock.t)
    assert a.s.queued_events == 0 and a.s.send_event(make_event(ALICE, size=10), clock.t)


def _digit_crossing(grant_bytes: int | None) -> tuple[Side, RawPeer, int]:
    """Alice (initiator, driven by a raw Bob) with next sequence 9, one EVENT queued on
    exactly enough credit, then a PING from Bob whose PONG pushes the EVENT to sequence 10."""
    clock = Clock()
    alice = Side(
        new_session(ALICE, Role.INITIATOR, clock, Signer(ALICE, 1), peer_id=BOB), auto=False
    )
    raw = RawPeer(BOB, 2)
    alice.s.initiate(clock.t)
    alice.out(clock.t)
    alice.handle(alice.s.receive_data(raw.hello_line(ALICE, clock.t), clock.t), clock.t)
    alice.out(clock.t)  # CREDIT 2, PING 3
    for _ in range(5):  # PONGs 4..8
        alice.handle(alice.s.receive_data(raw.line("PING"), clock.t), clock.t)
        alice.out(clock.t)
    assert alice.s._next_seq == 9
    grant = {"events": 2, "bytes": grant_bytes if grant_bytes is not None else 10**6}
    alice.handle(alice.s.receive_data(raw.line("CREDIT", grant), clock.t), clock.t)
    before = alice.s.credit_out_bytes
    event = Event(
        ulid_at(T0, 7),
        ALICE,
        1,
        "AAAA",
        content_hash(b"\0\0\0"),
        "ed25519:AAAAAAAA",
        "A" * 86 + "==",
    )
    assert alice.s.send_event(event, clock.t)
    reserved = before - alice.s.credit_out_bytes
    alice.handle(alice.s.receive_data(raw.line("PING"), clock.t), clock.t)
    return alice, raw, reserved


def test_event_pushed_past_a_power_of_ten_waits_for_credit():
    alice, _, reserved = _digit_crossing(None)
    alice, raw, again = _digit_crossing(reserved)  # credit is exactly the estimate
    assert again == reserved
    out = frames_of(alice.out(T0))
    assert [f.type for f in out] == ["PONG"]  # the EVENT needs one more byte: it waits
    assert alice.s.queued_events == 1
    alice.handle(alice.s.receive_data(raw.line("CREDIT", {"events": 0, "bytes": 1}), T0), T0)
    out = frames_of(alice.out(T0))
    assert [(f.type, f.sequence) for f in out] == [("EVENT", 10)]
    assert alice.s.credit_out_bytes == 0  # consumed exactly the line


# --------------------------------------------------------------------------- robustness


_frame_types = st.sampled_from(
    ["EVENT", "EVENT", "EVENT", "CREDIT", "ACK", "PING", "PONG", "ERROR", "CHECKPOINT", "NOPE"]
)
_text = st.text(st.characters(codec="utf-8"), max_size=20)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _frame_lines(draw, raw: RawPeer, chaos: int) -> bytes:
    """Well-formed frames with plausible payloads; each kind of damage with chaos %."""

    def faulty() -> bool:
        return draw(st.integers(0, 99)) < chaos

    if faulty():
        return raw.hello_line(BOB)  # a second HELLO
    ftype = draw(_frame_types)
    bad = faulty()
    payloads = {
        "CREDIT": st.fixed_dictionaries(
            {
                "events": st.integers(-1 if bad else 0, 300),
                "bytes": st.integers(-1 if bad else 0, 1 << 21),
            }
        ),
        "ACK": st.fixed_dictionaries({"through": st.integers(-1 if bad else 0, 60)}),
        "PING": st.just({}),
        "PONG": st.fixed_dictionaries({"ping_id": st.just(ulid_at(T0, 5))}),
        "ERROR": st.fixed_dictionaries(
            {
                "code": st.sampled_from([c.value for c in ErrorCode]),
                "message": _text,
                "ref": st.none(),
                "fatal": st.just(True) if bad else st.just(False),
            }
        ),
        "EVENT": st.integers(1, 10**6).map(lambda n: make_event(n=n).to_dict()),
    }
    payload = draw(payloads.get(ftype, st.dictionaries(_text, _json_values, max_size=3)))
    seq_jitter = draw(st.sampled_from([1, -1])) if faulty() else 0
    raw.seq += 1
    group = "g!other" if faulty() else draw(st.sampled_from([GROUP, None]))
    if ftype in ("EVENT", "CHECKPOINT") and group is None:
        group = GROUP
    origin = "server-x" if faulty() else ALICE
    line = raw.line(ftype, payload, seq=raw.seq + seq_jitter, group_id=group, origin=origin)
    if faulty():
        cut = draw(st.integers(0, len(line)))
        line = line[:cut] + draw(st.binary(max_size=10)) + b"\n"
    return line


def _check_output(data: bytes, start: int) -> int:
    """Everything a session writes parses, and sequences run on without a gap."""
    for frame in frames_of(data):
        assert frame.sequence == start, (frame, start)
        start += 1
    return start


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_arbitrary_frames_never_raise(data):
    clock = Clock()
    bob, raw, answer = acceptor_with_raw(clock, initial_credit_events=3)
    next_seq = answer[-1].sequence + 1
    chaos = data.draw(st.sampled_from([0, 0, 1, 5, 20]))
    for _ in range(data.draw(st.integers(1, 25))):
        line = data.draw(_frame_lines(raw, chaos))
        cuts = data.draw(st.lists(st.integers(0, len(line)), max_size=3))
        pieces, last = [], 0
        for c in sorted(cuts):
            pieces.append(line[last:c])
            last = c
        pieces.append(line[last:])
        for piece in pieces:
            bob.handle(bob.s.receive_data(piece, clock.t), clock.t)
        action = data.draw(
            st.sampled_from(["none", "process", "process", "tick", "send", "send", "eof"])
        )
        if action == "eof" and data.draw(st.integers(0, 3)):
            action = "none"  # ending the stream early hides the rest: keep it rare
        if action == "process" and bob.pending:
            bob.process(
                lambda ev: data.draw(
                    st.sampled_from(
                        [
                            Stored(ev.event.event_id),
                            Duplicate(),
                            Rejected(ErrorCode.BAD_SIGNATURE),
                            Stored(ev.event.event_id, True),
                        ]
                    )
                ),
                now=clock.t,
            )
        elif action == "tick":
            clock.advance(data.draw(st.sampled_from([0.001, 0.005, 0.3, 29.0, 31.0, 95.0])))
            bob.handle(bob.s.tick(clock.t), clock.t)
        elif action == "send":
            bob.s.send_event(make_event(BOB), clock.t)
        elif action == "eof":
            bob.handle(bob.s.receive_eof(clock.t), clock.t)
        next_seq = _check_output(bob.s.data_to_send(clock.t), next_seq)
        assert bob.s.credit_in_events >= 0
        assert bob.s.in_flight == len(bob.pending) or bob.s.ended
        if bob.s.state == CLOSED:
            break
    event("ended" if bob.s.ended else "still up")
    event(f"EVENTs received: {min(len(of_type(bob.log, EventReceived)), 5)}+")
    ended = of_type(bob.log, StreamEnded)
    assert len(ended) <= 1
    fatal = [e for e in of_type(bob.log, ErrorSent) if e.fatal]
    assert len(fatal) <= 1


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=6))
def test_arbitrary_bytes_never_raise(blob, chunking):
    clock = Clock()
    for with_hello in (False, True):
        if with_hello:
            bob, _, _ = acceptor_with_raw(clock, max_message_size=1200)
        else:
            bob = Side(new_session(BOB, Role.ACCEPTOR, clock, Signer(BOB, 2)))
        pos = 0
        for n in [*chunking, len(blob)]:
            bob.handle(bob.s.receive_data(blob[pos : pos + n], clock.t), clock.t)
            pos += n
        bob.handle(bob.s.receive_eof(clock.t), clock.t)
        frames_of(bob.s.data_to_send(clock.t))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_two_sessions_deliver_every_event_exactly_once(data):
    """Random windows, chunking, processing order, outcomes and timing: every EVENT
    sent is received once and acknowledged once, and nothing ever violates the
    contract (any fatal ERROR would end a stream and fail the checks)."""
    clock = Clock()
    window = data.draw(st.integers(1, 5))
    a, b = make_pair(
        clock,
        b_cfg={
            "initial_credit_events": window,
            "initial_credit_bytes": data.draw(st.integers(1100, 4000)),
        },
        b_auto=False,
    )
    a.s.initiate(clock.t)
    pump(a, b, clock)
    sizes = data.draw(st.lists(st.integers(0, 400), min_size=1, max_size=30))
    to_send = [make_event(ALICE, size=size, n=i + 1) for i, size in enumerate(sizes)]
    outcomes = [
        Stored,
        lambda _id: Duplicate(),
        lambda _id: Rejected(ErrorCode.BAD_SIGNATURE, "x"),
    ]
    rejected: set[str] = set()
    sent = 0

    def send() -> None:
        nonlocal sent
        while sent < len(to_send) and a.s.send_event(to_send[sent], clock.t):
            sent += 1

    def process(pending: list[EventReceived], choose) -> None:
        for ev in pending:
            outcome = choose(ev)
            if isinstance(outcome, Rejected):
                rejected.add(ev.event.event_id)
            b.log.extend(b.s.event_processed(ev.sequence, outcome, clock.t))

    for _ in range(data.draw(st.integers(0, 60))):
        step = data.draw(st.sampled_from(["send", "deliver", "process", "tick"]))
        if step == "send":
            send()
        elif step == "deliver":
            for src, dst in ((a, b), (b, a)):
                chunk = src.out(clock.t)
                for piece in _split(chunk, data.draw(st.lists(st.integers(0, 2000), max_size=3))):
                    dst.handle(dst.s.receive_data(piece, clock.t), clock.t)
        elif step == "process" and b.pending:
            order = data.draw(st.permutations(b.pending))
            done = order[: data.draw(st.integers(1, len(order)))]
            b.pending = [ev for ev in b.pending if ev not in done]
            process(
                done,
                lambda ev: data.draw(st.sampled_from(outcomes))(ev.event.event_id),
            )
        elif step == "tick":
            clock.advance(data.draw(st.sampled_from([0.001, 0.005, 0.25, 1.0])))
            for side in (a, b):
                side.handle(side.s.tick(clock.t), clock.t)
    for _ in range(len(to_send) + 10):  # drain: everything must get through
        send()
        pump(a, b, clock)
        done, b.pending = b.pending, []
        process(done, lambda ev: Stored(ev.event.event_id))
        clock.advance(0.25)
        for side in (a, b):
            side.handle(side.s.tick(clock.t), clock.t)
        pump(a, b, clock)
        if sent == len(to_send) and a.s.unacked == 0:
            break
    assert all(not e.fatal for e in of_type(a.log, ErrorSent) + of_type(b.log, ErrorSent))
    assert not of_type(a.log, StreamEnded) and not of_type(b.log, StreamEnded)
    expected = [e.event_id for e in to_send]
    assert [e.event.event_id for e in of_type(b.log, EventReceived)] == expected
    assert a.acked_ids() == expected
    refs = {e.ref for e in of_type(a.log, ErrorReceived)}
    assert len(refs) == len(rejected)  # one non-fatal ERROR per rejected EVENT


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return [p for p in pieces if p]


# --------------------------------------------------------------------------- throughput


def test_throughput_two_sessions_in_process(capsys):
    """Frames/s of two sessions exchanging EVENTs (no crypto, no store): the core's cost."""
    clock = Clock()
    fast = {"new_id": default_new_id}  # the production id source, not the test's
    a, b = connected(clock, a_cfg=fast, b_cfg=fast)
    n = 20_000
    events = [make_event(ALICE, size=200) for _ in range(n)]
    started = time.perf_counter()
    sent = 0
    while sent < n or a.s.unacked:
        while sent < n and a.s.send_event(events[sent], clock.t):
            sent += 1
        pump(a, b, clock)
        clock.advance(0.005)
        b.handle(b.s.tick(clock.t), clock.t)
    elapsed = time.perf_counter() - started
    assert a.acked_ids() == [e.event_id for e in events]
    frames = a.s.counters.frames_out + b.s.counters.frames_out
    with capsys.disabled():
        print(
            f"\n[session throughput] {n} EVENTs in {elapsed:.3f} s: "
            f"{n / elapsed:,.0f} events/s, {frames / elapsed:,.0f} frames/s "
            f"(both directions, {frames} frames)"
        )
    assert n / elapsed > 5_000
