"""`tapsim replay`: a real 30 s demo recording (tests/fixtures/recording, made by
tests/fixtures/make_recording.py) played back, summed up, and read past bad lines.

The screen tests are snapshot tests at two points of the recording (no live clock: the
player is moved by hand). Update after a deliberate change with
`uv run pytest tests/test_replay.py --snapshot-update`, then look at the SVGs.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tapsim_tui.cli import main
from tapsim_tui.launch import DEMO_GROUP, DEMO_PASSPHRASE
from tapsim_tui.replay import READ_ONLY, Player, ReplayError, load, summary_lines

FIXTURE = Path(__file__).parent / "fixtures" / "recording"
SIZE = (160, 48)


def fixture_files() -> list[Path]:
    return sorted(FIXTURE.glob("*.ndjson.gz"))


def plain_copy(tmp_path: Path, node: str) -> Path:
    """One node's fixture file, uncompressed, to damage."""
    [gz] = [p for p in fixture_files() if p.name.startswith(node + "-")]
    path = tmp_path / gz.name.removesuffix(".gz")
    path.write_bytes(gzip.decompress(gz.read_bytes()))
    return path


def replay_app(**kw):
    from tapsim_tui.replay_app import ReplayApp

    return ReplayApp(
        load(fixture_files()), passphrases={DEMO_GROUP: DEMO_PASSPHRASE}, live=False, **kw
    )


def at(elapsed_s: float, *keys: str):
    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()  # the demo group's key, to decrypt
        await pilot.pause()
        pilot.app.seek(elapsed_s)
        for key in keys:
            await pilot.press(key)
        await pilot.pause()

    return run_before


def test_the_fixture_is_a_demo_of_three_nodes_for_30_s():
    recording = load(fixture_files())
    assert sorted(recording.nodes) == ["alice", "bob", "carol"]
    assert 29 <= recording.end - recording.start <= 40
    assert not recording.problems
    for node in recording.nodes.values():
        assert len(node.snapshots) >= 29 and len(node.frames) > 300


def test_replay_early_in_the_demo(snap_compare):
    assert snap_compare(replay_app(), terminal_size=SIZE, run_before=at(8.0))


def test_replay_late_in_the_demo_on_the_second_node(snap_compare):
    assert snap_compare(replay_app(), terminal_size=SIZE, run_before=at(25.0, "n"))


def test_replay_at_80x24(snap_compare):
    assert snap_compare(replay_app(), terminal_size=(80, 24), run_before=at(15.0))


async def test_action_keys_say_read_only_and_send_nothing():
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.seek(20.0)
        await pilot.pause()
        for key in ("t", "b", "r", "R", "x", "k", "c", "a", "ctrl+e"):
            await pilot.press(key)
            await pilot.pause()
        toasts = [str(n.message) for n in app._notifications]
        assert toasts.count(READ_ONLY) == 9
        assert len(app.screen_stack) == 1  # no dialog opened (add peer asks nothing)
        assert all(not h.drain_notices() for h in app.handles)  # no command reached a node


