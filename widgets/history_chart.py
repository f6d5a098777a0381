"""RTT and ACK-lag over the last 1, 5 or 15 minutes, from the UI's own history."""

from __future__ import annotations

from textual.content import Content

from widgets.drawn import DrawnWidget
from widgets.render import column_chart, fmt_ms
from widgets.stream_history import StreamHistory

WINDOWS_S = (60, 300, 900)
CHART_ROWS = 3
LABEL_WIDTH = 9


def window_label(window_s: int) -> str:
    return f"{window_s // 60} min"


class HistoryChart(DrawnWidget):
    """Two small column charts sharing one time axis; each column is the worst second."""

    DEFAULT_CSS = """
    HistoryChart { height: 9; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history: StreamHistory | None = None
        self.window_s = WINDOWS_S[0]
        self.now = 0.0

    def show(self, history: StreamHistory | None, window_s: int, now: float) -> None:
        self.history, self.window_s, self.now = history, window_s, now
        self.redraw()

    def draw(self) -> Content:
        # At most one column per second: wider would only leave gaps.
        width = min(max(self.size.width - LABEL_WIDTH, 8), self.window_s)
        title = Content.assemble(
            ("history ", "bold"),
            (f"last {window_label(self.window_s)}", "$accent"),
            ("  (w: 1/5/15 min, worst per column)", "$text-muted"),
        )
        if self.history is None:
            return Content("\n").join([title, Content.styled("no samples yet", "$text-muted")])
        rtt, lag = self.history.series(self.now, self.window_s, width)
        lines = [title]
        for name, values, style in (("RTT", rtt, "$accent"), ("ACK lag", lag, "$warning")):
            present = [v for v in values if v is not None]
            top = max(present) if present else 0.0
            current = next((v for v in reversed(values) if v is not None), None)
            lines.append(
                Content.assemble(
                    (f"{name:<{LABEL_WIDTH}}", "bold"),
                    ("now ", "$text-muted"),
                    fmt_ms(current),
                    ("  max ", "$text-muted"),
                    fmt_ms(top if present else None),
                )
            )
            rows = column_chart(values, CHART_ROWS, top)
            for i, row in enumerate(rows):
                axis = fmt_ms(top) if i == 0 and present else ""
                lines.append(
                    Content.assemble((f"{axis:>{LABEL_WIDTH - 1}}│", "$text-muted"), (row, style))
                )
        return Content("\n").join(lines)
