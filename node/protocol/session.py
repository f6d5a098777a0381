"""The sans-IO state machine of one federation stream, both roles (PROTOCOL §2, §4).

Modelled on h2/h11: the shell feeds it bytes, end-of-stream, the outcome of each
EVENT's content checks and the time; it answers with :class:`SessionEvent` values
and bytes to write. It never touches a socket, a clock or the store, so every rule
of the contract can be tested by piping two sessions into each other with a fake
clock, and the same code runs under any transport.

The shell's loop is::

    events = session.receive_data(chunk, now)   # or receive_eof / tick / event_processed
    ... act on events (store EventReceived, call event_processed after the commit) ...
    write(session.data_to_send(now))            # after *every* call above
    sleep until session.next_deadline(), then session.tick(now)

Outgoing frames are numbered when :meth:`StreamSession.data_to_send` hands them out,
not when they are queued, so a PONG or ACK queued after some EVENTs still goes first
with correct sequence numbers (§4.5 "ahead of queued EVENTs").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

import orjson

from node.protocol.acks import InboundAcks, OutboundAcks
from node.protocol.credit import InboundCredit, OutboundCredit
from node.protocol.decoder import LineDecoder
from node.protocol.errors import ErrorCode, ProtocolError, is_fatal
from node.protocol.frames import (
    MAX_CREDIT,
    Ack,
    Error,
    Event,
    Frame,
    Hello,
    Ping,
    Pong,
    frame_from_dict,
    frame_id_of,
    loads_object,
)
from node.protocol.ids import is_group_id, is_server_id, new_ulid
from node.protocol.keepalive import DEAD_AFTER_INTERVALS, Keepalive


class SessionState(StrEnum):
    """Where a stream's session stands, in the words the dashboard shows."""

    HANDSHAKING = "handshaking"
    UP = "up"
    CLOSING = "closing"  # one side ended in order; waiting for the other
    CLOSED = "closed"


HANDSHAKING = SessionState.HANDSHAKING
UP = SessionState.UP
CLOSING = SessionState.CLOSING
CLOSED = SessionState.CLOSED

_SEQ_KEY = b',"sequence":'


class Role(Enum):
    INITIATOR = "initiator"
    ACCEPTOR = "acceptor"


@dataclass(slots=True)
class SessionConfig:
    server_id: str
    group_id: str
    role: Role
    # Initiator: the server it addressed (its HELLO `to`). Acceptor: None, learnt from HELLO.
    peer_id: str | None = None
    max_message_size: int = 65536  # bounds what we read; announced in our HELLO
    ping_interval: float = 30.0  # seconds; announced in our HELLO
    initial_credit_events: int = 256
    initial_credit_bytes: int = 1 << 20
    hello_timeout: float = 10.0
    ack_delay: float = 0.005
    ack_batch: int = 32
    credit_delay: float = 0.25
    # Called for every frame read or handed out: (direction "in"/"out", type, sequence,
    # line size, payload object or None). For the dashboard's frame log; None costs nothing.
    frame_observer: Callable[[str, str, int, int, Any], None] | None = None

    def __post_init__(self) -> None:
        if not is_server_id(self.server_id):
            raise ValueError(f"invalid server id {self.server_id!r}")
        if not is_group_id(self.group_id):
            raise ValueError(f"invalid group id {self.group_id!r}")
        if self.role is Role.INITIATOR and not is_server_id(self.peer_id):
            raise ValueError("an initiator must know the server id it addresses")
        if not 1 <= self.max_message_size <= MAX_CREDIT:
            raise ValueError("max_message_size out of range")
        if self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive")


# --------------------------------------------------------------------------- outcomes


# The ingest (node.storage.ingest) returns these very values, so the shell hands them
# over unchanged. ``event_id`` names the event each is about; the session itself reads
# only what each docstring says.


@dataclass(frozen=True, slots=True)
class Stored:
    """The EVENT was newly stored (durably). ``equivocation``: kept, but also reported;
    ``message`` is then the ingest's account of it (a one-shot ``send`` returns it)."""

    event_id: str
    equivocation: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Already stored with the same content hash: acknowledged, not stored again."""

    event_id: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A content check failed; a non-fatal code sends ERROR(ref) and counts as processed."""

    code: ErrorCode
    message: str = ""
    event_id: str = ""


