"""The dashboard over REAL nodes (in child processes, as tapsim runs them, and in threads).

Scripted snapshots test every screen; this one proves the seam itself: snapshots from
a live node reach the widgets, and a key press reaches the node as ciphertext only.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from support.node_thread import NodeThread

from node.runtime.config import NodeConfig, PeerConfig
from tapsim_tui.app import TapsimApp
from tapsim_tui.e2e import GroupCipher
from tapsim_tui.nodeprocess import NodeProcess
from tapsim_tui.settings import NodeStartError
from widgets.streams_table import StreamsTable

GROUP = "g!live"
PASSPHRASE = "live test passphrase"


def _config(tmp_path, name: str, peers=()) -> NodeConfig:
    return NodeConfig(
        server_id=name,
        data_dir=tmp_path / name,
        listen_port=0,
        groups=(GROUP,),
        peers=[PeerConfig(url, (GROUP,)) for url in peers],
        ping_interval=1.0,
    )


async def _until(pilot, condition, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


@pytest.mark.parametrize("runtime", [NodeProcess, NodeThread], ids=["process", "thread"])
async def test_dashboard_over_real_nodes(tmp_path, runtime):
    alice = runtime(_config(tmp_path, "alice"))
    alice.start()
    bob = runtime(_config(tmp_path, "bob", peers=[alice.url]))
    bob.start()
    try:
        app = TapsimApp([alice, bob], passphrases={GROUP: PASSPHRASE})
        async with app.run_test(size=(140, 45)) as pilot:
            table = app.main_screen.query_one(StreamsTable)
            # alice's table shows bob's stream once the handshake is done.
            await _until(
                pilot,
                lambda: any(
                    s.peer_id == "bob" and s.state == "up" for s in alice.snapshot().streams
                ),
            )
            await _until(pilot, lambda: table.row_count >= 1)
            await pilot.press("t")  # a test event into the selected stream's group
            await _until(pilot, lambda: sum(g.count for g in bob.snapshot().groups) == 1)
        snap = bob.snapshot()
        assert [g.group_id for g in snap.groups if g.count] == [GROUP]
    finally:
        bob.stop()
        alice.stop()
    # What the node stored is ciphertext that only the passphrase's key opens.
    from node.storage.backends import open_store

    store = open_store(str(tmp_path / "bob" / "events.sqlite3"))
    try:
        (event_id,) = store.ids_in_range(GROUP)
        held = store.get_event(GROUP, event_id)
    finally:
        store.close()
    assert PASSPHRASE.encode() not in held.ciphertext
    text = GroupCipher.from_passphrase(GROUP, PASSPHRASE).decrypt(held.ciphertext)
    assert text is not None and text.startswith("test 1 from")


@pytest.mark.parametrize("runtime", [NodeProcess, NodeThread], ids=["process", "thread"])
def test_a_node_that_cannot_start_says_why_in_one_line(tmp_path, runtime):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = _config(tmp_path, "alice")
        config.listen_port = busy.getsockname()[1]
        node = runtime(config)
        with pytest.raises(NodeStartError) as caught:
            node.start()
        node.stop()
    message = str(caught.value)
    assert str(config.listen_port) in message and "\n" not in message
