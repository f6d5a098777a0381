"""A headless node that authors a burst of events of its own, for the SIGKILL tests.

``python -m tests.burst_node --count N --batch B --pause S -- <tapsim node options>``

It is `tapsim node` (the same :class:`node.service.Node`, configured from the same CLI
options) plus a publisher standing in for the dashboard's client layer: once the first
peer's server id is known (so its outbox exists), it publishes ``N`` events ``B`` at a
time, each batch one transaction, printing ``published K`` after each commit, then
``burst done``, then runs until SIGTERM or SIGKILL like the headless node. With
``--all-groups`` the batches go in turn to every group the node (worker) owns.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from node.runtime.node import Node
from tapsim_tui.cli import build_parser, node_config_from_args


def _say(line: str) -> None:
    print(line, flush=True)


async def main(
    count: int, batch: int, pause: float, node_args: list[str], all_groups: bool = False
) -> None:
    config = node_config_from_args(build_parser().parse_args(["node", *node_args]))
    node = Node(config, on_log=_say)
    await node.start()
    _say(f"listening on {node.urls[0]}")
    # One group, or (--all-groups) every group this worker owns, a batch each in turn.
    groups = node.ownership.mine(config.groups) if all_groups else [config.groups[0]]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while (
        config.peers
        and count
        and not all(node.directory.relay_peers(g) for g in groups)
        and not stop.is_set()
    ):
        await asyncio.sleep(0.01)  # the outbox needs the peer's server id (GET /caps)
    done = 0
    while done < count and groups and not stop.is_set():
        n = min(batch, count - done)
        group = groups[(done // batch) % len(groups)]
        await node.publish_many(group, [b"burst-%06d" % (done + k) for k in range(n)])
        done += n
        _say(f"published {done}")
        await asyncio.sleep(pause)
    _say("burst done")
    try:
        await stop.wait()
    finally:
        await node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--all-groups", action="store_true")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    asyncio.run(main(args.count, args.batch, args.pause, rest, args.all_groups))
    sys.exit(0)
