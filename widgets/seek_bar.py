"""Where a replay is in its recording: elapsed, a bar with the position, and the length."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


@dataclass(frozen=True, slots=True)
class SeekPosition:
    elapsed_s: float  # from the recording's start
    length_s: float
    node: str = ""  # the node shown
    nodes: int = 1  # nodes in the recording


def fmt_clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes:02d}:{seconds:02d}"


class SeekBar(Widget):
    """``00:12 ━━━━━━●──────── 00:30``: the replay's position in its recording; a click
    on the bar asks to seek there (:class:`SeekBar.Seek`)."""

    class Seek(Message):
        """Seek to this share of the recording (0 … 1), from a click on the bar."""

        def __init__(self, fraction: float) -> None:
            super().__init__()
            self.fraction = fraction

    DEFAULT_CSS = """
    SeekBar { height: 1; width: 1fr; padding: 0 1; }
    """

    position: reactive[SeekPosition | None] = reactive(None)
    _bar: tuple[int, int] = (0, 0)  # the bar's first column and width, as last drawn

    def render(self) -> Content:
        pos = self.position
        if pos is None:
            return Content("")
        width = self.content_size.width or 80
        left = fmt_clock(pos.elapsed_s) + " "
        right = " " + fmt_clock(pos.length_s)
        if pos.nodes > 1:
            right += f"  {pos.node}" + (f" ({pos.nodes} nodes: n switches)" if width >= 100 else "")
        room = max(4, width - len(left) - len(right))
        share = 0.0 if pos.length_s <= 0 else min(1.0, max(0.0, pos.elapsed_s / pos.length_s))
        at = min(room - 1, int(share * room))
        self._bar = (len(left), room)
        return Content.assemble(
            left,
            ("━" * at, "$accent"),
            ("●", "bold $accent"),
            ("─" * (room - at - 1), "$text-muted"),
            (right, "$text-muted"),
        )

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        start, room = self._bar
        if offset is None or room <= 1 or not start <= offset.x < start + room:
            return
        self.post_message(self.Seek((offset.x - start) / (room - 1)))
