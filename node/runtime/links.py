"""Links to configured peers: one HTTP/2 connection each, one initiator stream per group.

Each (peer, group) runs a loop: open the stream, drive a :class:`StreamRunner` over
it until it ends, then wait out the §4.5 backoff and go again. The peer's server id
comes from its ``GET /caps`` the first time we reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from node.protocol.backoff import Backoff
from node.protocol.errors import ErrorCode
from node.protocol.frames import parse_frame
from node.protocol.ids import is_server_id
from node.protocol.keepalive import DEAD_AFTER_INTERVALS
from node.runtime.clients import ClientPool
from node.runtime.config import PeerConfig
from node.runtime.directory import PeerDirectory
from node.runtime.stream_runner import StreamRunner
from node.transport.client import TransportError
from node.transport.media import FRAME_MEDIA_TYPE
from node.transport.routes import PREFIX, group_path
from node.view.snapshot import BACKOFF, CONNECTING, DEAD

CLOSE_GRACE = 2.0  # after we end our side, how long the peer has to end its own
CAPS_TIMEOUT = 30.0  # GET /caps of a peer that accepted the connection


@dataclass(frozen=True, slots=True)
class LinkPorts:
    """What the links use of the node."""

    server_id: str
    default_groups: tuple[str, ...]
    ping_interval: float
    clients: ClientPool
    directory: PeerDirectory
    link_cut: Callable[[str | None, str], bool]
    # A peer named by its URL turned out to be this server id: its faults follow it.
    faults_follow: Callable[[str, str], None]
    open_initiator: Callable[[str, str, str], StreamRunner]  # (group, peer id, url)
    log: Callable[[str], None]
    # Whether this worker owns a group (docs/scaling.md): links run only for its own.
    owns: Callable[[str], bool] = lambda _group: True


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """A link's state by value, for the snapshot (node.view.builder.LinkView)."""

    peer_id: str | None
    url: str
    group_id: str
    state: str
    backoff_until: float | None
    last_error: str | None


@dataclass(slots=True)
class LinkState:
    """What the dashboard shows for a (peer, group) while no stream is up."""

    group_id: str
    state: str = CONNECTING
    backoff_until: float | None = None
    last_error: str | None = None
    runner: StreamRunner | None = None
    attempts: int = 0


class PeerLink:
    def __init__(self, ports: LinkPorts, config: PeerConfig) -> None:
        self._ports = ports
        self.url = config.url
        self.groups = [g for g in config.groups or ports.default_groups if ports.owns(g)]
        self.client = ports.clients.for_url(config.url)
        self.server_id: str | None = ports.directory.ids.get(config.url)  # from a past run
        self.links: dict[str, LinkState] = {g: LinkState(g) for g in self.groups}
        self._backoffs: dict[str, Backoff] = {g: Backoff() for g in self.groups}
        self._wake: dict[str, asyncio.Event] = {g: asyncio.Event() for g in self.groups}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for group in self.groups:
            self._tasks.append(loop.create_task(self._run(group), name=f"link {self.url} {group}"))

    async def stop(self) -> None:
        self._stopping = True
        for link in self.links.values():
            if link.runner is not None and not link.runner.finished:
                link.runner.close(ErrorCode.SHUTDOWN, "server stopping")
        for event in self._wake.values():
            event.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def reset_backoff(self) -> None:
        """The peer reached us: it is up again, so retry now (§4.5)."""
        for group in self.groups:
            self._backoffs[group].reset()
            self._wake[group].set()

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def learn_server_id(self) -> str:
        server_id = await server_id_at(self.client, self.url)
        if server_id == self._ports.server_id:
            raise TransportError(self.url, "that URL is this node itself")
        self.server_id = server_id
        self._ports.directory.learned(self.url, server_id)
        self._ports.faults_follow(self.url, server_id)
        return server_id

    async def _run(self, group: str) -> None:
        link = self.links[group]
        backoff = self._backoffs[group]
        wake = self._wake[group]
        while not self._stopping:
            # Until its server id is known, the peer (and its row, and a fault on it) is
            # named by its URL.
            while self._ports.link_cut(self.server_id or self.url, group) and not self._stopping:
                link.state = DEAD
                link.last_error = "link cut (fault injection)"
                wake.clear()
                await wake.wait()
            if self._stopping:
                return
            link.state = CONNECTING
            link.backoff_until = None
            link.attempts += 1
            up_for = 0.0
            try:
                up_for = await self._one_stream(group, link)
            except asyncio.CancelledError:
                raise
            except TransportError as exc:
                link.last_error = exc.args[-1] if exc.args else str(exc)
            except Exception as exc:  # never let one link's surprise kill the node
                link.last_error = f"{type(exc).__name__}: {exc}"
                self._ports.log(f"link {self.url} {group}: unexpected {link.last_error}")
            finally:
                link.runner = None
            if self._stopping:
                return
            # A stream that timed out on a dead TCP connection must not be retried on it.
            silent = DEAD_AFTER_INTERVALS * self._ports.ping_interval
            if await self.client.discard_if_silent(silent):
                self._ports.log(f"{self.server_id or self.url}: connection silent, dropped")
            backoff.stream_ended(up_for)
            delay = backoff.next_delay()
            link.state = BACKOFF
            link.backoff_until = time.time() + delay
            if link.last_error:
                self._ports.log(
                    f"{self.server_id or self.url} {group}: {link.last_error}; "
                    f"retry in {delay:.1f} s"
                )
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    async def _one_stream(self, group: str, link: LinkState) -> float:
        """Run one stream to its end; returns how long it was up."""
        # Ask every time: the id known from a past run may have changed at that URL.
        peer_id = await self.learn_server_id()
        stream = await self.client.open_stream(
            group_path(group, "stream"),
            [("content-type", FRAME_MEDIA_TYPE), ("accept", FRAME_MEDIA_TYPE)],
        )
        runner = self._ports.open_initiator(group, peer_id, self.url)
        link.runner = runner
        runner.start()
        writer = asyncio.get_running_loop().create_task(self._write(stream, runner))
        try:
            status, _headers = await stream.response()
            if status != 200:
                body = b""
                while (chunk := await stream.read()) is not None and len(body) < 65536:
                    body += chunk
                raise TransportError(self.url, f"stream refused: {status} {_error_text(body)}")
            while (chunk := await stream.read()) is not None:
                runner.feed(chunk)
                if runner.aborted:
                    break
            runner.feed_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.done.wait(), CLOSE_GRACE)
        finally:
            up_at = runner.session.up_at
            if not runner.finished:
                runner.abort(runner.session.end_reason or "connection closed")
            link.last_error = runner.end_reason if up_at else link.last_error
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            if not stream.ended:
                stream.reset()
        return time.time() - up_at if up_at else 0.0

    async def _write(self, stream, runner: StreamRunner) -> None:
        try:
            while (data := await runner.outgoing()) is not None:
                await stream.write(data)
            if not runner.session.ended:  # aborted (link cut, node stopping): drop it now
                stream.reset()
                return
            stream.end()
            # Our side is over; the peer gets CLOSE_GRACE to end its own, then we reset.
            await asyncio.sleep(CLOSE_GRACE)
            stream.reset()
        except (TransportError, OSError):
            runner.abort("connection lost")


