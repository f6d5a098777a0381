"""Tracing one event: the trace book's fold (pure), the control query, `tapsim trace`
over recordings, and an alice → bob → carol chain of real nodes."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from nodes import start_node, streams_up, summary, wait_until

from node.protocol.frames import Ack, Event, Frame, encode_frame, parse_frame
from node.protocol.ids import new_ulid
from node.view.codec import decode, to_json
from node.view.control import ClientSession, Lookup, ServerSession, TraceAnswer
from node.view.recording import IN, OUT, FrameRecord, Header, encode_header
from node.view.recording import encode_frame as encode_record
from node.view.trace import (
    ACKED,
    AUTHORED,
    PEER_ACKED,
    RECEIVED,
    SENT,
    STORED,
    Trace,
    TraceBook,
    TraceLog,
    merge,
    trace_lines,
    trace_recordings,
    ulid_time,
)
from tapsim_tui.cli import main

GROUP = "g!test"
VECTOR = Path(__file__).parent / "vectors" / "event.ndjson"


def _event(author: str = "alice", seq: int = 1, at: float = 1_700_000_000.0) -> Event:
    """A well-formed EVENT payload (the fold never checks signatures)."""
    base = parse_frame(VECTOR.read_bytes().splitlines()[0]).payload
    return Event(
        event_id=new_ulid(at),
        author=author,
        seq=seq,
        ciphertext=base.ciphertext,
        content_hash=base.content_hash,
        key_id=base.key_id,
        signature=base.signature,
    )


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 0.001) -> float:
        self.now += seconds
        return self.now


# -- the fold, pure ------------------------------------------------------------------


def test_the_book_follows_one_event_through_a_relay():
    clock = Clock()
    event = _event("alice")
    alice, bob, carol = TraceBook("alice"), TraceBook("bob"), TraceBook("carol")
    a_to_b = alice.observer(lambda: "bob", GROUP, "acceptor", clock)
    b_from_a = bob.observer(lambda: "alice", GROUP, "initiator", clock)
    b_to_c = bob.observer(lambda: "carol", GROUP, "acceptor", clock)
    c_from_b = carol.observer(lambda: "bob", GROUP, "initiator", clock)

    alice.stored(GROUP, [event], "alice", clock.tick())  # authored
    a_to_b("out", "EVENT", 7, 400, event)
    clock.tick()
    b_from_a("in", "EVENT", 7, 400, event)
    bob.stored(GROUP, [event], "alice", clock.tick())
    b_from_a("out", "ACK", 3, 90, Ack(through=7, event_ids=[event.event_id]))
    clock.tick()
    a_to_b("in", "ACK", 3, 90, Ack(through=7, event_ids=[]))
    b_to_c("out", "EVENT", 2, 400, event)
    clock.tick()
    c_from_b("in", "EVENT", 2, 400, event)
    carol.stored(GROUP, [event], "bob", clock.tick())
    c_from_b("out", "ACK", 5, 90, Ack(through=2, event_ids=[event.event_id]))
    clock.tick()
    b_to_c("in", "ACK", 5, 90, Ack(through=1, event_ids=[]))  # not yet: through 1 < 2
    b_to_c("in", "ACK", 6, 90, Ack(through=2, event_ids=[]))

    trace = merge(book.trace(event.event_id) for book in (alice, bob, carol))
    assert trace.author == "alice" and trace.author_seq == 1 and trace.group_id == GROUP
    assert trace.nodes == ("alice", "bob", "carol")
    assert [(s.node, s.kind, s.peer, s.sequence) for s in trace.steps] == [
        ("alice", AUTHORED, None, None),
        ("alice", SENT, "bob", 7),
        ("bob", RECEIVED, "alice", 7),
        ("bob", STORED, "alice", None),
        ("bob", ACKED, "alice", 7),
        ("bob", SENT, "carol", 2),
        ("alice", PEER_ACKED, "bob", 7),
        ("carol", RECEIVED, "bob", 2),
        ("carol", STORED, "bob", None),
        ("carol", ACKED, "bob", 2),
        ("bob", PEER_ACKED, "carol", 2),
    ]
    assert trace.route_text() == "alice → bob → carol"
    first, second = trace.hops()
    assert (first.sender, first.receiver, second.sender, second.receiver) == (
        "alice",
        "bob",
        "bob",
        "carol",
    )
    for hop in (first, second):
        times = [hop.sent_at, hop.received_at, hop.stored_at, hop.acked_at, hop.ack_read_at]
        assert None not in times and times == sorted(times)
    assert (second.sent_sequence, second.received_sequence) == (2, 2)
    words = "\n".join(trace_lines(trace))
    assert "relayed → carol #2" in words and "sent → bob #7" in words


def test_a_trace_of_an_event_never_seen_says_so():
    trace = TraceBook("alice").trace(new_ulid(1_700_000_000.0))
    assert not trace.found and trace.nodes == ("alice",)
    assert any("not seen by alice" in line for line in trace_lines(trace))
    nobody = Trace(trace.event_id)  # e.g. a dashboard whose nodes cannot be asked
    assert any("no node answered" in line for line in trace_lines(nobody))


def test_the_book_keeps_only_the_newest_events():
    clock = Clock()
    book = TraceBook("bob", size=100)
    observe = book.observer(lambda: "alice", GROUP, "initiator", clock)
    events = [_event(seq=i + 1, at=clock.now + i) for i in range(300)]
    for i, event in enumerate(events):
        observe("in", "EVENT", i + 1, 400, event)
    assert len(book) <= 100
    assert book.trace(events[-1].event_id).found
    assert not book.trace(events[0].event_id).found
    assert book.recent(3) == tuple(e.event_id for e in reversed(events[-3:]))


def test_a_live_log_keeps_only_its_newest_frames_and_folds_on_demand():
    clock = Clock()
    log = TraceLog("bob", frames=100)
    observe = log.observer(lambda: "alice", GROUP, "initiator", clock)
    events = [_event(seq=i + 1, at=clock.now + i) for i in range(300)]
    for i, event in enumerate(events):
        clock.tick()
        observe("in", "EVENT", 2 * i + 1, 400, event)
        observe("out", "ACK", i + 1, 90, Ack(2 * i + 1, [event.event_id]))
        observe("in", "PING", 2 * i + 2, 60, None)  # not kept
    log.stored(GROUP, events[-1:], "alice", clock.tick())
    assert not log.trace(events[0].event_id).found
    last = log.trace(events[-1].event_id)
    assert [(s.kind, s.peer, s.sequence) for s in last.steps] == [
        (RECEIVED, "alice", 599),
        (ACKED, "alice", 599),
        (STORED, "alice", None),
    ]
    assert last.author == "alice" and last.author_seq == 300
    assert log.recent(2) == (events[-1].event_id, events[-2].event_id)


def test_authored_time_is_the_event_ids_time():
    assert ulid_time(new_ulid(1_700_000_000.123)) == pytest.approx(1_700_000_000.123)
    assert ulid_time("not a ulid") is None


def test_a_duplicate_hop_is_marked():
    clock = Clock()
    event = _event("carol")
    bob = TraceBook("bob")
    from_carol = bob.observer(lambda: "carol", GROUP, "acceptor", clock)
    from_alice = bob.observer(lambda: "alice", GROUP, "initiator", clock)
    from_carol("in", "EVENT", 1, 400, event)
    bob.stored(GROUP, [event], "carol", clock.tick())
    from_alice("in", "EVENT", 4, 400, event)  # relayed by alice too: already held
    trace = bob.trace(event.event_id)
    by_sender = {h.sender: h for h in trace.hops()}
    assert not trace.duplicate(by_sender["carol"])
    assert trace.duplicate(by_sender["alice"])


# -- the control socket's trace query ---------------------------------------------------


def test_a_trace_crosses_the_control_socket():
    from node.view.control import NodeFacts

    client, server = ClientSession(), ServerSession(NodeFacts("bob", 1, (), 0.0))
    server.receive(client.hello())
    cid, request = client.trace("01KAZ2J2R80000000000000002")
    (lookup,) = server.receive(request)
    assert lookup == Lookup(cid, "01KAZ2J2R80000000000000002")
    clock = Clock()
    book = TraceBook("bob")
    event = _event()
    book.observer(lambda: "alice", GROUP, "initiator", clock)("in", "EVENT", 1, 400, event)
    trace = book.trace(event.event_id)
    client.receive(server_welcome(server))
    (answer,) = client.receive(server.trace_line(cid, trace))
    assert answer == TraceAnswer(cid, trace)
    assert decode(Trace, orjson.loads(to_json(trace))) == trace
    (error,) = server.receive(b'{"type": "trace", "id": 2, "event_id": "nope"}\n')
    assert b"ULID" in error.data


def server_welcome(server: ServerSession) -> bytes:
    from node.view.control import line

    f = server.facts
    return line(
        {
            "type": "welcome",
            "version": 1,
            "server_id": f.server_id,
            "pid": f.pid,
            "listen": list(f.listen),
            "started_at": f.started_at,
        }
    )


# -- recordings and `tapsim trace` --------------------------------------------------------


def _line(ftype: str, origin: str, sequence: int, payload, at: float) -> bytes:
    frame = Frame(ftype, new_ulid(at), origin, sequence, payload, GROUP)
    return encode_frame(frame).rstrip(b"\n")


def _write_recordings(tmp_path: Path, event: Event, mono0: float = 500.0) -> Path:
    """Three nodes' recordings of one relay: alice → bob → carol, with ACKs."""
    wall0 = 1_700_000_000.0
    folder = tmp_path / "rec"
    folder.mkdir()
    ticks = itertools.count(1)

    def t() -> float:
        return mono0 + next(ticks) * 0.002

    records: dict[str, list[FrameRecord]] = {"alice": [], "bob": [], "carol": []}

    def rec(node, direction, peer, role, stream, ftype, origin, seq, payload):
        at = t()
        line = _line(ftype, origin, seq, payload, wall0 + at - mono0)
        records[node].append(FrameRecord(at, direction, node, peer, GROUP, role, stream, line))

    rec("alice", OUT, "bob", "acceptor", 1, "EVENT", "alice", 7, event)
    rec("bob", IN, "alice", "initiator", 1, "EVENT", "alice", 7, event)
    rec("bob", OUT, "alice", "initiator", 1, "ACK", "bob", 3, Ack(7, [event.event_id]))
    rec("alice", IN, "bob", "acceptor", 1, "ACK", "bob", 3, Ack(7, [event.event_id]))
    rec("bob", OUT, "carol", "acceptor", 2, "EVENT", "bob", 2, event)
    rec("carol", IN, "bob", "initiator", 1, "EVENT", "bob", 2, event)
    rec("carol", OUT, "bob", "initiator", 1, "ACK", "carol", 4, Ack(2, [event.event_id]))
    rec("bob", IN, "carol", "acceptor", 2, "ACK", "carol", 4, Ack(2, [event.event_id]))
    # Each header read its two clocks a little apart (a busy process), so their offsets
    # differ by more than a hop takes: the fold must not order steps by them.
    late = {"alice": 0.0, "bob": 0.005, "carol": 0.003}
    for node, frames in records.items():
        header = Header(node, node, 0, wall0 - late[node], mono0)
        with (folder / f"{node}.ndjson").open("wb") as f:
            f.write(encode_header(header))
            for record in frames:
                f.write(encode_record(record))
            f.write(b"{not json\n")  # a torn last line is skipped, never fatal
    return folder


