"""The node's local control endpoint: a Unix socket serving snapshots and taking commands.

A thin asyncio shell around ``node.view.control`` (the protocol, sans-IO). Every node
serves one, headless or under the dashboard: it is how every dashboard, `tapsim status`
and `tapsim serve` look at a node. It never listens on the network; the socket file is
mode 0600 and a peer of another uid is refused (``SO_PEERCRED``, where the kernel has it).

Snapshots are built once per tick for all clients that are due, on the node's loop, and
only while somebody is subscribed; a client that does not read is skipped (its frame-log
cursor stays put, so it misses no entry still in the tail) rather than buffered without
bound. A misbehaving client gets an error line and can do nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.view.commands import Command
from node.view.control import (
    FORBIDDEN,
    Close,
    Lookup,
    NodeFacts,
    Run,
    Send,
    ServerSession,
    error_line,
)
from node.view.snapshot import NodeSnapshot
from node.view.trace import Trace

log = logging.getLogger("tapsim.control")

TICK = 0.1  # seconds: the fastest any client may be served (10 Hz)
MAX_BUFFERED = 4 * 1024 * 1024  # bytes queued to one client before its snapshots are skipped
MAX_CLIENTS = 64


@dataclass(frozen=True, slots=True)
class ControlPorts:
    facts: Callable[[], NodeFacts]
    snapshot: Callable[[], NodeSnapshot]
    execute: Callable[[Command], str | None]  # None: done; else the reason, in words
    trace: Callable[[str], Trace] = Trace  # one event's way as this node saw it


def peer_uid(sock: socket.socket) -> int | None:
    """The connecting process's uid, from the kernel; None where it cannot say."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class _Client:
    def __init__(self, session: ServerSession, writer: asyncio.StreamWriter) -> None:
        self.session = session
        self.writer = writer

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    @property
    def backed_up(self) -> bool:
        return self.writer.transport.get_write_buffer_size() > MAX_BUFFERED


class ControlServer:
    def __init__(self, ports: ControlPorts) -> None:
        self._ports = ports
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.path: Path | None = None

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def start(self, path: Path) -> None:
        """Bind ``path`` (a stale socket file there is replaced: the caller holds the
        data dir's lock) with mode 0600 from the first moment."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._connected, path=str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.path = path
        self._ticker = asyncio.create_task(self._tick(), name="control snapshots")

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
        for client in list(self._clients):
            client.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._server = None

    # ------------------------------------------------------------------ connections

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock) if sock is not None else None
            if uid is not None and uid != os.getuid():
                writer.write(error_line(FORBIDDEN, "another user's process", fatal=True))
                return
            if len(self._clients) >= MAX_CLIENTS:
                writer.write(error_line(FORBIDDEN, "too many control clients", fatal=True))
                return
            await self._serve(_Client(ServerSession(self._ports.facts()), writer), reader)
        except (ConnectionError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, client: _Client, reader: asyncio.StreamReader) -> None:
        self._clients.add(client)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for action in client.session.receive(data):
                    match action:
                        case Send(data=out):
                            client.write(out)
                        case Run(id=cid, command=command):
                            client.write(client.session.result(cid, self._run(command)))
                        case Lookup(id=cid, event_id=event_id):
                            trace = self._ports.trace(event_id)
                            client.write(client.session.trace_line(cid, trace))
                        case Close():
                            return
                if client.session.wants_snapshot(time.monotonic()):
                    self._wake.set()
                await client.writer.drain()
        finally:
            self._clients.discard(client)

    def _run(self, command: Command) -> str | None:
        try:
            return self._ports.execute(command)
        except Exception as exc:  # a bad command must never take the node down
            log.exception("control command %r failed", command)
            return f"failed: {exc}"

    # ------------------------------------------------------------------ snapshots

    async def _tick(self) -> None:
        while True:
            if self._clients:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK)
            else:  # nobody to serve: sleep until somebody asks
                await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            due = [c for c in self._clients if c.session.wants_snapshot(now) and not c.backed_up]
            if not due:
                continue
            try:
                snapshot = self._ports.snapshot()
            except Exception:  # one bad picture must not end the pictures
                log.exception("building a snapshot failed")
                continue
            for client in due:
                client.write(client.session.snapshot_line(snapshot, now))
