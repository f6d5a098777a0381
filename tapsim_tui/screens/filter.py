"""Choose which frames the log shows: by type and by peer."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from widgets.frame_log import FrameFilter

FRAME_TYPES = ("HELLO", "CREDIT", "EVENT", "ACK", "PING", "PONG", "ERROR", "CHECKPOINT")


def parse_filter(types_text: str, peer_text: str) -> FrameFilter | str:
    types = frozenset(
        t.strip().upper() for t in types_text.replace(" ", ",").split(",") if t.strip()
    )
    unknown = sorted(types - set(FRAME_TYPES))
    if unknown:
        return f"unknown frame type {', '.join(unknown)}; known: {' '.join(FRAME_TYPES)}"
    return FrameFilter(types=types, peer=peer_text.strip())


class FilterScreen(ModalScreen[FrameFilter | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal_cancel")
    ]

    def __init__(self, current: FrameFilter) -> None:
        super().__init__()
        self._current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Filter the frame log", classes="dialog-title")
            yield Label(f"frame types, comma-separated (empty: all) — {' '.join(FRAME_TYPES)}")
            yield Input(value=",".join(sorted(self._current.types)), id="types")
            yield Label("peer id contains (empty: all peers)")
            yield Input(value=self._current.peer, id="peer")
            yield Label("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Clear", id="clear")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#types", Input).focus()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self._apply()
        elif event.button.id == "clear":
            self.dismiss(FrameFilter())
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _apply(self) -> None:
        result = parse_filter(
            self.query_one("#types", Input).value, self.query_one("#peer", Input).value
        )
        if isinstance(result, str):
            self.query_one("#error", Label).update(f"✗ {result}")
            return
        self.dismiss(result)
