"""Builds :class:`~node.view.snapshot.NodeSnapshot` values from the live node.

Runs on the node's loop (so nothing moves under it) and reads only in-memory state,
through the narrow sources it is given (:class:`SnapshotSources`): the streams' sessions,
the links' states, the repairs, and the store thread's published summary (never the store
itself). Rates are counter differences between two builds, so a build costs the same
however busy the node is.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.protocol import session as s
from node.protocol.identity import Identity
from node.storage.summary import StoreSummary
from node.sync.digest import AuthorSummary
from node.sync.planner import RepairPlanner
from node.view.framelog import FrameLog
from node.view.snapshot import (
    BACKOFF,
    DEAD,
    DIGEST_DIFFERS,
    DIGEST_EQUAL,
    DIGEST_EQUIVOCATION,
    DIGEST_REPAIRING,
    DIGEST_UNKNOWN,
    FAULT_CUT,
    GONE,
    HANDSHAKING,
    STALLED,
    UP,
    AuthorRange,
    GroupSnapshot,
    LinkFault,
    NodeSnapshot,
    PeerConfigSnapshot,
    PeerDigestSnapshot,
    RepairSnapshot,
    StreamSnapshot,
)


class LiveStream(Protocol):
    """A stream as the builder reads it (node.runtime.stream_runner.StreamRunner)."""

    session: s.StreamSession
    group_id: str
    role: s.Role
    peer_url: str
    finished: bool
    uses_outbox: bool

    @property
    def peer_id(self) -> str | None: ...

    @property
    def key(self) -> object:
        """Its stable name; ``str(key)`` is the snapshot's key."""
        ...


class LinkView(Protocol):
    """A configured peer's link in one group while no stream is up."""

    peer_id: str | None
    url: str
    group_id: str
    state: str
    backoff_until: float | None
    last_error: str | None


class GoneView(Protocol):
    """A stream a peer opened to us, after it ended (node.runtime.streams.GoneStream)."""

    @property
    def key(self) -> object: ...

    @property
    def peer_id(self) -> str: ...

    @property
    def group_id(self) -> str: ...

    peer_url: str
    ended_at: float
    reason: str
    events_in: int
    events_out: int
    bytes_in: int
    bytes_out: int


class RepairView(Protocol):
    def state_of(self, peer_id: str, group_id: str) -> str: ...

    def snapshots(self) -> tuple[RepairSnapshot, ...]: ...


@dataclass(frozen=True, slots=True)
class SnapshotSources:
    """Everything a snapshot shows, each from the one part that owns it."""

    identity: Identity
    started_at: float
    groups: tuple[str, ...]  # configured (shown even while empty)
    urls: Callable[[], Sequence[str]]
    streams: Callable[[], Iterable[LiveStream]]
    links: Callable[[], Iterable[LinkView]]
    faults: Callable[[str | None, str], frozenset[str]]  # of the link (peer, group)
    repairs: RepairView
    store: Callable[[], StoreSummary]  # the store thread's latest published summary
    peers: Callable[[], tuple[PeerConfigSnapshot, ...]]
    counters: Callable[[], dict[str, int]]
    log_lines: Callable[[], Sequence[str]]
    frame_log: FrameLog | None
    active_faults: Callable[[], tuple[LinkFault, ...]] = tuple
    gone: Callable[[], Iterable[GoneView]] = tuple
    peer_key: Callable[[str], tuple[str, str] | None] = lambda peer: None  # key id, code
    peer_digests: Callable[[], tuple[PeerDigestSnapshot, ...]] = tuple
    recording: Callable[[], str] = str  # the wire recording's file, "" when not recording


HISTORY = 60  # samples of ACK lag kept per stream
FRAMES_PER_SNAPSHOT = 64  # new frame-log entries worded per build (the newest)
RATE_WINDOW = 2.0  # seconds over which frames/s are averaged


