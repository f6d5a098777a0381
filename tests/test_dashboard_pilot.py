"""Every key binding and modal of the dashboard, driven with Textual's Pilot.

The node is a scripted `NodeHandle` with a fixed clock: each test asserts the
command the dashboard submitted, or what became visible.
"""

from __future__ import annotations

import asyncio

import pytest
from support.scripted import (
    DEMO_GROUP,
    DEMO_PASSPHRASE,
    DEMO_PASSPHRASES,
    FixedClock,
    ScriptedNode,
    StreamScript,
    demo_nodes,
    trouble_node,
)
from textual.widgets import OptionList

from node.view import snapshot as snap
from node.view.commands import AddPeer, ClearFaults, PublishEvent, Repair, SetFault
from tapsim_tui.app import TapsimApp, all_bindings
from tapsim_tui.e2e import GroupCipher
from tapsim_tui.screens.add_peer import AddPeerScreen
from tapsim_tui.screens.filter import FilterScreen
from tapsim_tui.screens.help import HelpScreen
from tapsim_tui.screens.passphrase import PassphraseScreen
from tapsim_tui.screens.trace import TRACE_BINDINGS
from widgets.credit_gauge import CreditGauge
from widgets.detail_pane import DetailPane
from widgets.fault_badges import FaultBadges
from widgets.frame_log import FrameLog
from widgets.header_bar import HeaderBar
from widgets.history_chart import HistoryChart
from widgets.streams_table import StreamsTable

SIZE = (120, 40)
BOB = "server-bob|g!demo|initiator"


def make_app(*, demo: bool = False, **kw) -> tuple[TapsimApp, list[ScriptedNode], FixedClock]:
    clock = FixedClock()
    nodes = demo_nodes(clock) if demo else [trouble_node(clock)]
    kw.setdefault("passphrases", DEMO_PASSPHRASES)
    app = TapsimApp(nodes, clock=clock, live=False, **kw)
    return app, nodes, clock


def table(app: TapsimApp) -> StreamsTable:
    return app.main_screen.query_one(StreamsTable)


async def wait_until(pilot, condition, attempts: int = 200) -> None:
    """Let the app process messages until `condition()` holds (no fixed sleeps)."""
    for _ in range(attempts):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError("condition not reached")


async def select(pilot, key: str) -> None:
    table(pilot.app).select_key(key)
    await pilot.pause()


# -- sending encrypted test events ---------------------------------------------------


async def test_send_event_encrypts_before_the_node_sees_it():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, BOB)
        await pilot.press("t")
        await app.workers.wait_for_complete()
        await pilot.pause()
    (command,) = [c for c in node.commands if isinstance(c, PublishEvent)]
    assert command.group_id == DEMO_GROUP
    assert b"test" not in command.ciphertext
    cipher = GroupCipher.from_passphrase(DEMO_GROUP, DEMO_PASSPHRASE)
    assert cipher.decrypt(command.ciphertext) == "test 1 from alice"


async def test_send_burst_submits_one_hundred_distinct_ciphertexts():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, BOB)
        await pilot.press("b")
        await app.workers.wait_for_complete()
    published = [c for c in node.commands if isinstance(c, PublishEvent)]
    assert len(published) == 100
    assert len({c.ciphertext for c in published}) == 100
    cipher = GroupCipher.from_passphrase(DEMO_GROUP, DEMO_PASSPHRASE)
    assert cipher.decrypt(published[-1].ciphertext) == "test 100 from alice"


async def test_send_without_passphrase_cancelled_says_nothing_was_sent():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "server-gwen|g!ops|initiator")
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, PassphraseScreen))
        await pilot.press("escape")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
    assert node.commands == []
    assert any("Nothing sent: g!ops has no passphrase" in m for m in messages)


async def test_published_event_shows_decrypted_in_the_frame_log():
    app, _, clock = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()  # group keys derived
        await select(pilot, BOB)
        await pilot.press("t")
        await app.workers.wait_for_complete()
        clock.advance(0.1)
        app.refresh_from_snapshot()
        await pilot.pause()
        log = app.main_screen.query_one(FrameLog)
        text = "\n".join(strip.text for strip in log.lines)
    assert "“test 1 from alice”" in text
    assert "sealed sha256:" in text  # g!ops events: no passphrase, size and hash only


# -- repair, add peer ----------------------------------------------------------------


