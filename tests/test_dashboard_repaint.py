"""The dashboard repaints only what changed: an idle dashboard must cost next to nothing.

A tick hands every widget fresh data; these tests count what the widgets do with it
(`Widget.refresh` calls, `DrawnWidget.repaints`, `StreamsTable.cell_writes`), never time.
"""

from __future__ import annotations

from collections import Counter

from support.scripted import FixedClock, trouble_node

from tapsim_tui.app import TapsimApp
from widgets.drawn import DrawnWidget
from widgets.heartbeat_timeline import HeartbeatTimeline, HeartbeatView
from widgets.streams_table import StreamsTable

SIZE = (120, 40)
BOB = "server-bob|g!demo|initiator"


def count_refreshes(app: TapsimApp) -> Counter:
    """Count every widget's refresh() from now on, by widget (its own method, wrapped)."""
    counts: Counter = Counter()
    for widget in app.main_screen.query("*"):

        def counting(*args, _widget=widget, _refresh=widget.refresh, **kwargs):
            counts[_widget] += 1
            return _refresh(*args, **kwargs)

        widget.refresh = counting
    return counts


async def test_an_unchanged_snapshot_repaints_nothing():
    clock = FixedClock()
    app = TapsimApp([trouble_node(clock)], clock=clock, live=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        table = screen.query_one(StreamsTable)
        table.select_key(BOB)  # the detail pane shows every part of a stream
        await pilot.pause()
        app.refresh_from_snapshot()
        await pilot.pause()
        drawn = {w: w.repaints for w in screen.query(DrawnWidget)}
        writes = table.cell_writes
        refreshes = count_refreshes(app)

        app.refresh_from_snapshot()  # the same snapshot at the same time
        await pilot.pause()

        assert {w: w.repaints for w in screen.query(DrawnWidget)} == drawn
        assert table.cell_writes == writes
        assert +refreshes == Counter()
        assert drawn and writes  # they did draw, the first time


async def test_a_new_view_that_draws_the_same_does_not_repaint():
    view = HeartbeatView(
        now=100.0,
        beats=(),
        last_ping_sent_at=98.0,
        last_pong_at=98.0,
        last_read_at=98.0,
        pings_sent=3,
        pongs_received=3,
        missed_pongs=0,
        rtt_ms=1.5,
    )
    clock = FixedClock()
    app = TapsimApp([trouble_node(clock)], clock=clock, live=False)
    async with app.run_test(size=SIZE) as pilot:
        timeline = HeartbeatTimeline()
        await app.main_screen.mount(timeline)
        timeline.view = view
        await pilot.pause()
        before = timeline.repaints
        refreshes = count_refreshes(app)
        # A different view value (the time moved 10 ms) that shows the same characters.
        timeline.view = HeartbeatView(**{**_fields(view), "now": 100.01})
        await pilot.pause()
        assert timeline.repaints == before
        assert refreshes[timeline] == 0
        timeline.view = HeartbeatView(**{**_fields(view), "missed_pongs": 1})
        await pilot.pause()
        assert timeline.repaints == before + 1


def _fields(view: HeartbeatView) -> dict:
    return {name: getattr(view, name) for name in view.__slots__}
