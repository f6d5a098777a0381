"""The wire recorder on real nodes: every frame in and out, as on the wire, and snapshots."""

from __future__ import annotations

import base64
from pathlib import Path

from node.protocol.frames import parse_frame
from node.runtime.recorder import _Stream, _Writer
from node.view.commands import StartRecording, StopRecording
from node.view.recording import (
    BadLine,
    FrameRecord,
    Header,
    SnapshotRecord,
    encode_frame,
    read_records,
)
from tests.nodes import start_node, streams_up, summary, wait_until


def records(path: Path) -> list:
    with path.open("rb") as f:
        return list(read_records(f))


def recorded(directory: Path, node: str) -> list[Path]:
    return sorted(directory.glob(f"{node}-*.ndjson"))


def acked(node, peer: str) -> bool:
    """Every EVENT the node sent the peer acknowledged (and at least one sent)."""
    sessions = [r.session for r in node.streams if r.peer_id == peer]
    return sum(s.counters.events_out for s in sessions) > 0 and all(
        s.unacked_bytes == 0 for s in sessions
    )


async def test_a_node_records_every_frame_both_ways(tmp_path):
    rec = tmp_path / "rec"
    alice = await start_node(tmp_path, "alice", ping_interval=1.0, record_dir=rec)
    bob = await start_node(tmp_path, "bob", peers=[alice.url], ping_interval=1.0)
    try:
        assert alice.snapshot().recording.startswith(str(rec))
        await wait_until(lambda: streams_up(alice, "bob") and streams_up(bob, "alice"), what="up")
        for i in range(10):
            await alice.publish("g!test", b"from alice %d" % i)
            await bob.publish("g!test", b"from bob %d" % i)
        await wait_until(lambda: summary(alice)[0] == 20 and summary(bob)[0] == 20, what="20")
        await wait_until(lambda: acked(alice, "bob") and acked(bob, "alice"), what="ACKs")
    finally:
        await bob.stop()
        await alice.stop()
    [path] = recorded(rec, "alice")
    assert path.name.startswith("alice-") and path.name.endswith("-000.ndjson")
    got = records(path)
    assert not [r for r in got if isinstance(r, BadLine)]
    header = got[0]
    assert isinstance(header, Header) and header.node == "alice" and header.part == 0
    frames = [r for r in got if isinstance(r, FrameRecord)]
    parsed = [(r.direction, parse_frame(r.line)) for r in frames]  # each one a whole frame
    kinds = {(d, f.type) for d, f in parsed}
    assert {("in", "HELLO"), ("out", "HELLO"), ("in", "ACK"), ("out", "ACK")} <= kinds
    events_out = {f.payload.event_id for d, f in parsed if d == "out" and f.type == "EVENT"}
    events_in = {f.payload.event_id for d, f in parsed if d == "in" and f.type == "EVENT"}
    assert len(events_out) == 10 and len(events_in) == 10
    assert all(r.group == "g!test" and r.node == "alice" for r in frames)
    assert {r.peer for r in frames if r.line and b'"EVENT"' in r.line} == {"bob"}
    times = [r.t for r in got[1:]]
    assert times == sorted(times)
    snapshots = [r for r in got if isinstance(r, SnapshotRecord)]
    assert snapshots and snapshots[-1].snapshot.server_id == "alice"
    assert snapshots[-1].snapshot.frame_log == ()  # the frames are in the file themselves


async def test_the_record_command_starts_and_stops_on_a_live_stream(tmp_path):
    rec = tmp_path / "rec"
    alice = await start_node(tmp_path, "alice", ping_interval=1.0)
    bob = await start_node(tmp_path, "bob", peers=[alice.url], ping_interval=1.0)
    try:
        await wait_until(lambda: streams_up(alice, "bob") and streams_up(bob, "alice"), what="up")
        assert bob.snapshot().recording == ""
        assert bob.execute(StartRecording(str(rec))) is None
        assert bob.snapshot().recording
        assert bob.execute(StartRecording(str(rec))) is not None  # already recording
        await alice.publish("g!test", b"while recording")
        await wait_until(lambda: summary(bob)[0] == 1, what="the event at bob")
        await wait_until(lambda: acked(alice, "bob"), what="bob's ACK at alice")
        assert all(r.recording is not None for r in bob.streams)
        assert bob.execute(StopRecording()) is None
        assert bob.snapshot().recording == ""
        assert all(r.recording is None for r in bob.streams)  # untapped: no cost left
        assert bob.execute(StopRecording()) == "not recording"
        await alice.publish("g!test", b"after the recording")
        await wait_until(lambda: summary(bob)[0] == 2, what="the second event at bob")
    finally:
        await bob.stop()
        await alice.stop()
    [path] = recorded(rec, "bob")
    frames = [r for r in records(path) if isinstance(r, FrameRecord)]
    events = [parse_frame(r.line) for r in frames if b'"EVENT"' in r.line]
    assert [base64.b64decode(e.payload.ciphertext) for e in events] == [b"while recording"]
    assert any(r.direction == "out" and b'"ACK"' in r.line for r in frames)