Outcome = Stored | Duplicate | Rejected


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    peer_id: str
    hello: Hello
    key_doc: object


@dataclass(frozen=True, slots=True)
class EventReceived:
    """Run the content checks, store, then report with :meth:`StreamSession.event_processed`."""

    sequence: int
    frame_id: str
    event: Event
    size: int


@dataclass(frozen=True, slots=True)
class EventsAcknowledged:
    """Our sent EVENTs now covered by the peer's cumulative ACK: drop them from the outbox."""

    event_ids: list[str]


@dataclass(frozen=True, slots=True)
class CreditAvailable:
    """The peer granted credit: more EVENTs may be sent."""


@dataclass(frozen=True, slots=True)
class PongReceived:
    rtt: float


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    code: str  # as written by the peer; an ErrorCode when it is one we know
    message: str
    ref: str | None
    fatal: bool
    event_id: str | None = None  # when `ref` is one of our unacknowledged EVENT frames


@dataclass(frozen=True, slots=True)
class ErrorSent:
    """We queued an ERROR frame (for the log): a protocol violation or a content rejection."""

    code: ErrorCode
    message: str
    ref: str | None
    fatal: bool


@dataclass(frozen=True, slots=True)
class Stalled:
    stalled: bool


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """Our side is over: write what data_to_send() still holds, then end the body."""

    reason: str
    code: ErrorCode | None
    by_peer: bool


SessionEvent = (
    HandshakeComplete
    | EventReceived
    | EventsAcknowledged
    | CreditAvailable
    | PongReceived
    | ErrorReceived
    | ErrorSent
    | Stalled
    | StreamEnded
)


class EventTooLarge(ValueError):
    """The EVENT line exceeds the peer's max_message_size: it can never go on this stream."""


def default_new_id(now: float) -> str:
    """A ULID stamped with ``now`` (the shell passes wall-clock seconds)."""
    return new_ulid(now)


def _control_head(ftype: bytes, frame_id: str, origin: bytes, payload: bytes) -> bytes:
    return b'{"type":"%s","id":"%s","origin":"%s","payload":%s,"sequence":' % (
        ftype,
        frame_id.encode(),
        origin,
        payload,
    )


@dataclass(slots=True)
class _Queued:
    """A frame waiting for its sequence number: ``head + b"%d}\\n" % sequence``."""

    type: str
    head: bytes
    payload: Any
    event_id: str | None = None  # EVENTs: for the ACK bookkeeping
    frame_id: str = ""  # EVENTs: to resolve the `ref` of the peer's ERROR
    reserved: int = 0  # EVENTs: bytes of credit set aside for the line
    ping_id: str | None = None  # PINGs: to time the RTT from the write


@dataclass(slots=True)
class _Counters:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    events_in: int = 0
    events_out: int = 0
    errors_in: int = 0
    errors_out: int = 0


