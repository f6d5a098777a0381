"""Forget a peer: stop federating with it, after the user confirms which one and whether
its outbox and key pin go too.

A peer added by mistake, or one that is unreachable and retried forever, can be stopped
here. Kept (the default), the outbox and pin let the peer resume where it stopped if it
is added again; dropped, the queued events for it are deleted and its key is trusted
afresh on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, OptionList
from textual.widgets.option_list import Option

from node.view.commands import ForgetPeer
from node.view.snapshot import PeerConfigSnapshot


class ForgetPeerScreen(ModalScreen[ForgetPeer | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal_cancel")
    ]

    def __init__(self, peers: Sequence[PeerConfigSnapshot]) -> None:
        super().__init__()
        self._peers = list(peers)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Forget a peer", classes="dialog-title")
            yield Label("Stop federating with it for this run.")
            yield Label("(A peer of the config file returns at the next start.)")
            yield OptionList(
                *(
                    Option(f"{p.url}  {p.server_id or '(not reached yet)'}", id=p.url)
                    for p in self._peers
                ),
                id="peers",
            )
            yield Checkbox("also drop its outbox (queued events) and its key pin", id="drop")
            yield Label("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Forget", variant="error", id="forget")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#peers", OptionList).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "forget":
            self._try_forget()
        else:
            self.dismiss(None)

    def on_option_list_option_selected(self, _event: OptionList.OptionSelected) -> None:
        self.query_one("#drop", Checkbox).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _try_forget(self) -> None:
        peers = self.query_one("#peers", OptionList)
        if peers.highlighted is None:
            self.query_one("#error", Label).update("✗ choose a peer")
            return
        url = peers.get_option_at_index(peers.highlighted).id
        assert url is not None
        self.dismiss(ForgetPeer(url, drop_outbox_and_pin=self.query_one("#drop", Checkbox).value))
