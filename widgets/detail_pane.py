"""Everything about the selected stream: history, credit, heartbeat, digest, repair.

A container driven by one reactive `view` (a frozen `DetailView`, set from above); it
hands each child the slice of data it draws (attributes down), and children redraw only
when their slice changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from node.view import snapshot as snap
from node.view.snapshot import (
    GroupSnapshot,
    PeerDigestSnapshot,
    RepairSnapshot,
    StreamSnapshot,
)
from widgets.credit_gauge import CreditGauge, CreditView
from widgets.digest_comparison import DigestComparison, DigestView
from widgets.drawn import same_content, same_shape
from widgets.heartbeat_timeline import HeartbeatTimeline, HeartbeatView
from widgets.history_chart import WINDOWS_S, HistoryChart
from widgets.range_heatmap import HeatmapView, RangeHeatmap
from widgets.render import STATE_STYLES, fmt_age, fmt_bytes, short_peer
from widgets.repair_progress import RepairProgress, RepairView
from widgets.stream_history import StreamHistory


@dataclass(frozen=True, slots=True)
class DetailView:
    """What the pane shows: one stream and what goes with it, or no stream selected."""

    stream: StreamSnapshot | None = None
    group: GroupSnapshot | None = None  # the stream's group, as this node sees it
    repair: RepairSnapshot | None = None  # the repair with this peer in this group
    peer_digest: PeerDigestSnapshot | None = None  # the peer's digest, last fetched
    history: StreamHistory | None = field(default=None, compare=False)  # the UI's own
    now: float = 0.0
    window_s: int = WINDOWS_S[0]  # the history chart's window
    local_name: str = ""  # this node's server id
    # The history is kept (and grows) by the dashboard: a view compares equal to another
    # only if the history had not changed in between.
    history_version: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        version = self.history.version if self.history is not None else 0
        object.__setattr__(self, "history_version", version)


class DetailPane(VerticalScroll):
    DEFAULT_CSS = """
    DetailPane > * { margin-bottom: 1; }
    DetailPane > #stream-summary, DetailPane > #credit-out { margin-bottom: 0; }
    """

    ALLOW_MAXIMIZE = True

    # Not a repaint of the whole pane: each child repaints what changed in its slice.
    view: reactive[DetailView] = reactive(DetailView, repaint=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._summary = Static(id="stream-summary")
        self._summary_shown: Content | None = None
        self._title = ""
        self._credit_out = CreditGauge(id="credit-out", classes="first")
        self._credit_in = CreditGauge(id="credit-in")
        self._heartbeat = HeartbeatTimeline()
        self._history = HistoryChart()
        self._repair = RepairProgress()
        self._digest = DigestComparison()
        self._heatmap = RangeHeatmap()
        self._details: tuple[Widget, ...] = (
            self._credit_out,
            self._credit_in,
            self._heartbeat,
            self._history,
            self._repair,
            self._digest,
            self._heatmap,
        )

    def compose(self) -> ComposeResult:
        yield self._summary
        yield from self._details

    def watch_view(self, view: DetailView) -> None:
        stream, now = view.stream, view.now
        if stream is None:
            self._retitle("detail")
            self._show_summary(Content.styled("select a stream in the table above", "$text-muted"))
            for child in self._details:
                child.display = False
            return
        for child in self._details:
            child.display = True
        peer = short_peer(stream.peer_id)
        self._retitle(f"{stream.peer_id} · {stream.group_id} · {stream.role}")
        self._show_summary(_summary(stream, now))
        blocked = blocked_reason(stream, now)
        self._credit_out.view = CreditView(
            True,
            peer,
            stream.credit_out_events,
            stream.credit_out_bytes,
            stream.peer_window_events or stream.window_events,
            stream.peer_window_bytes or stream.window_bytes,
            _age(now, stream.last_grant_received_at),
            stream.outbox,
            blocked,
        )
        limited = ""
        if snap.FAULT_CREDIT_ONE in stream.faults:
            limited = (
                f"fault: we grant {peer} 1 event at a time (c undoes); "
                f"{stream.credit_in_events} of the earlier grant left"
            )
        self._credit_in.view = CreditView(
            False,
            peer,
            stream.credit_in_events,
            stream.credit_in_bytes,
            stream.window_events,
            stream.window_bytes,
            _age(now, stream.last_grant_sent_at),
            blocked=blocked,
            limited=limited,
        )
        history = view.history
        self._history.show(history, view.window_s, now)
        self._heartbeat.view = HeartbeatView(
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
        self._digest.view = DigestView(
            stream.group_id,
            view.local_name,
            stream.peer_id,
            view.group,
            view.peer_digest,
            stream.digest_state,
            round(now),
        )
        self._repair.view = RepairView(round(now, 1), view.repair, stream.peer_id)
        self._heatmap.view = HeatmapView(stream.group_id, view.repair, view.peer_digest)

    def _retitle(self, title: str) -> None:
        # Setting a border title repaints the whole pane, even to the same title.
        if title != self._title:
            self._title = title
            self.border_title = title

    def _show_summary(self, content: Content) -> None:
        # Static.update() repaints even the same content; a layout only if its size may change.
        shown = self._summary_shown
        if not same_content(content, shown):
            self._summary_shown = content
            self._summary.update(content, layout=not same_shape(content, shown))


def blocked_reason(s: StreamSnapshot, now: float) -> str:
    """Why nothing can flow on this link at all, naming the cause; "" while it is up."""
    if s.state in (snap.UP, snap.STALLED, snap.HANDSHAKING):
        return ""
    peer = short_peer(s.peer_id)
    if snap.FAULT_CUT in s.faults:
        return f"link cut by the fault (x undoes it): no stream with {peer}"
    if s.state == snap.GONE:
        return f"{peer} closed its stream to us ({s.last_error or 'ended'}); it has to reconnect"
    if s.state == snap.BACKOFF:
        retry = ""
        if s.backoff_until is not None:
            retry = f", retry in {max(s.backoff_until - now, 0):.0f} s"
        return f"{peer} unreachable: {s.last_error or 'no answer'}{retry}"
    if s.state == snap.CONNECTING:
        return f"connecting to {peer}…"
    return f"no stream with {peer}: {s.last_error or s.state}"


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else now - at


def _summary(s: StreamSnapshot, now: float) -> Content:
    since = "not connected"
    if s.connected_at is not None:
        since = f"for {fmt_age(now - s.connected_at)}"
    elif s.ended_at is not None:
        since = f"for {fmt_age(now - s.ended_at)}"
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
    if s.peer_key_id:
        parts += [
            "\n",
            ("peer's pairing code ", "$text-muted"),
            (s.peer_pairing_code or "—", "bold $warning"),
            ("  key ", "$text-muted"),
            s.peer_key_id,
        ]
    if s.last_error:
        parts += ["\n", (f"last error: {s.last_error}", "bold $error")]
    return Content.assemble(*parts)
