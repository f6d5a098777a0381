"""The node's live streams: typed keys, and the registry that knows which stream does what.

A stream is named by its :class:`~node.runtime.stream_key.StreamKey`. The registry holds every
live :class:`~node.runtime.stream_runner.StreamRunner`, decides which one drains a peer's
outbox (one per peer and group; it hands over when that one ends), applies faults when a
handshake completes, and fans newly stored events out to the streams of their group.
It remembers the streams peers opened to us after they end (:class:`GoneStream`): we
cannot dial those back, so the dashboard keeps showing them, and what is queued for them,
until the peer returns or is forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from node.protocol import session as s
from node.protocol.errors import ErrorCode
from node.protocol.frames import Event
from node.runtime.faults import CUT_REASON, FaultBoard
from node.runtime.stream_key import UNKNOWN_PEER, StreamKey
from node.runtime.stream_runner import StreamRunner


@dataclass(frozen=True, slots=True)
class GoneStream:
    """An authenticated stream a peer opened to us, after it ended."""

    key: StreamKey
    peer_url: str
    ended_at: float
    reason: str
    events_in: int
    events_out: int
    bytes_in: int
    bytes_out: int

    @property
    def peer_id(self) -> str:
        return self.key.peer_id

    @property
    def group_id(self) -> str:
        return self.key.group_id


class StreamRegistry:
    """Every live stream of the node, in either role.

    ``relay_peers(group)`` names the peers whose outbox a stored event joins (only their
    streams may drain an outbox); ``on_handshake(runner)`` tells the rest of the node a
    stream came up (links reset their backoff, repairs start).
    """

    def __init__(
        self,
        *,
        relay_peers: Callable[[str], list[str]],
        faults: FaultBoard,
        log: Callable[[str], None],
    ) -> None:
        self._runners: set[StreamRunner] = set()
        self._gone: dict[StreamKey, GoneStream] = {}
        self._relay_peers = relay_peers
        self._faults = faults
        self._log = log
        self.on_handshake: Callable[[StreamRunner], None] = lambda runner: None

    def __iter__(self) -> Iterator[StreamRunner]:
        return iter(list(self._runners))

    def __len__(self) -> int:
        return len(self._runners)

    def add(self, runner: StreamRunner) -> None:
        self._runners.add(runner)

    def live(self, peer_id: str, group_id: str) -> list[StreamRunner]:
        """The unfinished streams with ``peer_id`` in ``group_id``, in either role."""
        return [
            r
            for r in self._runners
            if not r.finished and r.peer_id == peer_id and r.group_id == group_id
        ]

    def backlogged(self, peer_id: str, group_id: str, within: float) -> bool:
        """Did ``peer_id`` send as fast as credit allowed on a live stream in ``group_id``
        within the last ``within`` seconds (it was replaying a backlog to us)?"""
        since = time.monotonic() - within
        return any(
            r.credit_bound_at is not None and r.credit_bound_at > since
            for r in self.live(peer_id, group_id)
        )

    def outbox_streaming(self, peer_id: str, group_id: str) -> bool:
        """Is a live stream draining ``peer_id``'s outbox for ``group_id``?"""
        return any(r.uses_outbox for r in self.live(peer_id, group_id))

    def connected_pairs(self) -> set[tuple[str, str]]:
        """(peer, group) of every live stream whose peer is known."""
        return {(r.peer_id, r.group_id) for r in self._runners if r.peer_id and not r.finished}

    def gone(self) -> list[GoneStream]:
        """Peers' streams to us that ended and have not come back, oldest key first."""
        return [self._gone[k] for k in sorted(self._gone, key=str)]

    def forget(self, peer_id: str) -> None:
        """Drop what is remembered of ``peer_id``'s ended streams (the peer is forgotten)."""
        for key in [k for k in self._gone if k.peer_id == peer_id]:
            del self._gone[key]

    def apply_faults(self, peer_id: str, group_id: str) -> None:
        """A fault of the link changed: bring its streams, in either role, in line."""
        for runner in list(self._runners):
            if runner.peer_id == peer_id and runner.group_id == group_id:
                self._faults.apply(runner)

    def notify_stored(self, group_id: str, events: list[Event], hop: str) -> None:
        for runner in list(self._runners):
            if runner.group_id == group_id:
                runner.notify_stored(events, hop)

    def close_all(self, code: ErrorCode, message: str) -> None:
        for runner in list(self._runners):
            runner.close(code, message)

    def abort_all(self, reason: str) -> None:
        for runner in list(self._runners):
            runner.abort(reason)

    # ------------------------------------------------------------------ StreamHooks

    def stream_up(self, runner: StreamRunner) -> bool:
        """A handshake completed. Returns whether the stream drains this peer's outbox."""
        peer = runner.peer_id or UNKNOWN_PEER
        if not self._faults.apply(runner):
            # The link is cut: the peer's stream is dropped once its HELLO names it, so
            # the peer retries with backoff and its outbox for us fills, as on a real cut.
            self._log(f"stream refused: {peer} {runner.group_id}: link cut")
            return False
        self._log(f"stream up: {peer} {runner.group_id} ({runner.role.value})")
        self._gone.pop(StreamKey.of(runner), None)
        self.on_handshake(runner)
        if peer not in self._relay_peers(runner.group_id):
            return False
        # One stream per peer and group drains the outbox; a second one only relays live.
        return not any(
            other is not runner and other.uses_outbox for other in self.live(peer, runner.group_id)
        )

    def stream_event(self, runner: StreamRunner, event: object) -> None:
        """What a stream's session reports that the node only logs."""
        where = f"{runner.peer_id or UNKNOWN_PEER} {runner.group_id}"
        match event:
            case s.ErrorReceived(code=code, message=message):
                self._log(f"{code} from {where}: {message}")
            case s.ErrorSent(code=code, message=message):
                self._log(f"{code} to {where}: {message}")
            case s.Stalled(stalled=True):
                self._log(f"stream stalled: {where}")

    def stream_ended(self, runner: StreamRunner) -> None:
        self._runners.discard(runner)
        if runner.role is s.Role.ACCEPTOR and runner.peer_id:
            key = StreamKey.of(runner)
            if not any(StreamKey.of(r) == key for r in self._runners if not r.finished):
                c = runner.session.counters
                totals = (c.events_in, c.events_out, c.bytes_in, c.bytes_out)
                before = self._gone.get(key)
                if before is not None and runner.end_reason == CUT_REASON:
                    # A refused retry moved nothing: keep what the last real stream did.
                    totals = (
                        before.events_in,
                        before.events_out,
                        before.bytes_in,
                        before.bytes_out,
                    )
                hello = runner.session.peer_hello
                self._gone[key] = GoneStream(
                    key,
                    runner.peer_url or (hello.url if hello else ""),
                    time.time(),
                    runner.end_reason or "ended",
                    *totals,
                )
        self._log(
            f"stream down: {runner.peer_id or UNKNOWN_PEER} {runner.group_id} "
            f"({runner.role.value}): {runner.end_reason}"
        )
        if runner.uses_outbox and runner.peer_id:
            # Hand the outbox to another live stream with the same peer, if any.
            for other in self.live(runner.peer_id, runner.group_id):
                if other.session.state == s.UP and not other.uses_outbox:
                    other.uses_outbox = True
                    other.notify_stored([], "")
                    break
