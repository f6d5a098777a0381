"""Every key of the dashboard, as currently mapped (the user's keymap applied)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

LEGEND = (
    "state: connecting · handshaking · up · stalled (no ACK for 3 pings) · dead · backoff Ns"
    " · gone (the peer's stream to us ended; it must reconnect) · cut / acks paused / credit 1"
    " while a fault is on (the same key on the row undoes it; palette: Clear all faults)\n"
    "ACK lag/rtt: age of our oldest unacknowledged event (0: all acknowledged) / the last"
    " ACK's round trip (event written → ACK read)\n"
    "digest: ✓ equal  ✗ differs  ⟳ repairing  ! equivocation  ? not compared yet; in the"
    " detail pane … means we moved on since the peer's digest was fetched\n"
    "credit bars: events | bytes left against the window; ↑ we send, ↓ we receive · ⚡ fault on\n"
    "ranges: the group's event-id time, left (old) to right (new): green equal, red differs,"
    " accent repaired, ░ not compared; it fills in as a repair proceeds\n"
    "frame log: ↑/↓ pick an EVENT, ⏎ traces it (its hops over every node, with times)"
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss_help", "Close", id="help_close"),
    ]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        """`rows`: (keys, description, binding id) in display order."""
        super().__init__()
        self._rows = rows

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Label("tapsim keys  (esc to close)", classes="dialog-title")
            yield DataTable(id="help-keys", cursor_type="none", zebra_stripes=True)
            yield Static(LEGEND, id="help-legend", markup=False)
            yield Label(
                "Remap any key by its id under [keymap] in the config.",
                classes="muted",
                markup=False,
            )

    def on_mount(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        table.add_columns("key", "does", "id")
        for keys, description, binding_id in self._rows:
            table.add_row(keys, description, binding_id)

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
