"""A real node in a child process: the dashboard's NodeHandle without a shared interpreter.

A node in a thread of the UI's process shares its interpreter lock: every repaint of the
screen (tens of milliseconds of Python) holds up the node's loop, its store thread and its
verification pool, and a federation stream is latency-bound (credit comes back only after
the commit), so the node's throughput fell by more than half with the dashboard on
(bench/dashboard_overhead.py). In its own process the node keeps its interpreter to
itself; the two sides exchange only values over a pipe: snapshots (pushed at 10 Hz while
the UI asks for them) one way, commands the other, as the typed messages of
``tapsim_tui.node_messages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Connection

from node.runtime.config import NodeConfig
from node.view.commands import Command
from node.view.framelog import TAIL as FRAME_TAIL
from node.view.snapshot import FrameLogEntry, NodeSnapshot
from tapsim_tui.node_messages import (
    Execute,
    FromNode,
    Published,
    Ready,
    StartFailed,
    Stop,
    ToNode,
    Want,
)
from tapsim_tui.node_start import IDLE_AFTER, PUBLISH_EVERY, starting_snapshot
from tapsim_tui.settings import (
    NodeStartError,
    describe_start_error,
    died_at_start,
    start_timed_out,
)

WANT_EVERY = 0.5  # seconds between the UI's "still looking" messages


class NodeProcess:
    def __init__(self, config: NodeConfig, *, record_frames: bool = True) -> None:
        self.config = config
        self._record_frames = record_frames
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._send_lock = threading.Lock()
        self._latest: NodeSnapshot | None = None
        self._url = ""
        self._last_want = 0.0
        self._reader: threading.Thread | None = None
        self._frames: deque[FrameLogEntry] = deque(maxlen=FRAME_TAIL)

    # ------------------------------------------------------------------ NodeHandle

    @property
    def server_id(self) -> str:
        return self.config.server_id

    @property
    def url(self) -> str:
        return self._url

    def snapshot(self) -> NodeSnapshot:
        now = time.monotonic()
        if now - self._last_want > WANT_EVERY:
            self._last_want = now
            self._send(Want())
        return self._latest or starting_snapshot(self.config.server_id)

    def submit(self, command: Command) -> None:
        self._send(Execute(command))

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
            case Ready(url=url, snapshot=first):
                self._url = url
                self._latest = self._merge(first)
            case StartFailed(reason=reason):
                self.stop()
                raise NodeStartError(reason)
            case _:
                self.stop()
                raise died_at_start(self.config.server_id)
        self._reader = threading.Thread(
            target=self._read, name=f"snapshots {self.server_id}", daemon=True
        )
        self._reader.start()

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
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

    def _read(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                message: FromNode = conn.recv()
            except (EOFError, OSError, ValueError):
                return
            if isinstance(message, Published):
                self._latest = self._merge(message.snapshot)

    def _merge(self, snapshot: NodeSnapshot) -> NodeSnapshot:
        """The child sends only frame-log entries it has not sent before: keep the tail."""
        self._frames.extend(snapshot.frame_log)
        return replace(snapshot, frame_log=tuple(self._frames))


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
    sent_up_to = 0  # frame-log index already sent: each snapshot carries only newer entries

    def fresh(snapshot: NodeSnapshot) -> NodeSnapshot:
        nonlocal sent_up_to
        new = tuple(e for e in snapshot.frame_log if e.index > sent_up_to)
        if new:
            sent_up_to = new[-1].index
        return replace(snapshot, frame_log=new)

    _reply(conn, Ready(node.url, fresh(node.snapshot())))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    wanted_until = time.monotonic() + IDLE_AFTER

    def readable() -> None:
        nonlocal wanted_until
        try:
            while conn.poll():
                message: ToNode = conn.recv()
                match message:
                    case Execute(command=command):
                        node.execute(command)
                    case Want():
                        wanted_until = time.monotonic() + IDLE_AFTER
                    case Stop():
                        stop.set()
        except (EOFError, OSError):  # the dashboard is gone: stop with it
            stop.set()

    loop.add_reader(conn.fileno(), readable)

    async def publish() -> None:
        while True:
            if time.monotonic() < wanted_until:
                try:
                    snapshot = node.snapshot()
                except Exception:  # one bad picture must not end the pictures
                    logging.getLogger("tapsim").exception("building a snapshot failed")
                    snapshot = None
                try:
                    if snapshot is not None:
                        _reply(conn, Published(fresh(snapshot)))
                except (OSError, ValueError):  # the dashboard is gone
                    stop.set()
                    return
            await asyncio.sleep(PUBLISH_EVERY)

    publisher = asyncio.create_task(publish())
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await publisher
        await node.stop()


def _reply(conn: Connection, message: FromNode) -> None:
    conn.send(message)