def test_a_trace_folds_recordings_of_every_node(tmp_path):
    event = _event("alice", at=1_700_000_000.0)
    folder = _write_recordings(tmp_path, event)
    from node.view.recording import read_records

    files = [list(read_records(p.read_bytes().splitlines())) for p in sorted(folder.iterdir())]
    trace, unread = trace_recordings(event.event_id, files)
    assert unread == 3
    assert trace.author == "alice" and trace.nodes == ("alice", "bob", "carol")
    assert trace.route_text() == "alice → bob → carol"
    hops = trace.hops()
    assert [(h.sender, h.receiver) for h in hops] == [("alice", "bob"), ("bob", "carol")]
    for hop in hops:
        assert None not in (hop.sent_at, hop.received_at, hop.acked_at, hop.ack_read_at)
        assert hop.sent_at < hop.received_at < hop.acked_at < hop.ack_read_at
        assert 1_700_000_000.0 < hop.sent_at < 1_700_000_001.0  # wall time, from the header


def test_tapsim_trace_prints_the_hops_from_recording_files(tmp_path, capsys):
    event = _event("alice", at=1_700_000_000.0)
    folder = _write_recordings(tmp_path, event)
    assert main(["trace", event.event_id, str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "route alice → bob → carol" in out
    assert "relayed → carol #2" in out and "ACK read from carol (through #2)" in out
    assert "3 lines could not be read" in err
    assert main(["trace", event.event_id.lower(), *map(str, folder.iterdir()), "--json"]) == 0
    trace = decode(Trace, orjson.loads(capsys.readouterr().out))
    assert [(h.sender, h.receiver) for h in trace.hops()] == [("alice", "bob"), ("bob", "carol")]
    assert main(["trace", new_ulid(1_600_000_000.0), str(folder)]) == 1
    assert "not seen by" in capsys.readouterr().out
    assert main(["trace", "not-an-id", str(folder)]) == 2
    assert "is not an event id" in capsys.readouterr().err
    assert main(["trace", event.event_id, str(tmp_path / "missing")]) == 2
    assert "no recording at" in capsys.readouterr().err


# -- real nodes --------------------------------------------------------------------------


async def test_a_trace_follows_an_event_over_a_chain_of_real_nodes(tmp_path):
    """alice ← bob ← carol (each dials the one before): alice's event reaches carol only
    through bob, and the three views show both hops with their times. The frames the
    nodes saw, written as recordings, give `tapsim trace` the same hops."""
    alice = await start_node(tmp_path, "alice", record_frames=True)
    bob = await start_node(tmp_path, "bob", record_frames=True, peers=[alice.url])
    carol = await start_node(tmp_path, "carol", record_frames=True, peers=[bob.url])
    try:
        await wait_until(lambda: streams_up(bob, "alice") and streams_up(carol, "bob"))
        (event_id,) = await alice.publish_many(GROUP, [b"traced"])
        await wait_until(lambda: summary(carol)[0] == 1, what="carol stores the event")
        await wait_until(
            lambda: any(s.kind == PEER_ACKED for s in bob.trace(event_id).steps),
            what="bob reads carol's ACK",
        )
        trace = merge(node.trace(event_id) for node in (alice, bob, carol))
        recorded = _recorded(tmp_path, (alice, bob, carol))
    finally:
        for node in (carol, bob, alice):
            await node.stop()
    assert trace.author == "alice" and trace.route_text() == "alice → bob → carol"
    hops = {(h.sender, h.receiver): h for h in trace.hops()}
    assert set(hops) == {("alice", "bob"), ("bob", "carol")}
    authored = trace.authored_at
    for hop in hops.values():
        times = [hop.sent_at, hop.received_at, hop.stored_at, hop.acked_at, hop.ack_read_at]
        assert None not in times, hop
        assert authored - 0.001 <= times[0] and times == sorted(times), hop
    assert hops["alice", "bob"].stored_at <= hops["bob", "carol"].sent_at
    assert main(["trace", event_id, str(recorded)]) == 0


def _recorded(tmp_path: Path, nodes) -> Path:
    """The EVENT and ACK frames in the nodes' frame-log tails, as recording files."""
    folder = tmp_path / "recorded"
    folder.mkdir()
    for node in nodes:
        streams: dict[str, int] = {}
        with (folder / f"{node.server_id}.ndjson").open("wb") as f:
            f.write(encode_header(Header(node.server_id, node.server_id, 0, 0.0, 0.0)))
            for (
                _i,
                at,
                direction,
                peer,
                group,
                ftype,
                seq,
                _size,
                payload,
            ) in node.frame_log._records:
                if ftype not in ("EVENT", "ACK") or peer.endswith("?"):
                    continue
                origin = node.server_id if direction == OUT else peer
                stream = streams.setdefault(peer, len(streams) + 1)
                line = _line(ftype, origin, seq, payload, at)
                f.write(
                    encode_record(
                        FrameRecord(at, direction, node.server_id, peer, group, "-", stream, line)
                    )
                )
    return folder


async def test_enter_on_an_event_in_the_frame_log_shows_its_hops_over_real_nodes(tmp_path):
    """The dashboard over three real nodes in a chain: Enter on alice's EVENT opens the
    trace screen, which asks every node and shows both hops with their times."""
    from support.node_thread import NodeThread

    from node.view.commands import PublishEvent
    from tapsim_tui.app import TapsimApp
    from tapsim_tui.screens.trace import TraceScreen
    from widgets.frame_log import FrameLog

    def config(name: str, peers=()):
        from nodes import node_config

        return node_config(tmp_path, name, peers=peers, ping_interval=5.0)

    alice = NodeThread(config("alice"))
    alice.start()
    bob = NodeThread(config("bob", [alice.url]))
    bob.start()
    carol = NodeThread(config("carol", [bob.url]))
    carol.start()
    try:
        app = TapsimApp([alice, bob, carol])
        async with app.run_test(size=(100, 40)) as pilot:

            async def until(condition) -> None:
                await wait_until(condition)  # checks as the app's loop turns

            await until(
                lambda: (
                    any(s.state == "up" for s in carol.snapshot().streams)
                    and any(s.peer_id == "carol" for s in bob.snapshot().streams)
                )
            )
            alice.submit(PublishEvent(GROUP, b"sealed"))
            log = app.main_screen.query_one(FrameLog)
            await until(lambda: log.selected_event() is not None)
            await until(lambda: sum(g.count for g in carol.snapshot().groups) == 1)
            log.focus()
            await pilot.press("up", "enter")
            await until(lambda: isinstance(app.screen, TraceScreen))
            screen = app.screen
            await until(
                lambda: (
                    screen.trace is not None
                    and {(h.sender, h.receiver) for h in screen.trace.hops()}
                    == {("alice", "bob"), ("bob", "carol")}
                    and all(h.ack_read_at for h in screen.trace.hops())
                )
            )
            trace = screen.trace
            assert trace.author == "alice" and trace.nodes == ("alice", "bob", "carol")
            for hop in trace.hops():
                times = [hop.sent_at, hop.received_at, hop.stored_at, hop.acked_at]
                assert None not in times and times == sorted(times), hop
            await pilot.pause()
            shown = str(screen.query_one("#trace-text").render())
            assert "route alice → bob → carol" in shown
            assert "relayed → carol" in shown
            await pilot.press("escape")
            assert not isinstance(app.screen, TraceScreen)
    finally:
        for node in (carol, bob, alice):
            node.stop()


async def test_an_attached_dashboard_asks_a_node_for_a_trace_over_its_control_socket(tmp_path):
    import asyncio

    from tapsim_tui.attach import AttachedNode

    alice = await start_node(tmp_path, "alice", record_frames=True)
    bob = await start_node(tmp_path, "bob", record_frames=True, peers=[alice.url])
    handle = AttachedNode.for_data_dir(tmp_path / "bob")
    handle.start()
    try:
        await wait_until(lambda: streams_up(bob, "alice") and handle.status is None)
        (event_id,) = await alice.publish_many(GROUP, [b"over the socket"])
        await wait_until(lambda: summary(bob)[0] == 1)
        await wait_until(lambda: any(s.kind == ACKED for s in bob.trace(event_id).steps))
        trace = await asyncio.to_thread(handle.trace, event_id, 10.0)
        unseen = await asyncio.to_thread(handle.trace, new_ulid(1_600_000_000.0), 10.0)
    finally:
        handle.close()
        await bob.stop()
        await alice.stop()
    assert trace == bob.trace(event_id) and trace.nodes == ("bob",)
    assert [s.kind for s in trace.steps][:3] == [RECEIVED, STORED, ACKED]
    assert unseen is not None and not unseen.found


async def test_a_pasted_event_id_in_the_palette_opens_its_trace():
    from support.scripted import FixedClock, demo_nodes
    from textual.widgets import OptionList

    from tapsim_tui.app import TapsimApp
    from tapsim_tui.screens.trace import TraceScreen

    event_id = new_ulid(1_700_000_000.0)
    app = TapsimApp(demo_nodes(FixedClock()), live=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*event_id.lower())  # pasted in any case
        options = app.screen.query_one(OptionList)
        await wait_until(lambda: options.option_count > 0)
        await pilot.press("enter")
        await wait_until(lambda: isinstance(app.screen, TraceScreen))
        screen = app.screen
        await wait_until(lambda: screen.trace is not None)
        assert screen.event_id == event_id
        assert screen.trace.nodes == ("server-alice", "server-bob", "server-carol")
        assert screen.trace.route_text() == "server-alice → server-bob → server-carol"
