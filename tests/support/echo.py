"""A small, real :class:`~node.transport.handler.FederationHandler` for transport tests
and benchmarks: it exercises every path of the transport without a store or sessions.

Groups select the stream behaviour: ``g!echo…`` echoes every complete NDJSON line back
(so line reassembly across DATA frames is checked end to end), ``g!sink…`` counts lines
and answers nothing until the request ends, ``g!source-N`` writes N bytes of lines at
once in 64 KB chunks, ``g!greet…`` writes a line before reading anything and then
echoes, ``g!first…`` writes one line and ends its response at once (orderly close:
it still reads the request body to its end).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from ulid import ULID

from node.protocol.decoder import LineDecoder
from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import encode_dict, parse_frame
from node.protocol.ids import group_matches

_CHUNK = 64 * 1024


def filler_line(index: int, size: int) -> bytes:
    """An NDJSON line of exactly ``size`` bytes (``\\n`` included) numbered ``index``."""
    head = b'{"n":%d,"pad":"' % index
    pad = size - len(head) - 3
    return head + b"x" * max(pad, 0) + b'"}\n'


class EchoEndpoint:
    def __init__(self, group_id: str, max_line: int) -> None:
        self.group_id = group_id
        self.mode = group_id[2:].split("-", 1)[0]
        self.decoder = LineDecoder(max_line)
        self.lines = 0
        self.bytes_in = 0
        self.eof = False
        self.aborted: str | None = None
        self.error: ProtocolError | None = None
        self.fed_after_end = 0  # bytes read after our response had ended
        self.response_ended = False
        self.done = asyncio.Event()  # set on eof or abort
        self._out = bytearray()
        self._wake = asyncio.Event()
        self._source_left = 0
        if self.mode == "source":
            self._source_left = int(group_id.split("-", 1)[1])
        elif self.mode in ("greet", "first"):
            self._out += b'{"hello":"%s"}\n' % group_id.encode()

    def feed(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.response_ended:
            self.fed_after_end += len(data)
        for line in self.decoder.feed(data):
            if isinstance(line, ProtocolError):
                self.error = line
                self._wake.set()
                return
            self.lines += 1
            if self.mode in ("echo", "greet"):
                self._out += line
                self._out += b"\n"
        if self._out:
            self._wake.set()

    def feed_eof(self) -> None:
        self.eof = True
        self.done.set()
        self._wake.set()

    def abort(self, reason: str) -> None:
        self.aborted = reason
        self.done.set()
        self._wake.set()

    async def outgoing(self) -> bytes | None:
        while True:
            if self.aborted is not None or self.response_ended:
                return None
            if self._source_left > 0:
                return self._next_source_chunk()
            if self._out:
                out = bytes(self._out)
                self._out.clear()
                return out
            if self.mode in ("source", "first") or self.eof or self.error is not None:
                self.response_ended = True
                return None
            self._wake.clear()
            await self._wake.wait()

    def _next_source_chunk(self) -> bytes:
        if self._source_left >= len(_SOURCE_BLOCK):
            self._source_left -= len(_SOURCE_BLOCK)
            return _SOURCE_BLOCK
        parts = []
        while self._source_left > 0:
            line = filler_line(0, min(200, self._source_left))
            parts.append(line)
            self._source_left -= len(line)
        return b"".join(parts)


_SOURCE_BLOCK = b"".join(filler_line(i, 200) for i in range(_CHUNK // 200))


class EchoHandler:
    server_id = "server-echo"

    def __init__(self, *, max_message_size: int = 65536, groups: tuple[str, ...] = ("*",)):
        self.max_message_size = max_message_size
        self.groups = groups
        self.endpoints: list[EchoEndpoint] = []
        self.overloaded = False
        self.sent: list[bytes] = []
        self.auth_seen: list[tuple[str | None, str, str, bytes]] = []
        self.keys = {
            self.server_id: {
                "server_id": self.server_id,
                "key_id": "ed25519:AAAAAAAA",
                "algorithm": "ed25519",
                "public_key": "",
                "url": "",
                "valid_until": "2099-01-01T00:00:00.000Z",
                "signature": "",
            }
        }
        self.stream_opened = asyncio.Event()

    def _check_load(self) -> None:
        if self.overloaded:
            raise ProtocolError(ErrorCode.OVERLOADED, "too busy")

    def caps(self) -> dict:
        self._check_load()
        return {
            "server_id": self.server_id,
            "versions": ["1.0.0"],
            "capabilities": ["stream", "send", "ack", "credit", "ping"],
            "supported_groups": list(self.groups),
            "max_message_size": self.max_message_size,
            "limits": {
                "max_concurrent_streams": 100,
                "initial_credit": {"events": 256, "bytes": 1048576},
                "ping_interval_ms": 30000,
            },
        }

    def key_current(self) -> dict:
        return self.keys[self.server_id]

    def key_document(self, server_id: str) -> dict | None:
        return self.keys.get(server_id)

    def serves_group(self, group_id: str) -> bool:
        return any(group_matches(pattern, group_id) for pattern in self.groups)

    def authenticate_request(
        self, header: str | None, method: str, path_and_query: str, body: bytes
    ) -> str | None:
        self.auth_seen.append((header, method, path_and_query, body))
        if header is None:
            return None
        if header.startswith("Taps ") and 'origin="server-ok"' in header:
            return "server-ok"
        raise ProtocolError(ErrorCode.AUTH_FAILED, "bad Authorization header")

    def admit(self, origin: str | None, group_id: str) -> None:
        pass

    def open_stream(self, group_id: str) -> EchoEndpoint:
        self._check_load()
        endpoint = EchoEndpoint(group_id, self.max_message_size)
        self.endpoints.append(endpoint)
        self.stream_opened.set()
        return endpoint

    async def send(self, group_id: str, line: bytes, origin: str | None) -> tuple[int, list[bytes]]:
        self._check_load()
        frame = parse_frame(line)
        self.sent.append(line)
        ack = {
            "type": "ACK",
            "id": str(ULID()),
            "origin": self.server_id,
            "sequence": 1,
            "payload": {"through": 1, "event_ids": [frame.id]},
        }
        return 200, [encode_dict(ack)]

    async def digest(self, group_id: str, query: dict[str, str]) -> dict:
        self._check_load()
        buckets = query.get("buckets", "16")
        if not buckets.isdigit() or not 1 <= int(buckets) <= 256:
            raise ProtocolError(ErrorCode.BAD_FRAME, "buckets must be 1–256")
        return {"group_id": group_id, "server_id": self.server_id, "query": query}

    async def checkpoint(self, group_id: str, line: bytes) -> AsyncIterator[bytes]:
        self._check_load()
        request = orjson.loads(line)
        count = int(request.get("payload", {}).get("limit", 3))
        for i in range(count):
            yield filler_line(i, 300)
        yield encode_dict({"type": "CHECKPOINT", "payload": {"want": [], "more": False}})
