"""A real node on its own asyncio loop in a background thread, as a dashboard NodeHandle.

The product runs each node in a child process; this in-thread runtime is kept for tests
and for ``bench/dashboard_overhead.py``, which compares the two.

The node's work must never stutter the interface, nor the interface slow the node, so
they share nothing but two things that cross by value: snapshots (frozen dataclasses
published by the node's loop every 100 ms while somebody is looking) and commands
(handed over with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from node.runtime.config import NodeConfig
from node.runtime.node import Node
from node.view.commands import Command
from node.view.snapshot import NodeSnapshot
from node.view.trace import Trace
from tapsim_tui.node_start import IDLE_AFTER, PUBLISH_EVERY, starting_snapshot
from tapsim_tui.settings import NodeStartError, describe_start_error, start_timed_out


class NodeThread:
    def __init__(self, config: NodeConfig, *, record_frames: bool = True) -> None:
        self.config = config
        self._record_frames = record_frames
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._node: Node | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._latest: NodeSnapshot | None = None
        self._last_read = 0.0
        self._wanted = threading.Event()

    # ------------------------------------------------------------------ NodeHandle

    @property
    def server_id(self) -> str:
        return self.config.server_id

    @property
    def url(self) -> str:
        return self._node.url if self._node is not None else ""

    def snapshot(self) -> NodeSnapshot:
        self._last_read = time.monotonic()
        self._wanted.set()
        return self._latest or starting_snapshot(self.config.server_id)

    def submit(self, command: Command) -> None:
        loop, node = self._loop, self._node
        if loop is None or node is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(node.execute, command)

    def trace(self, event_id: str, timeout: float = 3.0) -> Trace | None:
        loop, node = self._loop, self._node
        if loop is None or node is None or loop.is_closed():
            return None

        async def ask() -> Trace:
            return node.trace(event_id)

        try:
            return asyncio.run_coroutine_threadsafe(ask(), loop).result(timeout)
        except (RuntimeError, TimeoutError):
            return None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> None:
        """Start the node; raises NodeStartError with a plain message if it cannot."""
        self._thread = threading.Thread(
            target=self._main, name=f"node {self.config.server_id}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise start_timed_out(self.config.server_id, timeout)
        if self._startup_error is not None:
            raise NodeStartError(describe_start_error(self._startup_error)) from None

    def stop(self, timeout: float = 60.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        node = Node(self.config, record_frames=self._record_frames)
        try:
            await node.start()
        except BaseException as exc:  # reported to the starting thread, in words
            self._startup_error = exc
            self._ready.set()
            with contextlib.suppress(Exception):
                await node.stop()
            return
        self._node = node
        self._latest = node.snapshot()
        self._ready.set()
        publisher = asyncio.create_task(self._publish(node))
        try:
            await self._stop.wait()
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            await node.stop()

    async def _publish(self, node: Node) -> None:
        """Build a snapshot every 100 ms while the UI reads them; rest when it does not."""
        wanted = self._wanted
        while True:
            if time.monotonic() - self._last_read > IDLE_AFTER:
                wanted.clear()
                await asyncio.to_thread(wanted.wait)
            try:
                self._latest = node.snapshot()
            except Exception:  # one bad picture must not end the pictures
                logging.getLogger("tapsim").exception("building a snapshot failed")
            await asyncio.sleep(PUBLISH_EVERY)
