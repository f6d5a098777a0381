"""The shape every small form of the dashboard shares (add a peer, a passphrase…).

Enter or the primary button submits; Cancel or escape dismisses with None. What the
user typed is judged by :meth:`FormDialog.submission`: a value dismisses the dialog with
it; :class:`Refused` puts its words in the ``#error`` label and the dialog stays.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

ResultT = TypeVar("ResultT")


class Refused(Exception):
    """What is wrong with the input, in words the dialog shows."""


class FormDialog(ModalScreen[ResultT | None], Generic[ResultT]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal_cancel")
    ]
    SUBMIT_BUTTON: ClassVar[str]  # the id of the primary button

    def submission(self) -> ResultT:
        """The dialog's result from its inputs; raises :class:`Refused` if they are wrong."""
        raise NotImplementedError

    def on_input_changed(self, _event: Input.Changed) -> None:
        self.query_one("#error", Label).update("")

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._try_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == self.SUBMIT_BUTTON:
            self._try_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _try_submit(self) -> None:
        try:
            result = self.submission()
        except Refused as exc:
            self.query_one("#error", Label).update(f"✗ {exc}")
            return
        self.dismiss(result)
