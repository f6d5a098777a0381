"""A scripted stand-in for a node: deterministic snapshots for tests, screenshots and UI work.

`ScriptedNode` implements `NodeHandle` without sockets. Its snapshots are pure
functions of its clock (plus the commands it was sent), so a test with a fixed
clock sees the same screen every run. It reacts to commands the way a node
would look from the outside: faults show up on the stream, a repair runs for a
few seconds, an added peer starts connecting, a published event appears in the
frame log as ciphertext.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from node.view import snapshot as snap
from node.view.commands import (
    AddPeer,
    ClearFaults,
    Command,
    PublishEvent,
    RefreshDigest,
    Repair,
    SetFault,
    StartRecording,
    StopRecording,
)
from node.view.snapshot import (
    AuthorRange,
    FrameLogEntry,
    GroupSnapshot,
    LinkFault,
    NodeSnapshot,
    PeerConfigSnapshot,
    PeerDigestSnapshot,
    RepairSnapshot,
    StreamSnapshot,
)
from node.view.trace import (
    ACKED,
    AUTHORED,
    PEER_ACKED,
    RECEIVED,
    SENT,
    STORED,
    Trace,
    TraceStep,
    ulid_time,
)
from tapsim_tui.e2e import GroupCipher

DEMO_GROUP = "g!demo"
OPS_GROUP = "g!ops"  # a group the demo dashboard holds no passphrase for
DEMO_PASSPHRASE = "correct horse battery staple"
DEMO_PASSPHRASES = {DEMO_GROUP: DEMO_PASSPHRASE}
# 2026-11-26T03:15:52Z: a fixed "now" for deterministic screens.
FIXED_NOW = 1795670152.0
PING_INTERVAL_S = 5.0
LOG_RATE_PER_S = 3.0
LOG_KEEP = 200
REPAIR_RUN_S = 4.0

_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def fake_ulid(n: int) -> str:
    """A canonical-looking ULID whose order follows `n` (for display only)."""
    digits = []
    for _ in range(16):
        n, r = divmod(n, 32)
        digits.append(_ULID_ALPHABET[r])
    return "01KB1RMDYK" + "".join(reversed(digits))


def fake_fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def pairing_code(server_id: str) -> str:
    words = hashlib.sha256(server_id.encode()).hexdigest().upper()
    return f"{words[:4]}-{words[4:8]}-{words[8:12]}"


@dataclass
class StreamScript:
    """How one scripted stream behaves over time."""

    peer_id: str
    group_id: str = DEMO_GROUP
    role: str = "initiator"
    state: str = snap.UP
    rtt_ms: float = 4.0
    rate: float = 40.0  # frames/s each way, before wobble
    credit_out: float = 0.8  # fraction of the window left
    credit_in: float = 0.85
    unacked: int = 3
    ack_lag_ms: float = 12.0
    outbox: int = 0
    digest: str = snap.DIGEST_EQUAL
    connected_for_s: float = 600.0
    pongs_stop_s: float | None = None  # seconds ago the PONGs stopped (dead / stalled)
    backoff_s: float | None = None  # seconds until the next dial
    grant_age_s: float | None = None  # pin the last CREDIT received this long ago
    error: str | None = None
    faults: set[str] = field(default_factory=set)
    phase: float = 0.0
    ended_s: float | None = None  # a gone acceptor row: its stream ended this long ago

    @property
    def digest_known(self) -> bool:
        return self.digest in (snap.DIGEST_EQUAL, snap.DIGEST_DIFFERS, snap.DIGEST_REPAIRING)

    @property
    def key(self) -> str:
        return f"{self.peer_id}|{self.group_id}|{self.role}"


class ScriptedNode:
    """A `NodeHandle` whose snapshots come from scripts and a clock."""

    def __init__(
        self,
        server_id: str,
        streams: Iterable[StreamScript],
        *,
        clock: Callable[[], float],
        started_at: float | None = None,
        groups: Iterable[str] = (DEMO_GROUP,),
        passphrases: dict[str, str] | None = None,
        repairs: Iterable[RepairSnapshot] = (),
        equivocating: tuple[str, ...] = (),
        errors_in_log: bool = False,
    ) -> None:
        self._server_id = server_id
        self.clock = clock
        self.started_at = clock() - 3725 if started_at is None else started_at
        self.streams = list(streams)
        self.groups = list(groups)
        self.passphrases = dict(DEMO_PASSPHRASES if passphrases is None else passphrases)
        self.repairs = {(r.peer_id, r.group_id): r for r in repairs}
        self.equivocating = equivocating
        self.errors_in_log = errors_in_log
        self.commands: list[Command] = []
        self.alerts: list[str] = []
        self.peers = [
            PeerConfigSnapshot(f"http://127.0.0.1:{8400 + i}", s.peer_id, (s.group_id,))
            for i, s in enumerate(self.streams)
        ]
        self.published = 0
        self.recording = ""  # the file a StartRecording "records" to
        self._lock = threading.Lock()
        self._log: deque[FrameLogEntry] = deque(maxlen=LOG_KEEP)
        self._next_index = 0
        self._log_k: int | None = None  # the last traffic step generated
        self._ciphers: dict[str, GroupCipher] = {}

    # -- NodeHandle ------------------------------------------------------------------

    @property
    def server_id(self) -> str:
        return self._server_id

    def submit(self, command: Command) -> None:
        with self._lock:
            self.commands.append(command)
            self._apply(command, self.clock())

    def snapshot(self) -> NodeSnapshot:
        with self._lock:
            now = self.clock()
            self._grow_log(now)
            return NodeSnapshot(
                taken_at=now,
                server_id=self._server_id,
                listen_urls=(f"http://127.0.0.1:{8448 + sum(map(ord, self._server_id)) % 100}",),
                key_id="ed25519:"
                + base64.urlsafe_b64encode(
                    hashlib.sha256(self._server_id.encode()).digest()
                ).decode()[:8],
                pairing_code=pairing_code(self._server_id),
                started_at=self.started_at,
                streams=tuple(self._stream(s, now) for s in self.streams),
                groups=tuple(self._group(g, now) for g in self.groups),
                repairs=tuple(self._repair(r, now) for r in self.repairs.values()),
                peers=tuple(self.peers),
                frame_log=tuple(self._log),
                counters={"events_stored": self._events(now)},
                faults=tuple(
                    LinkFault(s.peer_id, s.group_id, f)
                    for s in self.streams
                    if s.role == "initiator" or s.peer_id not in self._initiated(s.group_id)
                    for f in sorted(s.faults)
                ),
                peer_digests=tuple(
                    self._peer_digest(s, now) for s in self.streams if s.digest_known
                ),
                alerts=tuple(self.alerts),
                recording=self.recording,
            )

    def trace(self, event_id: str, timeout: float = 0.0) -> Trace:
        """This node's view of :func:`scripted_trace`."""
        whole = scripted_trace(event_id)
        mine = tuple(step for step in whole.steps if step.node == self._server_id)
        return Trace(
            event_id,
            whole.author,
            whole.author_seq,
            whole.group_id,
            mine,
            (self._server_id,),
        )

    def _initiated(self, group_id: str) -> set[str]:
        return {s.peer_id for s in self.streams if s.group_id == group_id and s.role == "initiator"}

    def _peer_digest(self, s: StreamScript, now: float) -> PeerDigestSnapshot:
        """The peer's digest as fetched 2 s ago: equal unless the script says it differs."""
        group = self._group(s.group_id, now - 2)
        repair = self.repairs.get((s.peer_id, s.group_id))
        if repair is not None:
            repair = self._repair(repair, now)
        if repair is not None and repair.remote_authors:
            return PeerDigestSnapshot(
                s.peer_id,
                s.group_id,
                now - 2,
                repair.remote_count,
                repair.remote_fingerprint,
                repair.remote_authors,
                repair.local_count,
                repair.local_fingerprint,
                repair.local_authors,
            )
        differs = s.digest == snap.DIGEST_DIFFERS
        authors = group.authors
        count, fp = group.count, group.fingerprint
        if differs:
            authors = tuple(
                replace(
                    a, max_seq=a.max_seq - 8, contiguous_seq=a.contiguous_seq - 8, count=a.count - 8
                )
                if i == 0
                else a
                for i, a in enumerate(authors)
            )
            count, fp = count - 8, fake_fingerprint(s.group_id, "peer", count)
        return PeerDigestSnapshot(
            s.peer_id,
            s.group_id,
            now - 2,
            count,
            fp,
            authors,
            group.count,
            group.fingerprint,
            group.authors,
        )

    # -- commands --------------------------------------------------------------------

    def _apply(self, command: Command, now: float) -> None:
        if isinstance(command, SetFault):
            # A fault is on the link (peer, group): every row of it shows it, either role.
            for s in self.streams:
                if (s.peer_id, s.group_id) == (command.peer_id, command.group_id):
                    (s.faults.add if command.enabled else s.faults.discard)(command.fault)
        elif isinstance(command, ClearFaults):
            for s in self.streams:
                s.faults.clear()
        elif isinstance(command, StartRecording):
            self.recording = f"{command.directory or 'recordings'}/{self._server_id}-000.ndjson"
        elif isinstance(command, StopRecording):
            self.recording = ""
        elif isinstance(command, RefreshDigest):
            pass  # the scripted peers' digests are always as fresh as the script
        elif isinstance(command, Repair):
            for s in self.streams:
                if command.peer_id not in (None, s.peer_id):
                    continue
                if command.group_id not in (None, s.group_id):
                    continue
                self.repairs[(s.peer_id, s.group_id)] = RepairSnapshot(
                    s.peer_id, s.group_id, snap.DIGEST_REPAIRING, started_at=now
                )
        elif isinstance(command, AddPeer):
            self.peers.append(PeerConfigSnapshot(command.url, None, command.groups))
            for group in command.groups:
                host = command.url.split("//", 1)[-1]
                self.streams.append(
                    StreamScript(host, group, state=snap.CONNECTING, digest=snap.DIGEST_UNKNOWN)
                )
        elif isinstance(command, PublishEvent):
            self.published += 1
            peers = [s for s in self.streams if s.group_id == command.group_id] or [None]
            for s in peers:
                self._append(
                    now,
                    "out",
                    s.peer_id if s else "-",
                    command.group_id,
                    "EVENT",
                    command.ciphertext,
                )

    # -- generated state -------------------------------------------------------------

    def _events(self, now: float) -> int:
        return int((now - self.started_at) * 2) + self.published

    def _stream(self, s: StreamScript, now: float) -> StreamSnapshot:
        wobble = 1 + 0.35 * math.sin(now / 7 + s.phase)
        live = s.state in (snap.UP, snap.STALLED)
        connected_at = None
        if s.state not in (snap.CONNECTING, snap.BACKOFF, snap.HANDSHAKING, snap.GONE):
            connected_at = now - s.connected_for_s
        rtts = tuple(
            round(s.rtt_ms * (1 + 0.4 * math.sin(k * 0.9 + s.phase)), 1) for k in range(-8, 0)
        )
        pings = pongs = missed = 0
        last_ping = last_pong = None
        if connected_at is not None:
            pings = int(s.connected_for_s / PING_INTERVAL_S) + int(now / PING_INTERVAL_S) % 1000
            last_ping = now - (now % PING_INTERVAL_S)
            if s.pongs_stop_s is None:
                pongs = pings
                last_pong = last_ping + s.rtt_ms / 1000
            else:
                missed = int(s.pongs_stop_s / PING_INTERVAL_S)
                pongs = pings - missed
                last_pong = now - s.pongs_stop_s
        credit_out, credit_in = (s.credit_out, s.credit_in) if connected_at else (0.0, 0.0)
        if snap.FAULT_CREDIT_ONE in s.faults:
            credit_in = 1 / 256
        unacked, lag = s.unacked, s.ack_lag_ms * wobble
        if snap.FAULT_ACK_PAUSED in s.faults:
            unacked, lag = unacked + 180, 4200.0
        state = s.state
        backoff_until = now + s.backoff_s if s.backoff_s is not None else None
        if snap.FAULT_CUT in s.faults:
            if s.role == "initiator":
                state, backoff_until, connected_at = snap.DEAD, None, None
            else:
                state, connected_at = snap.DEAD, None
            unacked, lag, credit_out, credit_in = 0, None, 0.0, 0.0
        rate = s.rate * wobble if live and state == s.state else 0.0
        window_e, window_b = 256, 1 << 20
        grant_age = s.grant_age_s if s.grant_age_s is not None else (0.2 if live else None)
        return StreamSnapshot(
            key=s.key,
            peer_id=s.peer_id,
            peer_url=f"http://127.0.0.1:{8400 + self.streams.index(s)}",
            group_id=s.group_id,
            role=s.role,
            state=state,
            backoff_until=backoff_until,
            rtt_ms=round(s.rtt_ms * wobble, 1) if connected_at is not None else None,
            rtt_history=rtts if connected_at is not None else (),
            frames_in_per_s=round(rate, 1),
            frames_out_per_s=round(rate * 0.97, 1),
            credit_out_events=int(window_e * credit_out),
            credit_out_bytes=int(window_b * credit_out),
            credit_in_events=max(int(window_e * credit_in), 0 if credit_in <= 0 else 1),
            credit_in_bytes=int(window_b * credit_in),
            window_events=window_e,
            window_bytes=window_b,
            last_grant_received_at=None if grant_age is None else now - grant_age,
            last_grant_sent_at=now - 0.1 if live else None,
            unacked=unacked,
            ack_lag_ms=(round(lag, 1) if unacked else 0.0)
            if connected_at and lag is not None
            else None,
            ack_rtt_ms=round(s.rtt_ms * 1.6 * wobble, 1) if connected_at else None,
            outbox=s.outbox + (int(now - FIXED_NOW + 40) if snap.FAULT_CUT in s.faults else 0),
            last_read_at=(now - (s.pongs_stop_s or 0.05)) if connected_at else None,
            last_ping_sent_at=last_ping,
            last_pong_at=last_pong,
            pings_sent=pings,
            pongs_received=pongs,
            missed_pongs=missed,
            events_in=int(s.connected_for_s * s.rate),
            events_out=int(s.connected_for_s * s.rate * 0.97),
            bytes_in=int(s.connected_for_s * s.rate * 600),
            bytes_out=int(s.connected_for_s * s.rate * 580),
            connected_at=connected_at,
            last_error=s.error,
            faults=frozenset(s.faults),
            digest_state=self._digest_state(s, now),
            peer_key_id="ed25519:"
            + base64.urlsafe_b64encode(hashlib.sha256(s.peer_id.encode()).digest()).decode()[:8],
            peer_pairing_code=pairing_code(s.peer_id),
            ended_at=now - s.ended_s if s.ended_s is not None else None,
        )

    def _digest_state(self, s: StreamScript, now: float) -> str:
        repair = self.repairs.get((s.peer_id, s.group_id))
        if repair is not None:
            return self._repair(repair, now).state
        return s.digest

    def _repair(self, r: RepairSnapshot, now: float) -> RepairSnapshot:
        """A repair started by a command runs REPAIR_RUN_S seconds, then the digests agree."""
        if r.state != snap.DIGEST_REPAIRING or r.started_at is None or r.remote_count:
            return r
        local = self._events(now)
        progress = min((now - r.started_at) / REPAIR_RUN_S, 1.0)
        done = progress >= 1.0
        missing = 40
        fp = fake_fingerprint(r.group_id, local)
        return replace(
            r,
            state=snap.DIGEST_EQUAL if done else snap.DIGEST_REPAIRING,
            finished_at=r.started_at + REPAIR_RUN_S if done else None,
            round_trips=1 + int(progress * 5),
            ranges_compared=int(progress * 16),
            events_fetched=int(progress * missing),
            bytes_moved=int(progress * missing * 640),
            local_count=local,
            remote_count=local if done else local - missing + int(progress * missing),
            local_fingerprint=fp,
            remote_fingerprint=fp if done else fake_fingerprint(r.group_id, "remote", local),
        )

    def _group(self, group_id: str, now: float) -> GroupSnapshot:
        count = self._events(now)
        authors = tuple(
            AuthorRange(name, n, n, n)
            for name, n in (
                (self._server_id, count // 3 + self.published),
                *((s.peer_id, count // 3) for s in self.streams[:2] if s.group_id == group_id),
            )
        )
        return GroupSnapshot(
            group_id,
            count,
            fake_fingerprint(group_id, count),
            authors,
            self.equivocating if group_id == DEMO_GROUP else (),
        )

    # -- frame log -------------------------------------------------------------------

    def _cipher(self, group_id: str) -> GroupCipher | None:
        if group_id not in self.passphrases:
            return None
        if group_id not in self._ciphers:
            self._ciphers[group_id] = GroupCipher.from_passphrase(
                group_id, self.passphrases[group_id]
            )
        return self._ciphers[group_id]

    def _append(self, at, direction, peer, group, kind, ciphertext=None, summary="", error=False):
        # Indexes follow the traffic step (8 slots per step) so the log is the same
        # whenever it was first asked for; published events take the next free slot.
        index = max(math.floor(at * LOG_RATE_PER_S) * 8, self._next_index)
        self._next_index = index + 1
        self._log.append(
            FrameLogEntry(
                index=index,
                at=at,
                direction=direction,
                peer_id=peer,
                group_id=group,
                type=kind,
                sequence=index // 8 % 100_000,
                size=len(ciphertext) * 4 // 3 + 420 if ciphertext else 90,
                summary=summary,
                is_error=error,
                event_id=fake_ulid(index) if kind == "EVENT" else None,
                ciphertext=base64.b64encode(ciphertext).decode() if ciphertext else None,
            )
        )

    def _grow_log(self, now: float) -> None:
        """Traffic at LOG_RATE_PER_S, generated from the entry number alone."""
        live = [s for s in self.streams if s.state in (snap.UP, snap.STALLED)]
        if not live:
            return
        start = max(self.started_at, now - LOG_KEEP / LOG_RATE_PER_S)
        first = math.ceil(start * LOG_RATE_PER_S)
        if self._log_k is not None:
            first = max(first, self._log_k + 1)
        last = math.floor(now * LOG_RATE_PER_S)
        for k in range(first, last + 1):
            at = k / LOG_RATE_PER_S
            s = live[k % len(live)]
            step = k % 10
            direction = "in" if step % 2 else "out"
            if step in (0, 1, 4, 5):
                cipher = self._cipher(s.group_id)
                text = f"hello {k % 1000} from {s.peer_id.removeprefix('server-')}"
                nonce = hashlib.sha256(f"{self._server_id}{k}".encode()).digest()[:24]
                body = cipher.encrypt(text, nonce=nonce) if cipher else nonce + text.encode()
                self._append(at, direction, s.peer_id, s.group_id, "EVENT", body)
            elif step in (2, 3):
                self._append(at, direction, s.peer_id, s.group_id, "ACK", summary=f"through {k}")
            elif step == 6:
                self._append(at, direction, s.peer_id, s.group_id, "CREDIT", summary="+128 ev")
            elif step == 7:
                self._append(at, "out", s.peer_id, s.group_id, "PING", summary="")
            elif step == 8:
                self._append(at, "in", s.peer_id, s.group_id, "PONG", summary="rtt 4.1 ms")
            elif self.errors_in_log:
                self._append(
                    at,
                    "in",
                    s.peer_id,
                    s.group_id,
                    "ERROR",
                    summary="HASH_MISMATCH content_hash does not match ciphertext",
                    error=True,
                )
            else:
                self._append(at, "out", s.peer_id, s.group_id, "ACK", summary=f"through {k}")
        self._log_k = max(last, self._log_k or last)


# -- scenarios -----------------------------------------------------------------------


class FixedClock:
    """A clock tests and screenshots advance by hand."""

    def __init__(self, now: float = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def demo_nodes(clock: Callable[[], float]) -> list[ScriptedNode]:
    """alice, bob and carol federating g!demo in a triangle, all healthy."""
    names = ("server-alice", "server-bob", "server-carol")
    nodes = []
    for i, name in enumerate(names):
        streams = []
        for j, other in enumerate(names):
            if other == name:
                continue
            role = "initiator" if i < j else "acceptor"
            streams.append(
                StreamScript(
                    other,
                    role=role,
                    rtt_ms=2.5 + 2 * (i + j),
                    rate=30 + 10 * j,
                    unacked=2 + i + j,
                    phase=i + j,
                )
            )
        streams.append(
            StreamScript(
                names[(i + 1) % 3],
                OPS_GROUP,
                role="initiator",
                rtt_ms=6.0,
                rate=4.0,
                credit_out=0.97,
                unacked=0,
                phase=2.0 + i,
            )
        )
        nodes.append(ScriptedNode(name, streams, clock=clock, groups=(DEMO_GROUP, OPS_GROUP)))
    return nodes


def scripted_trace(event_id: str) -> Trace:
    """Any event as authored by alice, relayed alice → bob → carol, and sent by alice to
    carol too (a duplicate there), with times after its id's time."""
    t0 = ulid_time(event_id) or 0.0
    a, b, c = "server-alice", "server-bob", "server-carol"
    ms = 0.001
    steps = (
        TraceStep(t0 + 0.4 * ms, a, AUTHORED),
        TraceStep(t0 + 0.9 * ms, a, SENT, b, "initiator", 1, 812),
        TraceStep(t0 + 1.6 * ms, b, RECEIVED, a, "acceptor", 1, 809),
        TraceStep(t0 + 5.2 * ms, b, STORED, a),
        TraceStep(t0 + 5.4 * ms, b, ACKED, a, "acceptor", 1, 809),
        TraceStep(t0 + 5.8 * ms, b, SENT, c, "initiator", 3, 640),
        TraceStep(t0 + 6.3 * ms, a, PEER_ACKED, b, "initiator", 1, 812),
        TraceStep(t0 + 6.9 * ms, c, RECEIVED, b, "acceptor", 3, 640),
        TraceStep(t0 + 9.7 * ms, c, STORED, b),
        TraceStep(t0 + 9.9 * ms, c, ACKED, b, "acceptor", 3, 640),
        TraceStep(t0 + 10.6 * ms, b, PEER_ACKED, c, "initiator", 3, 640),
        TraceStep(t0 + 31.0 * ms, a, SENT, c, "initiator", 2, 820),
        TraceStep(t0 + 31.8 * ms, c, RECEIVED, a, "acceptor", 2, 818),
        TraceStep(t0 + 33.1 * ms, a, PEER_ACKED, c, "initiator", 2, 820),
    )
    return Trace(event_id, a, 431, DEMO_GROUP, steps, (a, b, c))


def time_ulid(at: float, n: int = 0) -> str:
    """A canonical ULID of time ``at`` (its first 48 bits), for range bounds."""
    value = (int(at * 1000) << 80) | n
    return "".join(_ULID_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


def heatmap_marks(now: float) -> tuple[tuple[str, str, str], ...]:
    """A repair half way: the group's last hour in 16 buckets, two differing and
    descended into, one of their sub-ranges already repaired."""
    hour = 3600.0
    start = now - hour
    bound = [time_ulid(start + i * hour / 16) for i in range(17)]
    differing = {5, 11}
    marks: list[tuple[str, str, str]] = [("", "", "differs")]
    for i in range(16):
        lo = "" if i == 0 else bound[i]
        hi = "" if i == 15 else bound[i + 1]
        marks.append((lo, hi, "differs" if i in differing else "equal"))
    for i in differing:
        sub = [time_ulid(start + i * hour / 16 + k * hour / 64) for k in range(5)]
        for k in range(4):
            marks.append((sub[k], sub[k + 1], "differs" if k in (1, 2) else "equal"))
    marks.append(
        (
            time_ulid(start + 5 * hour / 16 + hour / 64),
            time_ulid(start + 5 * hour / 16 + hour / 32),
            "repaired",
        )
    )
    return tuple(marks)


def trouble_node(clock: Callable[[], float]) -> ScriptedNode:
    """One node whose links show every kind of trouble the dashboard explains."""
    now = clock()
    fp = fake_fingerprint("trouble")
    streams = [
        StreamScript(
            "server-bob",
            state=snap.STALLED,
            credit_out=0.0,
            unacked=96,
            ack_lag_ms=5400,
            outbox=1210,
            grant_age_s=3.2,
            rate=2.0,
            faults={snap.FAULT_ACK_PAUSED},
        ),
        StreamScript(
            "server-carol",
            state=snap.DEAD,
            pongs_stop_s=95.0,
            credit_out=0.4,
            unacked=12,
            ack_lag_ms=95000,
            error="TIMEOUT: nothing read for 90 s",
            phase=1.0,
        ),
        StreamScript(
            "server-dave",
            state=snap.BACKOFF,
            backoff_s=7.4,
            connected_for_s=0,
            unacked=0,
            error="connection refused",
            digest=snap.DIGEST_UNKNOWN,
        ),
        StreamScript("server-erin", role="acceptor", rtt_ms=18.0, phase=2.0),
        StreamScript("server-frank", digest=snap.DIGEST_EQUIVOCATION, rtt_ms=9.0, phase=3.0),
        StreamScript("server-gwen", OPS_GROUP, digest=snap.DIGEST_DIFFERS, rtt_ms=31.0, phase=4.0),
        StreamScript(
            "server-hal",
            role="acceptor",
            state=snap.GONE,
            ended_s=42.0,
            outbox=318,
            unacked=0,
            error="connection lost",
            digest=snap.DIGEST_UNKNOWN,
        ),
    ]
    repairs = [
        RepairSnapshot(
            "server-erin",
            DEMO_GROUP,
            snap.DIGEST_REPAIRING,
            started_at=now - 2.4,
            round_trips=3,
            ranges_compared=24,
            events_fetched=310,
            events_sent=12,
            bytes_moved=203_400,
            local_count=7_030,
            remote_count=7_342,
            local_fingerprint=fp,
            remote_fingerprint=fake_fingerprint("erin"),
            local_authors=(
                AuthorRange("server-alice", 2410, 2410, 2410),
                AuthorRange("server-erin", 2318, 2006, 2010),
            ),
            remote_authors=(
                AuthorRange("server-alice", 2398, 2398, 2398),
                AuthorRange("server-erin", 2318, 2318, 2318),
            ),
            mismatching_ranges=(
                (fake_ulid(40_000), fake_ulid(41_000)),
                (fake_ulid(52_000), fake_ulid(52_500)),
            ),
            range_marks=heatmap_marks(now),
        ),
        RepairSnapshot(
            "server-gwen",
            OPS_GROUP,
            snap.DIGEST_DIFFERS,
            started_at=now - 64,
            finished_at=now - 61,
            round_trips=2,
            local_count=410,
            remote_count=402,
            local_fingerprint=fake_fingerprint("ops"),
            remote_fingerprint=fake_fingerprint("gwen"),
            error="checkpoint: 503 OVERLOADED, retrying in 10 min",
        ),
    ]
    return ScriptedNode(
        "server-alice",
        streams,
        clock=clock,
        groups=(DEMO_GROUP, OPS_GROUP),
        repairs=repairs,
        equivocating=("server-frank",),
        errors_in_log=True,
    )


# -- scenes: the same deterministic screens for snapshot tests and screenshots/ -------------

SCENE_SIZE = (120, 40)


def replay(app, clock: FixedClock, seconds: float = 300.0, step: float = 1.0) -> None:
    """Drive `seconds` of ticks up to the clock's current time, so charts have history."""
    end = clock.now
    clock.now = end - seconds
    while clock.now < end:
        app.refresh_from_snapshot()
        clock.advance(step)
    clock.now = end
    app.refresh_from_snapshot()


def scene(name: str):
    """(app, run_before) for a named scene: main, detail, stalled, repair, heatmap, help,
    cut, trace."""
    from tapsim_tui.app import TapsimApp  # late: keep the scripted node free of textual

    clock = FixedClock()
    if name in ("main", "help", "trace"):
        nodes = demo_nodes(clock)
        select = None
    elif name == "cut":  # bob cuts alice, who dialled him: the acceptor's row stays
        nodes = demo_nodes(clock)
        select = "server-alice|g!demo|acceptor"
    else:
        nodes = [trouble_node(clock)]
        select = {
            "detail": "server-bob|g!demo|initiator",
            "stalled": "server-bob|g!demo|initiator",
            "repair": "server-erin|g!demo|acceptor",
            "heatmap": "server-erin|g!demo|acceptor",
        }[name]
    app = TapsimApp(nodes, passphrases=DEMO_PASSPHRASES, clock=clock, live=False)

    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if name == "cut":
            await pilot.press("n")  # bob's screen
        replay(pilot.app, clock)
        screen = pilot.app.main_screen
        if select is not None:
            from widgets.streams_table import StreamsTable

            screen.query_one(StreamsTable).select_key(select)
        await pilot.pause()
        if name in ("detail", "repair", "heatmap"):
            screen.query_one("#detail").focus()
            await pilot.press("z")
        if name == "heatmap":
            from widgets.range_heatmap import RangeHeatmap

            screen.query_one("#detail").scroll_to_widget(
                screen.query_one(RangeHeatmap), animate=False, top=True
            )
        if name == "cut":
            await pilot.press("x")
            clock.advance(6)
            pilot.app.refresh_from_snapshot()
        if name == "help":
            await pilot.press("question_mark")
        if name == "trace":  # the newest EVENT in the frame log
            screen.query_one("#frames").focus()
            await pilot.press("enter")
            await pilot.pause()
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    return app, run_before
