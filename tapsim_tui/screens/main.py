"""The main view: header, streams table, detail pane and frame log of one node.

One tick (at most `tick_hz`, paused while this screen is covered or the app is
suspended) takes a snapshot of every node, folds it into the UI's own history,
and hands the shown node's data down to the widgets, which redraw only what
changed. Actions turn keys into node commands; nothing here touches a socket.
"""

from __future__ import annotations

import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import ScreenResume, ScreenSuspend
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer

from node.view import snapshot as snap
from node.view.commands import AddPeer, Command, ForgetPeer, PublishEvent, Repair, SetFault
from node.view.snapshot import NodeSnapshot, StreamSnapshot
from tapsim_tui.screens.add_peer import AddPeerScreen
from tapsim_tui.screens.filter import FilterScreen
from tapsim_tui.screens.forget_peer import ForgetPeerScreen
from widgets.detail_pane import DetailPane, DetailView
from widgets.fault_badges import FaultBadges
from widgets.frame_log import FrameFilter, FrameLog
from widgets.header_bar import HeaderBar, HeaderInfo
from widgets.history_chart import WINDOWS_S, window_label
from widgets.render import FAULT_LABELS, short_peer
from widgets.stream_history import StreamHistory
from widgets.streams_table import COLUMN_KEYS, StreamsTable

IDLE_REPAINT = 0.5  # seconds between repaints while nothing but the clocks moved

BURST = 100

_SEND = Binding.Group("Send")
_REPAIR = Binding.Group("Repair")
_VIEW = Binding.Group("View")
_FAULTS = Binding.Group("Faults")

# Footer labels are short (groups share one); the help screen and the command palette
# show each binding's own description.
MAIN_BINDINGS = [
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
]

_FAULT_ACTIONS = {
    "fault_cut": snap.FAULT_CUT,
    "fault_ack_pause": snap.FAULT_ACK_PAUSED,
    "fault_credit_one": snap.FAULT_CREDIT_ONE,
}


class MainScreen(Screen):
    BINDINGS = MAIN_BINDINGS
    ALLOW_IN_MAXIMIZED_VIEW = "#top, Footer"

    def __init__(self) -> None:
        super().__init__()
        self.node_index = 0
        self.window_index = 0
        self.snapshot: NodeSnapshot | None = None
        self.histories: list[dict[str, StreamHistory]] = []
        self._timer: Timer | None = None
        self._painted: tuple | None = None  # what the last live repaint showed
        self._painted_at = 0.0
        self._sent = 0
        self._keys_ready: frozenset[str] = frozenset()  # groups the log can decrypt
        # The widgets a tick updates, looked up once on mount.
        self._header: HeaderBar
        self._faults: FaultBadges
        self._table: StreamsTable
        self._detail: DetailPane
        self._log: FrameLog

    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            yield HeaderBar()
            yield FaultBadges()
        yield StreamsTable(id="streams")
        with Horizontal(id="lower"):
            yield DetailPane(id="detail")
            yield FrameLog(self._decrypt, id="frames")
        yield Footer(show_command_palette=False)

    # -- lifecycle -------------------------------------------------------------------

    def on_mount(self) -> None:
        app = self.app
        self._header = self.query_one(HeaderBar)
        self._faults = self.query_one(FaultBadges)
        self._table = self.query_one(StreamsTable)
        self._detail = self.query_one(DetailPane)
        self._log = self.query_one(FrameLog)
        self._table.border_title = "peer streams"
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
        now = self.app.clock()
        shown = self._sample(now)
        with self.app.batch_update():
            self._show(shown, now)

    def _tick(self) -> None:
        """The live tick: sample every node, repaint when the shown node changed.

        An idle federation changes nothing but its clocks (ages, uptime) between PINGs;
        repainting the whole screen ten times a second for that cost a core-tenth of CPU,
        so then the screen is repainted twice a second.
        """
        now = self.app.clock()
        shown = self._sample(now)
        last_frame = shown.frame_log[-1].index if shown.frame_log else 0
        seen = (
            self.node_index,
            shown.streams,
            shown.groups,
            shown.repairs,
            shown.peers,
            last_frame,
            shown.log_lines[-1:],
        )
        moment = time.monotonic()
        if seen == self._painted and moment - self._painted_at < IDLE_REPAINT:
            return
        self._painted, self._painted_at = seen, moment
        with self.app.batch_update():
            self._show(shown, now)

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
        )
        self._faults.faults = tuple(
            (fault, f"{short_peer(st.peer_id)} · {st.group_id}")
            for st in s.streams
            for fault in sorted(st.faults)
        )
        self._table.show(s.streams, now)
        self._show_detail(now)
        log.feed(s.frame_log)
        keyring = self.app.keyring
        ready = frozenset(g for g in keyring.groups if keyring.ready(g) is not None)
        if ready != self._keys_ready:
            self._keys_ready = ready
            log.redraw()

    def _show_detail(self, now: float | None = None) -> None:
        s = self.snapshot
        if s is None:
            return
        now = self.app.clock() if now is None else now
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
            history=self.histories[self.node_index].get(stream.key),
            now=now,
            window_s=window_s,
            local_name=s.server_id,
        )

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
            self._show(self.snapshot, self.app.clock())

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
        self._publish(1)

    def action_send_burst(self) -> None:
        self._publish(BURST)

    def _publish(self, count: int) -> None:
        group = self._selected_group()
        if group is None:
            return
        if not self.app.keyring.has_passphrase(group):
            self.notify(
                f"No passphrase for {group}: test events are end-to-end encrypted, "
                "so set one for this group in the config.",
                severity="error",
            )
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
        stream = self._need_stream()
        if stream is not None:
            self.submit(Repair(peer_id=stream.peer_id, group_id=stream.group_id))
            self.notify(f"Repair of {stream.group_id} with {stream.peer_id} started.")

    def action_repair_all(self) -> None:
        self.submit(Repair())
        self.notify("Repair of every group with every peer started.")

    def action_add_peer(self) -> None:
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
            self._show(self.snapshot, self.app.clock())

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
        following = COLUMN_KEYS[(COLUMN_KEYS.index(table.sort_column) + 1) % len(COLUMN_KEYS)]
        table.sort_by(following)
        self.notify(f"Sorted by {following}.")

    def action_switch_node(self) -> None:
        if len(self.app.handles) < 2:
            return
        self.node_index = (self.node_index + 1) % len(self.app.handles)
        self._table.clear_streams()
        self._log.reset()
        self.refresh_from_snapshot()
        self.notify(f"Showing {self.handle.server_id}.")

    def _toggle_fault(self, action: str) -> None:
        stream = self._need_stream()
        if stream is None:
            return
        fault = _FAULT_ACTIONS[action]
        enabled = fault not in stream.faults
        self.submit(SetFault(stream_key=stream.key, fault=fault, enabled=enabled))
        state = "ON" if enabled else "off"
        self.notify(f"{FAULT_LABELS[fault]} {state} for {stream.peer_id} · {stream.group_id}.")

    def action_fault_cut(self) -> None:
        self._toggle_fault("fault_cut")

    def action_fault_ack_pause(self) -> None:
        self._toggle_fault("fault_ack_pause")

    def action_fault_credit_one(self) -> None:
        self._toggle_fault("fault_credit_one")
