"""How a replay plays: its speed, or paused, or at its end."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


@dataclass(frozen=True, slots=True)
class ReplayPace:
    speed: float
    paused: bool
    at_end: bool = False


class ReplaySpeed(Widget):
    """``▶ 1×``, ``▶ 10×``, ``❚❚ paused`` or ``■ end``, in front of the seek bar."""

    DEFAULT_CSS = """
    ReplaySpeed { height: 1; width: 11; }
    """

    pace: reactive[ReplayPace | None] = reactive(None)

    def render(self) -> Content:
        pace = self.pace
        if pace is None:
            return Content("")
        if pace.at_end:
            return Content.styled(" ■ end", "bold $text-muted")
        if pace.paused:
            return Content.styled(" ❚❚ paused", "bold $warning")
        return Content.styled(f" ▶ {pace.speed:g}×", "bold $success")
