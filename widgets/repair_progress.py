"""How far anti-entropy with one peer has got, or how the last run ended."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive

from node.view import snapshot as snap
from node.view.snapshot import RepairSnapshot
from widgets.drawn import DrawnWidget
from widgets.render import DIGEST_MARKS, bar, fmt_age, fmt_bytes, short_peer


@dataclass(frozen=True, slots=True)
class RepairView:
    now: float
    repair: RepairSnapshot | None
    peer_id: str


class RepairProgress(DrawnWidget):
    DEFAULT_CSS = """
    RepairProgress { height: auto; }
    """

    view: reactive[RepairView | None] = reactive(None, repaint=False)

    def watch_view(self) -> None:
        self.redraw()

    def draw(self) -> Content:
        v = self.view
        if v is None:
            return Content("")
        r = v.repair
        if r is None:
            return Content.assemble(
                ("repair ", "bold"), (f"none run with {short_peer(v.peer_id)} yet", "$text-muted")
            )
        symbol, _word, style = DIGEST_MARKS.get(r.state, ("?", r.state, ""))
        running = r.state == snap.DIGEST_REPAIRING
        if running:
            when = f"running {fmt_age(v.now - r.started_at)}" if r.started_at else "running"
        elif r.finished_at is not None:
            took = f" in {fmt_age(r.finished_at - r.started_at)}" if r.started_at else ""
            when = f"finished {fmt_age(v.now - r.finished_at)} ago{took}"
        else:
            when = ""
        first = Content.assemble(
            ("repair ", "bold"),
            (f"{symbol} {r.state}", style),
            (f"  {when}", "$text-muted"),
        )
        stats = Content.assemble(
            ("  ", ""),
            (f"{r.round_trips}", "bold"),
            (" round trips · ", "$text-muted"),
            (f"{r.ranges_compared}", "bold"),
            (" ranges · fetched ", "$text-muted"),
            (f"{r.events_fetched}", "bold"),
            (" · sent ", "$text-muted"),
            (f"{r.events_sent}", "bold"),
            (" · ", "$text-muted"),
            fmt_bytes(r.bytes_moved),
        )
        lines = [first, stats]
        if running and r.local_count is not None and r.remote_count is not None:
            target = max(r.local_count, r.remote_count, 1)
            have = min(r.local_count, r.remote_count)
            lines.append(
                Content.assemble(
                    ("  ", ""),
                    (bar(have, target, 24), "$accent on $surface"),
                    (f" {r.local_count:,} here / {r.remote_count:,} there", "$text-muted"),
                )
            )
        if r.error:
            lines.append(Content.styled(f"  ✗ {r.error}", "bold $error"))
        return Content("\n").join(lines)
