"""The main view: header, streams table, detail pane and frame log of one node.

One tick (at most `tick_hz`, paused while this screen is covered or the app is
suspended) takes a snapshot of every node, folds it into the UI's own history,
and hands the shown node's data down to the widgets, which redraw only what
changed. Actions turn keys into node commands; nothing here touches a socket.
"""

from __future__ import annotations

import time
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import ScreenResume, ScreenSuspend
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer

from node.view import snapshot as snap
from node.view.commands import (
    AddPeer,
    ClearFaults,
    Command,
    ForgetPeer,
    PublishEvent,
    RefreshDigest,
    Repair,
    SetFault,
    StartRecording,
    StopRecording,
)
from node.view.snapshot import NodeSnapshot, StreamSnapshot
from tapsim_tui.screens.add_peer import AddPeerScreen
from tapsim_tui.screens.filter import FilterScreen
from tapsim_tui.screens.forget_peer import ForgetPeerScreen
from tapsim_tui.screens.passphrase import PassphraseScreen
from widgets.alert_banner import AlertBanner
from widgets.detail_pane import DetailPane, DetailView
from widgets.fault_badges import FaultBadges
from widgets.frame_log import FrameFilter, FrameLog
from widgets.header_bar import HeaderBar, HeaderInfo
from widgets.history_chart import WINDOWS_S, window_label
from widgets.render import FAULT_LABELS, short_peer
from widgets.stream_history import StreamHistory
from widgets.streams_table import StreamsTable

# Seconds between steps of the clock the widgets show ages against, and between
# repaints of the flow (counters, rates, heartbeats, frames) while it keeps changing.
CLOCK_STEP = 1.0
BUSY_REPAINT = 0.25  # seconds at least between repaints while landmarks keep changing
DIGEST_REFRESH = 5.0  # seconds between fetches of the shown peer's digest
IDLE_TICKS = 5  # while nothing changes, sample once every this many ticks (2 Hz at 10 Hz)
EAGER_AFTER_COMMAND = 1.0  # seconds of sampling every tick after a command: its effect

BURST = 100

_SEND = Binding.Group("Send")
_REPAIR = Binding.Group("Repair")
_VIEW = Binding.Group("View")
_FAULTS = Binding.Group("Faults")
_RECORD = Binding.Group("Record")

# Footer labels are short (groups share one); the help screen and the command palette
# show each binding's own description.
MAIN_BINDINGS = [
    # Help and Quit first: a narrow footer drops what comes last.
    Binding("question_mark,f1", "app.help", "Help", id="help"),
    Binding("q", "app.quit", "Quit", id="quit"),
    Binding("t", "send_event", "Send a test event", id="send_event", group=_SEND),
    Binding("b", "send_burst", f"Send a burst of {BURST}", id="send_burst", group=_SEND),
    Binding("r", "repair", "Repair selected peer/group", id="repair", group=_REPAIR),
    Binding("R", "repair_all", "Repair all", id="repair_all", group=_REPAIR),
    Binding("a", "add_peer", "Add peer", id="add_peer"),
    Binding("d", "forget_peer", "Forget a peer", id="forget_peer", show=False),
    Binding("p", "pause", "Pause", id="pause"),
    Binding("f", "filter", "Filter", id="filter"),
    Binding("z", "zoom", "Zoom the focused pane", id="zoom", group=_VIEW),
    Binding("w", "history_window", "History window 1/5/15 min", id="history_window", group=_VIEW),
    Binding("o", "sort", "Sort by next column", id="sort", group=_VIEW),
    Binding("n", "switch_node", "Show next node", id="switch_node", group=_VIEW),
    Binding("x", "fault_cut", "Fault: cut the link", id="fault_cut", group=_FAULTS),
    Binding("k", "fault_ack_pause", "Fault: pause our ACKs", id="fault_ack_pause", group=_FAULTS),
    Binding(
        "c", "fault_credit_one", "Fault: grant 1 event credit", id="fault_credit_one", group=_FAULTS
    ),
    Binding("ctrl+e", "toggle_recording", "Record on/off", id="record", group=_RECORD),
]