async def test_pause_speed_step_and_seek_keys_move_the_replay():
    app = replay_app(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        player = app.player
        await pilot.pause()
        assert player.position == player.start and player.paused
        await pilot.press("full_stop")  # the next snapshot of any node
        first = min(
            t for n in app.recording.nodes.values() for t in n.snapshot_times if t > player.start
        )
        assert player.position == first
        await pilot.press("right_square_bracket")
        assert player.position == pytest.approx(first + 10.0)
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert player.position == player.start
        await pilot.press("v")
        assert player.speed == 10.0
        await pilot.press("space")
        assert not player.paused
        player.advance(0.5)
        assert player.elapsed == pytest.approx(5.0)
        await pilot.press("n")
        assert app.main_screen.handle.server_id == "bob"
        await pilot.press("0")
        assert player.position == player.start


async def test_a_click_on_the_seek_bar_seeks_there():
    from widgets.seek_bar import SeekBar

    app = replay_app(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        bar = app.main_screen.query_one(SeekBar)
        start, room = bar._bar
        await pilot.click(SeekBar, offset=(1 + start + (room - 1) // 2, 0))  # padding 1
        player = app.player
        assert player.elapsed == pytest.approx(player.length / 2, abs=player.length / room)
        await pilot.click(SeekBar, offset=(1, 0))  # the clock, not the bar: nothing
        assert player.elapsed == pytest.approx(player.length / 2, abs=player.length / room)


def test_player_stops_at_the_end_and_plays_again_from_the_start():
    player = Player(load(fixture_files()))
    player.advance(3600.0)
    assert player.at_end and player.position == player.end
    player.toggle_pause()
    assert player.position == player.start and not player.paused


def test_bad_and_truncated_lines_are_reported_and_skipped(tmp_path):
    path = plain_copy(tmp_path, "alice")
    lines = path.read_bytes().splitlines(keepends=True)
    good = load([path])
    damaged = [
        *lines[:5],
        b"this is not json\n",
        b'{"k": "frame", "t": 1.0}\n',  # a record without its fields
        *lines[5:],
        lines[-1][: len(lines[-1]) // 2],  # the last line cut off mid-way
    ]
    path.write_bytes(b"".join(damaged))
    recording = load([path])
    assert [(p.line, p.reason) for p in recording.problems] == [
        (6, "not JSON (truncated?)"),
        (7, "no 'dir'"),
        (len(damaged), "not JSON (truncated?)"),
    ]
    alice, before = recording.nodes["alice"], good.nodes["alice"]
    assert len(alice.frames) == len(before.frames)
    assert len(alice.snapshots) == len(before.snapshots)
    assert str(recording.problems[0]) == f"{path}:6: not JSON (truncated?)"


def test_summary_counts_frames_per_type_and_exits_0(capsys):
    assert main(["replay", "--summary", *map(str, fixture_files())]) == 0
    out = capsys.readouterr().out
    assert "files: 3  nodes: 3" in out
    for node in ("alice", "bob", "carol"):
        assert f"\n{node}: " in out
    assert "  EVENT   in " in out and "  HELLO   in       2  out       2" in out
    assert "gaps: 0" in out and "bad lines: 0" in out
    # The demo ended with every node saying SHUTDOWN on each of its streams.
    assert "→ bob g!demo stream 1: ERROR SHUTDOWN (fatal): server stopping" in out


def test_summary_reports_bad_lines_and_gaps_and_exits_1(tmp_path, capsys):
    path = plain_copy(tmp_path, "bob")
    lines = path.read_bytes().splitlines(keepends=True)
    # Drop a stretch of the middle (a gap in time and in the streams' sequences).
    middle = len(lines) // 2
    path.write_bytes(b"".join([*lines[:middle], b"{oops\n", *lines[middle + 200 :]]))
    assert main(["replay", "--summary", str(path)]) == 1
    out = capsys.readouterr().out
    assert "nothing recorded for" in out
    assert ": sequence " in out
    assert f"bad lines: 1\n  {path}:{middle + 1}: not JSON (truncated?)" in out


def test_summary_lines_of_one_node():
    recording = load(fixture_files()[:1])
    lines = summary_lines(recording)
    assert lines[0].startswith("files: 1  nodes: 1  span: ")


def test_unreadable_or_empty_input_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.ndjson")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tapsim: error: ") and "missing.ndjson" in err and err.count("\n") == 1
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    with pytest.raises(ReplayError, match="no recording"):
        load([empty])
    assert main(["replay", "--summary", str(empty)]) == 1


def test_a_trace_in_the_replay_follows_an_event_over_the_recorded_nodes():
    from node.protocol.frames import Event, parse_frame
    from tapsim_tui.replay import ReplayNode
    from tapsim_tui.screens.trace import gather

    recording = load(fixture_files())
    player = Player(recording)
    handles = [ReplayNode(node, player) for node in recording.nodes.values()]
    alice = recording.nodes["alice"]
    sent = next(
        (record, frame.payload)
        for record in alice.frames
        if record.direction == "out"
        and b'"EVENT"' in record.line
        and isinstance((frame := parse_frame(record.line)).payload, Event)
        and frame.payload.author == alice.headers[0].server_id
    )
    record, event = sent

    player.seek(record.t - 0.001)  # before alice sent it: nothing yet
    assert gather(handles, event.event_id).steps == ()

    player.seek(player.end)
    trace = gather(handles, event.event_id)
    assert trace.author == event.author
    seen_on = {step.node for step in trace.steps}
    assert {"alice"} < seen_on, trace  # and at least one node it was sent to
    assert any(s.kind == "sent" and s.node == "alice" for s in trace.steps), trace
    assert any(s.kind == "received" and s.node != "alice" for s in trace.steps), trace
    assert [s.at for s in trace.steps] == sorted(s.at for s in trace.steps)
