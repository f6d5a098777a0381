"""Cumulative ACK bookkeeping of PROTOCOL §4.4, one tracker per direction of a stream.

An ACK promises durability: a crash after it loses nothing. So the inbound side only
counts an EVENT once the shell reports its outcome (after the store's commit), and
``through`` never passes an EVENT whose outcome is still unknown, even when later
EVENTs finish first (a group commit may complete out of order).
"""

from __future__ import annotations

from collections import deque

from node.protocol.frames import Ack


class InboundAcks:
    """What of the peer's frames is processed, and which ACK is owed for it.

    Non-EVENT frames are processed the moment they are read; an EVENT is processed
    when :meth:`event_done` is called. ``through`` is the highest sequence with every
    peer frame at or below it processed: one less than the oldest EVENT still in
    flight, or the last sequence read when none is.
    """

    __slots__ = ("_done", "_event_ids", "_pending", "ackable", "acks_sent", "due_at", "last_read")

    def __init__(self) -> None:
        self.last_read = 0
        self._pending: deque[int] = deque()  # sequences of EVENTs in flight, ascending
        self._done: dict[int, str | None] = {}  # finished out of order, not yet covered
        self._event_ids: list[str] = []  # newly stored and covered by `through`
        self.ackable = 0  # processed EVENTs covered by `through` and not yet acknowledged
        self.due_at: float | None = None  # when the coalesced ACK must go out
        self.acks_sent = 0

    @property
    def through(self) -> int:
        pending = self._pending
        return pending[0] - 1 if pending else self.last_read

    @property
    def in_flight(self) -> int:
        """EVENTs read whose outcome the shell has not reported yet."""
        return len(self._pending)

    def frame_read(self, sequence: int) -> None:
        self.last_read = sequence

    def event_read(self, sequence: int) -> None:
        self.last_read = sequence
        self._pending.append(sequence)

    def event_done(self, sequence: int, stored_id: str | None, now: float, delay: float) -> None:
        """Record an EVENT's outcome; ``stored_id`` is its event_id when it was newly stored.

        The caller guarantees ``sequence`` is an EVENT read and not yet done.
        """
        pending = self._pending
        if pending[0] != sequence:
            self._done[sequence] = stored_id
            return
        pending.popleft()
        self._cover(stored_id, now, delay)
        done = self._done
        while done and pending and pending[0] in done:
            self._cover(done.pop(pending.popleft()), now, delay)

    def _cover(self, stored_id: str | None, now: float, delay: float) -> None:
        self.ackable += 1
        if stored_id is not None:
            self._event_ids.append(stored_id)
        if self.due_at is None:
            self.due_at = now + delay

    def take(self) -> Ack | None:
        """The ACK owed now (resetting the debt), or None when nothing is owed."""
        if not self.ackable:
            return None
        ack = Ack(self.through, self._event_ids)
        self._event_ids = []
        self.ackable = 0
        self.due_at = None
        self.acks_sent += 1
        return ack


class OutboundAcks:
    """EVENTs we sent and the peer has not yet acknowledged: sequence → event_id.

    Only the ids are kept (the outbox holds the events durably), so memory is bounded
    by the peer's credit window.
    """

    __slots__ = ("_sent", "acked_through", "acks_read", "bytes", "last_ack_at", "last_rtt")

    def __init__(self) -> None:
        # (sequence, event_id, sent_at, frame id, line size): the frame id resolves an
        # ERROR's `ref`
        self._sent: deque[tuple[int, str, float, str, int]] = deque()
        self.acked_through = 0
        self.last_ack_at: float | None = None
        # Seconds from writing the newest EVENT an ACK covered to reading that ACK.
        self.last_rtt: float | None = None
        self.acks_read = 0
        self.bytes = 0  # EVENT line bytes written and not yet acknowledged

    @property
    def unacked(self) -> int:
        return len(self._sent)

    @property
    def oldest_sent_at(self) -> float | None:
        """When our oldest unacknowledged EVENT was written: the ACK lag's start."""
        return self._sent[0][2] if self._sent else None

    def sent(
        self, sequence: int, event_id: str, now: float, frame_id: str = "", size: int = 0
    ) -> None:
        self._sent.append((sequence, event_id, now, frame_id, size))
        self.bytes += size

    def event_for_frame(self, frame_id: str) -> str | None:
        """The event_id of an unacknowledged EVENT frame we sent (ERRORs are rare: O(n))."""
        for entry in self._sent:
            if entry[3] == frame_id:
                return entry[1]
        return None

    def ack(self, through: int, now: float) -> list[str]:
        """Apply a cumulative ACK; returns the event ids it newly covers, oldest first."""
        self.last_ack_at = now
        self.acks_read += 1
        if through > self.acked_through:
            self.acked_through = through
        sent = self._sent
        covered: list[str] = []
        entry = None
        while sent and sent[0][0] <= through:
            entry = sent.popleft()
            covered.append(entry[1])
            self.bytes -= entry[4]
        if entry is not None:
            self.last_rtt = max(now - entry[2], 0.0)
        return covered
