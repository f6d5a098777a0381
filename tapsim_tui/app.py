"""The tapsim dashboard application: a thin shell around the main screen.

It owns what outlives a screen: the node handles, the keyring of group
passphrases, the clock and the keymap. Everything else lives in screens and
widgets. `live=False` disables the tick so tests drive `refresh_from_snapshot()`
themselves against a fixed clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

import platformdirs
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tapsim_tui.e2e import Keyring
from tapsim_tui.handle import NodeHandle
from tapsim_tui.screens.help import HelpScreen
from tapsim_tui.screens.main import MAIN_BINDINGS, MainScreen
from tapsim_tui.screens.replay import REPLAY_BINDINGS
from tapsim_tui.screens.trace import TRACE_BINDINGS, TraceScreen
from tapsim_tui.settings import validate_keymap
from tapsim_tui.trace_palette import TraceCommands
from widgets.frame_log import FRAME_LOG_BINDINGS

APP_BINDINGS = [
    Binding("s", "save_screenshot", "Screenshot", id="screenshot"),
]


def screenshot_dir() -> Path:
    """Where `s` saves SVG screenshots: $TAPSIM_SCREENSHOTS, else the user's pictures
    folder (platformdirs), in tapsim/ — never the current directory (a repository)."""
    override = os.environ.get("TAPSIM_SCREENSHOTS")
    if override:
        return Path(override).expanduser()
    return platformdirs.user_pictures_path() / "tapsim"


def all_bindings() -> list[Binding]:
    return [*MAIN_BINDINGS, *FRAME_LOG_BINDINGS, *TRACE_BINDINGS, *APP_BINDINGS]


def binding_defaults() -> dict[str, str]:
    """Binding id → default keys, for the keymap checks and the help screen."""
    return {b.id: b.key for b in [*all_bindings(), *REPLAY_BINDINGS] if b.id}


class TapsimApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "tapsim"
    BINDINGS = APP_BINDINGS
    EXTRA_BINDINGS: ClassVar[list[Binding]] = []  # the replay's, on its help screen
    COMMANDS = App.COMMANDS | {TraceCommands}

    def __init__(
        self,
        handles: Sequence[NodeHandle],
        *,
        passphrases: Mapping[str, str] | None = None,
        keymap: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        tick_hz: float = 10.0,
        live: bool = True,
    ) -> None:
        if not handles:
            raise ValueError("the dashboard needs at least one node handle")
        super().__init__()
        self.handles = list(handles)
        self.keyring = Keyring(dict(passphrases or {}))
        self.clock = clock
        self.tick_hz = min(max(tick_hz, 0.1), 10.0)
        self.live = live
        defaults = binding_defaults()
        self.user_keymap = validate_keymap(keymap or {}, defaults, defaults)

    def get_default_screen(self) -> Screen:
        return MainScreen()

    def on_mount(self) -> None:
        if self.user_keymap:
            self.set_keymap(self.user_keymap)
        self.derive_keys()
        self._link_words: dict[int, str | None] = {}
        self._lost: set[int] = set()
        if self.live:
            self.set_interval(0.25, self.watch_links)

    def watch_links(self) -> None:
        """Say when a node's connection comes and goes, and what its commands answer.

        Handles over a control socket (``tapsim_tui.attach``) have a ``status`` (None
        while attached, else what is wrong) and notices; others have neither."""
        for index, handle in enumerate(self.handles):
            for notice in getattr(handle, "drain_notices", list)():
                self.notify(notice, severity="warning")
            words = getattr(handle, "status", None)
            if self._link_words.get(index, "") == words:
                continue
            before = self._link_words.get(index, "")
            self._link_words[index] = words
            if words is None:
                if index in self._lost:
                    self._lost.discard(index)
                    self.clear_notifications()
                    self.notify(f"re-attached to {handle.server_id}", title=handle.server_id)
            elif before is None:  # it was attached: say so until it is back
                self._lost.add(index)
                self.notify(words, title=handle.server_id, severity="error", timeout=24 * 3600)
        problems = [w for w in self._link_words.values() if w]
        self.sub_title = problems[0] if problems else ""

    def derive_keys(self):
        """Derive every group key in a thread so the frame log can decrypt soon after start."""
        return self.run_worker(
            self.keyring.derive_all, thread=True, group="keys", exit_on_error=False
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "keys" and event.state == WorkerState.SUCCESS:
            self.main_screen.keys_ready()

    @property
    def main_screen(self) -> MainScreen:
        return next(s for s in self.screen_stack if isinstance(s, MainScreen))

    def refresh_from_snapshot(self) -> None:
        """One tick by hand (tests and screenshots drive the app this way with live=False)."""
        self.main_screen.refresh_from_snapshot()

    # -- keys ------------------------------------------------------------------------

    def keys_for(self, binding: Binding) -> str:
        keys = self.user_keymap.get(binding.id or "", binding.key)
        return " / ".join(
            self.get_key_display(Binding(key, binding.action)) for key in keys.split(",")
        )

    def help_rows(self) -> list[tuple[str, str, str]]:
        shown = [
            *MAIN_BINDINGS,
            *FRAME_LOG_BINDINGS,
            *TRACE_BINDINGS,
            *self.EXTRA_BINDINGS,
            *APP_BINDINGS,
        ]
        rows = [(self.keys_for(b), b.description, b.id or "") for b in shown]
        palette = self.get_key_display(Binding(self.COMMAND_PALETTE_BINDING, "command_palette"))
        rows.append((palette, "Command palette: every action by name", "command_palette"))
        return rows

    def open_trace(self, event_id: str) -> None:
        """Show one event's way across the nodes this dashboard looks at."""
        if isinstance(self.screen, TraceScreen):
            self.screen.dismiss(None)
        self.push_screen(TraceScreen(event_id))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_rows()))

    def action_save_screenshot(self) -> None:
        folder = screenshot_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = self.save_screenshot(path=str(folder))
        except OSError as exc:
            self.notify(f"Screenshot not saved: {exc}", title="Screenshot", severity="error")
            return
        # The path on a line of its own, so a long one wraps at its slashes, not mid-word.
        self.notify(f"Saved as\n{path}", title="Screenshot", markup=False, timeout=8)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key binding in the command palette too, with its current key as help."""
        yield from super().get_system_commands(screen)
        main = self.main_screen
        for binding in [*MAIN_BINDINGS, *self.EXTRA_BINDINGS]:
            if binding.id == "switch_node" and len(self.handles) < 2:
                continue
            if binding.id == "quit":  # the palette has its own
                continue
            yield SystemCommand(
                binding.description,
                f"{binding.id} · key {self.keys_for(binding)}",
                partial(self.run_action, binding.action, main),
            )
        yield SystemCommand(
            "Clear all faults",
            "switch every injected fault off (cut, ACKs paused, credit 1)",
            main.action_clear_faults,
        )
        frames = main.query_one("#frames")
        for binding in FRAME_LOG_BINDINGS:
            yield SystemCommand(
                binding.description,
                f"{binding.id} · key {self.keys_for(binding)} in the frame log",
                partial(self.run_action, binding.action, frames),
            )
        for binding in APP_BINDINGS:
            if binding.id == "screenshot":
                yield SystemCommand(
                    binding.description,
                    f"{binding.id} · key {self.keys_for(binding)}",
                    partial(self.run_action, binding.action),
                )
