"""`tapsim node`: one node, no dashboard, one line per notable event.

Kept free of Textual so the headless node starts fast and runs anywhere. Errors the
user can fix (busy port, unreadable data dir, bad certificate) end the process with a
one-line message and a non-zero status, never a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from node.config import NodeConfig
from node.identity import IdentityError
from node.service import Node
from node.transport.serving import PortInUse


def _say(line: str) -> None:
    print(line, flush=True)


async def serve(config: NodeConfig) -> None:
    node = Node(config, on_log=_say)
    await node.start()
    _say(f"listening on {node.urls[0]}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        _say("stopping")
        await node.stop()


def run_headless(config: NodeConfig) -> int:
    try:
        asyncio.run(serve(config))
    except PortInUse as exc:
        print(f"tapsim: error: {exc}", file=sys.stderr)
        return 1
    except IdentityError as exc:
        print(f"tapsim: error: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"tapsim: error: cannot use {exc.filename}: permission denied", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"tapsim: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1
    return 0