class StreamSession:
    """One stream, one group, one peer. See the module docstring for the shell's loop."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        make_hello: Callable[[str, float], Frame],
        authenticate: Callable[[Frame, float], object],
        now: float,
        new_id: Callable[[float], str] = default_new_id,
    ) -> None:
        self.config = config
        self.role = config.role
        self.state: SessionState = HANDSHAKING
        self.peer_id: str | None = config.peer_id if config.role is Role.INITIATOR else None
        self.peer_hello: Hello | None = None
        self.claimed_peer_id: str | None = None  # the HELLO's server_id, before its check
        self.key_doc: object = None
        self.created_at = now
        self.up_at: float | None = None
        self._make_hello = make_hello
        self._authenticate = authenticate
        self._new_id = new_id
        self._now = now
        self._observer = config.frame_observer

        self._decoder = LineDecoder(config.max_message_size)
        self._in_credit = InboundCredit(config.initial_credit_events, config.initial_credit_bytes)
        self._out_credit = OutboundCredit()
        self._in_acks = InboundAcks()
        self._out_acks = OutboundAcks()
        self._keepalive = Keepalive(config.ping_interval, now)
        self._in_flight: dict[int, tuple[str, int]] = {}  # peer EVENT seq → (frame id, size)
        self._credit_due_at: float | None = None

        self._control: list[_Queued] = []  # goes out first
        self._events: deque[_Queued] = deque()  # each holds one event of credit
        self._reserved_bytes = 0
        self._next_seq = 1
        self._hello_queued = False
        self._peer_max: int | None = None

        origin = config.server_id.encode()
        self._origin = origin
        self._event_mid = b'","origin":"%s","group_id":"%s","payload":' % (
            origin,
            config.group_id.encode(),
        )
        self._hello_deadline = now + config.hello_timeout
        self._stall_after = DEAD_AFTER_INTERVALS * config.ping_interval

        self.ended = False  # our side is over (StreamEnded was emitted)
        self.end_reason: str | None = None
        self.end_code: ErrorCode | None = None
        self.ended_by_peer = False
        self._peer_eof = False
        self.stalled = False
        self.last_error: str | None = None
        self.last_grant_received_at: float | None = None
        self.last_grant_sent_at: float | None = None
        self.counters = _Counters()

    # ------------------------------------------------------------------ inputs

    def initiate(self, now: float) -> None:
        """Initiator: queue our HELLO at once (§4.1)."""
        if self.role is not Role.INITIATOR:
            raise ValueError("only the initiator speaks first")
        self._now = now
        if self._hello_queued or self.ended:
            return
        assert self.peer_id is not None
        self._queue_hello(self.peer_id, now)

    def receive_data(self, data: bytes, now: float) -> list[SessionEvent]:
        self._now = now
        if self.state == CLOSED or self._peer_eof or not data:
            return []
        self._keepalive.read(now)
        self.counters.bytes_in += len(data)
        events: list[SessionEvent] = []
        for item in self._decoder.feed(data):
            if type(item) is bytes:
                self._line(item, now, events)
            else:
                self._violation(item, now, events)
            if self.state == CLOSED:
                break
        return events

    def receive_eof(self, now: float) -> list[SessionEvent]:
        """The peer ended its body without an ERROR: an orderly close (§4.6)."""
        self._now = now
        if self.state == CLOSED or self._peer_eof:
            return []
        events: list[SessionEvent] = []
        if self._decoder.buffered:  # a last line without its `\n`: take it as complete
            for item in self._decoder.feed(b"\n"):
                if type(item) is bytes:
                    self._line(item, now, events)
                if self.state == CLOSED:
                    return events
        self._peer_eof = True
        self._keepalive.stop()
        if self.ended:  # we had closed in order; now both sides are done
            self.state = CLOSED
            return events
        if self.peer_hello is None:
            self._fail(ErrorCode.HELLO_REQUIRED, "stream ended before HELLO", None, events)
            return events
        if self._in_acks.in_flight:
            self.state = CLOSING  # ACK what the shell is still checking, then end
        else:
            self._finish_peer_close(events)
        return events

    def event_processed(self, sequence: int, outcome: Outcome, now: float) -> list[SessionEvent]:
        """Report the content checks of an EventReceived, after any store commit."""
        self._now = now
        entry = self._in_flight.pop(sequence, None)
        if entry is None:
            if self.ended:
                return []
            raise ValueError(f"no EVENT with sequence {sequence} awaits an outcome")
        if self.ended:
            return []
        frame_id, size = entry
        events: list[SessionEvent] = []
        stored_id: str | None = None
        kind = type(outcome)
        if kind is Stored:
            stored_id = outcome.event_id
            if outcome.equivocation:
                self._send_error(
                    ErrorCode.EQUIVOCATION,
                    f"event {stored_id} equivocates; this version is kept",
                    frame_id,
                    events,
                )
        elif kind is Rejected:
            code = ErrorCode(outcome.code)
            message = outcome.message or str(code)
            if is_fatal(code):
                self._fail(code, message, frame_id, events)
                return events
            self._send_error(code, message, frame_id, events)
        self._in_credit.processed(size)
        if self._credit_due_at is None:
            self._credit_due_at = now + self.config.credit_delay
        self._in_acks.event_done(sequence, stored_id, now, self.config.ack_delay)
        if self._peer_eof and not self._in_acks.in_flight:
            self._finish_peer_close(events)
        return events

    def tick(self, now: float) -> list[SessionEvent]:
        """Run the timers; call it at :meth:`next_deadline` (calling early is harmless)."""
        self._now = now
        if self.state == CLOSED:
            return []
        events: list[SessionEvent] = []
        ka = self._keepalive
        if self.ended:  # closed in order by us: wait for the peer's end, but not forever
            if ka.is_dead(now):
                self.state = CLOSED
            return events
        if self.state == HANDSHAKING and now >= self._hello_deadline:
            self._fail(
                ErrorCode.HELLO_REQUIRED,
                f"no HELLO within {self.config.hello_timeout:g} s",
                None,
                events,
            )
            return events
        if self.state == HANDSHAKING:
            return events  # only the HELLO deadline runs until the handshake (§4.1)
        if not self._peer_eof and ka.is_dead(now):
            self._fail(
                ErrorCode.TIMEOUT,
                f"nothing read for {now - ka.last_read_at:.1f} s",
                None,
                events,
            )
            return events
        acks = self._in_acks
        if acks.due_at is not None and now >= acks.due_at:
            self._queue_ack()
        if (
            self._credit_due_at is not None
            and now >= self._credit_due_at
            and not self._peer_eof
            and self.state == UP
        ):
            self._queue_credit()
        if ka.ping_due(now) and not self._peer_eof:
            self._queue_ping(now)
        self._check_stalled(now, events)
        return events

    def next_deadline(self) -> float | None:
        if self.state == CLOSED:
            return None
        ka = self._keepalive
        if self.ended:
            return ka.dead_at
        if self.state == HANDSHAKING:
            return self._hello_deadline
        deadlines: list[float] = []
        if not self._peer_eof:
            deadlines.append(ka.dead_at)
            if ka.next_ping_at is not None:
                deadlines.append(ka.next_ping_at)
            if self._credit_due_at is not None and self.state == UP:
                deadlines.append(self._credit_due_at)
        if self._in_acks.due_at is not None:
            deadlines.append(self._in_acks.due_at)
        oldest = self._out_acks.oldest_sent_at
        if oldest is not None and not self.stalled:
            deadlines.append(self._stall_base(oldest) + self._stall_after)
        return min(deadlines) if deadlines else None

    def close(
        self, now: float, code: ErrorCode | None = None, message: str = ""
    ) -> list[SessionEvent]:
        """End our side: in order (no code), or with a fatal ERROR such as SHUTDOWN."""
        self._now = now
        events: list[SessionEvent] = []
        if self.ended or self.state == CLOSED:
            return events
        if code is not None:
            self._fail(ErrorCode(code), message or str(code), None, events)
            return events
        self._queue_ack()  # acknowledge what is processed before going quiet
        self._drop_queued_events()
        self._keepalive.stop()
        self.state = CLOSED if self._peer_eof else CLOSING
        self._end("closed", None, False, events)
        return events

    # ------------------------------------------------------------------ sending

    def send_event(self, event: Event, now: float) -> bool:
        """Queue one EVENT if the peer's credit covers it; False (nothing queued) when not.

        Raises :class:`EventTooLarge` for a line the peer could never accept.
        """
        self._now = now
        if self.state != UP or self.ended or self._peer_eof:
            return False
        out = self._out_credit
        if out.events - len(self._events) < 1:
            return False
        frame_id = self._new_id(now)
        head = b'{"type":"EVENT","id":"%s%s%s%s' % (
            frame_id.encode(),
            self._event_mid,
            orjson.dumps(event.to_dict()),
            _SEQ_KEY,
        )
        # The sequence is fixed at hand-out; it can only be later than this estimate,
        # and data_to_send() re-checks the credit if that adds a digit.
        estimate = self._next_seq + len(self._control) + len(self._events)
        size = len(head) + len(str(estimate)) + 1
        if self._peer_max is not None and size > self._peer_max:
            raise EventTooLarge(
                f"EVENT line of {size} bytes exceeds the peer's max_message_size {self._peer_max}"
            )
        if out.bytes - self._reserved_bytes < size:
            return False
        self._events.append(_Queued("EVENT", head, event, event.event_id, frame_id, size))
        self._reserved_bytes += size
        return True

    def credit_available(self, nbytes: int) -> bool:
        """Whether an EVENT line of ``nbytes`` would be accepted by :meth:`send_event` now."""
        return (
            self.state == UP
            and not self.ended
            and not self._peer_eof
            and self._out_credit.fits(nbytes, len(self._events), self._reserved_bytes)
        )

    def data_to_send(self, now: float | None = None) -> bytes:
        """Everything queued, numbered and drained as one chunk (control frames first)."""
        if now is not None:
            self._now = now
        now = self._now
        if not self.ended:
            acks = self._in_acks
            # At once at 32; and at once when nothing else is being checked: waiting the
            # 5 ms of §4.4 then coalesces nothing and only adds to the peer's ACK lag.
            if acks.ackable >= self.config.ack_batch or (acks.ackable and not acks.in_flight):
                self._queue_ack()
            if self.state == UP and not self._peer_eof and self._in_credit.below_half():
                self._queue_credit()
        control = self._control
        queue = self._events
        if not control and not queue:
            return b""
        pieces: list[bytes] = []
        seq = self._next_seq
        observer = self._observer
        counters = self.counters
        for item in control:
            tail = b"%d}\n" % seq
            pieces.append(item.head)
            pieces.append(tail)
            if item.ping_id is not None:
                self._keepalive.ping_written(item.ping_id, now)
            if observer is not None:
                observer("out", item.type, seq, len(item.head) + len(tail) - 1, item.payload)
            seq += 1
        counters.frames_out += len(control)
        control.clear()
        if queue:
            out = self._out_credit
            out_acks = self._out_acks
            sent = 0
            while queue:
                item = queue[0]
                tail = b"%d}\n" % seq
                size = len(item.head) + len(tail) - 1
                if size > item.reserved:
                    # A control frame pushed it past a power of ten: one more byte.
                    extra = size - item.reserved
                    if out.bytes - self._reserved_bytes < extra:
                        break  # wait for credit; it goes out (renumbered) later
                    self._reserved_bytes += extra
                    item.reserved = size
                queue.popleft()
                self._reserved_bytes -= item.reserved
                out.consume(size)
                out_acks.sent(seq, item.event_id, now, item.frame_id, size)  # type: ignore[arg-type]
                pieces.append(item.head)
                pieces.append(tail)
                if observer is not None:
                    observer("out", "EVENT", seq, size, item.payload)
                seq += 1
                sent += 1
            counters.frames_out += sent
            counters.events_out += sent
        self._next_seq = seq
        data = b"".join(pieces)
        counters.bytes_out += len(data)
        return data

    # ------------------------------------------------------------------ reading

    def _line(self, line: bytes, now: float, events: list[SessionEvent]) -> None:
        try:
            obj = loads_object(line)
            try:
                frame = frame_from_dict(obj, len(line))
            except ProtocolError as exc:
                if exc.ref is None:
                    exc.ref = frame_id_of(obj)
                raise
            try:
                self._frame(frame, now, events)
            except ProtocolError as exc:
                if exc.ref is None:
                    exc.ref = frame.id
                raise
        except ProtocolError as exc:
            self._violation(exc, now, events)

    def _violation(self, exc: ProtocolError, now: float, events: list[SessionEvent]) -> None:
        if self.ended:  # our side is over: nothing more can be said
            self.state = CLOSED
        elif exc.fatal:
            self._fail(exc.code, exc.message, exc.ref, events)
        else:
            self._send_error(exc.code, exc.message, exc.ref, events)

    def _frame(self, frame: Frame, now: float, events: list[SessionEvent]) -> None:
        self.counters.frames_in += 1
        if self._observer is not None:
            self._observer("in", frame.type, frame.sequence, frame.size, frame.payload)
        if self.ended:
            self._frame_after_close(frame, now, events)
            return
        ftype = frame.type
        if self.peer_hello is None and ftype != "HELLO" and ftype != "ERROR":
            raise ProtocolError(
                ErrorCode.HELLO_REQUIRED, f"first frame is {ftype}, not HELLO", frame.id
            )
        if ftype == "HELLO":
            if frame.payload.server_id != frame.origin:
                raise ProtocolError(
                    ErrorCode.BAD_FRAME,
                    f"HELLO server_id {frame.payload.server_id} differs from origin {frame.origin}",
                    frame.id,
                )
        elif self.peer_id is not None and frame.origin != self.peer_id:
            raise ProtocolError(
                ErrorCode.BAD_FRAME,
                f"origin {frame.origin} is not the HELLO's server id {self.peer_id}",
                frame.id,
            )
        acks = self._in_acks
        seq = frame.sequence
        if seq != acks.last_read + 1:
            raise ProtocolError(
                ErrorCode.SEQUENCE_VIOLATION,
                f"sequence {seq}, expected {acks.last_read + 1}",
                frame.id,
            )
        if ftype == "EVENT":
            self._in_credit.consume(frame.size)
            if frame.group_id != self.config.group_id:
                raise self._wrong_group(frame)
            acks.event_read(seq)
            self._in_flight[seq] = (frame.id, frame.size)
            self.counters.events_in += 1
            events.append(EventReceived(seq, frame.id, frame.payload, frame.size))
            return
        if not frame.known:
            acks.frame_read(seq)
            self._send_error(
                ErrorCode.UNKNOWN_TYPE, f"unknown frame type {ftype!r}", frame.id, events
            )
            return
        if frame.group_id is not None and frame.group_id != self.config.group_id:
            raise self._wrong_group(frame)
        if ftype == "HELLO":
            if self.peer_hello is not None:
                raise ProtocolError(ErrorCode.HELLO_REQUIRED, "a second HELLO", frame.id)
            self._hello(frame, now, events)
            return
        acks.frame_read(seq)
        payload = frame.payload
        if ftype == "ACK":
            self._ack_read(payload, now, events)
        elif ftype == "CREDIT":
            self._out_credit.add(payload)
            self.last_grant_received_at = now
            if payload.events or payload.bytes:
                events.append(CreditAvailable())
        elif ftype == "PING":
            self._queue_control("PONG", Pong(frame.id))
        elif ftype == "PONG":
            rtt = self._keepalive.pong(payload.ping_id, now)
            if rtt is not None:
                events.append(PongReceived(rtt))
        elif ftype == "ERROR":
            self._error_read(payload, events)
        else:  # CHECKPOINT: a one-shot request, never a stream frame (§2)
            self._send_error(
                ErrorCode.UNKNOWN_TYPE, "CHECKPOINT is not a stream frame", frame.id, events
            )

    def _wrong_group(self, frame: Frame) -> ProtocolError:
        return ProtocolError(
            ErrorCode.BAD_FRAME,
            f"group_id {frame.group_id} is not this stream's group {self.config.group_id}",
            frame.id,
        )

    def _hello(self, frame: Frame, now: float, events: list[SessionEvent]) -> None:
        hello: Hello = frame.payload
        self.claimed_peer_id = hello.server_id  # shown, never trusted, until authenticated
        try:
            key_doc = self._authenticate(frame, now)
        except ProtocolError as exc:
            exc.ref = exc.ref or frame.id
            raise
        except Exception as exc:  # the authenticator failed, not the peer
            raise ProtocolError(ErrorCode.INTERNAL, f"authentication failed: {exc}") from exc
        if hello.to != self.config.server_id:
            raise ProtocolError(ErrorCode.AUTH_FAILED, f"HELLO addressed to {hello.to}", frame.id)
        if self.role is Role.INITIATOR and hello.server_id != self.peer_id:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED,
                f"answered by {hello.server_id}, not {self.peer_id} whom we addressed",
                frame.id,
            )
        self._in_acks.frame_read(frame.sequence)
        self.peer_hello = hello
        self.peer_id = hello.server_id
        self.key_doc = key_doc
        self._peer_max = hello.max_message_size
        if self.role is Role.ACCEPTOR:
            try:
                self._queue_hello(hello.server_id, now)
            except Exception as exc:
                raise ProtocolError(ErrorCode.INTERNAL, f"cannot make HELLO: {exc}") from exc
        self._queue_credit()
        self.state = UP
        self.up_at = now
        self._keepalive.start(now)
        self._queue_ping(now)
        events.append(HandshakeComplete(hello.server_id, hello, key_doc))

    def _check_ack(self, ack: Ack) -> None:
        """An ACK covers only what we sent, and never goes back (§4.4)."""
        sent = self._next_seq - 1
        if ack.through > sent:
            raise ProtocolError(
                ErrorCode.SEQUENCE_VIOLATION,
                f"ACK through {ack.through}, but our last frame is {sent}",
            )
        if ack.through < self._out_acks.acked_through:
            raise ProtocolError(
                ErrorCode.SEQUENCE_VIOLATION,
                f"ACK through {ack.through} after through {self._out_acks.acked_through}",
            )

    def _ack_read(self, ack: Ack, now: float, events: list[SessionEvent]) -> None:
        self._check_ack(ack)
        ids = self._out_acks.ack(ack.through, now)
        if ids:
            events.append(EventsAcknowledged(ids))
        if self.stalled:
            self._check_stalled(now, events)

    def _error_read(self, error: Error, events: list[SessionEvent]) -> None:
        self.counters.errors_in += 1
        code: str = error.code
        if code in ErrorCode.__members__:
            code = ErrorCode(code)
        event_id = self._out_acks.event_for_frame(error.ref) if error.ref else None
        events.append(ErrorReceived(code, error.message, error.ref, error.fatal, event_id))
        self.last_error = f"peer: {code}: {error.message}"
        if error.fatal and not self.ended:
            self._drop_queued_events()
            self._keepalive.stop()
            self.state = CLOSED
            self._end(
                error.message or str(code),
                code if isinstance(code, ErrorCode) else None,
                True,
                events,
            )

    def _frame_after_close(self, frame: Frame, now: float, events: list[SessionEvent]) -> None:
        """Our side ended in order: still take the peer's ACKs and ERRORs, ignore the rest."""
        if frame.type == "ACK":
            self._check_ack(frame.payload)
            ids = self._out_acks.ack(frame.payload.through, now)
            if ids:
                events.append(EventsAcknowledged(ids))
        elif frame.type == "ERROR":
            self._error_read(frame.payload, events)
            self.state = CLOSED if frame.payload.fatal else self.state

    def _finish_peer_close(self, events: list[SessionEvent]) -> None:
        self._queue_ack()
        self._drop_queued_events()
        self.state = CLOSED
        self._end("closed by peer", None, True, events)

    # ------------------------------------------------------------------ queueing

    def _queue_control(self, ftype: str, payload: Any, ping_id: str | None = None) -> str:
        frame_id = self._new_id(self._now)
        head = _control_head(
            ftype.encode(), frame_id, self._origin, orjson.dumps(payload.to_dict())
        )
        self._control.append(_Queued(ftype, head, payload, ping_id=ping_id))
        return frame_id

    def _queue_hello(self, to: str, now: float) -> None:
        frame = self._make_hello(to, now)
        d = frame.to_dict()
        d.pop("sequence", None)
        head = orjson.dumps(d)[:-1] + _SEQ_KEY
        # HELLO is the first frame in each direction: it goes ahead of anything queued.
        self._control.insert(0, _Queued("HELLO", head, frame.payload))
        self._hello_queued = True

    def _queue_ack(self) -> None:
        ack = self._in_acks.take()
        if ack is not None:
            self._queue_control("ACK", ack)

    def _queue_credit(self) -> None:
        grant = self._in_credit.grant()
        self._credit_due_at = None
        if grant is not None:
            self._queue_control("CREDIT", grant)
            self.last_grant_sent_at = self._now

    def _queue_ping(self, now: float) -> None:
        frame_id = self._new_id(now)
        head = _control_head(b"PING", frame_id, self._origin, b"{}")
        self._control.append(_Queued("PING", head, Ping(), ping_id=frame_id))
        self._keepalive.ping_queued(frame_id, now)

    def _drop_queued_events(self) -> None:
        """Queued EVENTs never went out; the shell's outbox still holds them for replay."""
        self._events.clear()
        self._reserved_bytes = 0

    # ------------------------------------------------------------------ errors and ending

    def _send_error(
        self, code: ErrorCode, message: str, ref: str | None, events: list[SessionEvent]
    ) -> None:
        self._queue_control("ERROR", Error(str(code), message, ref, False))
        self.counters.errors_out += 1
        events.append(ErrorSent(code, message, ref, False))

    def _fail(
        self, code: ErrorCode, message: str, ref: str | None, events: list[SessionEvent]
    ) -> None:
        """Send a fatal ERROR and end our side (§4.6)."""
        if self.ended:
            self.state = CLOSED
            return
        self._drop_queued_events()
        self._queue_control("ERROR", Error(str(code), message, ref, True))
        self.counters.errors_out += 1
        self.last_error = f"{code}: {message}"
        self._keepalive.stop()
        self.state = CLOSED
        events.append(ErrorSent(code, message, ref, True))
        self._end(message, code, False, events)

    def _end(
        self, reason: str, code: ErrorCode | None, by_peer: bool, events: list[SessionEvent]
    ) -> None:
        self.ended = True
        self.end_reason = reason
        self.end_code = code
        self.ended_by_peer = by_peer
        events.append(StreamEnded(reason, code, by_peer))

    def _stall_base(self, oldest_sent_at: float) -> float:
        last_ack = self._out_acks.last_ack_at
        return oldest_sent_at if last_ack is None or last_ack < oldest_sent_at else last_ack

    def _check_stalled(self, now: float, events: list[SessionEvent]) -> None:
        oldest = self._out_acks.oldest_sent_at
        stalled = oldest is not None and now - self._stall_base(oldest) >= self._stall_after
        if stalled != self.stalled:
            self.stalled = stalled
            events.append(Stalled(stalled))

    # ------------------------------------------------------------------ observable state

    @property
    def credit_out_events(self) -> int:
        """EVENTs we may still queue (peer's grants minus sent and queued)."""
        return self._out_credit.events - len(self._events)

    @property
    def credit_out_bytes(self) -> int:
        return self._out_credit.bytes - self._reserved_bytes

    @property
    def credit_in_events(self) -> int:
        """EVENTs the peer may still send us before our next grant."""
        return self._in_credit.remaining_events

    @property
    def credit_in_bytes(self) -> int:
        return self._in_credit.remaining_bytes

    @property
    def window_events(self) -> int:
        return self._in_credit.window_events

    @property
    def window_bytes(self) -> int:
        return self._in_credit.window_bytes

    def set_credit_window(self, events: int, nbytes: int) -> None:
        """Change the window we grant from now on (granted credit is never taken back)."""
        self._in_credit.set_window(events, nbytes)

    @property
    def unacked(self) -> int:
        """EVENTs written to the peer and not yet covered by its ACK."""
        return self._out_acks.unacked

    @property
    def queued_events(self) -> int:
        """EVENTs accepted by send_event and not yet handed out by data_to_send."""
        return len(self._events)

    @property
    def unacked_bytes(self) -> int:
        """EVENT line bytes accepted by send_event and not yet acknowledged (queued here,
        handed to the transport, or read by the peer): what the shell caps (§4.2 backs
        pressure onto local producers; HTTP/2 libraries may not)."""
        return self._reserved_bytes + self._out_acks.bytes

    @property
    def in_flight(self) -> int:
        """Peer EVENTs handed to the shell whose outcome is not reported yet."""
        return self._in_acks.in_flight

    def ack_lag(self, now: float) -> float | None:
        """Age of our oldest unacknowledged EVENT, or None when all are acknowledged."""
        oldest = self._out_acks.oldest_sent_at
        return None if oldest is None else now - oldest

    @property
    def ack_rtt(self) -> float | None:
        """The last ACK's round trip: writing the newest EVENT it covered → reading it."""
        return self._out_acks.last_rtt

    @property
    def rtt(self) -> float | None:
        return self._keepalive.rtt

    @property
    def rtt_history(self) -> tuple[float, ...]:
        return tuple(self._keepalive.rtt_history)

    @property
    def pings_sent(self) -> int:
        return self._keepalive.pings_sent

    @property
    def pongs_received(self) -> int:
        return self._keepalive.pongs_received

    @property
    def missed_pongs(self) -> int:
        return self._keepalive.missed_pongs

    @property
    def last_read_at(self) -> float:
        return self._keepalive.last_read_at

    @property
    def last_ping_sent_at(self) -> float | None:
        return self._keepalive.last_ping_sent_at

    @property
    def last_pong_at(self) -> float | None:
        return self._keepalive.last_pong_at
