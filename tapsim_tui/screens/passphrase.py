"""Ask for a group's passphrase when `t` finds none: kept in memory for this session.

Test events are end-to-end encrypted by the dashboard's client layer, so a group
without a passphrase cannot be sent to. Rather than send the user to the config file,
this asks; the passphrase stays in the dashboard's memory (never on disk, never in the
node) unless the user adds it to ``[passphrases]`` in the config themselves.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class PassphraseScreen(ModalScreen[str | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="passphrase_cancel")
    ]

    def __init__(self, group_id: str) -> None:
        super().__init__()
        self.group_id = group_id

    def compose(self) -> ComposeResult:
        with Vertical(id="passphrase-dialog", classes="dialog"):
            yield Label(f"Passphrase for {self.group_id}", classes="dialog-title", markup=False)
            yield Label(
                "Test events are end-to-end encrypted with the group's passphrase: the "
                "same on every dashboard of the group. It is kept in memory until you "
                "quit; to keep it, add it under [passphrases] in config.toml.",
                markup=False,
            )
            yield Input(password=True, placeholder="the group's passphrase", id="passphrase")
            yield Label("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Use it", variant="primary", id="use")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._try_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "use":
            self._try_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _try_submit(self) -> None:
        text = self.query_one(Input).value
        if not text.strip():
            self.query_one("#error", Label).update("✗ enter a passphrase, or esc to cancel")
            return
        self.dismiss(text)