_FAULT_ACTIONS = {
    "fault_cut": snap.FAULT_CUT,
    "fault_ack_pause": snap.FAULT_ACK_PAUSED,
    "fault_credit_one": snap.FAULT_CREDIT_ONE,
}


class MainScreen(Screen):
    BINDINGS = MAIN_BINDINGS
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-short"), (30, "-tall")]
    ALLOW_IN_MAXIMIZED_VIEW = "#top, Footer"

    def __init__(self) -> None:
        super().__init__()
        self.node_index = 0
        self.window_index = 0
        self.snapshot: NodeSnapshot | None = None
        self.histories: list[dict[str, StreamHistory]] = []
        self._timer: Timer | None = None
        self._painted_landmarks: tuple | None = None  # of the last live repaint
        self._painted_at = 0.0
        # The time the widgets show ages against: the app's clock, stepped once every
        # CLOCK_STEP seconds by the live tick, so ages change once a second, not per paint.
        self._shown_now: float | None = None
        self._stepped_at = 0.0
        self._quiet = 0  # ticks left to skip: the federation was idle at the last look
        self._eager_until = 0.0  # sample every tick until then (a command was just sent)
        self._sent = 0
        self._keys_ready: frozenset[str] = frozenset()  # groups the log can decrypt
        self._digest_asked: dict[tuple[int, str, str], float] = {}  # (node, peer, group)
        self._recording: dict[int, str] = {}  # node index → the file it records to, as seen
        # The widgets a tick updates, looked up once on mount.
        self._header: HeaderBar
        self._faults: FaultBadges
        self._alerts: AlertBanner
        self._table: StreamsTable
        self._detail: DetailPane
        self._log: FrameLog

    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            yield HeaderBar()
            yield AlertBanner()
            yield FaultBadges()
        yield StreamsTable(id="streams")
        with Horizontal(id="lower"):
            yield DetailPane(id="detail")
            yield FrameLog(self._decrypt, id="frames")
        yield from self.compose_bottom()
        yield Footer(show_command_palette=False)

    def compose_bottom(self) -> ComposeResult:
        """Widgets above the footer (the replay's controls); none live."""
        yield from ()

    # -- lifecycle -------------------------------------------------------------------

    def on_mount(self) -> None:
        app = self.app
        self._header = self.query_one(HeaderBar)
        self._faults = self.query_one(FaultBadges)
        self._alerts = self.query_one(AlertBanner)
        self._table = self.query_one(StreamsTable)
        self._detail = self.query_one(DetailPane)
        self._log = self.query_one(FrameLog)
        if app.live:
            self._timer = self.set_interval(1 / app.tick_hz, self._tick)
            app.app_suspend_signal.subscribe(self, self._on_app_suspend)
            app.app_resume_signal.subscribe(self, self._on_app_resume)
        self.refresh_from_snapshot()
        self._table.focus()

    def _on_app_suspend(self, _app) -> None:
        if self._timer:
            self._timer.pause()

    def _on_app_resume(self, _app) -> None:
        if self._timer:
            self._timer.resume()

    def on_screen_suspend(self, _event: ScreenSuspend) -> None:
        if self._timer:
            self._timer.pause()

    def on_screen_resume(self, _event: ScreenResume) -> None:
        if self._timer:
            self._timer.resume()

    # -- the tick --------------------------------------------------------------------

    @property
    def handle(self):
        return self.app.handles[self.node_index]

    def refresh_from_snapshot(self) -> None:
        """Take fresh snapshots, sample history, and update only what changed."""
        now = self._shown_now = self.app.clock()
        shown = self._sample(now)
        with self.app.batch_update():
            self._show(shown, now)

    @property
    def shown_now(self) -> float:
        """The time ages on screen are measured against (see `_shown_now`)."""
        return self.app.clock() if self._shown_now is None else self._shown_now

    def _tick(self) -> None:
        """The live tick: sample every node, repaint when the shown node changed.

        What an operator waits to see (`_landmarks`: a link going up or down, a fault, a
        digest verdict, an alert) is shown at once. The rest is flow: counters, rates,
        heartbeats, frames, and the clock the ages are measured against. Flow is shown
        every CLOCK_STEP seconds, however fast it changes, so a busy node costs the
        dashboard no more than an idle one, and an idle one (PINGs only) next to nothing:
        each widget repaints only if a character it shows changed. While no landmark
        moves, the nodes are sampled every IDLE_TICKS ticks, except for a second after a
        command.
        """
        if self._quiet > 0:
            self._quiet -= 1
            return
        moment = time.monotonic()
        if moment - self._painted_at < BUSY_REPAINT:
            return
        now = self.app.clock()
        shown = self._sample(now)
        self._refresh_digest(moment)
        landmarks = self._landmarks(shown)
        step = self._shown_now is None or moment - self._stepped_at >= CLOCK_STEP
        if landmarks == self._painted_landmarks:
            if moment >= self._eager_until:
                self._quiet = IDLE_TICKS - 1  # look again in IDLE_TICKS ticks
            if not step:
                return
        if step:
            self._shown_now, self._stepped_at = now, moment
        self._painted_landmarks, self._painted_at = landmarks, moment
        with self.app.batch_update():
            self._show(shown, self.shown_now)

    def _landmarks(self, s: NodeSnapshot) -> tuple:
        """What an operator waits to see change, as opposed to the flow of data."""
        return (
            self.node_index,
            tuple(
                (st.key, st.state, st.faults, st.digest_state, st.last_error, st.peer_key_id)
                for st in s.streams
            ),
            tuple((r.peer_id, r.group_id, r.state) for r in s.repairs),
            tuple(g.equivocating for g in s.groups),
            s.peers,
            s.faults,
            s.alerts,
            s.log_lines[-1:],
        )

    def _refresh_digest(self, moment: float) -> None:
        """While the detail pane shows a peer, ask its node for the peer's digest every
        DIGEST_REFRESH seconds, so the comparison is never older than that."""
        stream = self.selected_stream
        if stream is None or stream.peer_id.endswith("?") or not self._detail.display:
            return
        if self.read_only:
            return
        key = (self.node_index, stream.peer_id, stream.group_id)
        if moment - self._digest_asked.get(key, -DIGEST_REFRESH) < DIGEST_REFRESH:
            return
        self._digest_asked[key] = moment
        self.submit(RefreshDigest(stream.peer_id, stream.group_id))

    def _sample(self, now: float) -> NodeSnapshot:
        """Fresh snapshots of every node into the UI's histories; returns the shown one."""
        shown: NodeSnapshot | None = None
        while len(self.histories) < len(self.app.handles):
            self.histories.append({})
        for index, handle in enumerate(self.app.handles):
            snapshot = handle.snapshot()
            histories = self.histories[index]
            for stream in snapshot.streams:
                history = histories.get(stream.key)
                if history is None:
                    history = histories[stream.key] = StreamHistory()
                history.sample(stream, now)
            if index == self.node_index:
                shown = snapshot
        assert shown is not None
        self.snapshot = shown
        return shown

    def _show(self, s: NodeSnapshot, now: float) -> None:
        log = self._log
        self._header.info = HeaderInfo(
            s.server_id,
            s.listen_urls,
            s.key_id,
            s.pairing_code,
            int(now - s.started_at),
            not log.paused,
            self.node_index,
            len(self.app.handles),
            recording=bool(s.recording),
            replay=self.read_only,
        )
        self._note_recording(s)
        self._faults.faults = tuple(
            (f.fault, f"{short_peer(f.peer_id)} · {f.group_id}") for f in s.faults
        )
        self._alerts.alerts = s.alerts
        self._table.show(s.streams, now)
        self._show_detail(now)
        log.feed(s.frame_log)
        keyring = self.app.keyring
        ready = frozenset(g for g in keyring.groups if keyring.ready(g) is not None)
        if ready != self._keys_ready:
            self._keys_ready = ready
            log.redraw()

    def _note_recording(self, s: NodeSnapshot) -> None:
        """Say where the shown node records to when it starts, and where it stopped."""
        before = self._recording.get(self.node_index)
        self._recording[self.node_index] = s.recording
        if before is None or before == s.recording:
            return
        if s.recording:
            self.notify(f"{s.server_id} records the wire to\n{s.recording}", title="● REC",
                        markup=False, timeout=8)  # fmt: skip
        else:
            self.notify(f"{s.server_id} stopped recording; the file is\n{before}",
                        title="Recording stopped", markup=False, timeout=8)  # fmt: skip

    def _show_detail(self, now: float | None = None) -> None:
        s = self.snapshot
        if s is None:
            return
        now = self.shown_now if now is None else now
        window_s = WINDOWS_S[self.window_index]
        stream = self.selected_stream
        if stream is None:
            self._detail.view = DetailView(now=now, window_s=window_s, local_name=s.server_id)
            return
        self._detail.view = DetailView(
            stream=stream,
            group=next((g for g in s.groups if g.group_id == stream.group_id), None),
            repair=next(
                (
                    r
                    for r in s.repairs
                    if r.peer_id == stream.peer_id and r.group_id == stream.group_id
                ),
                None,
            ),
            peer_digest=next(
                (
                    d
                    for d in s.peer_digests
                    if d.peer_id == stream.peer_id and d.group_id == stream.group_id
                ),
                None,
            ),
            history=self.histories[self.node_index].get(stream.key),
            now=now,
            window_s=window_s,
            local_name=s.server_id,
        )

    def on_frame_log_trace_requested(self, event: FrameLog.TraceRequested) -> None:
        self.app.open_trace(event.event_id)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if isinstance(event.data_table, StreamsTable):
            self._show_detail()

    @property
    def selected_stream(self) -> StreamSnapshot | None:
        if self.snapshot is None:
            return None
        key = self._table.selected_key
        return next((st for st in self.snapshot.streams if st.key == key), None)

    def keys_ready(self) -> None:
        """Group keys were derived: show the events already in the log decrypted."""
        if self.snapshot is not None:
            self._show(self.snapshot, self.shown_now)

    def _decrypt(self, group_id: str, ciphertext: bytes) -> str | None:
        cipher = self.app.keyring.ready(group_id)
        return None if cipher is None else cipher.decrypt(ciphertext)

    # -- actions ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "switch_node":
            return len(self.app.handles) > 1
        return True

    def submit(self, command: Command) -> None:
        self.handle.submit(command)
        # Its effect is a landmark: look for it every tick for a while.
        self._quiet = 0
        self._eager_until = time.monotonic() + EAGER_AFTER_COMMAND

    @property
    def read_only(self) -> bool:
        """The shown node is a replay: it takes no command."""
        return bool(getattr(self.handle, "read_only", False))

    def _refused(self) -> bool:
        """Say so and refuse an action that would command a replayed node."""
        if self.read_only:
            self.notify("replay: read-only", severity="warning")
            return True
        return False

    def _need_stream(self) -> StreamSnapshot | None:
        stream = self.selected_stream
        if stream is None:
            self.notify("Select a stream in the table first.", severity="warning")
        return stream

    def _selected_group(self) -> str | None:
        stream = self.selected_stream
        if stream is not None:
            return stream.group_id
        if self.snapshot is not None and self.snapshot.groups:
            return self.snapshot.groups[0].group_id
        self.notify("No group to send to: this node serves no group yet.", severity="warning")
        return None

    def action_send_event(self) -> None:
        if self._refused():
            return
        self._publish(1)

    def action_send_burst(self) -> None:
        if self._refused():
            return
        self._publish(BURST)

    def _publish(self, count: int) -> None:
        group = self._selected_group()
        if group is None:
            return
        keyring = self.app.keyring
        if not keyring.has_passphrase(group):
            # Ask, rather than send the user to the config file; then send.
            def use(passphrase: str | None) -> None:
                if passphrase is None:
                    self.notify(f"Nothing sent: {group} has no passphrase.", severity="warning")
                    return
                keyring.set_passphrase(group, passphrase)
                self.app.derive_keys()
                self._publish(count)

            self.app.push_screen(PassphraseScreen(group), use)
            return
        problem = keyring.problem(group)
        if problem is not None:
            self.notify(f"Nothing sent: {problem}.", severity="error")
            return
        start = self._sent
        self._sent += count
        name = short_peer(self.handle.server_id)
        texts = [f"test {start + i + 1} from {name}" for i in range(count)]
        self._encrypt_and_publish(self.handle, group, texts)

    @work(thread=True, group="publish", exit_on_error=False)
    def _encrypt_and_publish(self, handle, group: str, texts: list[str]) -> None:
        """Key derivation is slow on purpose: never on the UI thread."""
        cipher = self.app.keyring.cipher(group)
        if cipher is None:
            return
        for text in texts:
            handle.submit(PublishEvent(group_id=group, ciphertext=cipher.encrypt(text)))
        what = f"{len(texts)} test events" if len(texts) > 1 else f"“{texts[0]}”"
        self.app.call_from_thread(self.notify, f"Sent {what} to {group} (encrypted).")

    def action_repair(self) -> None:
        if self._refused():
            return
        stream = self._need_stream()
        if stream is None:
            return
        why_not = _why_no_repair(stream)
        if why_not:
            self.notify(f"No repair with {stream.peer_id}: {why_not}.", severity="warning")
            return
        self.submit(Repair(peer_id=stream.peer_id, group_id=stream.group_id))
        self.notify(
            f"Repair of {stream.group_id} with {stream.peer_id} asked for: "
            "watch the digest column and the detail pane."
        )

    def action_repair_all(self) -> None:
        if self._refused():
            return
        streams = self.snapshot.streams if self.snapshot is not None else ()
        links = sorted({(st.peer_id, st.group_id) for st in streams if not _why_no_repair(st)})
        if not links:
            self.notify(
                "No repair started: no peer is connected (a repair needs a live stream).",
                severity="warning",
            )
            return
        self.submit(Repair())
        names = ", ".join(f"{short_peer(p)} · {g}" for p, g in links[:4])
        more = f" and {len(links) - 4} more" if len(links) > 4 else ""
        self.notify(f"Repair asked for {len(links)} link(s): {names}{more}.")

    def action_add_peer(self) -> None:
        if self._refused():
            return
        groups: tuple[str, ...] = ()
        if self.snapshot is not None:
            groups = tuple(g.group_id for g in self.snapshot.groups)
        known = tuple(p.url for p in self.snapshot.peers) if self.snapshot is not None else ()
        self.app.push_screen(AddPeerScreen(groups, known), self._peer_added)

    def _peer_added(self, command: AddPeer | None) -> None:
        if command is not None:
            self.submit(command)
            self.notify(f"Adding peer {command.url} for {', '.join(command.groups)}.")

    def action_forget_peer(self) -> None:
        if self._refused():
            return
        peers = self.snapshot.peers if self.snapshot is not None else ()
        if not peers:
            self.notify("This node has no peer to forget.", severity="warning")
            return
        self.app.push_screen(ForgetPeerScreen(peers), self._peer_forgotten)

    def _peer_forgotten(self, command: ForgetPeer | None) -> None:
        if command is not None:
            self.submit(command)
            what = "; its outbox and pin dropped" if command.drop_outbox_and_pin else ""
            self.notify(f"Peer {command.url} forgotten{what}.")

    def action_pause(self) -> None:
        log = self._log
        log.set_paused(not log.paused)
        if self.snapshot is not None:
            self._show(self.snapshot, self.shown_now)

    def action_filter(self) -> None:
        self.app.push_screen(FilterScreen(self._log.frame_filter), self._filtered)

    def _filtered(self, frame_filter: FrameFilter | None) -> None:
        if frame_filter is not None:
            self._log.set_filter(frame_filter)

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        target = self.focused or self._table
        self.maximize(target)

    def action_history_window(self) -> None:
        self.window_index = (self.window_index + 1) % len(WINDOWS_S)
        self.notify(f"History window: {window_label(WINDOWS_S[self.window_index])}.")
        self._show_detail()

    def action_sort(self) -> None:
        table = self._table
        following = table.next_sort_column()
        table.sort_by(following)
        self.notify(f"Sorted by {following}.")

    def action_toggle_recording(self) -> None:
        if self._refused():
            return
        if self.snapshot is not None and self.snapshot.recording:
            self.submit(StopRecording())
        else:
            self.submit(StartRecording())
            self.notify(f"Recording asked of {self.handle.server_id}: ● REC shows when it runs.")

    def action_switch_node(self) -> None:
        if len(self.app.handles) < 2:
            return
        self.node_index = (self.node_index + 1) % len(self.app.handles)
        self._table.clear_streams()
        self._log.reset()
        self.refresh_from_snapshot()
        self.notify(f"Showing {self.handle.server_id}.")

    def _toggle_fault(self, action: str) -> None:
        if self._refused():
            return
        stream = self._need_stream()
        if stream is None:
            return
        if stream.peer_id.endswith("?"):
            self.notify(
                "That peer has not proved who it is yet: a fault needs a known peer.",
                severity="warning",
            )
            return
        fault = _FAULT_ACTIONS[action]
        enabled = fault not in stream.faults
        self.submit(
            SetFault(peer_id=stream.peer_id, group_id=stream.group_id, fault=fault, enabled=enabled)
        )
        key = self.app.keys_for(next(b for b in MAIN_BINDINGS if b.id == action))
        self.notify(
            _fault_effect(stream, fault, enabled)
            + (f" ({key} again undoes it.)" if enabled else ""),
            title=f"{FAULT_LABELS[fault]} {'ON' if enabled else 'off'}",
            severity="warning" if enabled else "information",
        )

    def action_clear_faults(self) -> None:
        if self._refused():
            return
        faults = self.snapshot.faults if self.snapshot is not None else ()
        if not faults:
            self.notify("No fault is on.")
            return
        self.submit(ClearFaults())
        self.notify(f"{len(faults)} fault(s) switched off; links reconnect and catch up.")

    def action_refresh_digest(self) -> None:
        if self._refused():
            return
        stream = self._need_stream()
        if stream is not None:
            self.submit(RefreshDigest(stream.peer_id, stream.group_id))

    def action_fault_cut(self) -> None:
        self._toggle_fault("fault_cut")

    def action_fault_ack_pause(self) -> None:
        self._toggle_fault("fault_ack_pause")

    def action_fault_credit_one(self) -> None:
        self._toggle_fault("fault_credit_one")


