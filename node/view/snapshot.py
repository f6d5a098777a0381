"""Immutable pictures of the node for the dashboard, taken at up to 10 Hz.

The node builds these by value on its own loop; the dashboard reads them on its
own thread and never touches sockets, sessions or the store. Everything here is
frozen so a snapshot can cross threads without locks. Times are wall-clock
seconds (``time.time()``) so the UI can show ages without knowing the node's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from node.sync.planner import RepairState


class StreamState(StrEnum):
    """A (peer, group, role) stream or link, in the words the dashboard shows."""

    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    UP = "up"
    STALLED = "stalled"
    DEAD = "dead"
    BACKOFF = "backoff"
    CLOSED = "closed"
    GONE = "gone"  # an acceptor's stream ended: the peer has to come back to us


class Fault(StrEnum):
    """Fault injections a demo can switch on per link: (peer, group), in either role."""

    CUT = "cut"
    ACK_PAUSED = "ack_paused"
    CREDIT_ONE = "credit_one"


CONNECTING = StreamState.CONNECTING
HANDSHAKING = StreamState.HANDSHAKING
UP = StreamState.UP
STALLED = StreamState.STALLED
DEAD = StreamState.DEAD
BACKOFF = StreamState.BACKOFF
CLOSED = StreamState.CLOSED
GONE = StreamState.GONE

# Digest states per peer and group (§5): the repair planner's states.
DIGEST_UNKNOWN = RepairState.UNKNOWN
DIGEST_EQUAL = RepairState.EQUAL
DIGEST_DIFFERS = RepairState.DIFFERS
DIGEST_REPAIRING = RepairState.REPAIRING
DIGEST_FAILED = RepairState.FAILED
DIGEST_EQUIVOCATION = RepairState.EQUIVOCATION

FAULT_CUT = Fault.CUT
FAULT_ACK_PAUSED = Fault.ACK_PAUSED
FAULT_CREDIT_ONE = Fault.CREDIT_ONE


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    key: str  # stable across reconnects: "{peer_id}|{group_id}|{role}"
    peer_id: str
    peer_url: str
    group_id: str
    role: str  # "initiator" | "acceptor"
    state: str
    backoff_until: float | None = None
    rtt_ms: float | None = None
    rtt_history: tuple[float, ...] = ()  # (ms) most recent last
    ack_lag_history: tuple[float, ...] = ()  # (ms) most recent last
    frames_in_per_s: float = 0.0
    frames_out_per_s: float = 0.0
    # Credit we may still spend sending to the peer (granted by the peer, minus used).
    credit_out_events: int = 0
    credit_out_bytes: int = 0
    # Credit the peer may still spend sending to us (granted by us, minus used).
    credit_in_events: int = 0
    credit_in_bytes: int = 0
    window_events: int = 256  # the window we grant the peer
    window_bytes: int = 1 << 20
    # The most credit the peer has let us hold on this stream (its window, as seen).
    peer_window_events: int = 0
    peer_window_bytes: int = 0
    last_grant_received_at: float | None = None
    last_grant_sent_at: float | None = None
    unacked: int = 0  # events we sent that the peer has not acknowledged
    # Age of our oldest unacknowledged event: 0 when all are acknowledged, None when
    # no stream is up.
    ack_lag_ms: float | None = None
    ack_rtt_ms: float | None = None  # the last ACK's round trip: EVENT written → ACK read
    outbox: int = 0  # events queued for this peer and group, durable
    last_read_at: float | None = None
    last_ping_sent_at: float | None = None
    last_pong_at: float | None = None
    pings_sent: int = 0
    pongs_received: int = 0
    missed_pongs: int = 0
    events_in: int = 0
    events_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    connected_at: float | None = None
    last_error: str | None = None
    faults: frozenset[str] = frozenset()  # on this (peer, group) link, whatever our role
    digest_state: str = DIGEST_UNKNOWN
    peer_key_id: str | None = None  # the peer's pinned key, for the read-aloud check
    peer_pairing_code: str | None = None
    ended_at: float | None = None  # a gone or dead row: when its last stream ended


@dataclass(frozen=True, slots=True)
class AuthorRange:
    author: str
    max_seq: int
    contiguous_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    group_id: str
    count: int
    fingerprint: str
    authors: tuple[AuthorRange, ...] = ()
    equivocating: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RepairSnapshot:
    peer_id: str
    group_id: str
    state: str  # one of the DIGEST_* states
    started_at: float | None = None
    finished_at: float | None = None
    round_trips: int = 0
    ranges_compared: int = 0
    events_fetched: int = 0
    events_sent: int = 0
    bytes_moved: int = 0
    local_count: int | None = None
    remote_count: int | None = None
    local_fingerprint: str | None = None
    remote_fingerprint: str | None = None
    local_authors: tuple[AuthorRange, ...] = ()
    remote_authors: tuple[AuthorRange, ...] = ()
    mismatching_ranges: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    # What the repair learned of each range of the group's event-id space, in order:
    # (lo, hi, "equal" | "differs" | "repaired"); "" is the open end. Ranges no mark
    # covers are unknown. The range heatmap draws them.
    range_marks: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PeerDigestSnapshot:
    """The peer's whole-group digest as last fetched, and ours at that moment (§5.2)."""

    peer_id: str
    group_id: str
    at: float  # when the answer arrived
    count: int | None = None
    fingerprint: str | None = None
    authors: tuple[AuthorRange, ...] = ()
    local_count: int | None = None
    local_fingerprint: str | None = None
    local_authors: tuple[AuthorRange, ...] = ()
    error: str | None = None

    @property
    def equal(self) -> bool | None:
        """Did both sides hold the same events at that moment? None: unknown."""
        if self.error is not None or self.fingerprint is None:
            return None
        return self.count == self.local_count and self.fingerprint == self.local_fingerprint


@dataclass(frozen=True, slots=True)
class LinkFault:
    peer_id: str
    group_id: str
    fault: str


@dataclass(frozen=True, slots=True)
class FrameLogEntry:
    index: int  # strictly increasing over the node's life: the UI's cursor
    at: float
    direction: str  # "in" | "out"
    peer_id: str
    group_id: str
    type: str
    sequence: int
    size: int
    summary: str
    is_error: bool = False
    event_id: str | None = None
    ciphertext: str | None = None  # base64, EVENT frames only, for clients holding the key


@dataclass(frozen=True, slots=True)
class PeerConfigSnapshot:
    url: str
    server_id: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    taken_at: float
    server_id: str
    listen_urls: tuple[str, ...]
    key_id: str
    pairing_code: str  # short, readable aloud: derived from the public key
    started_at: float
    streams: tuple[StreamSnapshot, ...] = ()
    groups: tuple[GroupSnapshot, ...] = ()
    repairs: tuple[RepairSnapshot, ...] = ()
    peers: tuple[PeerConfigSnapshot, ...] = ()
    frame_log: tuple[FrameLogEntry, ...] = ()  # the newest entries, oldest first
    counters: dict[str, int] = field(default_factory=dict)
    log_lines: tuple[str, ...] = ()  # notable events in words, newest last
    faults: tuple[LinkFault, ...] = ()  # every fault switched on, with or without a stream
    peer_digests: tuple[PeerDigestSnapshot, ...] = ()
    # Node-level conditions the header shows as a banner until they clear, in words
    # (e.g. a full disk); faults have their own badge.
    alerts: tuple[str, ...] = ()
    recording: str = ""  # the wire recording's file being written, "" when not recording
