"""The dashboard over recordings (`tapsim replay FILE…`): the live screens, read-only."""

from __future__ import annotations

import time
from collections.abc import Mapping

from textual.screen import Screen

from tapsim_tui.app import TapsimApp
from tapsim_tui.replay import Player, Recording, ReplayNode
from tapsim_tui.screens.replay import REPLAY_BINDINGS, ReplayScreen

ADVANCE_HZ = 10.0


class ReplayApp(TapsimApp):
    """``live=False`` stops the clock: tests seek the player and repaint by hand."""

    EXTRA_BINDINGS = REPLAY_BINDINGS

    def __init__(
        self,
        recording: Recording,
        *,
        passphrases: Mapping[str, str] | None = None,
        keymap: Mapping[str, str] | None = None,
        live: bool = True,
        paused: bool = False,
    ) -> None:
        self.player = Player(recording)
        self.player.paused = paused
        handles = [ReplayNode(recording.nodes[name], self.player)
                   for name in sorted(recording.nodes)]  # fmt: skip
        super().__init__(
            handles, passphrases=passphrases, keymap=keymap, clock=self.player.wall, live=live
        )
        self.recording = recording
        self._moved_at = time.monotonic()

    def get_default_screen(self) -> Screen:
        return ReplayScreen()

    def on_mount(self) -> None:
        super().on_mount()
        problems = self.recording.problems
        if problems:
            self.notify(
                f"{len(problems)} bad line(s) skipped, the first {problems[0]} "
                "(tapsim replay --summary lists them)",
                severity="warning",
                timeout=10,
            )
        if self.live:
            self.set_interval(1 / ADVANCE_HZ, self._advance)

    def _advance(self) -> None:
        moment = time.monotonic()
        elapsed, self._moved_at = moment - self._moved_at, moment
        self.player.advance(elapsed)
        screen = self.main_screen
        if isinstance(screen, ReplayScreen):
            screen.show_position()

    def seek(self, elapsed_s: float) -> None:
        """Jump to ``elapsed_s`` after the recording's start and repaint (tests)."""
        self.player.seek(self.player.start + elapsed_s)
        screen = self.main_screen
        assert isinstance(screen, ReplayScreen)
        screen.jumped()
