"""The range heatmap: what a repair learned of each range of the group's event-id space,
as cells of a bar (pure), and the marks a real repair planner leaves."""

from __future__ import annotations

import pytest
from support.eventset import EventSet
from support.scripted import heatmap_marks, time_ulid
from test_antientropy import drive, split

from node.sync.actions import MARK_DIFFERS, MARK_EQUAL, MARK_REPAIRED
from node.view.snapshot import PeerDigestSnapshot, RepairSnapshot
from widgets.range_heatmap import (
    DIFFERS,
    EQUAL,
    REPAIRED,
    UNKNOWN,
    HeatmapView,
    cells,
    span,
)

T0 = 1_700_000_000.0


def ulid(seconds: float) -> str:
    return time_ulid(T0 + seconds)


def test_nothing_compared_is_unknown_and_one_digest_fills_the_bar():
    assert cells((), 5) == [UNKNOWN] * 5
    assert cells((("", "", EQUAL),), 4) == [EQUAL] * 4
    peer = PeerDigestSnapshot(
        "bob", "g!x", at=T0, count=3, fingerprint="f", local_count=4, local_fingerprint="g"
    )
    assert HeatmapView("g!x", None, peer).marks == (("", "", DIFFERS),)
    assert HeatmapView("g!x", None, None).marks == ()


def test_finer_ranges_say_more_than_coarse_ones():
    marks = (
        ("", "", DIFFERS),
        ("", ulid(50), EQUAL),
        (ulid(50), "", DIFFERS),
        (ulid(50), ulid(75), EQUAL),
        (ulid(75), ulid(100), DIFFERS),
    )
    bar = cells(marks, 4)  # the span is 50 … 100 s: cells of 12.5 s
    assert bar == [EQUAL, EQUAL, DIFFERS, DIFFERS]
    assert cells((*marks, (ulid(75), ulid(100), REPAIRED)), 4) == [EQUAL, EQUAL, REPAIRED, REPAIRED]


def test_a_narrow_difference_is_never_lost_between_cells():
    marks = (
        (ulid(0), ulid(100), EQUAL),
        (ulid(41), ulid(41.5), DIFFERS),
    )
    bar = cells(marks, 10)
    assert bar.count(DIFFERS) == 1 and bar[4] == DIFFERS
    assert cells((*marks, (ulid(41), ulid(41.5), REPAIRED)), 10).count(REPAIRED) == 1


@pytest.mark.parametrize("kind", ["holes", "random"])
def test_a_real_repair_fills_the_bar_in_and_leaves_nothing_differing(kind):
    a_events, b_events = split(10_000, 5, kind)
    r = drive(EventSet(a_events), EventSet(b_events))
    marks = tuple(r.outcome.stats.range_marks)
    assert marks[0] == ("", "", MARK_DIFFERS)
    assert {m for _lo, _hi, m in marks} == {MARK_DIFFERS, MARK_EQUAL, MARK_REPAIRED}
    width, axis = 60, span(marks)

    def settled(k: int) -> int:
        return sum(c in (EQUAL, REPAIRED) for c in cells(marks[:k], width, axis))

    # The whole group differs; its 16 buckets are mostly equal; then all is settled.
    assert settled(1) == 0 < settled(17) < settled(len(marks)) == width
    final = cells(marks, width)
    assert DIFFERS not in final and UNKNOWN not in final and REPAIRED in final


def test_the_snapshot_carries_the_marks():
    repair = RepairSnapshot("bob", "g!x", "repairing", range_marks=heatmap_marks(T0))
    assert HeatmapView("g!x", repair, None).marks == repair.range_marks
    bar = cells(repair.range_marks, 64)
    assert {EQUAL, DIFFERS, REPAIRED} <= set(bar)
