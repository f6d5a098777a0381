"""Add a peer by URL: checked here, so a bad URL is a clear line, not a failed dial.

The URL obeys the same rule as ``--peer`` and the config file's ``peers``
(``node.runtime.config.parse_peer_url``) and reaches the node normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from node.protocol.ids import is_group_id
from node.runtime.config import ConfigError, parse_peer_url
from node.view.commands import AddPeer
from tapsim_tui.screens.form_dialog import FormDialog, Refused


def check_peer(url: str, groups_text: str, known: Sequence[str] = ()) -> AddPeer | str:
    """The command to submit, or what is wrong with the input, in words. ``known``: the
    node's peer URLs (the node itself also refuses another URL of a known server)."""
    if not url.strip():
        return "enter the peer's URL, e.g. http://192.168.1.20:8448 (port 8448 if omitted)"
    try:
        url = parse_peer_url(url)
    except ConfigError as exc:
        return str(exc)
    if url in known:
        return f"{url} is already a peer"
    groups = tuple(g.strip() for g in groups_text.replace(" ", ",").split(",") if g.strip())
    if not groups:
        return "enter at least one group, e.g. g!demo"
    for group in groups:
        if not is_group_id(group):
            return f"{group!r} is not a group id: g! then letters, digits, '.', '_' or '-'"
    return AddPeer(url=url, groups=groups)


class AddPeerScreen(FormDialog[AddPeer]):
    SUBMIT_BUTTON = "add"

    def __init__(self, groups: Sequence[str] = (), known: Sequence[str] = ()) -> None:
        super().__init__()
        self._groups = ",".join(groups)
        self._known = tuple(known)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Add a peer", classes="dialog-title")
            yield Label(
                "URL of the peer's federation endpoint: http(s)://host[:port], port 8448 if omitted"
            )
            yield Input(placeholder="http://192.168.1.20:8448", id="url")
            yield Label("groups to federate with it (comma-separated)")
            yield Input(value=self._groups, placeholder="g!demo", id="groups")
            yield Label("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Add", variant="primary", id="add")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#url", Input).focus()

    def submission(self) -> AddPeer:
        result = check_peer(
            self.query_one("#url", Input).value,
            self.query_one("#groups", Input).value,
            self._known,
        )
        if isinstance(result, str):
            raise Refused(result)
        return result
