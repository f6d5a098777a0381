"""Who this node is and how to reach it, in two lines at the top of the screen."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from widgets.render import fmt_uptime


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    server_id: str
    listen_urls: tuple[str, ...]
    key_id: str
    pairing_code: str
    uptime_s: int
    live: bool
    node_index: int = 0
    node_count: int = 1
    recording: bool = False  # the node records the wire
    replay: bool = False  # a recording played back, not a live node


class HeaderBar(Widget):
    """Server id, listen URLs, key id and pairing code, uptime and the LIVE/PAUSED badge."""

    DEFAULT_CSS = """
    HeaderBar { height: 2; background: $panel; padding: 0 1; }
    """

    info: reactive[HeaderInfo | None] = reactive(None)

    def render(self) -> Content:
        info = self.info
        if info is None:
            return Content.styled("tapsim — waiting for the node…", "$text-muted")
        paused = (" PAUSED ", "bold $text on $warning")
        badge: Content | tuple[str, str] = (
            (" LIVE ", "bold $text on $success") if info.live else paused
        )
        if info.replay:  # a recording played back is never live; the log may be paused
            replay = (" REPLAY ", "bold $text on $accent")
            badge = (
                Content.assemble(replay, " ", paused) if not info.live else Content.assemble(replay)
            )
        rec = ("  ● REC", "bold $error") if info.recording else ""
        switch = (
            (f"  node {info.node_index + 1}/{info.node_count}", "$text-muted")
            if info.node_count > 1
            else ""
        )
        first = Content.assemble(
            (" tapsim ", "bold $text on $primary"),
            " ",
            (info.server_id, "bold $text"),
            switch,
            "  ",
            badge,
            rec,
            ("  up ", "$text-muted"),
            fmt_uptime(info.uptime_s),
        )
        code = Content.assemble(
            ("pairing code ", "$text-muted"), (info.pairing_code, "bold $warning")
        )
        urls = ", ".join(info.listen_urls) or "not listening"
        second = Content.assemble(
            ("key ", "$text-muted"),
            info.key_id,
            ("  listen ", "$text-muted"),
            (urls, "$accent"),
        )
        # The pairing code is read aloud: it goes where it fits whole, never cut.
        room = self.content_size.width or 200
        if first.cell_length + 2 + code.cell_length <= room:
            first = Content.assemble(first, "  ", code)
        else:
            second = Content.assemble(code, "  ", second)
        return Content("\n").join([first, second])
