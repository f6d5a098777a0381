"""The control protocol and the view codec, sans-IO: bytes in, bytes out, no sockets."""

from __future__ import annotations

import re

import orjson
import pytest

from node.view.codec import CodecError, decode_command, decode_snapshot, encode_command, to_json
from node.view.commands import (
    AddPeer,
    ClearFaults,
    ForgetPeer,
    PublishEvent,
    RefreshDigest,
    Repair,
    SetFault,
)
from node.view.control import (
    MAX_LINE,
    ClientSession,
    Close,
    CommandResult,
    ControlError,
    NodeFacts,
    Run,
    Send,
    ServerSession,
    SnapshotReceived,
    Welcomed,
)
from node.view.snapshot import (
    AuthorRange,
    FrameLogEntry,
    GroupSnapshot,
    NodeSnapshot,
    PeerConfigSnapshot,
    RepairSnapshot,
    StreamSnapshot,
)

FACTS = NodeFacts("alice", 1234, ("http://127.0.0.1:8448",), 1000.0)


def _entry(i: int) -> FrameLogEntry:
    return FrameLogEntry(
        i, 1000.0 + i, "in", "bob", "g!x", "EVENT", i, 100, f"#{i}", False, "e", ""
    )


def _snapshot(frames: range = range(1, 4)) -> NodeSnapshot:
    return NodeSnapshot(
        taken_at=1010.5,
        server_id="alice",
        listen_urls=("http://127.0.0.1:8448",),
        key_id="ed25519:abc",
        pairing_code="ABCD-EFGH",
        started_at=1000.0,
        streams=(
            StreamSnapshot(
                key="bob|g!x|acceptor",
                peer_id="bob",
                peer_url="http://b:1",
                group_id="g!x",
                role="acceptor",
                state="up",
                rtt_ms=3.5,
                rtt_history=(1.0, 2.5),
                faults=frozenset({"cut", "ack_paused"}),
                last_error=None,
            ),
        ),
        groups=(GroupSnapshot("g!x", 3, "ff", (AuthorRange("bob", 3, 3, 3),), ("eve",)),),
        repairs=(RepairSnapshot("bob", "g!x", "equal", mismatching_ranges=(("a", "b"),)),),
        peers=(PeerConfigSnapshot("http://b:1", "bob", ("g!x",)),),
        frame_log=tuple(_entry(i) for i in frames),
        counters={"events_stored": 3},
        log_lines=("12:00:00 hello",),
    )


def _lines(actions) -> list[dict]:
    return [orjson.loads(a.data) for a in actions if isinstance(a, Send)]


def _welcomed() -> ServerSession:
    server = ServerSession(FACTS)
    server.receive(ClientSession().hello())
    return server


# ---------------------------------------------------------------- codec


def test_a_snapshot_survives_the_round_trip_exactly():
    snap = _snapshot()
    assert decode_snapshot(orjson.loads(to_json(snap))) == snap


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("server_id",), 7, "NodeSnapshot.server_id"),
        (("streams", 0, "unacked"), "3", "NodeSnapshot.streams[0].unacked"),
        (("streams", 0, "unacked"), True, "NodeSnapshot.streams[0].unacked"),
        (("streams", 0, "faults"), "cut", "NodeSnapshot.streams[0].faults"),
        (("repairs", 0, "mismatching_ranges"), [["a"]], "mismatching_ranges[0]"),
        (("counters",), {"x": 1.5}, "NodeSnapshot.counters.x"),
        (("frame_log",), {"0": 1}, "NodeSnapshot.frame_log"),
    ],
)
def test_a_mistyped_value_is_refused_and_named(path, value, where):
    obj = orjson.loads(to_json(_snapshot()))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(CodecError, match=re.escape(where)):
        decode_snapshot(obj)


def test_a_missing_required_field_is_refused_and_unknown_ones_are_ignored():
    obj = orjson.loads(to_json(_snapshot()))
    obj["from_the_future"] = {"x": 1}
    assert decode_snapshot(obj).server_id == "alice"
    del obj["server_id"]
    with pytest.raises(CodecError, match="missing server_id"):
        decode_snapshot(obj)


@pytest.mark.parametrize(
    "command",
    [
        PublishEvent("g!x", b"\x00\xffsealed"),
        Repair(),
        Repair("bob", "g!x"),
        AddPeer("http://10.0.0.5:8448", ("g!x", "g!y")),
        ForgetPeer("http://10.0.0.5:8448", drop_outbox_and_pin=True),
        SetFault("bob", "g!x", "cut", True),
        ClearFaults(),
        RefreshDigest("bob", "g!x"),
    ],
)
def test_commands_round_trip(command):
    assert decode_command(orjson.loads(orjson.dumps(encode_command(command)))) == command


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"kind": "rm -rf"}, "unknown kind"),
        ({"kind": "publish", "group_id": "g!x", "ciphertext": "not base64!"}, "base64"),
        ({"kind": "publish", "group_id": 5, "ciphertext": ""}, "group_id"),
        (
            {"kind": "set_fault", "peer_id": "b", "group_id": "g!x", "fault": "cut", "enabled": 1},
            "enabled",
        ),
        ({"kind": "add_peer", "url": "http://x"}, "missing groups"),
        ([], "an object"),
    ],
)
def test_bad_commands_are_refused_in_words(body, words):
    with pytest.raises(CodecError, match=words):
        decode_command(body)


# ---------------------------------------------------------------- the node's side


