"""Credit left in one direction of a stream, and in plain words why it is stuck."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive

from widgets.drawn import DrawnWidget
from widgets.render import bar, fmt_age, fmt_bytes

BAR_WIDTH = 10
HEAD_WIDTH = 13


@dataclass(frozen=True, slots=True)
class CreditView:
    outgoing: bool  # True: credit we may spend sending to the peer
    peer: str
    events: int
    bytes: int
    window_events: int
    window_bytes: int
    last_grant_age_s: float | None
    queued: int = 0
    # Why no credit can flow whatever the peer grants (no stream, a fault), in words;
    # "" when the stream is up and only credit decides.
    blocked: str = ""
    limited: str = ""  # a fault that limits this direction while it still flows

    @property
    def stalled(self) -> bool:
        return self.events <= 0 or self.bytes <= 0

    def reason(self) -> str:
        """Why nothing flows, in words an operator can act on; "" when it can flow."""
        queued = f", {self.queued:,} queued" if self.queued else ""
        if self.blocked:
            return f"{self.blocked}{queued}" if self.outgoing else self.blocked
        if self.limited:
            return self.limited
        if not self.stalled:
            return ""
        left = f"{self.events} events" if self.events <= 0 else f"{fmt_bytes(self.bytes)}"
        grant = (
            "no grant yet"
            if self.last_grant_age_s is None
            else f"last grant {fmt_age(self.last_grant_age_s)} ago"
        )
        if self.outgoing:
            return f"waiting for CREDIT from {self.peer}: {left} left{queued}, {grant}"
        return f"{self.peer} waits for our CREDIT: {left} left, {grant}"


class CreditGauge(DrawnWidget):
    """Events and bytes bars against the window for one direction (one row of a table)."""

    DEFAULT_CSS = """
    CreditGauge { height: auto; }
    """

    view: reactive[CreditView | None] = reactive(None, repaint=False)

    def watch_view(self) -> None:
        self.redraw()

    def draw(self) -> Content:
        v = self.view
        if v is None:
            return Content("")
        fill = "$error" if v.stalled else "$accent"
        arrow = "send → " if v.outgoing else "recv ← "
        if v.blocked:  # no stream: there is no credit to draw, not an empty one
            lines = [
                Content.assemble(
                    (f"{arrow}{v.peer}"[:HEAD_WIDTH].ljust(HEAD_WIDTH), "bold"),
                    ("no stream", "$text-muted"),
                )
            ]
            if self.has_class("first"):
                lines.insert(0, Content.styled("credit", "bold"))
            if v.outgoing:  # said once, under the first gauge
                lines.append(Content.styled(f"⚠ {v.reason()}", "bold $warning"))
            return Content("\n").join(lines)
        # Two bars and their numbers share what the pane leaves after the label; in a
        # narrow pane, one bar (events) and the bytes left as a number.
        room = self.size.width
        head = HEAD_WIDTH if room >= 50 or room == 0 else 9
        label = (f"{arrow}{v.peer}" if head == HEAD_WIDTH else f"{arrow[-2:]}{v.peer}")[:head]
        if room and room < 50:
            width = max(3, room - head - 22)
            line = Content.assemble(
                (label.ljust(head), "bold"),
                (bar(v.events, v.window_events, width), f"{fill} on $surface"),
                f" {v.events:>3}/{v.window_events:<4}",
                (f" {fmt_bytes(v.bytes)}", "$text-muted"),
            )
        else:
            width = max(3, min(BAR_WIDTH, (room - HEAD_WIDTH - 23) // 2)) if room else BAR_WIDTH
            line = Content.assemble(
                (label.ljust(head), "bold"),
                (bar(v.events, v.window_events, width), f"{fill} on $surface"),
                f" {v.events:>3}/{v.window_events:<4} ",
                (bar(v.bytes, v.window_bytes, width), f"{fill} on $surface"),
                f" {fmt_bytes(v.bytes)}/{fmt_bytes(v.window_bytes)}",
            )
        lines = [line]
        if self.has_class("first"):
            header = Content.assemble(
                ("credit".ljust(head), "bold"),
                ("events".ljust(width + 10), "$text-muted"),
                ("bytes", "$text-muted"),
            )
            lines.insert(0, header)
        reason = v.reason()
        if reason:
            lines.append(Content.styled(f"⚠ {reason}", "bold $warning"))
        return Content("\n").join(lines)