class SnapshotBuilder:
    def __init__(self, sources: SnapshotSources) -> None:
        self._src = sources
        # key → recent (at, frames in, frames out) samples, for rates over RATE_WINDOW
        self._last: dict[str, deque[tuple[float, int, int]]] = {}
        self._lag: dict[str, list[float]] = {}
        self._peer_window: dict[str, tuple[int, int]] = {}
        # Per build: the last repair and the last digest fetched, by (peer, group).
        self._repairs: dict[tuple[str, str], RepairSnapshot] = {}
        self._digests: dict[tuple[str, str], PeerDigestSnapshot] = {}

    def build(self) -> NodeSnapshot:
        src = self._src
        now = time.time()
        store = src.store()  # one consistent picture for the whole build
        repairs = src.repairs.snapshots()
        peer_digests = src.peer_digests()
        self._repairs = {(r.peer_id, r.group_id): r for r in repairs}
        self._digests = {(d.peer_id, d.group_id): d for d in peer_digests}
        streams: list[StreamSnapshot] = []
        seen: set[str] = set()
        for runner in sorted(src.streams(), key=lambda r: str(r.key)):
            snap = self._stream(runner, now, store)
            streams.append(snap)
            seen.add(snap.key)
        for link in src.links():
            peer = link.peer_id or link.url
            key = f"{peer}|{link.group_id}|initiator"
            if key in seen:
                continue
            seen_key = self._peer_key(link.peer_id)
            streams.append(
                StreamSnapshot(
                    key=key,
                    peer_id=peer,
                    peer_url=link.url,
                    group_id=link.group_id,
                    role="initiator",
                    state=link.state,
                    backoff_until=link.backoff_until if link.state == BACKOFF else None,
                    last_error=link.last_error,
                    faults=src.faults(peer, link.group_id),
                    digest_state=self._digest_state(link.peer_id, link.group_id, store),
                    outbox=store.outbox(link.peer_id or "", link.group_id),
                    peer_key_id=seen_key[0],
                    peer_pairing_code=seen_key[1],
                )
            )
        # Peers that opened a stream to us and went away: we cannot dial them, so their
        # row stays (with what is queued for them) until they come back.
        for gone in src.gone():
            key = str(gone.key)
            if key in seen:
                continue
            faults = src.faults(gone.peer_id, gone.group_id)
            peer_key = self._peer_key(gone.peer_id)
            streams.append(
                StreamSnapshot(
                    key=key,
                    peer_id=gone.peer_id,
                    peer_url=gone.peer_url,
                    group_id=gone.group_id,
                    role="acceptor",
                    state=DEAD if FAULT_CUT in faults else GONE,
                    last_error=gone.reason,
                    faults=faults,
                    digest_state=self._digest_state(gone.peer_id, gone.group_id, store),
                    outbox=store.outbox(gone.peer_id, gone.group_id),
                    events_in=gone.events_in,
                    events_out=gone.events_out,
                    bytes_in=gone.bytes_in,
                    bytes_out=gone.bytes_out,
                    peer_key_id=peer_key[0],
                    peer_pairing_code=peer_key[1],
                    ended_at=gone.ended_at,
                )
            )
        for key in list(self._last):
            if key not in seen:
                del self._last[key]
                self._lag.pop(key, None)
                self._peer_window.pop(key, None)
        return NodeSnapshot(
            taken_at=now,
            server_id=src.identity.server_id,
            listen_urls=tuple(src.urls()),
            key_id=src.identity.key_id,
            pairing_code=src.identity.pairing_code,
            started_at=src.started_at,
            streams=tuple(streams),
            groups=self._groups(store),
            repairs=repairs,
            peers=src.peers(),
            frame_log=(
                src.frame_log.entries(newest=FRAMES_PER_SNAPSHOT)
                if src.frame_log is not None
                else ()
            ),
            counters=src.counters(),
            log_lines=tuple(src.log_lines())[-50:],
            faults=src.active_faults(),
            peer_digests=peer_digests,
            alerts=_alerts(store),
            recording=src.recording(),
        )

    def _peer_key(self, peer_id: str | None) -> tuple[str | None, str | None]:
        found = self._src.peer_key(peer_id) if peer_id else None
        return found if found is not None else (None, None)

    def _stream(self, runner: LiveStream, now: float, store: StoreSummary) -> StreamSnapshot:
        src = self._src
        session = runner.session
        c = session.counters
        key = str(runner.key)
        samples = self._last.setdefault(key, deque())
        samples.append((now, c.frames_in, c.frames_out))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        first = samples[0]
        rate_in = rate_out = 0.0
        if now > first[0]:
            dt = now - first[0]
            rate_in = (c.frames_in - first[1]) / dt
            rate_out = (c.frames_out - first[2]) / dt
        lag = session.ack_lag(now)
        if lag is None and session.state == s.UP and not runner.finished:
            lag = 0.0  # up, and every event we sent is acknowledged
        history = self._lag.setdefault(key, [])
        history.append((lag or 0.0) * 1000)
        del history[:-HISTORY]
        if runner.finished:
            state = DEAD
        elif session.state == s.HANDSHAKING:
            state = HANDSHAKING
        elif session.stalled:
            state = STALLED
        elif session.state == s.UP:
            state = UP
        else:
            state = session.state
        claimed = session.claimed_peer_id
        peer = runner.peer_id or (f"{claimed}?" if claimed else "?")
        rtt = session.rtt
        ack_rtt = session.ack_rtt
        seen_events, seen_bytes = self._peer_window.get(key, (0, 0))
        peer_window = (
            max(seen_events, session.credit_out_events + session.unacked),
            max(seen_bytes, session.credit_out_bytes + session.unacked_bytes),
        )
        self._peer_window[key] = peer_window
        peer_key = self._peer_key(runner.peer_id)
        return StreamSnapshot(
            key=key,
            peer_id=peer,
            peer_url=runner.peer_url or (session.peer_hello.url if session.peer_hello else ""),
            group_id=runner.group_id,
            role=runner.role.value,
            state=state,
            rtt_ms=rtt * 1000 if rtt is not None else None,
            rtt_history=tuple(x * 1000 for x in session.rtt_history),
            ack_lag_history=tuple(history),
            frames_in_per_s=rate_in,
            frames_out_per_s=rate_out,
            credit_out_events=session.credit_out_events,
            credit_out_bytes=session.credit_out_bytes,
            credit_in_events=session.credit_in_events,
            credit_in_bytes=session.credit_in_bytes,
            window_events=session.window_events,
            window_bytes=session.window_bytes,
            peer_window_events=peer_window[0],
            peer_window_bytes=peer_window[1],
            last_grant_received_at=session.last_grant_received_at,
            last_grant_sent_at=session.last_grant_sent_at,
            unacked=session.unacked,
            ack_lag_ms=lag * 1000 if lag is not None else None,
            ack_rtt_ms=ack_rtt * 1000 if ack_rtt is not None else None,
            outbox=store.outbox(peer, runner.group_id) if runner.uses_outbox else 0,
            last_read_at=session.last_read_at,
            last_ping_sent_at=session.last_ping_sent_at,
            last_pong_at=session.last_pong_at,
            pings_sent=session.pings_sent,
            pongs_received=session.pongs_received,
            missed_pongs=session.missed_pongs,
            events_in=c.events_in,
            events_out=c.events_out,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            connected_at=session.up_at,
            last_error=session.last_error,
            faults=src.faults(runner.peer_id, runner.group_id),
            digest_state=self._digest_state(runner.peer_id, runner.group_id, store),
            peer_key_id=peer_key[0],
            peer_pairing_code=peer_key[1],
        )

    def _digest_state(self, peer_id: str | None, group_id: str, store: StoreSummary) -> str:
        """The freshest word on (peer, group): a running repair, else whichever is newer
        of the last repair's verdict and the last digest fetched (both sides at once)."""
        if peer_id is None:
            return DIGEST_UNKNOWN
        state = self._src.repairs.state_of(peer_id, group_id)
        if state == DIGEST_REPAIRING:
            return state
        repair = self._repairs.get((peer_id, group_id))
        peek = self._digests.get((peer_id, group_id))
        if peek is not None and peek.equal is not None:
            finished = repair.finished_at if repair is not None else None
            if finished is None or peek.at >= finished:
                state = DIGEST_EQUAL if peek.equal else DIGEST_DIFFERS
        if state in (DIGEST_UNKNOWN, DIGEST_DIFFERS) and store.group(group_id).equivocators:
            return DIGEST_EQUIVOCATION
        return state

    def _groups(self, store: StoreSummary) -> tuple[GroupSnapshot, ...]:
        out = []
        for group_id in sorted(set(store.groups) | set(self._src.groups)):
            g = store.group(group_id)
            authors = tuple(
                AuthorRange(a, v.max_seq, v.contiguous_seq, v.count) for a, v in g.authors.items()
            )
            out.append(GroupSnapshot(group_id, g.count, g.fingerprint, authors, g.equivocators))
        return tuple(out)


