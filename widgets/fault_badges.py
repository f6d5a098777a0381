"""Loud badges for the demo faults that are switched on, so nobody forgets one."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from widgets.render import FAULT_LABELS


class FaultBadges(Widget):
    """One badge per (fault, stream); hidden when no fault is active."""

    DEFAULT_CSS = """
    FaultBadges { height: 1; padding: 0 1; background: $error 15%; display: none; }
    FaultBadges.-active { display: block; }
    """

    # (fault, "peer · group") pairs, in a stable order.
    faults: reactive[tuple[tuple[str, str], ...]] = reactive(())

    def watch_faults(self, faults: tuple[tuple[str, str], ...]) -> None:
        self.set_class(bool(faults), "-active")

    def render(self) -> Content:
        parts: list[Content | str | tuple[str, str]] = [
            (f"FAULTS {len(self.faults)} ", "bold $error")
        ]
        for fault, where in self.faults:
            parts.append((f" {FAULT_LABELS.get(fault, fault)} ", "bold $text on $error"))
            parts.append((f" {where}  ", "$text"))
        return Content.assemble(*parts)
