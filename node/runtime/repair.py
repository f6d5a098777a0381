"""The asyncio shell of anti-entropy (PROTOCOL §5.4): runs :class:`RepairPlanner`.

The planner decides every request; this module performs them over HTTP/2 (digest,
checkpoint, send), stores what a checkpoint brings through the normal ingest (so it
is verified, deduplicated and relayed like any event), and reports progress in the
node snapshot. When repairs run is :mod:`node.runtime.repairs`' business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from ulid import ULID

from node.protocol.errors import ProtocolError
from node.protocol.frames import Checkpoint, Event, Frame, encode_frame, parse_frame
from node.protocol.session import Outcome, Rejected
from node.runtime.outbox import Outbox
from node.runtime.request_signer import RequestSigner
from node.runtime.streams import StreamRegistry
from node.storage.store import Store
from node.storage.store_thread import StoreThread
from node.sync import planner as ae
from node.transport.client import FederationClient, TransportError
from node.transport.media import FRAME_MEDIA_TYPE
from node.transport.routes import group_path

REQUEST_TIMEOUT = 60.0  # one digest, checkpoint page or send
SEND_CONCURRENCY = 8
OUTBOX_POLL = 0.25  # seconds between checks of what the outbox stream still has to deliver
OUTBOX_PATIENCE = 5.0  # seconds without progress of that stream before repair sends itself
INBOUND_QUIET = 1.0  # seconds a stream from the peer must not be credit-bound to have settled
INBOUND_PATIENCE = 30.0  # seconds a repair waits for that, at most, before it runs anyway


@dataclass(frozen=True, slots=True)
class RepairPorts:
    """What a repair uses of the node."""

    server_id: str
    store: Store  # the planner's source; read on the store thread only
    thread: StoreThread
    ingest: Callable[[str, Event, str], Awaitable[Outcome]]  # (group, event, hop)
    outbox: Outbox
    streams: StreamRegistry
    link_cut: Callable[[str | None, str], bool]
    signer: RequestSigner
    log: Callable[[str], None]


class Repair:
    """One run of the planner against one peer and group."""

    def __init__(
        self,
        ports: RepairPorts,
        client: FederationClient,
        peer_id: str,
        group_id: str,
        planner_options: dict[str, object],
    ) -> None:
        self._ports = ports
        self.client = client
        self.peer_id = peer_id
        self.group_id = group_id
        self.planner = ae.RepairPlanner(ports.store, group_id, peer_id, **planner_options)
        self.error: str | None = None

    async def run(self) -> None:
        await self._inbound_settled()
        thread = self._ports.thread
        actions = await thread.run(self.planner.start, time.time())
        await self._perform(actions)

    async def _inbound_settled(self) -> None:
        """Wait, for a while, while the peer replays a backlog to us on a stream.

        Such a peer is already sending what this repair would fetch by checkpoint:
        fetching it as well would move the backlog twice, each event verified and stored
        (or screened) twice, the mirror of :meth:`_send`'s rule. A backlog shows as a
        peer that uses up its credit; live traffic does not, and does not wait. After
        INBOUND_PATIENCE the repair runs anyway.
        """
        streams = self._ports.streams
        give_up = time.monotonic() + INBOUND_PATIENCE
        while (
            streams.backlogged(self.peer_id, self.group_id, INBOUND_QUIET)
            and time.monotonic() < give_up
        ):
            await asyncio.sleep(OUTBOX_POLL)

    async def _perform(self, actions: list) -> None:
        while actions:
            tasks = [asyncio.ensure_future(self._one(a)) for a in actions]
            results = await asyncio.gather(*tasks)
            actions = [a for batch in results for a in batch]

    async def _one(self, action: object) -> list:
        """Perform one planner request; a peer that never answers fails it in time."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await self._perform_one(action)
        except TimeoutError:
            reason = f"no answer in {REQUEST_TIMEOUT:g} s"
            self.error = reason
            return await self._ports.thread.run(
                self.planner.on_failure, action, reason, time.time()
            )

    async def _perform_one(self, action: object) -> list:
        planner = self.planner
        thread = self._ports.thread
        try:
            if self._ports.link_cut(self.peer_id, self.group_id) and not isinstance(
                action, ae.Done | ae.Failed
            ):
                raise TransportError(self.client.base_url, "link cut (fault injection)")
            match action:
                case ae.FetchDigest():
                    doc, nbytes = await self._digest(action)
                    return await thread.run(planner.on_digest, action, doc, nbytes, time.time())
                case ae.SendCheckpoint():
                    events, payload, nbytes = await self._checkpoint(action)
                    out = await thread.run(
                        planner.on_checkpoint_response,
                        action,
                        events,
                        payload,
                        nbytes,
                        time.time(),
                    )
                    if not any(isinstance(a, ae.Failed) for a in out):
                        await self._store(events)
                    return out
                case ae.SendEvents():
                    nbytes = await self._send(action.event_ids)
                    return await thread.run(planner.on_events_sent, action, nbytes, time.time())
                case ae.Done():
                    return []
                case ae.Failed(reason=reason):
                    self.error = reason
                    return []
        except (TransportError, ProtocolError, OSError, ValueError) as exc:
            reason = exc.message if isinstance(exc, ProtocolError) else str(exc)
            self.error = reason
            return await thread.run(planner.on_failure, action, reason, time.time())
        return []

    def _headers(self, method: str, path: str, body: bytes, frames: bool) -> list:
        headers = [("authorization", self._ports.signer.header(self.peer_id, method, path, body))]
        if frames:
            headers += [("content-type", FRAME_MEDIA_TYPE), ("accept", FRAME_MEDIA_TYPE)]
        return headers

    async def _digest(self, action: ae.FetchDigest) -> tuple[object, int]:
        path = group_path(self.group_id, "digest") + "?" + action.query.to_query_string()
        response = await self.client.request(
            "GET", path, headers=self._headers("GET", path, b"", False)
        )
        if response.status != 200:
            raise TransportError(self.client.base_url, f"digest answered {response.status}")
        try:
            return orjson.loads(response.body), len(response.body)
        except orjson.JSONDecodeError:
            raise TransportError(self.client.base_url, "digest is not JSON") from None

    async def _checkpoint(self, action: ae.SendCheckpoint) -> tuple[list, object, int]:
        frame = Frame(
            "CHECKPOINT",
            str(ULID()),
            self._ports.server_id,
            1,
            Checkpoint(action.payload),
            self.group_id,
        )
        body = encode_frame(frame)
        path = group_path(self.group_id, "checkpoint")
        response = await self.client.request(
            "POST",
            path,
            headers=self._headers("POST", path, body, True),
            body=body,
            max_body=64 << 20,
        )
        if response.status != 200:
            raise TransportError(self.client.base_url, f"checkpoint answered {response.status}")
        # Bytes moved both ways: the request lists every id we hold in its ranges.
        nbytes = len(body) + len(response.body)
        events = []
        payload: object = None
        for line in response.body.split(b"\n"):
            if not line.strip():
                continue
            frame_in = parse_frame(line)
            if frame_in.type == "EVENT" and frame_in.group_id == self.group_id:
                events.append(frame_in.payload)
            elif frame_in.type == "CHECKPOINT":
                payload = frame_in.payload.body
            else:
                raise TransportError(
                    self.client.base_url, f"unexpected {frame_in.type} in checkpoint"
                )
        if payload is None:
            raise TransportError(self.client.base_url, "checkpoint response has no CHECKPOINT")
        return events, payload, nbytes

    async def _store(self, events: list) -> None:
        if not events:
            return
        ingest = self._ports.ingest
        outcomes = await asyncio.gather(*(ingest(self.group_id, ev, self.peer_id) for ev in events))
        rejected = [o for o in outcomes if type(o) is Rejected]
        if rejected:
            self._ports.log(
                f"repair {self.peer_id} {self.group_id}: {len(rejected)} events rejected "
                f"({rejected[0].code}: {rejected[0].message})"
            )

    async def _send(self, event_ids: tuple[str, ...]) -> int:
        """Send ``want`` (§5.4: on the stream or by send). Ids still queued in the peer's
        outbox are left to the stream that drains it, and waited for: sending them by
        ``send`` as well would move a reconnect's whole backlog twice, one request each."""
        outbox, streams = self._ports.outbox, self._ports.streams
        ids = list(event_ids)
        queued: set[str] = set()
        if streams.outbox_streaming(self.peer_id, self.group_id):
            queued = await outbox.holds(self.peer_id, self.group_id, ids)
        sent = await self._send_now([e for e in ids if e not in queued])
        stuck_since = time.monotonic()
        size = self._outbox_size()
        polls = 0
        while queued and streams.outbox_streaming(self.peer_id, self.group_id):
            if time.monotonic() - stuck_since > OUTBOX_PATIENCE:
                break  # a stalled stream (or ACKs held back): send the rest ourselves
            await asyncio.sleep(OUTBOX_POLL)
            polls += 1
            # The outbox shrinking is progress, seen from the store's published summary;
            # an empty one holds none of them. The exact look-up (a query over every id
            # still queued, the sender's largest cost per event while a backlog drained)
            # runs only when it did not shrink, and every 32nd poll, to see the end.
            was, size = size, self._outbox_size()
            if size == 0:
                queued = set()
                break
            if size < was and polls % 32:
                stuck_since = time.monotonic()
                continue
            left = await outbox.holds(self.peer_id, self.group_id, queued)
            if len(left) < len(queued):
                stuck_since = time.monotonic()
            queued = left
        return sent + await self._send_now(sorted(queued))

    def _outbox_size(self) -> int:
        """Events queued for the peer, from the store's published summary (no store turn)."""
        return self._ports.thread.summary.outbox(self.peer_id, self.group_id)

    async def _send_now(self, event_ids: list[str]) -> int:
        if not event_ids:
            return 0
        ports = self._ports
        rows = await ports.thread.run(ports.store.get_events, self.group_id, event_ids)
        limit = asyncio.Semaphore(SEND_CONCURRENCY)
        path = group_path(self.group_id, "send")
        sent = 0

        async def send_one(row) -> None:
            nonlocal sent
            frame = Frame("EVENT", str(ULID()), ports.server_id, 1, row.to_event(), self.group_id)
            body = encode_frame(frame)
            async with limit:
                response = await self.client.request(
                    "POST", path, headers=self._headers("POST", path, body, True), body=body
                )
            sent += len(body) + len(response.body)
            if response.status not in (200, 409):
                raise TransportError(self.client.base_url, f"send answered {response.status}")

        await asyncio.gather(*(send_one(r) for r in rows))
        return sent
