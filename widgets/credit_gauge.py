"""Credit left in one direction of a stream, and in plain words why it is stuck."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

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

    @property
    def stalled(self) -> bool:
        return self.events <= 0 or self.bytes <= 0

    def reason(self) -> str:
        """Why nothing flows, in words an operator can act on; "" when it can flow."""
        if not self.stalled:
            return ""
        left = f"{self.events} events" if self.events <= 0 else f"{fmt_bytes(self.bytes)}"
        grant = (
            "no grant yet"
            if self.last_grant_age_s is None
            else f"last grant {fmt_age(self.last_grant_age_s)} ago"
        )
        if self.outgoing:
            queued = f", {self.queued:,} queued" if self.queued else ""
            return f"waiting for CREDIT from {self.peer}: {left} left{queued}, {grant}"
        return f"{self.peer} waits for our CREDIT: {left} left, {grant}"


class CreditGauge(Widget):
    """Events and bytes bars against the window for one direction (one row of a table)."""

    DEFAULT_CSS = """
    CreditGauge { height: auto; }
    """

    view: reactive[CreditView | None] = reactive(None, layout=True)

    def render(self) -> Content:
        v = self.view
        if v is None:
            return Content("")
        fill = "$error" if v.stalled else "$accent"
        arrow = "send → " if v.outgoing else "recv ← "
        line = Content.assemble(
            (f"{arrow}{v.peer}"[:HEAD_WIDTH].ljust(HEAD_WIDTH), "bold"),
            (bar(v.events, v.window_events, BAR_WIDTH), f"{fill} on $surface"),
            f" {v.events:>3}/{v.window_events:<4} ",
            (bar(v.bytes, v.window_bytes, BAR_WIDTH), f"{fill} on $surface"),
            f" {fmt_bytes(v.bytes)}/{fmt_bytes(v.window_bytes)}",
        )
        lines = [line]
        if self.has_class("first"):
            header = Content.assemble(
                ("credit".ljust(HEAD_WIDTH), "bold"),
                ("events".ljust(BAR_WIDTH + 10), "$text-muted"),
                ("bytes", "$text-muted"),
            )
            lines.insert(0, header)
        reason = v.reason()
        if reason:
            lines.append(Content.styled(f"⚠ {reason}", "bold $warning"))
        return Content("\n").join(lines)