def _why_no_repair(stream: StreamSnapshot) -> str:
    """Why a repair with this row's peer would not run, in words; "" when it would."""
    if snap.FAULT_CUT in stream.faults:
        return "the link is cut (fault on)"
    if stream.peer_id.endswith("?") or stream.peer_id == "?":
        return "the peer has not proved who it is yet"
    if stream.digest_state == snap.DIGEST_REPAIRING:
        return "a repair is already running"
    if stream.state not in (snap.UP, snap.STALLED):
        return f"the link is {stream.state}: a repair needs a live stream"
    return ""


def _fault_effect(stream: StreamSnapshot, fault: str, enabled: bool) -> str:
    """What switching `fault` does to this link, in the words of what will be seen."""
    peer, group = short_peer(stream.peer_id), stream.group_id
    initiator = stream.role == "initiator"
    if fault == snap.FAULT_CUT:
        if enabled:
            how = "we stop dialing it" if initiator else f"{peer}'s streams are refused, it retries"
            return f"Link with {peer} in {group} cut: {how}; what it is owed waits in the outbox."
        how = "we dial it again now" if initiator else f"{peer} reconnects at its next retry"
        return f"Link with {peer} in {group} restored: {how}, then the outbox replays."
    if fault == snap.FAULT_ACK_PAUSED:
        if enabled:
            return (
                f"Our ACKs to {peer} in {group} held back: its unacked count grows and its "
                "stream stalls; events are still stored."
            )
        return f"ACKs to {peer} in {group} resume: everything held back is acknowledged."
    if enabled:
        return (
            f"We grant {peer} 1 event at a time in {group}: its ↓ credit runs down from "
            f"{stream.credit_in_events} already granted, then it sends one event per grant."
        )
    return f"Full credit window for {peer} in {group} again."
