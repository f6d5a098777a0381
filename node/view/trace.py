"""One event's way across the federation: who authored it, when, and every hop it crossed.

A live node keeps a :class:`TraceLog`: its newest EVENT and ACK frames and store
commits, one tuple each, pushed on the hot path. Only when a trace is asked for are they
folded, by a :class:`TraceBook`, into the steps one event took on this node, and put in
words. The same fold reads the frames of a wire recording (:func:`trace_recordings`),
so a trace can follow an event over every node recorded; traces of several nodes'
views merge by time (:func:`merge`).

Steps, as one node sees them:

``authored``   the node signed and stored the event (it is its author)
``received``   an EVENT frame read from ``peer``: stream, sequence
``stored``     the node's store committed it (``peer``: the hop it came from)
``acked``      the node's ACK to ``peer`` named it as newly stored (``sequence``: through)
``sent``       an EVENT frame written to ``peer`` (``relayed`` when we are not its author)
``peer_acked`` the peer's ACK covered the frame we sent (``sequence``: through)

Pure: no I/O; the live node hands in its clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from node.protocol.errors import ProtocolError
from node.protocol.frames import Event, parse_frame
from node.protocol.ids import is_ulid, ulid_bytes
from node.view.recording import BadLine, FrameRecord, Header, Record

AUTHORED = "authored"
RECEIVED = "received"
STORED = "stored"
ACKED = "acked"
SENT = "sent"
PEER_ACKED = "peer_acked"

BOOK_SIZE = 10_000  # events a book keeps steps for

# Steps of one instant in the order they happen.
_ORDER = {AUTHORED: 0, SENT: 1, RECEIVED: 2, STORED: 3, ACKED: 4, PEER_ACKED: 5}


@dataclass(frozen=True, slots=True)
class TraceStep:
    at: float  # wall-clock seconds
    node: str  # whose view: the node that saw this step
    kind: str  # one of the step kinds above
    peer: str | None = None
    role: str = ""  # the node's role on the stream: "initiator" | "acceptor"; "" off-stream
    stream: int = 0  # numbers the node's streams; 0 off-stream
    sequence: int | None = None  # the EVENT frame's sequence, or an ACK's `through`


@dataclass(frozen=True, slots=True)
class Hop:
    """The event crossing one link, from what either end saw of it."""

    sender: str
    receiver: str
    sent_at: float | None = None
    sent_sequence: int | None = None
    received_at: float | None = None
    received_sequence: int | None = None
    stored_at: float | None = None
    acked_at: float | None = None  # the receiver wrote its ACK
    ack_read_at: float | None = None  # the sender read it


@dataclass(frozen=True, slots=True)
class Trace:
    event_id: str
    author: str | None = None
    author_seq: int | None = None
    group_id: str | None = None
    steps: tuple[TraceStep, ...] = ()  # by time
    nodes: tuple[str, ...] = ()  # the nodes whose view this is

    @property
    def authored_at(self) -> float | None:
        """When the author minted the event id: its ULID's millisecond time."""
        return ulid_time(self.event_id)

    @property
    def found(self) -> bool:
        return bool(self.steps)

    def route(self) -> tuple[tuple[str, str], ...]:
        """How each node first got the event: (hop, node) of its first store, in time
        order. A node whose view is missing shows as received instead, if at all."""
        got: dict[str, str] = {}
        for step in self.steps:
            if step.kind == AUTHORED:
                continue
            if step.kind in (STORED, RECEIVED) and step.peer and step.node not in got:
                if step.kind == RECEIVED and self._stores(step.node):
                    continue  # its store step says which hop counted
                got[step.node] = step.peer
        return tuple((hop, node) for node, hop in got.items())

    def route_text(self) -> str:
        """``alice → bob → carol`` for a chain, else each first delivery."""
        edges = self.route()
        chain = [self.author] if self.author else []
        for hop, node in edges:
            if not chain or chain[-1] != hop:
                return ", ".join(f"{a} → {b}" for a, b in edges)
            chain.append(node)
        return " → ".join(chain) if chain else "?"

    def _stores(self, node: str) -> bool:
        return any(s.node == node and s.kind == STORED for s in self.steps)

    def hops(self) -> tuple[Hop, ...]:
        """Each link the event crossed, sender's and receiver's steps paired."""
        hops: dict[tuple[str, str], dict[str, Any]] = {}

        def hop(sender: str, receiver: str) -> dict[str, Any]:
            return hops.setdefault((sender, receiver), {})

        def first(d: dict[str, Any], key: str, value: Any) -> None:
            if d.get(key) is None:
                d[key] = value

        for s in self.steps:
            if s.peer is None:
                continue
            if s.kind == SENT:
                d = hop(s.node, s.peer)
                first(d, "sent_sequence", s.sequence)
                first(d, "sent_at", s.at)
            elif s.kind == PEER_ACKED:
                first(hop(s.node, s.peer), "ack_read_at", s.at)
            elif s.kind == RECEIVED:
                d = hop(s.peer, s.node)
                first(d, "received_sequence", s.sequence)
                first(d, "received_at", s.at)
            elif s.kind == STORED:
                first(hop(s.peer, s.node), "stored_at", s.at)
            elif s.kind == ACKED:
                first(hop(s.peer, s.node), "acked_at", s.at)

        def start(item: tuple[tuple[str, str], dict[str, Any]]) -> float:
            d = item[1]
            times = [d.get(k) for k in ("sent_at", "received_at", "stored_at")]
            return min((t for t in times if t is not None), default=float("inf"))

        return tuple(
            Hop(sender=sender, receiver=receiver, **d)
            for (sender, receiver), d in sorted(hops.items(), key=start)
        )

    def duplicate(self, hop: Hop) -> bool:
        """The receiver read the event on this hop but had it stored from another."""
        if hop.received_at is None or hop.stored_at is not None:
            return False
        return any(
            s.node == hop.receiver
            and s.kind in (STORED, AUTHORED)
            and s.peer != hop.sender
            and s.at <= hop.received_at
            for s in self.steps
        )