async def test_repair_selected_and_repair_all():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "server-frank|g!demo|initiator")
        await pilot.press("r")
        await pilot.press("R")
    assert node.commands == [Repair("server-frank", DEMO_GROUP), Repair()]


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("server-erin|g!demo|acceptor", "already running"),
        ("server-dave|g!demo|initiator", "backoff"),
        ("server-hal|g!demo|acceptor", "gone"),
    ],
)
async def test_repair_that_cannot_run_says_why_and_sends_nothing(row, why):
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, row)
        await pilot.press("r")
        await pilot.pause()
        toasts = [str(n.message) for n in app._notifications]
    assert node.commands == []
    assert any("No repair" in m and why in m for m in toasts), toasts


async def test_repair_all_with_nothing_connected_says_so():
    clock = FixedClock()
    lonely = ScriptedNode(
        "server-zed", [StreamScript("server-bob", state=snap.BACKOFF)], clock=clock
    )
    app = TapsimApp([lonely], clock=clock, live=False, passphrases=DEMO_PASSPHRASES)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("R")
        await pilot.pause()
        toasts = [str(n.message) for n in app._notifications]
    assert lonely.commands == []
    assert any("No repair started" in m for m in toasts), toasts


async def test_add_peer_modal_validates_inline_then_submits():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        assert isinstance(app.screen, AddPeerScreen)
        await pilot.press(*"http://nohost/x", "enter")
        error = str(app.screen.query_one("#error").render())
        assert "no path" in error
        assert isinstance(app.screen, AddPeerScreen) and node.commands == []
        await pilot.press("backspace", "backspace", "enter")  # the port is optional
        await pilot.pause()
        assert not isinstance(app.screen, AddPeerScreen)
    assert node.commands == [AddPeer("http://nohost:8448", ("g!demo", "g!ops"))]


async def test_add_peer_modal_cancel():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a", "escape")
        assert not isinstance(app.screen, AddPeerScreen)
    assert node.commands == []


# -- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fault", "enabled"),
    [
        ("x", snap.FAULT_CUT, True),
        ("k", snap.FAULT_ACK_PAUSED, False),  # already on for bob: the key turns it off
        ("c", snap.FAULT_CREDIT_ONE, True),
    ],
)
async def test_fault_keys_toggle_the_fault_on_the_selected_stream(key, fault, enabled):
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, BOB)
        await pilot.press(key)
        app.refresh_from_snapshot()
        await pilot.pause()
        badges = app.main_screen.query_one(FaultBadges).faults
        toasts = [str(n.message) for n in app._notifications]
        selected = table(app).selected_key
    assert node.commands == [SetFault("server-bob", DEMO_GROUP, fault, enabled)]
    assert ((fault, "bob · g!demo") in badges) is enabled
    assert selected == BOB  # the row stays selected: the same key undoes it
    assert any("bob" in m for m in toasts), toasts


async def test_fault_on_an_acceptor_row_stays_on_that_row_and_the_key_undoes_it():
    app, (node,), _ = make_app()
    erin = "server-erin|g!demo|acceptor"
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, erin)
        await pilot.press("x")
        app.refresh_from_snapshot()
        await pilot.pause()
        assert table(app).selected_key == erin
        state = str(table(app).get_cell(erin, "state"))
        assert state == "cut"
        await pilot.press("x")
        app.refresh_from_snapshot()
        await pilot.pause()
        assert table(app).selected_key == erin
    assert node.commands == [
        SetFault("server-erin", DEMO_GROUP, snap.FAULT_CUT, True),
        SetFault("server-erin", DEMO_GROUP, snap.FAULT_CUT, False),
    ]


async def test_clear_all_faults_from_the_palette():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.main_screen.action_clear_faults()
        app.refresh_from_snapshot()
        await pilot.pause()
        badges = app.main_screen.query_one(FaultBadges)
        assert badges.faults == ()
    assert node.commands == [ClearFaults()]


async def test_fault_badges_show_while_active():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE):
        badges = app.main_screen.query_one(FaultBadges)
        assert badges.faults == ((snap.FAULT_ACK_PAUSED, "bob · g!demo"),)
        assert badges.display and "ACKS PAUSED" in str(badges.render())


# -- frame log: pause and filter -------------------------------------------------------


async def test_pause_holds_back_new_frames_and_counts_them():
    app, _, clock = make_app()
    async with app.run_test(size=SIZE) as pilot:
        log = app.main_screen.query_one(FrameLog)
        shown = len(log.lines)
        await pilot.press("p")
        assert log.paused and app.main_screen.query_one(HeaderBar).info.live is False
        clock.advance(2.0)
        app.refresh_from_snapshot()
        await pilot.pause()
        assert log.held_back > 0 and len(log.lines) == shown
        assert log.border_subtitle == f"PAUSED +{log.held_back} new"
        held = log.held_back
        await pilot.press("p")
        await pilot.pause()
        assert not log.paused and log.held_back == 0
        assert len(log.lines) == shown + held
        assert app.main_screen.query_one(HeaderBar).info.live is True


