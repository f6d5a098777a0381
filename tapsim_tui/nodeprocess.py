"""A real node in a child process, looked at through its control socket.

A node in a thread of the UI's process shares its interpreter lock: every repaint of the
screen (tens of milliseconds of Python) holds up the node's loop, its store thread and its
verification pool, and a federation stream is latency-bound (credit comes back only after
the commit), so the node's throughput fell by more than half with the dashboard on
(bench/dashboard_overhead.py). In its own process the node keeps its interpreter to
itself. The dashboard then reads it exactly as it reads a node it did not start: over the
node's control socket (``tapsim_tui.attach.AttachedNode``); the pipe to the child carries
only its life: ready (or why not) one way, stop the other
(``tapsim_tui.node_messages``). When the dashboard dies, the pipe's end stops the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from node.runtime.config import NodeConfig
from node.view.commands import Command
from node.view.snapshot import NodeSnapshot
from node.view.trace import Trace
from tapsim_tui.attach import AttachedNode
from tapsim_tui.node_messages import FromNode, Ready, StartFailed, Stop, ToNode
from tapsim_tui.node_start import starting_snapshot
from tapsim_tui.settings import (
    NodeStartError,
    describe_start_error,
    died_at_start,
    start_timed_out,
)


class NodeProcess:
    def __init__(self, config: NodeConfig, *, record_frames: bool = True) -> None:
        self.config = config
        self._record_frames = record_frames
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._send_lock = threading.Lock()
        self._url = ""
        self.attached: AttachedNode | None = None

    # ------------------------------------------------------------------ NodeHandle

    @property
    def server_id(self) -> str:
        return self.config.server_id

    @property
    def url(self) -> str:
        return self._url

    @property
    def status(self) -> str | None:
        return self.attached.status if self.attached is not None else "starting…"

    def snapshot(self) -> NodeSnapshot:
        if self.attached is None:
            return starting_snapshot(self.config.server_id)
        return self.attached.snapshot()

    def submit(self, command: Command) -> None:
        if self.attached is not None:
            self.attached.submit(command)

    def trace(self, event_id: str, timeout: float = 3.0) -> Trace | None:
        return self.attached.trace(event_id, timeout) if self.attached is not None else None

    def drain_notices(self) -> list[str]:
        return self.attached.drain_notices() if self.attached is not None else []

    # ------------------------------------------------------------------ lifecycle

    def launch(self) -> None:
        """Start the child; :meth:`wait_ready` waits for it (several can start at once)."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._conn = parent
        self._process = ctx.Process(
            target=_child_main,
            args=(self.config, child, self._record_frames),
            name=f"tapsim node {self.config.server_id}",
            daemon=True,
        )
        self._process.start()
        child.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the child's start, then for its first snapshot over the socket."""
        conn = self._conn
        assert conn is not None, "launch() first"
        try:
            if not conn.poll(timeout):
                self.stop()
                raise start_timed_out(self.config.server_id, timeout)
            message: FromNode = conn.recv()
        except (EOFError, OSError):
            raise died_at_start(self.config.server_id) from None
        match message:
            case Ready(url=url, control=control):
                self._url = url
            case StartFailed(reason=reason):
                self.stop()
                raise NodeStartError(reason)
            case _:
                self.stop()
                raise died_at_start(self.config.server_id)
        path = Path(control)
        attached = AttachedNode(self.config.server_id, lambda: path, client="tapsim")
        attached.start()
        if not attached.wait_attached(timeout):
            attached.close()
            self.stop()
            raise NodeStartError(
                f"{self.config.server_id}: no snapshot over {path} in {timeout:g} s"
            )
        self.attached = attached

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.attached is not None:
            self.attached.close()
        self._send(Stop())
        process = self._process
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(2.0)
        if self._conn is not None:
            self._conn.close()

    def _send(self, message: ToNode) -> None:
        conn = self._conn
        if conn is None:
            return
        with self._send_lock, contextlib.suppress(OSError, ValueError, BrokenPipeError):
            conn.send(message)


# ---------------------------------------------------------------------- the child


def _child_main(config: NodeConfig, conn: Connection, record_frames: bool) -> None:
    # The terminal belongs to the dashboard: ^C and hang-up are the parent's business
    # (it sends "stop"; if it dies instead, the pipe's end stops us), and
    # anything the node or a library prints goes to a log in its data dir, not the screen.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal closing: the parent stops us
    with contextlib.suppress(OSError):
        os.makedirs(config.data_dir, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        log = os.open(os.path.join(config.data_dir, "node.log"), flags, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    asyncio.run(_serve(config, conn, record_frames))


async def _serve(config: NodeConfig, conn: Connection, record_frames: bool) -> None:
    from node.runtime.node import Node

    node = Node(config, record_frames=record_frames)
    try:
        await node.start()
    except BaseException as exc:  # reported to the dashboard, in words
        _reply(conn, StartFailed(describe_start_error(exc, config)))
        with contextlib.suppress(Exception):
            await node.stop()
        return
    _reply(conn, Ready(node.url, str(node.control.path)))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def readable() -> None:
        try:
            while conn.poll():
                message: ToNode = conn.recv()
                if isinstance(message, Stop):
                    stop.set()
        except (EOFError, OSError):  # the dashboard is gone: stop with it
            stop.set()

    loop.add_reader(conn.fileno(), readable)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await node.stop()


def _reply(conn: Connection, message: FromNode) -> None:
    conn.send(message)
