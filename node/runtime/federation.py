"""The federation API this node serves: the transport's ``FederationHandler``.

The transport does the HTTP (routing, the §3 checks, full duplex); this module answers
each endpoint from the node's parts: caps and key documents from the identity and the
key store, ``send`` through the ingest, digests and checkpoint pages from the store (on
its thread), and new streams from the stream opener it is given.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ulid import ULID

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    Checkpoint,
    Error,
    Event,
    Frame,
    encode_frame,
    parse_frame,
)
from node.protocol.identity import Identity
from node.protocol.ids import group_matches
from node.protocol.keystore import KeyStore, RequestAuthenticator
from node.protocol.session import Outcome, Rejected, Stored
from node.runtime.activity import Counters
from node.runtime.config import NodeConfig
from node.runtime.faults import CUT_REASON
from node.storage.store import Store
from node.storage.store_thread import StoreThread
from node.sync.checkpoint import CheckpointRequest, parse_checkpoint_request, respond
from node.sync.digest import parse_digest_query
from node.transport.handler import StreamEndpoint
from node.transport.serving import MAX_CONCURRENT_STREAMS
from node.view.framelog import FrameLog

CAPABILITIES = ["stream", "send", "ack", "credit", "ping", "digest", "checkpoint", "relay"]


@dataclass(frozen=True, slots=True)
class FederationPorts:
    """What the API uses of the node."""

    config: NodeConfig
    identity: Identity
    keystore: KeyStore
    request_auth: RequestAuthenticator
    store: Store  # read on the store thread only
    thread: StoreThread
    ingest: Callable[[str, Event, str], Awaitable[Outcome]]  # (group, event, hop)
    accept_stream: Callable[[str], StreamEndpoint]  # (group) → a new acceptor stream
    link_cut: Callable[[str | None, str], bool]  # (peer, group): the cut fault is on
    counters: Counters
    frame_log: FrameLog | None


class FederationApi:
    def __init__(self, ports: FederationPorts) -> None:
        self._ports = ports
        self.server_id = ports.identity.server_id
        self.max_message_size = ports.config.max_message_size

    def caps(self) -> dict:
        c = self._ports.config
        return {
            "server_id": self.server_id,
            "versions": [PROTOCOL_VERSION],
            "capabilities": CAPABILITIES,
            "supported_groups": c.supported_groups,
            "max_message_size": c.max_message_size,
            "limits": {
                "max_concurrent_streams": MAX_CONCURRENT_STREAMS,
                "initial_credit": {
                    "events": c.initial_credit_events,
                    "bytes": c.initial_credit_bytes,
                },
                "ping_interval_ms": int(c.ping_interval * 1000),
            },
        }

    def key_current(self) -> dict:
        return self._ports.identity.key_document().to_dict()

    def key_document(self, server_id: str) -> dict | None:
        if server_id == self.server_id:
            return self.key_current()
        return self._ports.keystore.document(server_id)

    def serves_group(self, group_id: str) -> bool:
        return any(group_matches(p, group_id) for p in self._ports.config.supported_groups)

    def authenticate_request(
        self, header: str | None, method: str, path_and_query: str, body: bytes
    ) -> str | None:
        return self._ports.request_auth.check(header, method, path_and_query, body, time.time())

    def admit(self, origin: str | None, group_id: str) -> None:
        """A peer whose link is cut (the demo fault) is refused every request in that
        group, as its streams are: 503, so it retries later, as if we were away."""
        if origin is not None and self._ports.link_cut(origin, group_id):
            raise ProtocolError(ErrorCode.OVERLOADED, f"{CUT_REASON} with {origin} in {group_id}")

    def open_stream(self, group_id: str) -> StreamEndpoint:
        return self._ports.accept_stream(group_id)

    async def send(self, group_id: str, line: bytes, origin: str | None) -> tuple[int, list[bytes]]:
        frame = parse_frame(line)
        if frame.type != "EVENT":
            raise ProtocolError(ErrorCode.BAD_FRAME, f"send takes one EVENT, not {frame.type}")
        if frame.sequence != 1:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a one-shot EVENT has sequence 1", frame.id)
        if frame.group_id != group_id:
            raise ProtocolError(ErrorCode.BAD_FRAME, "group_id differs from the URL", frame.id)
        ports = self._ports
        hop = origin or frame.origin  # §3.3: a signed request's origin is the hop
        if origin is None:
            self.admit(hop, group_id)  # unsigned: the frame names the peer
        if ports.frame_log is not None:
            ports.frame_log.record("in", hop, group_id, "EVENT", frame.size, frame.payload)
        outcome = await ports.ingest(group_id, frame.payload, hop)
        if type(outcome) is Rejected:
            ports.counters.events_rejected += 1
            raise ProtocolError(outcome.code, outcome.message, frame.id)
        stored = type(outcome) is Stored
        ids = [outcome.event_id] if stored else []
        lines = [self._reply_frame("ACK", 1, Ack(1, ids), group_id)]
        if stored and outcome.equivocation:
            err = Error(ErrorCode.EQUIVOCATION, outcome.message, frame.id, False)
            lines.append(self._reply_frame("ERROR", 2, err, group_id))
        return 200, lines

    def _reply_frame(self, ftype: str, sequence: int, payload: object, group_id: str) -> bytes:
        return encode_frame(Frame(ftype, str(ULID()), self.server_id, sequence, payload))

    async def digest(self, group_id: str, query: dict[str, str]) -> dict:
        q = parse_digest_query(query)
        ports = self._ports
        return await ports.thread.run(
            ports.store.digest, group_id, self.server_id, q.lo, q.hi, q.buckets
        )

    async def checkpoint(self, group_id: str, line: bytes) -> AsyncIterator[bytes]:
        frame = parse_frame(line)
        if frame.type != "CHECKPOINT":
            raise ProtocolError(
                ErrorCode.BAD_FRAME, f"checkpoint takes CHECKPOINT, not {frame.type}"
            )
        if frame.group_id != group_id:
            raise ProtocolError(ErrorCode.BAD_FRAME, "group_id differs from the URL", frame.id)
        request = parse_checkpoint_request(frame.payload.body)
        lines = await self._ports.thread.run(self._checkpoint_lines, group_id, request)
        for line_out in lines:
            yield line_out

    def _checkpoint_lines(self, group_id: str, request: CheckpointRequest) -> list[bytes]:
        """On the store thread: the EVENT lines and the closing CHECKPOINT of one page."""
        store = self._ports.store
        lines: dict[str, bytes] = {}

        def line_size(event_id: str) -> int:
            held = store.get_event(group_id, event_id)
            event = held.to_event() if held is not None else None
            frame = Frame("EVENT", str(ULID()), self.server_id, len(lines) + 1, event, group_id)
            line = lines[event_id] = encode_frame(frame)
            return len(line)

        ids, payload = respond(request, store, group_id, line_size)
        out = [lines[i] for i in ids]
        final = Frame(
            "CHECKPOINT", str(ULID()), self.server_id, len(out) + 1, Checkpoint(payload), group_id
        )
        out.append(encode_frame(final))
        return out
