"""A live tail of frames in and out, with a filter and a pause that counts what it holds back.

The node keeps only its newest entries; the log appends those whose `index` is past
the last one it saw, so each tick costs the new entries only. Entries are kept (up
to a bound) so a new filter can be applied to what was already received.

Up and down move a cursor over the EVENT lines (the log stops following the tail
while it is on one; down past the last EVENT lets it follow again); Enter asks for the
trace of the EVENT under the cursor, or of the newest one (:class:`FrameLog.TraceRequested`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.markup import escape
from textual.message import Message
from textual.strip import Strip
from textual.widgets import RichLog

from node.view.snapshot import FrameLogEntry
from widgets.render import short_peer

KEEP = 2000

# Decrypts one EVENT's ciphertext for a group: the text, or None without the key.
Decrypter = Callable[[str, bytes], str | None]

TYPE_STYLES = {
    "EVENT": "bold",
    "ACK": "green",
    "CREDIT": "cyan",
    "PING": "blue",
    "PONG": "blue",
    "HELLO": "magenta",
    "CHECKPOINT": "yellow",
    "ERROR": "bold white on red",
}


@dataclass(frozen=True, slots=True)
class FrameFilter:
    types: frozenset[str] = frozenset()  # empty: every type
    peer: str = ""  # substring of the peer id; empty: every peer

    def matches(self, entry: FrameLogEntry) -> bool:
        if self.types and entry.type not in self.types:
            return False
        return not self.peer or self.peer.lower() in entry.peer_id.lower()

    def describe(self) -> str:
        parts = []
        if self.types:
            parts.append("|".join(sorted(self.types)))
        if self.peer:
            parts.append(f"peer~{self.peer}")
        return " ".join(parts)


TAIL_PER_TICK = 50  # lines written per tick at most; the rest is counted
COMPACT_BELOW = 60  # columns under which lines leave out the sequence and size


FRAME_LOG_BINDINGS = [
    Binding("enter", "trace", "Trace the EVENT", id="trace_event"),
    Binding("up", "cursor_up", "Previous EVENT", id="frame_cursor_up", show=False),
    Binding("down", "cursor_down", "Next EVENT", id="frame_cursor_down", show=False),
]
_CURSOR = Style(reverse=True)


class FrameLog(RichLog):
    """Type, peer, sequence, size and summary per frame; ERROR frames stand out."""

    ALLOW_MAXIMIZE = True
    BINDINGS = FRAME_LOG_BINDINGS

    class TraceRequested(Message):
        """Enter on an EVENT: show its way across the federation."""

        def __init__(self, event_id: str) -> None:
            super().__init__()
            self.event_id = event_id

    def __init__(self, decrypt: Decrypter | None = None, **kwargs) -> None:
        """`decrypt` opens an EVENT's ciphertext for the log; without it every EVENT
        shows sealed."""
        super().__init__(max_lines=KEEP, wrap=False, markup=False, highlight=False, **kwargs)
        self._decrypt: Decrypter = decrypt or _sealed
        self.frame_filter = FrameFilter()
        self._entries: deque[FrameLogEntry] = deque(maxlen=KEEP)
        self._pending: deque[FrameLogEntry] = deque(maxlen=KEEP)  # while paused
        self.last_index = -1
        self.paused = False
        self.held_back = 0  # entries that match the filter but arrived while paused
        # The entry of every line written since the last clear (None: a note), newest
        # last. Line numbers count from the clear, like RichLog's own (its ``lines[y]``
        # is line ``_start_line + y``).
        self._lines: deque[FrameLogEntry | None] = deque(maxlen=KEEP)
        self._lines_written = 0
        self.cursor_line: int | None = None  # on an EVENT line; None: follow the tail

    def on_mount(self) -> None:
        self._retitle()

    @property
    def compact(self) -> bool:
        return 0 < self.size.width < COMPACT_BELOW

    def on_resize(self) -> None:
        compact = self.compact
        if compact != getattr(self, "_compact", False):
            self._compact = compact
            self.redraw()  # lines are rendered once: render them again for the new width

    def reset(self) -> None:
        """Forget everything (the dashboard switched to another node)."""
        self._entries.clear()
        self._pending.clear()
        self.last_index = -1
        self.held_back = 0
        self.clear()
        self._retitle()

    def feed(self, entries: Iterable[FrameLogEntry]) -> None:
        """Take the node's newest entries; only those past `last_index` are new."""
        fresh = [e for e in entries if e.index > self.last_index]
        if not fresh:
            return
        self.last_index = fresh[-1].index
        self._entries.extend(fresh)
        shown = [e for e in fresh if self.frame_filter.matches(e)]
        if self.paused:
            self._pending.extend(shown)
            self.held_back += len(shown)
            self._retitle()
            return
        self._write_tail(shown)

    def _write_tail(self, entries: list[FrameLogEntry]) -> None:
        """Write new entries; past TAIL_PER_TICK only the newest, with a count of the rest.

        Nobody reads hundreds of lines a tick, and rendering each one would take the
        interpreter away from the node sharing this process at high frame rates.
        """
        if len(entries) > TAIL_PER_TICK:
            skipped = len(entries) - TAIL_PER_TICK
            self._write_line(
                Text(f"… {skipped} more frames (kept: pause with p to read)", "dim"), None
            )
            entries = entries[-TAIL_PER_TICK:]
        for entry in entries:
            self._write_line(self.format_entry(entry), entry)

    def _write_line(self, line: Text, entry: FrameLogEntry | None) -> None:
        self._lines.append(entry)
        self._lines_written += 1
        self.write(line)

    def clear(self):
        self._lines.clear()
        self._lines_written = 0
        self._set_cursor(None)
        return super().clear()

    def set_paused(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            self._write_tail(list(self._pending))
            self._pending.clear()
            self.held_back = 0
        self._retitle()

    def redraw(self) -> None:
        """Render the kept entries again (e.g. a group key became available)."""
        self.set_filter(self.frame_filter)

    def set_filter(self, frame_filter: FrameFilter) -> None:
        self.frame_filter = frame_filter
        self._pending.clear()
        self.held_back = 0
        self.clear()
        for entry in self._entries:
            if frame_filter.matches(entry):
                self._write_line(self.format_entry(entry), entry)
        self._retitle()

    # -- the EVENT cursor and traces ------------------------------------------------

    def _entry_at(self, line: int) -> FrameLogEntry | None:
        base = self._lines_written - len(self._lines)
        if base <= line < self._lines_written:
            return self._lines[line - base]
        return None

    def _event_lines(self) -> list[int]:
        base = self._lines_written - len(self._lines)
        return [
            base + i for i, e in enumerate(self._lines) if e is not None and e.event_id is not None
        ]

    def _set_cursor(self, line: int | None) -> None:
        self.cursor_line = line
        self.auto_scroll = line is None
        self._line_cache.clear()
        self.refresh()
        if self.is_mounted:
            self._retitle()

    def selected_event(self) -> str | None:
        """The EVENT under the cursor, else the newest EVENT shown."""
        if self.cursor_line is not None:
            entry = self._entry_at(self.cursor_line)
            if entry is not None and entry.event_id:
                return entry.event_id
        lines = self._event_lines()
        if not lines:
            return None
        entry = self._entry_at(lines[-1])
        return entry.event_id if entry is not None else None

    def action_cursor_up(self) -> None:
        lines = self._event_lines()
        if not lines:
            return
        if self.cursor_line is None:
            height = self.scrollable_content_region.height
            bottom = self._start_line + self.scroll_offset.y + max(0, height - 1)
            before = [n for n in lines if n <= bottom]
            target = before[-1] if before else lines[0]
        else:
            before = [n for n in lines if n < self.cursor_line]
            target = before[-1] if before else lines[0]
        self._move_cursor(target)

    def action_cursor_down(self) -> None:
        if self.cursor_line is None:
            return
        after = [n for n in self._event_lines() if n > self.cursor_line]
        if not after:  # past the last EVENT: follow the tail again
            self._set_cursor(None)
            self.scroll_end(animate=False)
            return
        self._move_cursor(after[0])

    def _move_cursor(self, line: int) -> None:
        self._set_cursor(line)
        y = line - self._start_line
        height = self.scrollable_content_region.height
        top = self.scroll_offset.y
        if y < top:
            self.scroll_to(y=y, animate=False)
        elif y >= top + height:
            self.scroll_to(y=y - height + 1, animate=False)

    def action_trace(self) -> None:
        event_id = self.selected_event()
        if event_id is None:
            self.notify("No EVENT in the frame log to trace yet", severity="warning")
            return
        self.post_message(self.TraceRequested(event_id))

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if self.cursor_line is None:
            return strip
        line = self._start_line + self.scroll_offset.y + y
        return strip.apply_style(_CURSOR) if line == self.cursor_line else strip

    def _retitle(self) -> None:
        title = "frames"
        described = self.frame_filter.describe()
        if described:
            title += f" · {escape(described)}"
        self.border_title = title
        if self.paused:
            self.border_subtitle = f"PAUSED +{self.held_back} new"
        elif self.cursor_line is not None:
            self.border_subtitle = "⏎ trace · ↓ past the last: follow"
        else:
            self.border_subtitle = ""

    def format_entry(self, e: FrameLogEntry) -> Text:
        clock = time.strftime("%H:%M:%S", time.gmtime(e.at))
        arrow = "→" if e.direction == "out" else "←"
        line = Text(no_wrap=True, end="")
        line.append(clock, "dim")
        line.append(f" {arrow} {short_peer(e.peer_id):<6.6} ")
        kind = "ERROR" if e.is_error else e.type
        line.append(f"{kind:<6}", TYPE_STYLES.get(kind, ""))
        if self.compact:
            line.append(" ")
        else:
            line.append(f" #{e.sequence:<5}{_size(e.size):>6}  ", "dim")
        if e.type == "EVENT" and e.ciphertext:
            line.append_text(self._event_summary(e))
        else:
            line.append(e.summary, "bold red" if e.is_error else "")
        return line

    def _event_summary(self, e: FrameLogEntry) -> Text:
        try:
            ciphertext = base64.b64decode(e.ciphertext or "", validate=True)
        except (binascii.Error, ValueError):
            return Text(e.summary)
        plaintext = self._decrypt(e.group_id, ciphertext)
        if plaintext is not None:
            return Text.assemble(("“", "dim"), (plaintext, "italic"), ("”", "dim"))
        digest = hashlib.sha256(ciphertext).hexdigest()[:12]
        return Text(f"sealed sha256:{digest}…", style="dim")


def _sealed(_group_id: str, _ciphertext: bytes) -> None:
    return None


def _size(count: int) -> str:
    return f"{count}B" if count < 10_000 else f"{count // 1024}K"
