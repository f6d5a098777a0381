"""PING sent, PONG read and missed PONGs on a time line, plus the ages behind them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive

from widgets.drawn import DrawnWidget
from widgets.render import fmt_age, fmt_ms
from widgets.stream_history import MISSED, PING, PONG, Beat

SPAN_S = 180.0
LABEL = "heartbeat "


@dataclass(frozen=True, slots=True)
class HeartbeatView:
    now: float
    beats: tuple[Beat, ...]
    last_ping_sent_at: float | None
    last_pong_at: float | None
    last_read_at: float | None
    pings_sent: int
    pongs_received: int
    missed_pongs: int
    rtt_ms: float | None


class HeartbeatTimeline(DrawnWidget):
    """The last three minutes: ↑ PING written, ↓ PONG read, ● both in one cell, ✗ missed."""

    DEFAULT_CSS = """
    HeartbeatTimeline { height: 3; }
    """

    view: reactive[HeartbeatView | None] = reactive(None, repaint=False)

    def watch_view(self) -> None:
        self.redraw()

    def draw(self) -> Content:
        v = self.view
        if v is None:
            return Content("")
        width = max(self.size.width - len(LABEL) - 4, 10)
        line = _timeline(v.beats, v.now, width)
        ages = Content.assemble(
            ("ago: PING ", "$text-muted"),
            _ago(v.now, v.last_ping_sent_at),
            (" · PONG ", "$text-muted"),
            _ago(v.now, v.last_pong_at),
            (" · any read ", "$text-muted"),
            _ago(v.now, v.last_read_at),
            (" · RTT ", "$text-muted"),
            fmt_ms(v.rtt_ms),
        )
        counts = Content.assemble(
            (f"PINGs: {v.pings_sent} sent · {v.pongs_received} answered · ", "$text-muted"),
            (f"{v.missed_pongs} missed", "bold $error" if v.missed_pongs else "$text-muted"),
        )
        return Content("\n").join(
            [
                Content.assemble((LABEL, "bold"), *line, ("now", "$text-muted")),
                ages,
                counts,
            ]
        )


def _ago(now: float, at: float | None) -> str:
    return "never" if at is None else fmt_age(now - at)


def _timeline(beats: Sequence[Beat], now: float, width: int) -> list[tuple[str, str]]:
    cells: list[set[str]] = [set() for _ in range(width)]
    start = now - SPAN_S
    for beat in beats:
        if start <= beat.at <= now:
            index = min(int((beat.at - start) / SPAN_S * width), width - 1)
            cells[index].add(beat.kind)
    out: list[tuple[str, str]] = []
    for kinds in cells:
        if MISSED in kinds:
            mark = ("✗", "bold $error")
        elif PING in kinds and PONG in kinds:
            mark = ("●", "$success")
        elif PING in kinds:
            mark = ("↑", "$accent")
        elif PONG in kinds:
            mark = ("↓", "$success")
        else:
            mark = ("·", "$text-disabled")
        if out and out[-1][1] == mark[1]:  # one span per run of a style: cheaper to draw
            out[-1] = (out[-1][0] + mark[0], mark[1])
        else:
            out.append(mark)
    out.append((" ", ""))
    return out