async def test_files_rotate_at_the_size_cap_each_with_a_header(tmp_path):
    rec = tmp_path / "rec"
    alice = await start_node(
        tmp_path, "alice", ping_interval=1.0, record_dir=rec, record_max_bytes=8192
    )
    bob = await start_node(tmp_path, "bob", peers=[alice.url], ping_interval=1.0)
    try:
        await wait_until(lambda: streams_up(alice, "bob"), what="up")
        await alice.publish_many("g!test", [b"x" * 200 for _ in range(60)])
        await wait_until(lambda: summary(bob)[0] == 60, what="60 at bob")
    finally:
        await bob.stop()
        await alice.stop()
    paths = recorded(rec, "alice")
    assert len(paths) >= 3
    for part, path in enumerate(paths):
        assert path.name.endswith(f"-{part:03d}.ndjson")
        assert path.stat().st_size <= 8192 or len(path.read_bytes().splitlines()) <= 2
        got = records(path)
        assert isinstance(got[0], Header) and got[0].part == part
        assert not [r for r in got if isinstance(r, BadLine)]
    events = {
        parse_frame(r.line).payload.event_id
        for path in paths
        for r in records(path)
        if isinstance(r, FrameRecord) and r.direction == "out" and b'"EVENT"' in r.line
    }
    assert len(events) == 60  # nothing lost across the parts


def test_frames_split_across_reads_are_joined_and_a_mid_line_start_is_dropped():
    stream = _Stream(1, "g!test", "acceptor", synced=True)
    frames = _Writer._frames
    assert frames(stream, "in", b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert frames(stream, "in", b":2}\n") == [b'{"b":2}']
    assert frames(stream, "in", b'{"c":') == []
    assert frames(stream, "in", b"3}\n") == [b'{"c":3}']
    late = _Stream(2, "g!test", "acceptor", synced=False)  # tapped mid-stream
    assert frames(late, "in", b'"x":{"y":1}}\n{"d":4}\n') == [b'{"d":4}']
    assert frames(late, "in", b'{"e":5}\n') == [b'{"e":5}']
    whole = _Stream(3, "g!test", "acceptor", synced=False)
    assert frames(whole, "out", b'{"f":6}\n') == [b'{"f":6}']


def test_the_writers_own_encoding_is_the_formats(tmp_path):
    writer = _Writer(tmp_path, "alice", 1 << 20, lambda: 5.0, lambda: 1e9)
    try:
        stream = _Stream(7, "g!test", "initiator", synced=True)
        data = b'{"type":"PING","x":"\\u00e9 \xc3\xa9 \\"q\\""}\n{"bad":"\xff"}\n'
        for peer in (None, "bob"):
            writer._item((1234.5, "out", stream, peer, data))
    finally:
        writer.close()
    lines = writer.path.read_bytes().splitlines(keepends=True)[1:]
    expected = [
        encode_frame(FrameRecord(1234.5, "out", "alice", peer, "g!test", "initiator", 7, line))
        for peer in (None, "bob")
        for line in (b'{"type":"PING","x":"\\u00e9 \xc3\xa9 \\"q\\""}',)
    ]
    assert [lines[0], lines[2]] == expected
    # A frame that is not UTF-8 is still written (a reader may report it as a bad line).
    assert lines[1].startswith(b'{"k":"frame","t":1234.5,"dir":"out","node":"alice"')


def test_the_record_commands_cross_the_control_socket():
    from node.view.codec import decode_command, encode_command

    for command in (StartRecording(), StartRecording("/tmp/rec"), StopRecording()):
        assert decode_command(encode_command(command)) == command
    assert encode_command(StopRecording()) == {"kind": "stop_recording"}


def test_demo_record_gives_every_node_the_dir_and_the_cap(tmp_path):
    from tapsim_tui.cli import build_parser
    from tapsim_tui.launch import demo_configs

    args = build_parser().parse_args(["demo", "--record", "rec", "--record-max-mb", "2"])
    assert (args.record, args.record_max_mb) == ("rec", 2.0)
    configs = demo_configs(tmp_path, 3, tmp_path / "rec", 2 * 1024 * 1024)
    assert [(c.server_id, c.record_dir, c.record_max_bytes) for c in configs] == [
        (name, tmp_path / "rec", 2 * 1024 * 1024) for name in ("alice", "bob", "carol")
    ]
    assert all(c.record_dir is None for c in demo_configs(tmp_path, 2))