def ulid_time(event_id: str) -> float | None:
    """The millisecond time in a ULID's first 48 bits, as seconds; None if not a ULID."""
    if not is_ulid(event_id):
        return None
    return int.from_bytes(ulid_bytes(event_id)[:6], "big") / 1000


def merge(traces: Iterable[Trace]) -> Trace:
    """Several nodes' views of one event as one trace, steps by time."""
    traces = list(traces)
    if not traces:
        raise ValueError("nothing to merge")
    event_id = traces[0].event_id
    author = next((t.author for t in traces if t.author), None)
    author_seq = next((t.author_seq for t in traces if t.author_seq is not None), None)
    group = next((t.group_id for t in traces if t.group_id), None)
    steps = sorted((s for t in traces for s in t.steps), key=_step_key)
    nodes = tuple(dict.fromkeys(n for t in traces for n in t.nodes))
    return Trace(event_id, author, author_seq, group, tuple(steps), nodes)


def _step_key(step: TraceStep) -> tuple[float, int]:
    return (step.at, _ORDER.get(step.kind, 9))


class TraceBook:
    """The steps of the newest events one node saw, kept as tuples until asked for.

    Two generations of ``size // 2`` events each: a lookup tries both, and when the
    newer one fills the older one is dropped whole, so keeping the bound costs nothing
    per event.
    """

    def __init__(self, node: str, size: int = BOOK_SIZE, only: str | None = None) -> None:
        self.node = node
        self._half = max(1, size // 2)
        self._new: dict[str, list] = {}
        self._old: dict[str, list] = {}
        self._streams = 0
        self._only = only

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def _steps(self, event_id: str) -> list | None:
        steps = self._new.get(event_id)
        if steps is None:
            steps = self._old.get(event_id)
        return steps

    def _begin(self, event_id: str, author: str, seq: int, group: str) -> list:
        new = self._new
        if len(new) >= self._half:
            self._old, self._new = new, {}
            new = self._new
        steps: list = [(author, seq, group)]  # a header, then the step tuples
        new[event_id] = steps
        return steps

    def observer(
        self,
        peer: Callable[[], str | None],
        group_id: str,
        role: str,
        clock: Callable[[], float] = time.time,
    ) -> Callable[[str, str, int, int, Any], None]:
        """A session ``frame_observer`` for one stream: notes EVENTs and ACKs."""
        self._streams += 1
        stream = self._streams
        sent: deque[tuple[int, str]] = deque()  # (sequence, event id) of EVENTs not ACKed
        lookup, begin, only = self._steps, self._begin, self._only

        def observe(direction: str, ftype: str, sequence: int, size: int, payload: Any) -> None:
            if ftype == "EVENT":
                event_id = getattr(payload, "event_id", None)
                if event_id is None:
                    return
                if only is not None and event_id != only:
                    return
                steps = lookup(event_id)
                if steps is None:
                    steps = begin(event_id, payload.author, payload.seq, group_id)
                if direction == "in":
                    steps.append((clock(), RECEIVED, peer(), role, stream, sequence))
                else:
                    steps.append((clock(), SENT, peer(), role, stream, sequence))
                    sent.append((sequence, event_id))
            elif ftype == "ACK":
                if direction == "in":
                    through = getattr(payload, "through", 0)
                    if sent and sent[0][0] <= through:
                        at, who = clock(), peer()
                        while sent and sent[0][0] <= through:
                            steps = lookup(sent.popleft()[1])
                            if steps is not None:
                                steps.append((at, PEER_ACKED, who, role, stream, through))
                else:
                    ids = getattr(payload, "event_ids", None)
                    if ids:
                        at, who, through = clock(), peer(), payload.through
                        for event_id in ids:
                            steps = lookup(event_id)
                            if steps is not None:
                                steps.append((at, ACKED, who, role, stream, through))

        return observe

    def stored(self, group_id: str, events: Iterable[Event], hop: str, at: float) -> None:
        """The store committed ``events`` that came from ``hop`` (ourselves: authored)."""
        kind = AUTHORED if hop == self.node else STORED
        who = None if hop == self.node else hop
        for event in events:
            steps = self._steps(event.event_id)
            if steps is None:
                if self._only is not None and event.event_id != self._only:
                    continue
                steps = self._begin(event.event_id, event.author, event.seq, group_id)
            steps.append((at, kind, who, "", 0, None))

    def trace(self, event_id: str) -> Trace:
        """This node's view of one event; a trace without steps when it saw none."""
        steps = self._steps(event_id)
        if steps is None:
            return Trace(event_id, nodes=(self.node,))
        (author, seq, group), *rest = steps
        node = self.node
        made = [
            TraceStep(at, node, kind, who, role, stream, sequence)
            for at, kind, who, role, stream, sequence in rest
        ]
        made.sort(key=_step_key)
        return Trace(event_id, author, seq, group, tuple(made), (node,))

    def recent(self, limit: int = 20) -> tuple[str, ...]:
        """The newest event ids in the book, newest first."""
        ids: list[str] = []
        for generation in (self._new, self._old):
            for event_id in reversed(generation):
                ids.append(event_id)
                if len(ids) >= limit:
                    return tuple(ids)
        return tuple(ids)


class _Cursor:
    """The time and peer of the record being folded, for a book's observer."""

    __slots__ = ("peer", "t")

    def __init__(self) -> None:
        self.t = 0.0
        self.peer: str | None = None


LOG_FRAMES = 30_000  # EVENT and ACK frames a live node keeps (~10,000 relayed events, ~5 MB)
LOG_COMMITS = 20_000  # store commits kept


class TraceLog:
    """A live node's raw material for traces: its newest EVENT and ACK frames and store
    commits, one tuple each, folded into a :class:`Trace` only when one is asked for.

    On the hot path an observer compares the frame type and, for an EVENT or an ACK,
    pushes one tuple on a bounded deque; other frames cost one comparison.
    """

    def __init__(self, node: str, frames: int = LOG_FRAMES, commits: int = LOG_COMMITS) -> None:
        self.node = node
        self._frames: deque[tuple] = deque(maxlen=frames)
        self._commits: deque[tuple] = deque(maxlen=commits)
        self._streams = 0

    def observer(
        self,
        peer: Callable[[], str | None],
        group_id: str,
        role: str,
        clock: Callable[[], float] = time.time,
        then: Callable[[str, str, int, int, Any], None] | None = None,
    ) -> Callable[[str, str, int, int, Any], None]:
        """A session ``frame_observer`` for one stream; ``then``: another observer to
        call with every frame first (the frame log's), one call instead of two."""
        self._streams += 1
        where = (self._streams, group_id, role)
        append = self._frames.append
        if then is None:

            def then(direction: str, ftype: str, sequence: int, size: int, payload: Any) -> None:
                pass

        def observe(direction: str, ftype: str, sequence: int, size: int, payload: Any) -> None:
            then(direction, ftype, sequence, size, payload)
            if ftype == "EVENT":
                append(
                    (
                        clock(),
                        where,
                        peer(),
                        direction,
                        sequence,
                        payload.event_id,
                        payload.author,
                        payload.seq,
                    )
                )
            elif ftype == "ACK":
                append((clock(), where, peer(), direction, sequence, None, payload, 0))

        return observe

    def stored(self, group_id: str, events: Iterable[Event], hop: str, at: float) -> None:
        """The store committed ``events`` that came from ``hop`` (ourselves: authored)."""
        self._commits.append((at, group_id, hop, [(e.event_id, e.author, e.seq) for e in events]))

    def trace(self, event_id: str) -> Trace:
        """This node's view of one event; a trace without steps when it saw none.

        Only the streams that carried the event are folded, and of their ACKs only
        ours that name it and the peer's after it was sent: a few milliseconds for a
        full log."""
        frames = list(self._frames)
        carried = {record[1] for record in frames if record[5] == event_id}
        book = TraceBook(self.node, only=event_id)
        cursor = _Cursor()
        observers: dict[tuple, Callable[..., None]] = {}
        for at, where, who, direction, sequence, eid, author, seq in frames:
            if where not in carried:
                continue
            if eid is None:  # an ACK: `author` holds its payload
                if direction == "out" and event_id not in (author.event_ids or ()):
                    continue
                ftype, payload = "ACK", author
            elif eid != event_id:
                continue
            else:
                ftype, payload = "EVENT", _Carried(eid, author, seq)
            observe = observers.get(where)
            if observe is None:
                observe = observers[where] = book.observer(
                    lambda: cursor.peer, where[1], where[2], lambda: cursor.t
                )
            cursor.t, cursor.peer = at, who
            observe(direction, ftype, sequence, 0, payload)
        for at, group_id, hop, held in list(self._commits):
            for eid, author, seq in held:
                if eid == event_id:
                    book.stored(group_id, [_Carried(eid, author, seq)], hop, at)
        return book.trace(event_id)

    def recent(self, limit: int = 20) -> tuple[str, ...]:
        """The newest event ids seen in frames, newest first."""
        ids: list[str] = []
        for record in reversed(self._frames):
            eid = record[5]
            if eid is not None and eid not in ids:
                ids.append(eid)
                if len(ids) >= limit:
                    break
        return tuple(ids)


@dataclass(frozen=True, slots=True)
class _Carried:
    """What a trace needs of an EVENT's payload."""

    event_id: str
    author: str
    seq: int


def trace_recordings(
    event_id: str, files: Iterable[Iterable[Record | BadLine]]
) -> tuple[Trace, int]:
    """One event's trace over every node of a set of recordings, and the lines unread.

    ``files``: each file's records, in order (:func:`node.view.recording.read_records`).
    Record times are the machine's monotonic clock, shared by the recorded processes, so
    they order the steps of every node exactly; they are turned into wall-clock time
    with one offset for all (the largest ``wall - mono`` of the headers: a header whose
    two clocks were read further apart gives a smaller one). Frames that
    do not parse are counted with the bad lines and skipped.
    """
    books: dict[str, TraceBook] = {}
    observers: dict[tuple[str, int], Callable[..., None]] = {}
    cursor = _Cursor()
    needle = event_id.encode()
    bad = 0
    offsets: list[float] = []
    recorded: dict[str, None] = {}  # the nodes of the headers, in order
    for records in files:
        for record in records:
            kind = type(record)
            if kind is Header:
                offsets.append(record.wall - record.mono)
                recorded.setdefault(record.node)
                continue
            if kind is BadLine:
                bad += 1
                continue
            if kind is not FrameRecord:
                continue
            line = record.line
            if b'"ACK"' not in line and needle not in line:
                continue  # cheap: only this event's frames and ACKs are parsed
            try:
                frame = parse_frame(line)
            except ProtocolError:
                bad += 1
                continue
            if frame.type not in ("EVENT", "ACK"):
                continue
            book = books.get(record.node)
            if book is None:
                book = books[record.node] = TraceBook(record.node, only=event_id)
            key = (record.node, record.stream)
            observe = observers.get(key)
            if observe is None:
                observe = observers[key] = book.observer(
                    lambda: cursor.peer, record.group, record.role, lambda: cursor.t
                )
            cursor.t = record.t
            cursor.peer = record.peer
            observe(record.direction, frame.type, frame.sequence, frame.size, frame.payload)
    if not books:
        return Trace(event_id, nodes=tuple(recorded)), bad
    trace = merge(book.trace(event_id) for book in books.values())
    trace = replace(trace, nodes=tuple(dict.fromkeys([*trace.nodes, *recorded])))
    shift = max(offsets, default=0.0)
    steps = tuple(replace(step, at=step.at + shift) for step in trace.steps)
    return replace(trace, steps=steps), bad


# --------------------------------------------------------------------------- words


def clock_text(at: float) -> str:
    """``HH:MM:SS.mmm`` UTC."""
    whole = time.strftime("%H:%M:%S", time.gmtime(at))
    return f"{whole}.{int(at * 1000) % 1000:03d}"


def delta_text(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "−"
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.1f} ms"
    return f"{sign}{seconds:.3f} s"


def step_words(step: TraceStep, author: str | None) -> str:
    """What one step was, in words (without its time and node)."""
    peer = step.peer or "?"
    on = f" on stream {step.stream} ({step.role})" if step.stream else ""
    match step.kind:
        case "authored":
            return "authored and stored"
        case "received":
            return f"received ← {peer} #{step.sequence}{on}"
        case "stored":
            return f"stored (from {peer})" if step.peer else "stored"
        case "acked":
            return f"ACKed to {peer} (through #{step.sequence})"
        case "sent":
            verb = "sent" if step.node == author else "relayed"
            return f"{verb} → {peer} #{step.sequence}{on}"
        case "peer_acked":
            return f"ACK read from {peer} (through #{step.sequence})"
        case _:
            return step.kind


def trace_lines(trace: Trace, compact: bool = False) -> list[str]:
    """The whole trace as plain lines: header, hops, then every step with its time.

    ``compact``: steps without their wall-clock time (for narrow screens)."""
    lines = [f"event {trace.event_id}"]
    if trace.group_id:
        lines.append(f"group {trace.group_id}")
    authored = trace.authored_at
    who = trace.author or "?"
    seq = f" #{trace.author_seq}" if trace.author_seq is not None else ""
    when = f" at {clock_text(authored)} UTC (event id time)" if authored is not None else ""
    lines.append(f"author {who}{seq}{when}")
    seen = ", ".join(trace.nodes) if trace.nodes else "none"
    if not trace.nodes:
        lines.append("no node answered (none could be asked, or none in time)")
        return lines
    if not trace.found:
        lines.append(f"not seen by {seen} (a node remembers about its newest {BOOK_SIZE:,} events)")
        return lines
    lines.append(f"route {trace.route_text()}")
    lines.append(f"seen by {seen}")
    # Times count from authoring; from the first step if a clock put that earlier (the
    # event id's time is the author's wall clock, a recording's the machine's monotonic).
    first = trace.steps[0].at
    base = min(authored, first) if authored is not None else first
    lines.append("")
    lines.append("hops")
    for hop in trace.hops():
        dup = "  (a duplicate: already held)" if trace.duplicate(hop) else ""
        lines.append(f"  {hop.sender} → {hop.receiver}{dup}")
        for label, at, extra in (
            ("sent", hop.sent_at, hop.sent_sequence),
            ("received", hop.received_at, hop.received_sequence),
            ("stored", hop.stored_at, None),
            ("ACKed", hop.acked_at, None),
            ("ACK read", hop.ack_read_at, None),
        ):
            if at is None:
                continue
            seq_text = f" #{extra}" if extra is not None else ""
            lines.append(f"    {label:<9}{clock_text(at)} {delta_text(at - base):>11}{seq_text}")
    lines.append("")
    lines.append("steps")
    for step in trace.steps:
        clock = "" if compact else f"{clock_text(step.at)} "
        lines.append(
            f"  {clock}{delta_text(step.at - base):>11}  "
            f"{step.node:<8} {step_words(step, trace.author)}"
        )
    return lines
