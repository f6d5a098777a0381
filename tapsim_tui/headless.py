"""`tapsim node`: one node, no dashboard, one line per notable event.

Kept free of Textual so the headless node starts fast and runs anywhere. Errors the
user can fix (busy port, unreadable data dir, bad certificate) end the process with a
one-line message and a non-zero status, never a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from node.runtime.config import NodeConfig
from node.runtime.node import Node
from tapsim_tui.settings.start_errors import describe_start_error


def _say(line: str) -> None:
    print(line, flush=True)


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Python 3.11's ``start_server`` callback reports a connection task that was
    cancelled (hypercorn cancels lingering connections at shutdown) as an "Exception in
    callback" traceback; 3.12 checks ``task.cancelled()`` first. A cancellation is not
    an error, so it is not printed; everything else goes to the default handler."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def serve(config: NodeConfig) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_cancellation)
    node = Node(config, on_log=_say)
    await node.start()
    _say(f"listening on {node.urls[0]}")
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        _say("stopping")
        await node.stop()


def run_headless(config: NodeConfig) -> int:
    """Run until a signal: 0 after a clean stop, 1 (and one line) if the node cannot start."""
    try:
        asyncio.run(serve(config))
    except Exception as exc:  # the node's start errors, in words (settings.start_errors)
        print(f"tapsim: error: {describe_start_error(exc, config)}", file=sys.stderr)
        return 1
    return 0
