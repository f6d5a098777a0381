"""A test peer that speaks the wire protocol by hand, over our real HTTP/2 client.

It is deliberately not a :class:`node.session.StreamSession`: tests use it to send what
a correct session never would (skewed or replayed HELLOs, forged signatures, garbage,
credit overflows, lines of any length) and to read exactly what the node answers.
Frames are built from node.protocol.identity (HELLO and event signatures) and written as raw
NDJSON; sequence numbers are counted here, and can be overridden.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import orjson
from ulid import ULID

from node.protocol.frames import Frame, encode_frame
from node.protocol.identity import Identity
from node.protocol.ids import format_rfc3339
from node.transport.client import ClientStream, FederationClient
from tests.nodes import WAIT

FRAME_MEDIA = 'application/x-ndjson; profile="_taps.v1.frames"'
CT = [("content-type", FRAME_MEDIA)]
BASE = "/_taps/federation"


def group_path(group: str, endpoint: str) -> str:
    return f"{BASE}/encrypted-groups/{quote(group, safe='')}/{endpoint}"


def make_identity(name: str, seed_byte: int, url: str = "") -> Identity:
    return Identity.from_seed(bytes([seed_byte]) * 32, name, url)


def frame_line(ftype: str, origin: str, sequence: int, payload: dict, group: str | None) -> bytes:
    obj: dict = {"type": ftype, "id": str(ULID()), "origin": origin, "sequence": sequence}
    if group is not None:
        obj["group_id"] = group
    obj["payload"] = payload
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


class RawStream:
    """One stream to a node's ``/stream`` endpoint; lines are read in a background task."""

    def __init__(self, stream: ClientStream, identity: Identity, group: str) -> None:
        self.stream = stream
        self.identity = identity
        self.group = group
        self.seq = 0
        self.frames: list[dict] = []
        self.ended = False
        self.error: Exception | None = None
        self._buf = b""
        self._reader: asyncio.Task | None = None

    @classmethod
    async def open(
        cls, client: FederationClient, identity: Identity, group: str, *, read: bool = True
    ) -> RawStream:
        stream = await client.open_stream(group_path(group, "stream"), CT)
        raw = cls(stream, identity, group)
        if read:
            raw._reader = asyncio.create_task(raw._read())
        return raw

    async def _read(self) -> None:
        try:
            while (chunk := await self.stream.read()) is not None:
                lines = (self._buf + chunk).split(b"\n")
                self._buf = lines.pop()
                self.frames.extend(orjson.loads(line) for line in lines if line.strip())
        except Exception as exc:  # the node reset the stream or the connection went away
            self.error = exc
        self.ended = True

    # ------------------------------------------------------------------ writing

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def send(self, ftype: str, payload: dict, *, group: bool = False) -> str:
        line = frame_line(
            ftype,
            self.identity.server_id,
            self.next_seq(),
            payload,
            self.group if group else None,
        )
        await self.write(line)
        return orjson.loads(line)["id"]

    def hello_frame(
        self, to: str, *, skew: float = 0.0, frame_id: str | None = None, ping_ms: int = 30000
    ) -> Frame:
        now = time.time() + skew
        return self.identity.make_hello(
            to=to,
            group_id=self.group,
            frame_id=frame_id or str(ULID.from_timestamp(now)),
            timestamp=format_rfc3339(now),
            max_message_size=65536,
            ping_interval_ms=ping_ms,
            capabilities=["stream", "ack", "credit", "ping"],
            supported_groups=["*"],
            sequence=self.next_seq(),
        )

    async def hello(self, to: str, **kw) -> Frame:
        frame = self.hello_frame(to, **kw)
        await self.write(encode_frame(frame))
        return frame

    async def credit(self, events: int, nbytes: int) -> None:
        await self.send("CREDIT", {"events": events, "bytes": nbytes})

    async def event(self, seq: int, ciphertext: bytes, *, event_id: str | None = None) -> str:
        ev = self.identity.sign_event(self.group, event_id or str(ULID()), seq, ciphertext)
        return await self.send("EVENT", ev.to_dict(), group=True)

    def end(self) -> None:
        self.stream.end()

    # ------------------------------------------------------------------ reading

    async def wait_for(self, predicate, timeout: float = WAIT) -> dict:
        """The first frame read that satisfies ``predicate`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames:
                if predicate(frame):
                    return frame
            if self.ended:
                raise AssertionError(f"stream ended; frames read: {self.types()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; frames read: {self.types()}")
            await asyncio.sleep(0.01)

    async def wait_type(self, ftype: str, timeout: float = WAIT) -> dict:
        return await self.wait_for(lambda f: f.get("type") == ftype, timeout)

    async def error_frame(self, timeout: float = WAIT) -> dict:
        return (await self.wait_type("ERROR", timeout))["payload"]

    async def wait_end(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not self.ended:
            if time.monotonic() > deadline:
                raise AssertionError(f"stream did not end; frames read: {self.types()}")
            await asyncio.sleep(0.01)

    def types(self) -> list[str]:
        return [f.get("type", "?") for f in self.frames]

    async def close_reader(self) -> None:
        """Stop reading the response: what the node sends now piles up in the HTTP/2
        stream window (4 MiB) and then stays with the node."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if not self.stream.ended:
            self.stream.reset()


async def handshake(
    client: FederationClient, identity: Identity, group: str, to: str, *, credit=(256, 1 << 20)
) -> RawStream:
    """Open a stream, say HELLO, read the node's HELLO and CREDIT, grant ``credit``."""
    raw = await RawStream.open(client, identity, group)
    await raw.hello(to)
    await raw.wait_type("HELLO")
    await raw.wait_type("CREDIT")
    if credit is not None:
        await raw.credit(*credit)
    return raw
