"""A loopback TCP proxy that breaks links on command, for the chaos tests.

A node is pointed at the proxy's URL instead of its peer's; the proxy forwards bytes
both ways and can, at any moment:

- ``cut()``: abort every open connection (both sockets closed at once: the TCP link dies);
- ``freeze()``: stop forwarding on every open connection while keeping it open, so the
  peer looks dead (no bytes at all) without any error; new connections work normally;
- ``rate``: limit each direction of each connection to that many bytes per second;
- ``record``: keep every byte sent towards the target, for tests that scan them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class _Link:
    def __init__(self, client_w: asyncio.StreamWriter, target_w: asyncio.StreamWriter) -> None:
        self.writers = (client_w, target_w)
        self.frozen = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def abort(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()


class ChaosProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.links: list[_Link] = []
        self.connections = 0
        self.rate: float | None = None  # bytes per second per direction
        self.record = False
        self.recorded = bytearray()  # bytes forwarded towards the target
        self._server: asyncio.Server | None = None
        self.port = 0

    @classmethod
    async def to(cls, url: str) -> ChaosProxy:
        host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
        proxy = cls(host, int(port))
        await proxy.start()
        return proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        self.connections += 1
        link = _Link(cw, tw)
        self.links.append(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, cr, tw, towards_target=True)),
            asyncio.create_task(self._pump(link, tr, cw, towards_target=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        link.abort()
        with contextlib.suppress(ValueError):
            self.links.remove(link)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        towards_target: bool,
    ) -> None:
        started = time.monotonic()
        sent = 0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if link.frozen.is_set():
                    await asyncio.Future()  # a frozen link never forwards again
                if towards_target and self.record:
                    self.recorded += data
                writer.write(data)
                await writer.drain()
                sent += len(data)
                if self.rate:
                    ahead = sent / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # pacing the link, not synchronising
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()

    def cut(self) -> int:
        """Abort every open connection; returns how many were cut."""
        links = list(self.links)
        for link in links:
            link.abort()
        return len(links)

    def freeze(self) -> int:
        """Stop forwarding on every open connection, keeping the sockets open."""
        for link in self.links:
            link.frozen.set()
        return len(self.links)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.abort()
            for task in link.tasks:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 30)
