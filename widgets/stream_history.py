"""History the dashboard keeps itself, because snapshots carry only a short tail.

Samples come once per UI tick; they are folded into one slot per second (the worst
value of that second: a chart is for spotting spikes), which bounds memory at
15 min × 2 series per stream whatever the tick rate. Heartbeats are inferred from
the counters in consecutive snapshots (pings sent, pongs read, missed pongs).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from node.view.snapshot import StreamSnapshot

HISTORY_SECONDS = 15 * 60
HEARTBEAT_KEEP = 64

PING = "ping"
PONG = "pong"
MISSED = "missed"


@dataclass(frozen=True, slots=True)
class Beat:
    at: float
    kind: str  # PING | PONG | MISSED


class StreamHistory:
    """Per-second RTT and ACK-lag maxima plus recent heartbeats of one stream."""

    __slots__ = ("_last", "_seconds", "beats", "version")

    def __init__(self) -> None:
        # (second, rtt_ms | None, ack_lag_ms | None), oldest first.
        self._seconds: deque[tuple[int, float | None, float | None]] = deque(maxlen=HISTORY_SECONDS)
        self.beats: deque[Beat] = deque(maxlen=HEARTBEAT_KEEP)
        self._last: StreamSnapshot | None = None
        self.version = 0  # bumped on every change: widgets redraw only when it moves

    def sample(self, stream: StreamSnapshot, now: float) -> None:
        second = int(now)
        rtt, lag = stream.rtt_ms, stream.ack_lag_ms
        if self._seconds and self._seconds[-1][0] == second:
            _, old_rtt, old_lag = self._seconds[-1]
            self._seconds[-1] = (second, _worst(old_rtt, rtt), _worst(old_lag, lag))
        else:
            self._seconds.append((second, rtt, lag))
        self._note_beats(stream)
        self._last = stream
        self.version += 1

    def _note_beats(self, stream: StreamSnapshot) -> None:
        last = self._last
        if last is None:
            if stream.last_ping_sent_at is not None:
                self.beats.append(Beat(stream.last_ping_sent_at, PING))
            if stream.last_pong_at is not None:
                self.beats.append(Beat(stream.last_pong_at, PONG))
            return
        if stream.pings_sent > last.pings_sent and stream.last_ping_sent_at is not None:
            self.beats.append(Beat(stream.last_ping_sent_at, PING))
        if stream.pongs_received > last.pongs_received and stream.last_pong_at is not None:
            self.beats.append(Beat(stream.last_pong_at, PONG))
        if stream.missed_pongs > last.missed_pongs:
            at = stream.last_ping_sent_at or stream.last_read_at or 0.0
            self.beats.append(Beat(at, MISSED))

    def series(self, now: float, window_s: int, width: int) -> tuple[list, list]:
        """RTT and ACK-lag columns for the last `window_s` seconds in `width` cells.

        Each cell is the worst of the seconds it covers; None where nothing was sampled.
        """
        width = max(width, 1)
        end = int(now) + 1
        start = end - window_s
        per_cell = window_s / width
        rtt: list[float | None] = [None] * width
        lag: list[float | None] = [None] * width
        for second, r, g in reversed(self._seconds):
            if second < start:
                break
            if second >= end:
                continue
            cell = min(int((second - start) / per_cell), width - 1)
            rtt[cell] = _worst(rtt[cell], r)
            lag[cell] = _worst(lag[cell], g)
        return rtt, lag


def _worst(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a > b else b
