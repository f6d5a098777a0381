"""At high frame rates the log writes a bounded tail per tick and counts the rest."""

from __future__ import annotations

from textual.app import App, ComposeResult

from node.view.framelog import FrameLog as NodeFrameLog
from node.view.snapshot import FrameLogEntry
from widgets.frame_log import TAIL_PER_TICK, FrameLog


def _entries(n: int, start: int = 1) -> list[FrameLogEntry]:
    return [
        FrameLogEntry(i, 0.0, "in", "bob", "g!x", "ACK", i, 90, f"through {i}")
        for i in range(start, start + n)
    ]


class _LogApp(App):
    def compose(self) -> ComposeResult:
        yield FrameLog()


async def test_a_flood_writes_only_the_newest_lines_and_counts_the_rest():
    app = _LogApp()
    async with app.run_test() as pilot:
        log = app.query_one(FrameLog)
        log.feed(_entries(500))
        await pilot.pause()
        assert len(log.lines) == TAIL_PER_TICK + 1
        assert "450 more frames" in log.lines[0].text
        assert log.lines[-1].text.strip().endswith("through 500")
        log.feed(_entries(3, start=501))  # a normal tick: every line
        await pilot.pause()
        assert len(log.lines) == TAIL_PER_TICK + 4


def test_node_frame_log_puts_each_record_in_words_once():
    log = NodeFrameLog(size=10)
    for _ in range(25):
        log.record("in", "bob", "g!x", "PING", 90, None)
    first = log.entries()
    assert [e.index for e in first] == list(range(16, 26))
    log.record("in", "bob", "g!x", "PING", 90, None)
    second = log.entries()
    assert second[:-1] == first[1:] and second[-1].index == 26
    assert second[0] is first[1]  # reused, not rebuilt


def test_the_node_words_only_the_newest_frames_it_is_asked_for():
    log = NodeFrameLog()
    for _ in range(300):
        log.record("in", "bob", "g!x", "PING", 60, None)
    assert [e.index for e in log.entries(newest=10)] == list(range(291, 301))
    for _ in range(5):
        log.record("in", "bob", "g!x", "PING", 60, None)
    assert [e.index for e in log.entries(newest=10)][-6:] == [300, *range(301, 306)]
    assert len(log.entries()) == 15  # the skipped ones are never worded later
