"""Ask for a group's passphrase when `t` finds none: kept in memory for this session.

Test events are end-to-end encrypted by the dashboard's client layer, so a group
without a passphrase cannot be sent to. Rather than send the user to the config file,
this asks; the passphrase stays in the dashboard's memory (never on disk, never in the
node) unless the user adds it to ``[passphrases]`` in the config themselves.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from tapsim_tui.screens.form_dialog import FormDialog, Refused


class PassphraseScreen(FormDialog[str]):
    SUBMIT_BUTTON = "use"

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

    def submission(self) -> str:
        text = self.query_one(Input).value
        if not text.strip():
            raise Refused("enter a passphrase, or esc to cancel")
        return text
