"""The main view over a recording: the live screen's panes, read-only, with replay controls.

The player (``tapsim_tui.replay.Player``) holds the position; the app moves it as time
passes, the keys here pause, speed up, step and seek. After a jump the stream histories
are read again from the recorded snapshots up to the new position, so the charts show
what they showed live at that moment.
"""

from __future__ import annotations

import bisect

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal

from widgets.replay_speed import ReplayPace, ReplaySpeed
from widgets.seek_bar import SeekBar, SeekPosition
from widgets.stream_history import StreamHistory

from .main import MainScreen

_REPLAY = Binding.Group("Replay")
HISTORY_S = 15 * 60  # the longest history window (widgets.history_chart.WINDOWS_S)

REPLAY_BINDINGS = [
    Binding("space", "replay_pause", "Replay: play/pause", id="replay_pause", group=_REPLAY),
    Binding("v", "replay_speed", "Replay: speed 1×/10×", id="replay_speed", group=_REPLAY),
    Binding(
        "full_stop", "replay_step", "Replay: step to the next snapshot", id="replay_step",
        group=_REPLAY,
    ),
    Binding(
        "left_square_bracket", "replay_back", "Replay: seek back 10 s", id="replay_back",
        show=False,
    ),
    Binding(
        "right_square_bracket", "replay_forward", "Replay: seek on 10 s", id="replay_forward",
        show=False,
    ),
    Binding("0", "replay_start", "Replay: back to the start (0:00)", id="replay_start", show=False),
]  # fmt: skip


class ReplayScreen(MainScreen):
    BINDINGS = REPLAY_BINDINGS
    ALLOW_IN_MAXIMIZED_VIEW = "#top, #replay-bar, Footer"

    def compose_bottom(self) -> ComposeResult:
        with Horizontal(id="replay-bar"):
            yield ReplaySpeed()
            yield SeekBar()

    def __init__(self) -> None:
        super().__init__()
        self._speed: ReplaySpeed | None = None
        self._seek: SeekBar | None = None

    def on_mount(self) -> None:
        self._speed = self.query_one(ReplaySpeed)
        self._seek = self.query_one(SeekBar)
        super().on_mount()
        self.show_position()

    @property
    def player(self):
        return self.app.player

    def show_position(self) -> None:
        """Move the seek bar and the speed (the app calls it as the replay plays)."""
        if self._speed is None or self._seek is None:
            return  # not mounted yet
        player = self.player
        self._speed.pace = ReplayPace(player.speed, player.paused, player.at_end)
        self._seek.position = SeekPosition(
            player.elapsed, player.length, self.handle.server_id, len(self.app.handles)
        )

    def jumped(self) -> None:
        """The position jumped (seek, step): history and log read again up to it."""
        self._resample()
        self._log.reset()
        self._painted = None
        self._quiet = 0
        self.refresh_from_snapshot()
        self.show_position()

    def _resample(self) -> None:
        player = self.player
        wall = player.recording.wall
        self.histories = []
        for handle in self.app.handles:
            recorded = handle.recorded
            times = recorded.snapshot_times
            lo = bisect.bisect_left(times, player.position - HISTORY_S)
            hi = bisect.bisect_right(times, player.position)
            histories: dict[str, StreamHistory] = {}
            for record in recorded.snapshots[lo:hi]:
                now = wall(record.t)
                for stream in record.snapshot.streams:
                    histories.setdefault(stream.key, StreamHistory()).sample(stream, now)
            self.histories.append(histories)

    # -- actions ---------------------------------------------------------------------

    def action_replay_pause(self) -> None:
        before = self.player.position
        self.player.toggle_pause()
        if self.player.position != before:
            self.jumped()
        self.show_position()

    def action_replay_speed(self) -> None:
        speed = self.player.next_speed()
        self.show_position()
        self.notify(f"Replay at {speed:g}×.")

    def action_replay_step(self) -> None:
        self.player.step()
        self.jumped()

    def action_replay_back(self) -> None:
        self.player.seek(self.player.position - 10.0)
        self.jumped()

    def action_replay_forward(self) -> None:
        self.player.seek(self.player.position + 10.0)
        self.jumped()

    def action_replay_start(self) -> None:
        self.player.seek(self.player.start)
        self.jumped()

    def on_seek_bar_seek(self, message: SeekBar.Seek) -> None:
        player = self.player
        player.seek(player.start + message.fraction * player.length)
        self.jumped()

    def action_switch_node(self) -> None:
        super().action_switch_node()
        self.show_position()
