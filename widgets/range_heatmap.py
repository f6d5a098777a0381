"""The group's event-id space as a bar: which ranges a repair found equal, differing or
repaired, filling in as the repair descends.

Event ids are ULIDs, so their order is their authors' clocks: the bar runs from the
oldest range bound a repair saw to the newest, left to right (the open ends, ``""``,
reach past them). Each cell shows what is known of the ids in it:

- ``█`` green: equal on both sides;  ``█`` red: differs;  ``█`` accent: repaired
  (its checkpoint exchange completed);  ``░`` dim: not compared (unknown).

A cell takes the narrowest range that covers its middle (a finer digest bucket says
more than the whole group), except that a repaired range, or a differing one at least
as fine with nothing finer known inside it, shows in every cell it touches, however
narrow, so a one-event difference is never lost between cells. Without a repair, the
last whole-group digest fills the bar in one colour.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from node.view.snapshot import PeerDigestSnapshot, RepairSnapshot

EQUAL, DIFFERS, REPAIRED, UNKNOWN = "equal", "differs", "repaired", "unknown"

CELL_STYLES = {
    EQUAL: ("█", "$success"),
    DIFFERS: ("█", "$error"),
    REPAIRED: ("█", "$accent"),
    UNKNOWN: ("░", "$text-muted"),
}

AXIS = "  ← event-id time (UTC) →"
Mark = tuple[str, str, str]  # (lo, hi, mark); "" is the open end


@dataclass(frozen=True, slots=True)
class HeatmapView:
    group_id: str
    repair: RepairSnapshot | None
    peer: PeerDigestSnapshot | None

    @property
    def marks(self) -> tuple[Mark, ...]:
        if self.repair is not None and self.repair.range_marks:
            return self.repair.range_marks
        if self.peer is not None and self.peer.equal is not None:
            return (("", "", EQUAL if self.peer.equal else DIFFERS),)
        return ()


_CROCKFORD = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}


def id_time(bound: str) -> float | None:
    """A range bound's time: its ULID's first 10 characters are its milliseconds (48
    bits). None for the open end or anything that is not a ULID."""
    if len(bound) != 26:
        return None
    ms = 0
    for char in bound[:10]:
        digit = _CROCKFORD.get(char)
        if digit is None:
            return None
        ms = ms * 32 + digit
    return ms / 1000


def span(marks: Sequence[Mark]) -> tuple[float, float] | None:
    """(oldest, newest) bound time over the marks; None when all are open ends."""
    times = [t for lo, hi, _ in marks for t in (id_time(lo), id_time(hi)) if t is not None]
    if not times:
        return None
    first, last = min(times), max(times)
    if last - first < 0.002:  # one instant: give it some width
        first, last = first - 1.0, last + 1.0
    return first, last


def cells(
    marks: Sequence[Mark], width: int, bounds: tuple[float, float] | None = None
) -> list[str]:
    """What each of ``width`` cells of the bar shows (EQUAL, DIFFERS, REPAIRED, UNKNOWN),
    over ``bounds`` (oldest, newest) or else the marks' own :func:`span`."""
    if width <= 0:
        return []
    bounds = bounds or span(marks)
    first, last = bounds if bounds is not None else (0.0, 1.0)
    step = (last - first) / width
    ranges = []
    for order, (lo, hi, mark) in enumerate(marks):
        a = id_time(lo) if lo else -math.inf
        b = id_time(hi) if hi else math.inf
        if a is None or b is None:
            continue
        ranges.append((a, b, mark, order))
    # A differing range that was descended into is told apart by its finer ranges; only
    # the differing ranges with nothing finer inside (leaves) spill into touching cells.
    leaves = [
        (a, b)
        for a, b, mark, order in ranges
        if mark == DIFFERS
        and not any(
            o != order and a <= a2 and b2 <= b and (b2 - a2) < (b - a) for a2, b2, _m, o in ranges
        )
    ]
    out: list[str] = []
    for i in range(width):
        left, right = first + i * step, first + (i + 1) * step
        middle = (left + right) / 2
        best: tuple[float, int, str] | None = None  # (width, -order, mark): the narrowest
        repaired = False
        finest_differs = math.inf
        for a, b, mark, order in ranges:
            if a <= middle < b:
                key = (b - a, -order, mark)
                if best is None or key[:2] < best[:2]:
                    best = key
            if mark == REPAIRED and a < right and b > left:
                repaired = True
        for a, b in leaves:
            if a < right and b > left:
                finest_differs = min(finest_differs, b - a)
        if repaired:
            out.append(REPAIRED)
        elif best is None:
            out.append(DIFFERS if finest_differs < math.inf else UNKNOWN)
        elif finest_differs < math.inf and finest_differs <= best[0]:
            out.append(DIFFERS)
        else:
            out.append(best[2])
    return out


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))


class RangeHeatmap(Widget):
    DEFAULT_CSS = """
    RangeHeatmap { height: auto; }
    """

    view: reactive[HeatmapView | None] = reactive(None, layout=True)

    def render(self) -> Content:
        v = self.view
        if v is None:
            return Content("")
        marks = v.marks
        width = max(10, self.size.width or 40)
        head = [("ranges ", "bold"), (v.group_id, "bold $accent"), "  "]
        if not marks:
            return Content("\n").join(
                [
                    Content.assemble(*head, ("not compared yet", "$text-muted")),
                    Content.styled("░" * width, "$text-muted"),
                ]
            )
        kinds = cells(marks, width)
        legend = Content(" ").join(
            Content.assemble(CELL_STYLES[kind], (f" {kind}", "$text-muted"))
            for kind in (EQUAL, DIFFERS, REPAIRED, UNKNOWN)
            if kind in kinds
        )
        lines = [
            Content.assemble(*head, legend),
            Content.assemble(*(CELL_STYLES[k] for k in kinds)),
        ]
        bounds = span(marks)
        if bounds is None:
            lines[0] = Content.assemble(lines[0], ("  (whole-group digest)", "$text-muted"))
        else:
            left, right = _clock(bounds[0]), _clock(bounds[1])
            gap = max(1, width - len(left) - len(right) - len(AXIS))
            lines.append(Content.styled(f"{left}{AXIS}{' ' * gap}{right}", "$text-muted"))
        return Content("\n").join(lines)
