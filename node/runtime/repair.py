"""The asyncio shell of anti-entropy (PROTOCOL §5.4): runs :class:`RepairPlanner`.

The planner decides every request; this module performs them over HTTP/2 (digest,
checkpoint, send), stores what a checkpoint brings through the normal ingest (so it
is verified, deduplicated and relayed like any event), and reports progress in the
node snapshot. At most one repair runs per (peer, group). Repairs start after each
handshake we initiate, every 10 minutes ±30 % while connected, and on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING

import orjson
from ulid import ULID

from node.protocol.errors import ProtocolError
from node.protocol.frames import Checkpoint, Frame, encode_frame, parse_frame
from node.protocol.ids import format_rfc3339
from node.protocol.session import Rejected, Role
from node.sync import planner as ae
from node.transport.client import FederationClient, TransportError
from node.transport.media import FRAME_MEDIA_TYPE
from node.transport.routes import group_path
from node.view.builder import repair_snapshot
from node.view.snapshot import (
    DIGEST_FAILED,
    DIGEST_REPAIRING,
    DIGEST_UNKNOWN,
    RepairSnapshot,
)

if TYPE_CHECKING:
    from node.runtime.node import Node
    from node.runtime.stream_runner import StreamRunner

PERIOD = 600.0
PERIOD_JITTER = 0.3
ACCEPTOR_DELAY = 3.0
REQUEST_TIMEOUT = 60.0  # one digest, checkpoint page or send
SEND_CONCURRENCY = 8
OUTBOX_POLL = 0.25  # seconds between checks of what the outbox stream still has to deliver
OUTBOX_PATIENCE = 5.0  # seconds without progress of that stream before repair sends itself


class RequestSigner:
    """Signs §3.3 headers with a timestamp that never repeats for this node."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._last_ms = 0

    def header(self, receiver: str, method: str, path: str, body: bytes) -> str:
        ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return self._node.identity.authorization_header(
            receiver=receiver,
            method=method,
            path_and_query=path,
            body=body,
            ts=format_rfc3339(ms / 1000),
        )


