"""The peer streams table: one keyed row per stream, updated cell by cell.

Rows are keyed by `StreamSnapshot.key` (stable across reconnects), so a tick only
touches the cells whose text changed and the selection survives re-sorting.
Cells are Rich `Text` carrying their own sort value, so sorting by any column
orders by the number, not by the rendered string.

Columns that do not fit the table's width are dropped, least useful first (see
`PRIORITY`), and the border says how many; zoomed (maximized) it shows them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from node.view import snapshot as snap
from node.view.snapshot import StreamSnapshot
from widgets.render import (
    DIGEST_MARKS,
    STATE_STYLES,
    bar,
    fmt_ms,
    fmt_ms_short,
    fmt_rate,
    short_peer,
    sparkline,
)

# (key, label, width) — widths fixed so the table does not jitter as numbers change.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("peer", "peer", 9),
    ("group", "group", 9),
    ("role", "role", 4),
    ("state", "state", 11),
    ("rtt", "RTT", 13),
    ("rate", "fr/s in/out", 11),
    ("credit_out", "↑ credit", 9),
    ("credit_in", "↓ credit", 9),
    ("unacked", "unack", 5),
    ("outbox", "outbox", 6),
    ("lag", "ACK lag/rtt", 11),
    ("digest", "digest", 9),
)
COLUMN_KEYS = tuple(key for key, _, _ in COLUMNS)
# Which columns go first when the table is narrow: the last of this order first.
PRIORITY = (
    "peer",
    "state",
    "group",
    "role",
    "lag",
    "digest",
    "outbox",
    "unacked",
    "credit_out",
    "credit_in",
    "rtt",
    "rate",
)
CELL_PADDING = 1  # DataTable's default, each side of a cell
CHROME = 4  # the border and a vertical scrollbar's worth

# What a fault on the link shows in the state column, shortest first when several.
FAULT_STATE = {
    snap.FAULT_CUT: "cut",
    snap.FAULT_ACK_PAUSED: "acks paused",
    snap.FAULT_CREDIT_ONE: "credit 1",
}


def visible_columns(width: int, show_all: bool = False) -> tuple[str, ...]:
    """The columns that fit in `width` cells, in table order."""
    if show_all:
        return COLUMN_KEYS
    widths = {key: w + 2 * CELL_PADDING for key, _, w in COLUMNS}
    room = width - CHROME
    kept: set[str] = set()
    for key in PRIORITY:
        if widths[key] > room and kept:
            break
        kept.add(key)
        room -= widths[key]
    return tuple(key for key in COLUMN_KEYS if key in kept)


_STATE_ORDER = {
    s: i
    for i, s in enumerate(
        (
            snap.DEAD,
            snap.GONE,
            snap.STALLED,
            snap.BACKOFF,
            snap.CONNECTING,
            snap.HANDSHAKING,
            snap.UP,
        )
    )
}
_DIGEST_ORDER = {
    s: i
    for i, s in enumerate(
        (
            snap.DIGEST_EQUIVOCATION,
            snap.DIGEST_FAILED,
            snap.DIGEST_DIFFERS,
            snap.DIGEST_REPAIRING,
            snap.DIGEST_UNKNOWN,
            snap.DIGEST_EQUAL,
        )
    )
}
SPARK_WIDTH = 6


class Cell(Text):
    """A table cell that knows how it sorts."""

    def __init__(self, text: str = "", style: str = "", sort_value: object = None) -> None:
        super().__init__(text, style=style, end="", no_wrap=True, overflow="ellipsis")
        self.sort_value = sort_value if sort_value is not None else text


class StreamsTable(DataTable):
    """Peer, group, role, state, RTT, rates, credit, unacked, ACK lag and digest per stream."""

    DEFAULT_CSS = """
    StreamsTable { height: auto; max-height: 14; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: dict[str, tuple[Cell, ...]] = {}  # every column's cell, shown or not
        self._styles: dict[str, str] = {}
        self.sort_column = "peer"
        self.sort_reverse = False
        self.columns_shown: tuple[str, ...] = ()
        self.title = "peer streams"
        # Cells written so far (added rows count every shown cell): a public count, so
        # tests can tell an unchanged tick from one that rewrites the table.
        self.cell_writes = 0

    def on_mount(self) -> None:
        self._set_columns(visible_columns(self.size.width or 200))

    def on_resize(self) -> None:
        self.fit_columns()

    def fit_columns(self) -> None:
        """Show the columns that fit now (all of them while maximized)."""
        wanted = visible_columns(self.size.width, self.is_maximized)
        if wanted != self.columns_shown:
            self._set_columns(wanted)

    def _set_columns(self, keys: tuple[str, ...]) -> None:
        selected = self.selected_key
        self.clear(columns=True)
        self.columns_shown = keys
        for key, label, width in COLUMNS:
            if key in keys:
                self.add_column(label, width=width, key=key)
        index = [COLUMN_KEYS.index(k) for k in keys]
        for row_key, cells in self._rows.items():
            self.add_row(*(cells[i] for i in index), key=row_key)
        hidden = len(COLUMN_KEYS) - len(keys)
        self.border_title = self.title
        self.border_subtitle = f"+{hidden} columns: z zooms" if hidden else ""
        if self.sort_column not in keys:
            self.sort_column = "peer"
        self._apply_sort()
        if selected is not None:
            self.select_key(selected)

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def select_key(self, key: str) -> None:
        if key in self._rows:
            self.move_cursor(row=self.get_row_index(key), scroll=False)

    def clear_streams(self) -> None:
        self.clear()
        self._rows.clear()

    def next_sort_column(self) -> str:
        shown = self.columns_shown or COLUMN_KEYS
        if self.sort_column not in shown:
            return shown[0]
        return shown[(shown.index(self.sort_column) + 1) % len(shown)]

    def show(self, streams: Sequence[StreamSnapshot], now: float) -> None:
        """Bring the table to `streams`, touching only cells whose text changed."""
        self._styles = self.app.theme_variables
        seen: set[str] = set()
        resort = False
        sort_index = COLUMN_KEYS.index(self.sort_column)
        shown = set(self.columns_shown)
        for stream in streams:
            key = stream.key
            seen.add(key)
            cells = self._cells(stream, now)
            old = self._rows.get(key)
            if old is None:
                self.add_row(
                    *(c for k, c in zip(COLUMN_KEYS, cells, strict=True) if k in shown), key=key
                )
                self.cell_writes += len(shown)
                resort = True
            else:
                for column, before, after in zip(COLUMN_KEYS, old, cells, strict=True):
                    if before != after and column in shown:
                        # Each write makes the DataTable render every visible cell again.
                        self.update_cell(key, column, after)
                        self.cell_writes += 1
                if old[sort_index].sort_value != cells[sort_index].sort_value:
                    resort = True
            self._rows[key] = cells
        for key in [k for k in self._rows if k not in seen]:
            self.remove_row(key)
            del self._rows[key]
        if resort:
            self._apply_sort()

    def sort_by(self, column: str) -> None:
        """Sort by `column`; asking again for the same column flips the order."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self._apply_sort()

    def _apply_sort(self) -> None:
        if not self.row_count:
            return
        selected = self.selected_key
        self.sort(self.sort_column, key=_sort_key, reverse=self.sort_reverse)
        if selected is not None:
            self.select_key(selected)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(event.column_key.value or "peer")

    # -- cells -----------------------------------------------------------------------

    def _style(self, style: str) -> str:
        """Theme variables ($success…) resolved to colours: Rich Text knows no variables."""
        if "$" not in style:
            return style
        words = []
        for word in style.split():
            if word.startswith("$"):
                word = self._styles.get(word[1:], "default")
            words.append(word)
        return " ".join(words)

    def _cells(self, s: StreamSnapshot, now: float) -> tuple[Cell, ...]:
        style = self._style
        peer = short_peer(s.peer_id) + (" ⚡" if s.faults else "")
        state_text = s.state
        state_style = STATE_STYLES.get(s.state, "")
        if s.state == snap.BACKOFF and s.backoff_until is not None:
            state_text = f"backoff {max(s.backoff_until - now, 0):.0f}s"
        if s.faults:
            # The fault is what explains this row; its effects show in the other columns.
            labels = [FAULT_STATE.get(f, f) for f in sorted(s.faults)]
            state_text = labels[0] + (f" +{len(labels) - 1}" if len(labels) > 1 else "")
            state_style = "bold $error"
        rtt_text = f"{fmt_ms(s.rtt_ms):>6} {sparkline(s.rtt_history, SPARK_WIDTH)}"
        rate = f"{fmt_rate(s.frames_in_per_s)}/{fmt_rate(s.frames_out_per_s)}"
        symbol, word, digest_style = DIGEST_MARKS.get(
            s.digest_state, ("?", s.digest_state, "$text-muted")
        )
        lag_style = "$warning" if (s.ack_lag_ms or 0) > 1000 else ""
        lag_text = f"{fmt_ms_short(s.ack_lag_ms)}/{fmt_ms_short(s.ack_rtt_ms)}"
        return (
            Cell(peer, style("bold $error" if s.faults else ""), (s.peer_id, s.group_id, s.role)),
            Cell(s.group_id, "", (s.group_id, s.peer_id, s.role)),
            Cell("init" if s.role == "initiator" else "acc", style("$text-muted"), s.role),
            Cell(state_text, style(state_style), _STATE_ORDER.get(s.state, 9)),
            Cell(rtt_text, "", _none_last(s.rtt_ms)),
            Cell(rate.rjust(11), "", s.frames_in_per_s + s.frames_out_per_s),
            self._credit(s.credit_out_events, s.credit_out_bytes, s),
            self._credit(s.credit_in_events, s.credit_in_bytes, s),
            Cell(f"{s.unacked:>5}", style("$warning" if s.unacked else ""), s.unacked),
            Cell(f"{s.outbox:>6,}", style("$warning" if s.outbox else ""), s.outbox),
            Cell(f"{lag_text:>11}", style(lag_style), _none_last(s.ack_lag_ms)),
            Cell(f"{symbol} {word}", style(digest_style), _DIGEST_ORDER.get(s.digest_state, 9)),
        )

    def _credit(self, events: int, size: int, s: StreamSnapshot) -> Cell:
        """Two 4-cell bars, events then bytes, against the window; red when one is empty."""
        if s.state not in (snap.UP, snap.STALLED, snap.HANDSHAKING):
            return Cell("—", self._style("$text-muted"), -1.0)  # no stream: no credit at all
        left = min(events / max(s.window_events, 1), size / max(s.window_bytes, 1))
        if events <= 0 or size <= 0:
            return Cell(" empty", self._style("bold $error"), left)
        fill = self._style("$accent")
        track = self._style("on $surface")
        cell = Cell(sort_value=left)
        cell.append(bar(events, s.window_events, 4), f"{fill} {track}")
        cell.append(" ")
        cell.append(bar(size, s.window_bytes, 4), f"{fill} {track}")
        return cell


def _none_last(value: float | None) -> float:
    return math.inf if value is None else value


def _sort_key(cell: Cell) -> object:
    return cell.sort_value
