"""Builds :class:`~node.snapshot.NodeSnapshot` values from the live node.

Runs on the node's loop (so nothing moves under it) and reads only in-memory state:
session counters, link states, the store's in-memory indexes. Rates are counter
differences between two builds, so a build costs the same however busy the node is.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from node.protocol import session as s
from node.sync.digest import AuthorSummary
from node.sync.planner import RepairPlanner
from node.view.snapshot import (
    BACKOFF,
    DEAD,
    DIGEST_EQUIVOCATION,
    DIGEST_UNKNOWN,
    HANDSHAKING,
    STALLED,
    UP,
    AuthorRange,
    GroupSnapshot,
    NodeSnapshot,
    PeerConfigSnapshot,
    RepairSnapshot,
    StreamSnapshot,
)

if TYPE_CHECKING:
    from node.runtime.node import Node
    from node.runtime.stream_runner import StreamRunner

HISTORY = 60  # samples of ACK lag kept per stream
RATE_WINDOW = 2.0  # seconds over which frames/s are averaged


class SnapshotBuilder:
    def __init__(self, node: Node) -> None:
        self.node = node
        # key → recent (at, frames in, frames out) samples, for rates over RATE_WINDOW
        self._last: dict[str, deque[tuple[float, int, int]]] = {}
        self._lag: dict[str, list[float]] = {}

    def build(self) -> NodeSnapshot:
        node = self.node
        now = time.time()
        streams: list[StreamSnapshot] = []
        seen: set[str] = set()
        for runner in sorted(node.runners, key=lambda r: r.key):
            snap = self._stream(runner, now)
            streams.append(snap)
            seen.add(snap.key)
        if node.peers is not None:
            for link in node.peers.links.values():
                for state in link.links.values():
                    key = f"{link.server_id or link.url}|{state.group_id}|initiator"
                    if key in seen:
                        continue
                    streams.append(
                        StreamSnapshot(
                            key=key,
                            peer_id=link.server_id or link.url,
                            peer_url=link.url,
                            group_id=state.group_id,
                            role="initiator",
                            state=state.state,
                            backoff_until=state.backoff_until if state.state == BACKOFF else None,
                            last_error=state.last_error,
                            faults=frozenset(node.faults.get(key, ())),
                            digest_state=self._digest_state(link.server_id, state.group_id),
                            outbox=node.store.outbox_count(link.server_id or "", state.group_id),
                        )
                    )
        for key in list(self._last):
            if key not in seen:
                del self._last[key]
                self._lag.pop(key, None)
        return NodeSnapshot(
            taken_at=now,
            server_id=node.server_id,
            listen_urls=tuple(node.urls),
            key_id=node.identity.key_id,
            pairing_code=node.identity.pairing_code,
            started_at=node.started_at,
            streams=tuple(streams),
            groups=self._groups(),
            repairs=node.repairs.snapshots() if node.repairs is not None else (),
            peers=tuple(
                PeerConfigSnapshot(p.url, node.peer_ids.get(p.url), tuple(p.groups))
                for p in node.peer_configs
            ),
            frame_log=node.frame_log.entries() if node.frame_log is not None else (),
            counters=dict(node.counters, ingest_backlog=node.ingest_queue.backlog),
            log_lines=tuple(node.log_lines)[-50:],
        )

    def _stream(self, runner: StreamRunner, now: float) -> StreamSnapshot:
        node = self.node
        session = runner.session
        c = session.counters
        key = runner.key
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
        peer = runner.peer_id or "?"
        rtt = session.rtt
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
            last_grant_received_at=session.last_grant_received_at,
            last_grant_sent_at=session.last_grant_sent_at,
            unacked=session.unacked,
            ack_lag_ms=lag * 1000 if lag is not None else None,
            outbox=node.store.outbox_count(peer, runner.group_id) if runner.uses_outbox else 0,
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
            faults=frozenset(node.faults.get(key, ())),
            digest_state=self._digest_state(runner.peer_id, runner.group_id),
        )

    def _digest_state(self, peer_id: str | None, group_id: str) -> str:
        node = self.node
        if node.repairs is None or peer_id is None:
            return DIGEST_UNKNOWN
        state = node.repairs.state_of(peer_id, group_id)
        if state == DIGEST_UNKNOWN and node.store.equivocators(group_id):
            return DIGEST_EQUIVOCATION
        return state

    def _groups(self) -> tuple[GroupSnapshot, ...]:
        store = self.node.store
        out = []
        for group_id in sorted(set(store.groups()) | set(self.node.config.groups)):
            count, fp = store.summary(group_id)
            authors = tuple(
                AuthorRange(a, v["max_seq"], v["contiguous_seq"], v["count"])
                for a, v in sorted(store.authors(group_id).items())
            )
            out.append(
                GroupSnapshot(group_id, count, fp, authors, tuple(store.equivocators(group_id)))
            )
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
    )


def _author_ranges(authors: dict[str, AuthorSummary]) -> tuple[AuthorRange, ...]:
    return tuple(
        AuthorRange(a, s.max_seq, s.contiguous_seq, s.count) for a, s in sorted(authors.items())
    )