def repair_snapshot(planner: RepairPlanner) -> RepairSnapshot:
    """The dashboard's picture of one repair, from its planner's state and counters."""
    s = planner.stats
    return RepairSnapshot(
        peer_id=planner.peer_id or "",
        group_id=planner.group_id,
        state=planner.state,
        started_at=s.started_at,
        finished_at=s.finished_at,
        round_trips=s.round_trips,
        ranges_compared=s.ranges_compared,
        events_fetched=s.events_fetched,
        events_sent=s.events_sent,
        bytes_moved=s.bytes,
        local_count=s.local_count,
        remote_count=s.remote_count,
        local_fingerprint=s.local_fingerprint,
        remote_fingerprint=s.remote_fingerprint,
        local_authors=_author_ranges(s.local_authors),
        remote_authors=_author_ranges(s.remote_authors),
        mismatching_ranges=tuple(s.mismatching_ranges[:64]),
        error=s.error,
        range_marks=tuple(s.range_marks),
    )


def peer_digest_snapshot(
    peer_id: str,
    group_id: str,
    at: float,
    remote: tuple[int, str, dict[str, AuthorSummary]],
    local: tuple[int, str, dict[str, AuthorSummary]],
) -> PeerDigestSnapshot:
    """Both sides' whole-group digests, taken one right after the other."""
    return PeerDigestSnapshot(
        peer_id,
        group_id,
        at,
        remote[0],
        remote[1],
        _author_ranges(remote[2]),
        local[0],
        local[1],
        _author_ranges(local[2]),
    )


def _author_ranges(authors: dict[str, AuthorSummary]) -> tuple[AuthorRange, ...]:
    return tuple(
        AuthorRange(a, s.max_seq, s.contiguous_seq, s.count) for a, s in sorted(authors.items())
    )


def _alerts(store: StoreSummary) -> tuple[str, ...]:
    """Node-level trouble the dashboard shows as a banner and ``status`` prints."""
    if store.write_error is None:
        return ()
    return (
        f"store cannot write: {store.write_error}. Nothing is acknowledged and credit is "
        "withheld until it can; free space or fix the disk, and the node resumes by itself",
    )
