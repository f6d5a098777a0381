"""Who this node is and how to reach it, in two lines at the top of the screen."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive

from widgets.drawn import DrawnWidget
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


class HeaderBar(DrawnWidget):
    """Server id, listen URLs, key id and pairing code, uptime and the LIVE/PAUSED badge.

    Everything is drawn whole or not at all: when the width runs short, the key id goes
    first, then the listen URLs are shortened (the first one whole, a count of the rest);
    the pairing code is read aloud and the URL is what peers dial, so neither is cut.
    """

    DEFAULT_CSS = """
    HeaderBar { height: 2; background: $panel; padding: 0 1; }
    """

    info: reactive[HeaderInfo | None] = reactive(None, repaint=False)

    def watch_info(self) -> None:
        self.redraw()

    def draw(self) -> Content:
        info = self.info
        if info is None:
            return Content.styled("tapsim — waiting for the node…", "$text-muted")
        room = self.content_size.width or 200
        layouts = list(_layouts(info))
        for first, second in layouts:
            if first.cell_length <= room and second.cell_length <= room:
                break
        return Content("\n").join([first, second])


def _layouts(info: HeaderInfo) -> Iterator[tuple[Content, Content]]:
    """(first line, second line) candidates, most complete first."""
    paused = (" PAUSED ", "bold $text on $warning")
    badge: Content | tuple[str, str] = (" LIVE ", "bold $text on $success") if info.live else paused
    if info.replay:  # a recording played back is never live; the log may be paused
        replay = (" REPLAY ", "bold $text on $accent")
        badge = Content.assemble(replay) if info.live else Content.assemble(replay, " ", paused)
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
    code = Content.assemble(("pairing code ", "$text-muted"), (info.pairing_code, "bold $warning"))
    key = Content.assemble(("key ", "$text-muted"), info.key_id)
    urls = info.listen_urls
    if not urls:
        listens = [Content.styled("not listening", "$text-muted")]
    else:
        listens = [Content.assemble(("listen ", "$text-muted"), (", ".join(urls), "$accent"))]
        if len(urls) > 1:
            more = (f" +{len(urls) - 1}", "$text-muted")
            listens.append(Content.assemble(("listen ", "$text-muted"), (urls[0], "$accent"), more))
            listens.append(Content.assemble((urls[0], "$accent"), more))
        else:
            listens.append(Content.styled(urls[0], "$accent"))
    gap = Content("  ")
    for listen, with_key in [(listens[0], True)] + [(listen, False) for listen in listens]:
        second = gap.join([key, listen]) if with_key else listen
        yield gap.join([first, code]), second
        yield first, gap.join([code, second])