async def server_id_at(client, url: str) -> str:
    """The server id a peer's ``GET /caps`` names at ``url``."""
    try:
        async with asyncio.timeout(CAPS_TIMEOUT):
            response = await client.request("GET", f"{PREFIX}/caps")
    except TimeoutError:
        raise TransportError(url, f"GET /caps: no answer in {CAPS_TIMEOUT:g} s") from None
    if response.status != 200:
        raise TransportError(url, f"GET /caps answered {response.status}")
    try:
        caps = orjson.loads(response.body)
        server_id = caps["server_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise TransportError(url, "GET /caps did not return a caps document") from None
    if not is_server_id(server_id):
        raise TransportError(url, f"caps names an invalid server id {server_id!r}")
    return server_id


def _error_text(body: bytes) -> str:
    """The code and message of an ERROR frame body, or a hint that there was none."""
    line = body.split(b"\n", 1)[0]
    try:
        frame = parse_frame(line)
        return f"{frame.payload.code}: {frame.payload.message}"
    except Exception:
        return "(no ERROR frame)"


class PeerManager:
    """The links to every configured peer."""

    def __init__(self, ports: LinkPorts) -> None:
        self._ports = ports
        self.links: dict[str, PeerLink] = {}

    def add(self, config: PeerConfig) -> PeerLink:
        link = self.links.get(config.url)
        if link is None:
            link = self.links[config.url] = PeerLink(self._ports, config)
            link.start()
        return link

    async def remove(self, url: str) -> bool:
        """Stop the link to a forgotten peer (its streams end with SHUTDOWN)."""
        link = self.links.pop(url, None)
        if link is None:
            return False
        await link.stop()
        return True

    def peer_connected(self, peer_id: str) -> None:
        for link in self.links.values():
            if link.server_id == peer_id:
                link.reset_backoff()

    def statuses(self) -> list[LinkStatus]:
        return [
            LinkStatus(link.server_id, link.url, s.group_id, s.state, s.backoff_until, s.last_error)
            for link in self.links.values()
            for s in link.links.values()
        ]

    def wake_all(self) -> None:
        """Something a link waits on changed (a fault): look again."""
        for link in self.links.values():
            link.wake()

    async def stop(self) -> None:
        await asyncio.gather(*(link.stop() for link in self.links.values()))
