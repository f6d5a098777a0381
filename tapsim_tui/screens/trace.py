"""One event's way across the federation: author, authored time, and every hop with times.

Each node the dashboard looks at is asked for its own view of the event (a handle's
``trace``: over the control socket for a node in a child process); the views are
merged by time (``node.view.trace.merge``), so in ``tapsim demo`` the trace follows the
event over all its nodes. The screen asks again every second while it is open, so a
hop that is still under way fills in.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from node.view.trace import Trace, merge, trace_lines

REFRESH_EVERY = 1.0  # seconds between asks while the screen is open
ASK_TIMEOUT = 3.0  # how long one node may take to answer

TRACE_BINDINGS: list[BindingType] = [
    Binding("escape", "close", "Close the trace", id="trace_close"),
    Binding("f5", "refresh_trace", "Trace: ask the nodes again", id="trace_refresh"),
]

_COMPACT_BELOW = 100  # columns under which step lines leave out the wall-clock time


def gather(handles: Sequence[object], event_id: str) -> Trace:
    """Every handle's view of the event, merged (handles without ``trace`` are skipped)."""
    views: list[Trace] = []
    for handle in handles:
        ask = getattr(handle, "trace", None)
        if ask is None:
            continue
        view = ask(event_id, ASK_TIMEOUT)
        if view is not None:
            views.append(view)
    return merge(views) if views else Trace(event_id)


def render_trace(trace: Trace, width: int) -> Text:
    text = Text(no_wrap=False)
    section = ""
    for line in trace_lines(trace, compact=width < _COMPACT_BELOW)[1:]:  # the id: the title
        if line in ("hops", "steps"):
            section = line
            text.append(line + "\n", "bold underline")
        elif line.startswith(("route ", "author ")):
            head, _, rest = line.partition(" ")
            text.append(head + " ", "dim")
            text.append(rest + "\n", "bold")
        elif line.startswith("  ") and not line.startswith("   ") and section == "hops":
            text.append(line + "\n", "bold cyan")
        elif line.startswith("not seen"):
            text.append(line + "\n", "yellow")
        else:
            text.append(line + "\n")
    text.rstrip()
    return text


class TraceScreen(Screen[None]):
    BINDINGS = TRACE_BINDINGS
    DEFAULT_CSS = """
    TraceScreen #trace-body {
        border: round $primary 60%;
        border-title-style: bold;
        border-title-color: $text;
        padding: 0 1;
        height: 1fr;
    }
    """

    def __init__(self, event_id: str) -> None:
        super().__init__()
        self.event_id = event_id
        self.trace: Trace | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="trace-body"):
            yield Static(Text("asking the nodes…", "dim"), id="trace-text")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        body = self.query_one("#trace-body", VerticalScroll)
        body.border_title = f"trace · {self.event_id}"
        body.border_subtitle = "esc close · f5 ask again"
        body.focus()
        self.action_refresh_trace()
        if getattr(self.app, "live", True):
            self.set_interval(REFRESH_EVERY, self.action_refresh_trace)

    def on_resize(self) -> None:
        self._paint()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_refresh_trace(self) -> None:
        self._ask()

    @work(thread=True, exclusive=True, group="trace", exit_on_error=False)
    def _ask(self) -> None:
        trace = gather(self.app.handles, self.event_id)
        self.app.call_from_thread(self.show, trace)

    def show(self, trace: Trace) -> None:
        self.trace = trace
        self._paint()

    def _paint(self) -> None:
        if self.trace is None or not self.is_mounted:
            return
        width = self.size.width or 80
        self.query_one("#trace-text", Static).update(render_trace(self.trace, width))
