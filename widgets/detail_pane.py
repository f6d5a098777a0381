"""Everything about the selected stream: history, credit, heartbeat, digest, repair.

A container that hands each child the slice of data it draws (attributes down);
children redraw only when their slice changed.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from node.view.snapshot import GroupSnapshot, RepairSnapshot, StreamSnapshot
from widgets.credit_gauge import CreditGauge, CreditView
from widgets.digest_comparison import DigestComparison, DigestView
from widgets.heartbeat_timeline import HeartbeatTimeline, HeartbeatView
from widgets.history_chart import HistoryChart
from widgets.render import STATE_STYLES, fmt_age, fmt_bytes, short_peer
from widgets.repair_progress import RepairProgress, RepairView
from widgets.stream_history import StreamHistory


class DetailPane(VerticalScroll):
    DEFAULT_CSS = """
    DetailPane > * { margin-bottom: 1; }
    DetailPane > #stream-summary, DetailPane > #credit-out { margin-bottom: 0; }
    """

    ALLOW_MAXIMIZE = True

    def compose(self) -> ComposeResult:
        yield Static(id="stream-summary")
        yield CreditGauge(id="credit-out", classes="first")
        yield CreditGauge(id="credit-in")
        yield HeartbeatTimeline()
        yield HistoryChart()
        yield RepairProgress()
        yield DigestComparison()

    def on_mount(self) -> None:
        self.border_title = "detail"
        self.show(None, None, None, None, 0.0, 60, "")

    def show(
        self,
        stream: StreamSnapshot | None,
        group: GroupSnapshot | None,
        repair: RepairSnapshot | None,
        history: StreamHistory | None,
        now: float,
        window_s: int,
        local_name: str,
    ) -> None:
        summary = self.query_one("#stream-summary", Static)
        children = self.query_children().exclude("#stream-summary")
        if stream is None:
            self.border_title = "detail"
            summary.update(Content.styled("select a stream in the table above", "$text-muted"))
            children.set(display=False)
            return
        children.set(display=True)
        peer = short_peer(stream.peer_id)
        self.border_title = f"{stream.peer_id} · {stream.group_id} · {stream.role}"
        summary.update(_summary(stream, now))
        self.query_one("#credit-out", CreditGauge).view = CreditView(
            True,
            peer,
            stream.credit_out_events,
            stream.credit_out_bytes,
            stream.window_events,
            stream.window_bytes,
            _age(now, stream.last_grant_received_at),
            stream.outbox,
        )
        self.query_one("#credit-in", CreditGauge).view = CreditView(
            False,
            peer,
            stream.credit_in_events,
            stream.credit_in_bytes,
            stream.window_events,
            stream.window_bytes,
            _age(now, stream.last_grant_sent_at),
        )
        self.query_one(HistoryChart).show(history, window_s, now)
        self.query_one(HeartbeatTimeline).view = HeartbeatView(
            round(now, 1),
            tuple(history.beats) if history else (),
            stream.last_ping_sent_at,
            stream.last_pong_at,
            stream.last_read_at,
            stream.pings_sent,
            stream.pongs_received,
            stream.missed_pongs,
            stream.rtt_ms,
        )
        self.query_one(DigestComparison).view = DigestView(
            stream.group_id, local_name, stream.peer_id, group, repair, stream.digest_state
        )
        self.query_one(RepairProgress).view = RepairView(round(now, 1), repair, stream.peer_id)


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else now - at


def _summary(s: StreamSnapshot, now: float) -> Content:
    since = "not connected"
    if s.connected_at is not None:
        since = f"for {fmt_age(now - s.connected_at)}"
    parts: list = [
        (s.state, f"bold {STATE_STYLES.get(s.state, '')}"),
        (f" {since}  ", "$text-muted"),
        (s.peer_url or "(no url)", "$accent"),
        "\n",
        ("in ", "$text-muted"),
        f"{s.events_in:,} ev {fmt_bytes(s.bytes_in)}",
        ("  out ", "$text-muted"),
        f"{s.events_out:,} ev {fmt_bytes(s.bytes_out)}",
        ("  outbox ", "$text-muted"),
        f"{s.outbox:,}",
        ("  unacked ", "$text-muted"),
        f"{s.unacked:,}",
    ]
    if s.last_error:
        parts += ["\n", (f"last error: {s.last_error}", "bold $error")]
    return Content.assemble(*parts)