async def test_filter_modal_filters_the_log_and_rejects_unknown_types():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        assert isinstance(app.screen, FilterScreen)
        await pilot.press(*"BOGUS", "enter")
        assert "unknown frame type" in str(app.screen.query_one("#error").render())
        await pilot.press(*["backspace"] * 5, *"ERROR", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, FilterScreen)
        log = app.main_screen.query_one(FrameLog)
        assert log.frame_filter.types == {"ERROR"}
        lines = [strip.text for strip in log.lines]
        assert lines and all("ERROR" in line for line in lines)
        assert log.border_title == "frames · ERROR"


# -- view keys -------------------------------------------------------------------------


async def test_zoom_maximizes_the_focused_pane_and_back():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        await pilot.press("z")
        assert screen.maximized is table(app)
        await pilot.press("z")
        assert screen.maximized is None
        screen.query_one(DetailPane).focus()
        await pilot.press("z")
        assert screen.maximized is screen.query_one(DetailPane)


async def test_history_window_cycles():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        chart = app.main_screen.query_one(HistoryChart)
        assert chart.window_s == 60
        await pilot.press("w")
        assert chart.window_s == 300
        await pilot.press("w", "w")
        assert chart.window_s == 60


async def test_sort_key_and_header_click_keep_the_selection():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "server-gwen|g!ops|initiator")
        await pilot.press("o")
        t = table(app)
        assert t.sort_column == "group"
        assert t.selected_key == "server-gwen|g!ops|initiator"
        assert t.get_row_index("server-gwen|g!ops|initiator") == 6  # g!ops after g!demo
        await pilot.click(StreamsTable, offset=(3, 1))  # the "peer" header
        await pilot.click(StreamsTable, offset=(3, 1))  # again: reversed
        assert t.sort_column == "peer" and t.sort_reverse
        assert t.get_row_index("server-gwen|g!ops|initiator") == 1  # after hal
        assert t.selected_key == "server-gwen|g!ops|initiator"


async def test_switch_node_shows_the_next_node():
    app, _, _ = make_app(demo=True)
    async with app.run_test(size=SIZE) as pilot:
        header = app.main_screen.query_one(HeaderBar)
        assert header.info.server_id == "server-alice"
        await pilot.press("n")
        assert header.info.server_id == "server-bob"
        assert header.info.node_index == 1 and header.info.node_count == 3
        peers = {k.split("|")[0] for k in table(app)._rows}
        assert peers == {"server-alice", "server-carol"}


async def test_switch_node_is_off_with_a_single_node():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        assert app.main_screen.query_one(HeaderBar).info.server_id == "server-alice"
        assert app.main_screen.check_action("switch_node", ()) is False


async def test_screenshot_saves_an_svg_in_the_screenshot_folder(tmp_path, monkeypatch):
    here, shots = tmp_path / "repo", tmp_path / "shots"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("TAPSIM_SCREENSHOTS", str(shots))
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
    (svg,) = list(shots.glob("*.svg"))
    assert svg.read_text().startswith("<svg")
    assert not list(here.iterdir())  # nothing in the current directory
    assert any(str(svg) in m for m in messages)  # the full path, to copy


async def test_send_without_passphrase_asks_for_one_and_sends():
    app, (node,), _ = make_app(passphrases={})
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, BOB)
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, PassphraseScreen))
        await pilot.press(*"a secret")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await wait_until(pilot, lambda: len(node.commands) == 1)
    (command,) = node.commands
    assert isinstance(command, PublishEvent)
    text = GroupCipher.from_passphrase(DEMO_GROUP, "a secret").decrypt(command.ciphertext)
    assert text is not None and text.startswith("test 1 from")


async def test_a_passphrase_that_is_not_text_says_so():
    app, (node,), _ = make_app(passphrases={DEMO_GROUP: 1234})
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, BOB)
        await pilot.press("t")
        await pilot.pause()
        messages = [str(n.message) for n in app._notifications]
    assert node.commands == []
    assert any("not text" in m for m in messages), messages