def test_hello_is_answered_with_the_nodes_facts():
    server = ServerSession(FACTS)
    (welcome,) = _lines(server.receive(b'{"type":"hello","versions":[7,1],"client":"t"}\n'))
    assert welcome == {
        "type": "welcome",
        "version": 1,
        "server_id": "alice",
        "pid": 1234,
        "listen": ["http://127.0.0.1:8448"],
        "started_at": 1000.0,
    }


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"type":"subscribe"}\n', "hello_first"),
        (b'{"type":"hello","versions":[99]}\n', "unsupported_version"),
        (b'{"type":"hello"}\n', "bad_message"),
        (b"GET / HTTP/1.1\n", "bad_json"),
    ],
)
def test_without_a_good_hello_the_connection_ends(data, code):
    server = ServerSession(FACTS)
    actions = server.receive(data + b'{"type":"snapshot"}\n')
    (error,) = _lines(actions)
    assert error["code"] == code and error["fatal"] is True
    assert isinstance(actions[-1], Close)
    assert not server.wants_snapshot(0.0)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{nope\n", "bad_json"),
        (b"[1,2]\n", "bad_message"),
        (b'{"type":"dance"}\n', "bad_message"),
        (b'{"type":"subscribe","rate_hz":"fast"}\n', "bad_message"),
        (b'{"type":"subscribe","mode":"sideways"}\n', "bad_message"),
        (b'{"type":"command","command":{"kind":"repair"}}\n', "bad_message"),
        (b"\xff\xfe\n", "bad_json"),
        (b"x" * (MAX_LINE + 10) + b"\n", "too_long"),
    ],
)
def test_bad_input_is_an_error_line_and_the_session_goes_on(data, code):
    server = _welcomed()
    (error,) = _lines(server.receive(data))
    assert error["code"] == code and error["fatal"] is False
    server.receive(b'{"type":"snapshot"}\n')
    assert server.wants_snapshot(0.0)


def test_an_overlong_line_arriving_in_pieces_is_reported_once():
    server = _welcomed()
    errors = []
    for _ in range(5):
        errors += _lines(server.receive(b"y" * (MAX_LINE // 2)))
    errors += _lines(server.receive(b'tail\n{"type":"snapshot"}\n'))
    assert [e["code"] for e in errors] == ["too_long"]
    assert server.wants_snapshot(0.0)


def test_a_command_becomes_a_run_and_a_bad_one_a_failed_result():
    server = _welcomed()
    client = ClientSession()
    cid, data = client.command(Repair("bob", "g!x"))
    (run,) = server.receive(data)
    assert run == Run(cid, Repair("bob", "g!x"))
    (bad,) = _lines(server.receive(b'{"type":"command","id":9,"command":{"kind":"zap"}}\n'))
    assert bad["type"] == "result" and bad["id"] == 9 and bad["ok"] is False
    assert "unknown kind" in bad["error"]


def test_subscription_rate_is_capped_at_10_hz():
    server = _welcomed()
    server.receive(b'{"type":"subscribe","rate_hz":1000}\n')
    assert server.rate_hz == 10.0
    assert server.wants_snapshot(0.0)
    server.snapshot_line(_snapshot(), 0.0)
    assert not server.wants_snapshot(0.05)
    assert server.wants_snapshot(0.1)


# ---------------------------------------------------------------- both sides


def test_delta_snapshots_carry_only_new_frames_and_the_client_keeps_the_tail():
    server, client = _welcomed(), ClientSession()
    client.receive(b"".join(a.data for a in ServerSession(FACTS).receive(client.hello())))
    server.receive(client.subscribe(10, "delta"))
    first = server.snapshot_line(_snapshot(range(1, 4)), 0.0)
    second = server.snapshot_line(_snapshot(range(2, 6)), 0.2)
    assert [e["index"] for e in orjson.loads(second)["snapshot"]["frame_log"]] == [4, 5]
    (a,) = client.receive(first)
    (b,) = client.receive(second)
    assert isinstance(a, SnapshotReceived) and isinstance(b, SnapshotReceived)
    assert [e.index for e in b.snapshot.frame_log] == [1, 2, 3, 4, 5]
    assert b.snapshot.streams == _snapshot().streams


def test_full_mode_and_one_shot_snapshots_carry_the_whole_tail():
    server = _welcomed()
    server.receive(b'{"type":"snapshot"}\n')
    line = server.snapshot_line(_snapshot(range(1, 4)), 0.0)
    assert orjson.loads(line)["mode"] == "full"
    assert not server.wants_snapshot(0.0)  # once, not a subscription
    server.receive(b'{"type":"subscribe","rate_hz":5,"mode":"full"}\n')
    for at in (1.0, 2.0):
        body = orjson.loads(server.snapshot_line(_snapshot(range(1, 4)), at))
        assert body["mode"] == "full" and len(body["snapshot"]["frame_log"]) == 3


def test_the_client_reads_welcome_results_and_errors():
    client = ClientSession()
    events = client.receive(
        b"".join(a.data for a in ServerSession(FACTS).receive(client.hello()))
        + b'{"type":"result","id":3,"ok":false,"error":"bad peer"}\n'
        + b'{"type":"result","id":4,"ok":true}\n'
    )
    assert isinstance(events[0], Welcomed) and events[0].node.server_id == "alice"
    assert events[1:] == [CommandResult(3, "bad peer"), CommandResult(4, None)]


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"snapshot","mode":"full","snapshot":{"server_id":1}}\n',
        b'{"type":"welcome","version":"1"}\n',
        b'{"type":"gossip"}\n',
    ],
)
def test_the_client_refuses_what_a_node_would_never_send(data):
    with pytest.raises(ControlError):
        ClientSession().receive(data)