class Repair:
    """One run of the planner against one peer and group."""

    def __init__(self, node: Node, client: FederationClient, peer_id: str, group_id: str):
        self.node = node
        self.client = client
        self.peer_id = peer_id
        self.group_id = group_id
        self.planner = ae.RepairPlanner(
            node.store, group_id, peer_id, **node.repairs.planner_options
        )
        self.error: str | None = None

    async def run(self) -> None:
        thread = self.node.store_thread
        actions = await thread.run(self.planner.start, time.time())
        await self._perform(actions)

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
            return await self.node.store_thread.run(
                self.planner.on_failure, action, reason, time.time()
            )

    async def _perform_one(self, action: object) -> list:
        planner = self.planner
        thread = self.node.store_thread
        try:
            if self.node.link_cut(self.peer_id, self.group_id) and not isinstance(
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
        headers = [
            ("authorization", self.node.repairs.signer.header(self.peer_id, method, path, body))
        ]
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
        node = self.node
        frame = Frame(
            "CHECKPOINT",
            str(ULID()),
            node.server_id,
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
        queue = self.node.ingest_queue
        outcomes = await asyncio.gather(
            *(queue.process(self.group_id, ev, self.peer_id) for ev in events)
        )
        rejected = [o for o in outcomes if type(o) is Rejected]
        if rejected:
            self.node.log(
                f"repair {self.peer_id} {self.group_id}: {len(rejected)} events rejected "
                f"({rejected[0].code}: {rejected[0].message})"
            )

    def _outbox_streaming(self) -> bool:
        """Is a live stream to the peer draining its outbox for this group?"""
        return any(
            r.uses_outbox
            and not r.finished
            and r.peer_id == self.peer_id
            and r.group_id == self.group_id
            for r in self.node.runners
        )

    async def _send(self, event_ids: tuple[str, ...]) -> int:
        """Send ``want`` (§5.4: on the stream or by send). Ids still queued in the peer's
        outbox are left to the stream that drains it, and waited for: sending them by
        ``send`` as well would move a reconnect's whole backlog twice, one request each."""
        node = self.node
        store, thread = node.store, node.store_thread
        ids = list(event_ids)
        queued: set[str] = set()
        if self._outbox_streaming():
            queued = await thread.run(store.outbox_holds, self.peer_id, self.group_id, ids)
        sent = await self._send_now([e for e in ids if e not in queued])
        stuck_since = time.monotonic()
        while queued and self._outbox_streaming():
            if time.monotonic() - stuck_since > OUTBOX_PATIENCE:
                break  # a stalled stream (or ACKs held back): send the rest ourselves
            await asyncio.sleep(OUTBOX_POLL)
            left = await thread.run(store.outbox_holds, self.peer_id, self.group_id, queued)
            if len(left) < len(queued):
                stuck_since = time.monotonic()
            queued = left
        return sent + await self._send_now(sorted(queued))

    async def _send_now(self, event_ids: list[str]) -> int:
        if not event_ids:
            return 0
        node = self.node
        rows = await node.store_thread.run(node.store.get_events, self.group_id, event_ids)
        limit = asyncio.Semaphore(SEND_CONCURRENCY)
        path = group_path(self.group_id, "send")
        sent = 0

        async def send_one(row) -> None:
            nonlocal sent
            frame = Frame("EVENT", str(ULID()), node.server_id, 1, row.to_event(), self.group_id)
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


class RepairManager:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.signer = RequestSigner(node)
        self._last: dict[tuple[str, str], RepairSnapshot] = {}
        self._last_stats: dict[tuple[str, str], ae.RepairStats] = {}
        # Keyword arguments of every RepairPlanner (tuning: buckets, checkpoint_threshold,
        # descent_levels…); benchmarks compare settings through it.
        self.planner_options: dict[str, object] = {}
        self._running: dict[tuple[str, str], Repair] = {}
        self._tasks: set[asyncio.Task] = set()
        self._periodic: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._clients: dict[str, FederationClient] = {}
        self._stopping = False

    # ------------------------------------------------------------------ triggers

    def after_handshake(self, runner: StreamRunner) -> None:
        """The initiator repairs at once (§5.4). The acceptor checks a little later, when
        the initiator's repair has usually converged: then its own pass is one digest
        round trip and the dashboard knows the state from both ends."""
        peer, group = runner.peer_id, runner.group_id
        if not peer:
            return
        if runner.role is Role.INITIATOR:
            self.start(peer, group)
        else:
            self._schedule(peer, group, ACCEPTOR_DELAY)

    def request(self, peer_id: str | None, group_id: str | None) -> None:
        """On demand: None means every peer / every group we have a stream with."""
        pairs = {
            (r.peer_id, r.group_id)
            for r in self.node.runners
            if r.peer_id
            and not r.finished
            and (peer_id is None or r.peer_id == peer_id)
            and (group_id is None or r.group_id == group_id)
        }
        if peer_id and group_id:
            pairs.add((peer_id, group_id))
        for peer, group in sorted(pairs):
            self.start(peer, group)

    def start(self, peer_id: str, group_id: str) -> bool:
        key = (peer_id, group_id)
        if self._stopping or key in self._running or self.node.link_cut(peer_id, group_id):
            return False
        client = self._client(peer_id)
        if client is None:
            self.node.log(f"repair {peer_id} {group_id}: no URL known for that peer")
            return False
        repair = Repair(self.node, client, peer_id, group_id)
        self._running[key] = repair
        task = asyncio.get_running_loop().create_task(self._run(key, repair))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _client(self, peer_id: str) -> FederationClient | None:
        node = self.node
        if node.peers is not None:
            client = node.peers.client_for(peer_id)
            if client is not None:
                return client
        client = self._clients.get(peer_id)
        if client is None:
            doc = node.keystore.document(peer_id)
            url = doc.get("url") if doc else ""
            if not url:
                return None
            client = self._clients[peer_id] = FederationClient(
                url, ssl_context=node.config.client_ssl_context()
            )
        return client

    async def _run(self, key: tuple[str, str], repair: Repair) -> None:
        peer, group = key
        try:
            await repair.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take the node down; say it plainly
            repair.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._running.pop(key, None)
            snap = repair_snapshot(repair.planner)
            if repair.error and snap.state != DIGEST_FAILED:
                snap = _with(snap, state=DIGEST_FAILED, error=repair.error)
            self._last[key] = snap
            st = self._last_stats[key] = repair.planner.stats
            self.node.log(
                f"repair {peer} {group}: {snap.state}"
                + (f" ({snap.error})" if snap.error else "")
                + f", {st.round_trips} round trips in {st.rounds} rounds, "
                f"{st.events_fetched} fetched, "
                f"{st.events_sent} sent, {st.bytes} B"
            )
            self._schedule_next(key)

    def _schedule_next(self, key: tuple[str, str]) -> None:
        handle = self._periodic.pop(key, None)
        if handle is not None:
            handle.cancel()
        peer, group = key
        if not any(
            r.peer_id == peer and r.group_id == group and not r.finished for r in self.node.runners
        ):
            return
        self._schedule(peer, group, PERIOD * (1 + PERIOD_JITTER * (2 * random.random() - 1)))

    def _schedule(self, peer: str, group: str, delay: float) -> None:
        old = self._periodic.pop((peer, group), None)
        if old is not None:
            old.cancel()
        if self._stopping:  # a repair cancelled by stop() must not arm the next one
            return
        self._periodic[(peer, group)] = asyncio.get_running_loop().call_later(
            delay, lambda: self.start(peer, group)
        )

    async def stop(self) -> None:
        self._stopping = True
        for handle in self._periodic.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for client in self._clients.values():
            await client.close()

    # ------------------------------------------------------------------ observing

    def state_of(self, peer_id: str, group_id: str) -> str:
        key = (peer_id, group_id)
        if key in self._running:
            return DIGEST_REPAIRING
        last = self._last.get(key)
        return last.state if last is not None else DIGEST_UNKNOWN

    def last_stats(self, peer_id: str, group_id: str) -> ae.RepairStats | None:
        """The planner's full statistics of the last finished repair (benchmarks, tests)."""
        return self._last_stats.get((peer_id, group_id))

    def running(self, peer_id: str, group_id: str) -> bool:
        return (peer_id, group_id) in self._running

    def snapshots(self) -> tuple[RepairSnapshot, ...]:
        out = dict(self._last)
        for key, repair in self._running.items():
            out[key] = repair_snapshot(repair.planner)
        return tuple(out[k] for k in sorted(out))


def _with(snap: RepairSnapshot, **changes: object) -> RepairSnapshot:
    from dataclasses import replace

    return replace(snap, **changes)
