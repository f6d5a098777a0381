"""PING/PONG keepalive of PROTOCOL §4.5: RTT, missed pongs and dead-stream detection.

Liveness is judged by what is *read*, never by PONGs alone: any bytes from the peer
prove the stream alive, so a peer busy streaming bulk EVENTs (whose PONG may queue
behind our own backlog) is never declared dead. RTT is timed from the moment the
PING is handed to the transport, not from when it was queued, so a local backlog
does not inflate it.
"""

from __future__ import annotations

from collections import deque

RTT_HISTORY = 32
DEAD_AFTER_INTERVALS = 3


class Keepalive:
    __slots__ = (
        "_outstanding",
        "interval",
        "last_ping_sent_at",
        "last_pong_at",
        "last_read_at",
        "missed_pongs",
        "next_ping_at",
        "pings_sent",
        "pongs_received",
        "rtt",
        "rtt_history",
    )

    def __init__(self, interval: float, now: float) -> None:
        if interval <= 0:
            raise ValueError("ping interval must be positive")
        self.interval = interval
        self.last_read_at = now  # the stream's opening counts as life
        self.next_ping_at: float | None = None  # None until the handshake is done
        self._outstanding: dict[str, float | None] = {}  # ping id → written at
        self.rtt: float | None = None
        self.rtt_history: deque[float] = deque(maxlen=RTT_HISTORY)
        self.pings_sent = 0
        self.pongs_received = 0
        self.missed_pongs = 0
        self.last_ping_sent_at: float | None = None
        self.last_pong_at: float | None = None

    def start(self, now: float) -> None:
        """Begin pinging: a first PING at once gives the dashboard an RTT without waiting."""
        self.next_ping_at = now

    def stop(self) -> None:
        self.next_ping_at = None

    def read(self, now: float) -> None:
        self.last_read_at = now

    @property
    def dead_at(self) -> float:
        """When the stream is dead if nothing more is read (3 × our own interval)."""
        return self.last_read_at + DEAD_AFTER_INTERVALS * self.interval

    def is_dead(self, now: float) -> bool:
        return now >= self.last_read_at + DEAD_AFTER_INTERVALS * self.interval

    def ping_due(self, now: float) -> bool:
        return self.next_ping_at is not None and now >= self.next_ping_at

    def ping_queued(self, ping_id: str, now: float) -> None:
        """A PING was queued; any earlier one still unanswered counts as missed."""
        if self._outstanding:
            self.missed_pongs += sum(1 for t in self._outstanding.values() if t is not None)
            self._outstanding = {k: t for k, t in self._outstanding.items() if t is None}
        self._outstanding[ping_id] = None
        self.next_ping_at = now + self.interval

    def ping_written(self, ping_id: str, now: float) -> None:
        if ping_id in self._outstanding:
            self._outstanding[ping_id] = now
        self.pings_sent += 1
        self.last_ping_sent_at = now

    def pong(self, ping_id: str, now: float) -> float | None:
        """Round-trip time for the PING this PONG answers, or None for an unknown ping id."""
        written = self._outstanding.get(ping_id)
        if written is None:
            return None
        del self._outstanding[ping_id]
        rtt = now - written
        if rtt < 0:
            rtt = 0.0
        self.rtt = rtt
        self.rtt_history.append(rtt)
        self.pongs_received += 1
        self.last_pong_at = now
        return rtt