@pytest.mark.parametrize("key", ["question_mark", "f1"])
async def test_help_lists_every_binding_with_its_key(key):
    app, _, _ = make_app(keymap={"send_event": "e"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)
        assert isinstance(app.screen, HelpScreen)
        rows = app.help_rows()
        ids = {row[2] for row in rows}
        assert {b.id for b in all_bindings()} <= ids
        assert ("e", "Send a test event", "send_event") in rows
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_quit():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


# -- keymap, command palette, ticks ----------------------------------------------------


async def test_keymap_remaps_a_binding():
    app, (node,), _ = make_app(keymap={"repair_all": "ctrl+r", "repair": "e"})
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, BOB)
        await pilot.press("R")  # the default key no longer does anything
        await pilot.press("ctrl+r", "e")
    assert node.commands == [Repair(), Repair("server-bob", DEMO_GROUP)]


async def test_every_binding_is_in_the_command_palette_and_runs_from_there():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        titles = {c.title for c in app.get_system_commands(app.main_screen)}
        on_main = [b for b in all_bindings() if b not in TRACE_BINDINGS]  # the trace screen's own
        assert {b.description for b in on_main if b.id != "switch_node"} <= titles
        await pilot.press("ctrl+p", *"Repair all")
        palette = app.screen
        options = palette.query_one(OptionList)
        await wait_until(pilot, lambda: options.option_count > 0)  # hits come from a worker
        await pilot.press("enter")
        await pilot.pause()
    assert Repair() in node.commands


async def test_detail_pane_explains_a_stalled_direction():
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, BOB)
        out = app.main_screen.query_one("#credit-out", CreditGauge)
        assert out.view.reason() == (
            "waiting for CREDIT from bob: 0 events left, 1,210 queued, last grant 3.2 s ago"
        )
        assert app.main_screen.query_one(DetailPane).border_title.startswith("server-bob")


async def test_table_rows_follow_the_snapshot():
    clock = FixedClock()
    node = ScriptedNode("server-alice", [StreamScript("server-bob")], clock=clock)
    app = TapsimApp([node], clock=clock, live=False)
    async with app.run_test(size=SIZE) as pilot:
        assert set(table(app)._rows) == {BOB}
        node.streams.append(StreamScript("server-carol"))
        app.refresh_from_snapshot()
        await pilot.pause()
        assert table(app).row_count == 2
        del node.streams[0]
        app.refresh_from_snapshot()
        await pilot.pause()
        assert set(table(app)._rows) == {"server-carol|g!demo|initiator"}
        assert table(app).row_count == 1


async def test_live_tick_polls_and_pauses_while_covered():
    clock = FixedClock()
    node = trouble_node(clock)
    calls = asyncio.Event()
    original = node.snapshot

    def counting_snapshot():
        calls.set()
        return original()

    node.snapshot = counting_snapshot
    app = TapsimApp([node], clock=clock, tick_hz=10)
    async with app.run_test(size=SIZE) as pilot:
        calls.clear()
        await asyncio.wait_for(calls.wait(), timeout=60)  # the timer ticks by itself
        timer = app.main_screen._timer
        assert timer is not None and timer._active.is_set()
        await pilot.press("question_mark")
        await pilot.pause()
        assert not timer._active.is_set()  # paused while the help screen covers it
        await pilot.press("escape")
        await pilot.pause()
        assert timer._active.is_set()


async def test_the_record_key_starts_and_stops_recording_and_the_header_says_rec():
    from node.view.commands import StartRecording, StopRecording

    app, nodes, _clock = make_app()
    async with app.run_test(size=SIZE) as pilot:
        header = app.main_screen.query_one(HeaderBar)
        assert not header.info.recording
        await pilot.press("ctrl+e")
        assert nodes[0].commands[-1] == StartRecording()
        app.refresh_from_snapshot()
        await pilot.pause()
        assert header.info.recording
        assert "● REC" in header.render().plain
        toasts = [str(n.message) for n in app._notifications]
        assert any("records the wire to\nrecordings/" in t for t in toasts)
        await pilot.press("ctrl+e")
        assert nodes[0].commands[-1] == StopRecording()
        app.refresh_from_snapshot()
        await pilot.pause()
        assert not header.info.recording and "● REC" not in header.render().plain


@pytest.mark.parametrize("width", [80, 100, 160])
async def test_header_shows_listen_url_and_pairing_code_whole(width):
    app, _, _ = make_app(demo=True)
    async with app.run_test(size=(width, 24)) as pilot:
        await pilot.pause()
        header = app.main_screen.query_one(HeaderBar)
        lines = header.render().plain.split("\n")
        snapshot = app.main_screen.snapshot
        assert all(len(line) <= header.content_size.width for line in lines)
        text = "\n".join(lines)
        assert snapshot.listen_urls[0] in text
        assert snapshot.pairing_code in text
        # The key id is the first to go when the width runs short, not before.
        assert (snapshot.key_id in text) == (width > 80)
