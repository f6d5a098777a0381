"""Starting real nodes on loopback for tests, and waiting on their state.

Every node binds port 0 and keeps its data under the test's tmp_path. Waiting is on
a condition with a deadline, checked as the loop turns; nothing sleeps a fixed time
and hopes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from node.runtime.config import NodeConfig, PeerConfig
from node.runtime.node import Node
from tests.support.stores import Stores

# How long a test waits for a condition before it fails. Generous on purpose: the suite
# runs on shared machines where another process may keep a core busy, and a wait that
# ends as soon as its condition holds costs nothing when the machine is fast.
WAIT = 60.0

# The stores of the test's backend (the ``node_stores`` fixture sets it); None: each
# node's SQLite file in its data dir.
STORES: Stores | None = None


def node_config(tmp: Path, name: str, *, groups=("g!test",), peers=(), **kw) -> NodeConfig:
    if STORES is not None and "store" not in kw:
        kw["store"] = STORES.for_data_dir(tmp / name)
    return NodeConfig(
        server_id=name,
        data_dir=tmp / name,
        listen_host="127.0.0.1",
        listen_port=0,
        groups=tuple(groups),
        peers=[PeerConfig(url, tuple(groups)) for url in peers],
        **kw,
    )


async def start_node(tmp: Path, name: str, *, record_frames: bool = False, **kw) -> Node:
    node = Node(node_config(tmp, name, **kw), record_frames=record_frames)
    await node.start()
    return node


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def summary(node: Node, group: str = "g!test") -> tuple[int, str]:
    """(count, fingerprint) as the store thread last published it (the loop's view)."""
    g = node.store_thread.summary.group(group)
    return g.count, g.fingerprint


def streams_up(node: Node, peer: str, group: str = "g!test") -> bool:
    return any(
        r.peer_id == peer and r.group_id == group and r.session.state == "up" and not r.finished
        for r in node.streams
    )
