"""A widget drawn from its own view value, repainted only when what it draws changed.

The dashboard hands widgets fresh view values every tick, and many of them carry the
time (ages, "for 3 min", time lines). Most ticks that time moves on without changing a
single character on screen; repainting anyway costs the compositor a full render of
the widget, which is most of what an idle dashboard spends. A `DrawnWidget` draws its
content when it gets new data and marks itself for repaint only when the text or a
style differs from what it shows, and for a new layout only when its height may change
(it is `auto` and a line's length changed).
"""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget


def same_content(a: Content | None, b: Content | None) -> bool:
    """True when both draw the same: the same text with the same styles."""
    if a is None or b is None:
        return a is b
    return a.plain == b.plain and a.spans == b.spans


def same_shape(a: Content | None, b: Content | None) -> bool:
    """True when both have the same line lengths: the same size on screen."""
    if a is None or b is None:
        return a is b
    return [line.cell_length for line in a.split("\n")] == [
        line.cell_length for line in b.split("\n")
    ]


class DrawnWidget(Widget):
    """Subclasses implement `draw()` and call `redraw()` whenever their data changed
    (typically from a reactive's watcher, declared with ``repaint=False``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._drawn: Content | None = None
        # How many times the drawn content changed and a repaint was asked for: a public
        # count, so tests can tell an unchanged view from a repainted one.
        self.repaints = 0

    def draw(self) -> Content:
        raise NotImplementedError

    def redraw(self) -> None:
        """Draw again; repaint only if the result differs from what is on screen."""
        content = self.draw()
        drawn = self._drawn
        if same_content(content, drawn):
            return
        layout = self.styles.height is None or self.styles.height.is_auto
        layout = layout and not same_shape(content, drawn)
        self._drawn = content
        self.repaints += 1
        self.refresh(layout=layout)

    def on_resize(self) -> None:
        # Drawings depend on the width: draw again for the new one.
        self._drawn = None
        self.redraw()

    def render(self) -> Content:
        if self._drawn is None:
            self._drawn = self.draw()
        return self._drawn
