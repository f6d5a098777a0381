"""A live tail of frames in and out, with a filter and a pause that counts what it holds back.

The node keeps only its newest entries; the log appends those whose `index` is past
the last one it saw, so each tick costs the new entries only. Entries are kept (up
to a bound) so a new filter can be applied to what was already received.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich.text import Text
from textual.markup import escape
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


class FrameLog(RichLog):
    """Type, peer, sequence, size and summary per frame; ERROR frames stand out."""

    ALLOW_MAXIMIZE = True

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
            self.write(Text(f"… {skipped} more frames (kept: pause with p to read)", "dim"))
            entries = entries[-TAIL_PER_TICK:]
        for entry in entries:
            self.write(self.format_entry(entry))

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
                self.write(self.format_entry(entry))
        self._retitle()

    def _retitle(self) -> None:
        title = "frames"
        described = self.frame_filter.describe()
        if described:
            title += f" · {escape(described)}"
        self.border_title = title
        if self.paused:
            self.border_subtitle = f"PAUSED +{self.held_back} new"
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
