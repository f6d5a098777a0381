"""The running node: one asyncio shell around the sans-IO core.

It owns the identity, the key store, the event store (through its one thread), the
hypercorn server, the links to configured peers and every live stream. It is the
transport's :class:`~node.transport.handler.FederationHandler`, the streams' hub
(ingest, outbox, relay) and the source of the dashboard's snapshots. Protocol rules
live in the core modules; this module only wires them together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ulid import ULID

from node.protocol import session as s
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
from node.protocol.identity import Identity, verify_signature
from node.protocol.ids import format_rfc3339, group_matches, is_group_id
from node.protocol.keystore import (
    REPLAY_WINDOW,
    HelloAuthenticator,
    KeyStore,
    MemoryReplayCache,
    Pin,
    RequestAuthenticator,
)
from node.protocol.session import Role, SessionConfig, StreamSession
from node.protocol.signing import event_string
from node.runtime.config import NodeConfig, PeerConfig, listen_urls
from node.runtime.keyfetch import KeyFetcher
from node.runtime.seed_file import load_identity
from node.runtime.stream_runner import StreamRunner
from node.storage.ingest import Ingest
from node.storage.ingest_queue import IngestQueue
from node.storage.store import Store, StoredEvent
from node.storage.store_thread import StoreThread
from node.sync.checkpoint import CheckpointRequest, parse_checkpoint_request, respond
from node.sync.digest import parse_digest_query
from node.view.commands import AddPeer, Command, PublishEvent, Repair, SetFault
from node.view.framelog import FrameLog
from node.view.snapshot import FAULT_ACK_PAUSED, FAULT_CREDIT_ONE, FAULT_CUT, NodeSnapshot

log = logging.getLogger("tapsim.node")

CAPABILITIES = ["stream", "send", "ack", "credit", "ping", "digest", "checkpoint", "relay"]
RENEW_CHECK = 86400.0  # seconds between checks that our key document is not near expiry
MAX_STREAMS = 1000  # inbound streams over all connections, beyond which we answer 503


class DurableReplayCache:
    """The replay cache of §3.3/§4.1: answered from memory, recorded in the store.

    HELLOs are authenticated on the loop, inside the session, so the answer must be
    synchronous; the durable record follows on the store thread in order, ahead of
    anything the stream could lead to being acknowledged.
    """

    def __init__(self, store: Store, thread: StoreThread) -> None:
        self._memory = MemoryReplayCache()
        self._store = store
        self._thread = thread

    def load(self, entries: list[tuple[str, float]]) -> None:
        """Refill the memory from the store at start, so a restart reopens no window."""
        for key, seen_at in entries:
            self._memory.check_and_record(key, seen_at)

    def check_and_record(self, key: str, now: float, window: float = REPLAY_WINDOW) -> bool:
        if not self._memory.check_and_record(key, now, window):
            return False
        self._thread.submit(self._store.check_and_record, key, now, window)
        return True


class Node:
    """A TapsIM federation node. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        record_frames: bool = False,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.on_log = on_log
        self.server_id = config.server_id
        self.max_message_size = config.max_message_size
        self.started_at = time.time()
        self.frame_log = FrameLog() if record_frames else None
        self.log_lines: deque[str] = deque(maxlen=200)
        self.counters: dict[str, int] = {
            "events_stored": 0,
            "events_published": 0,
            "events_rejected": 0,
            "streams_accepted": 0,
            "streams_initiated": 0,
        }
        self.runners: set[StreamRunner] = set()
        self.faults: dict[str, set[str]] = {}  # stream key → FAULT_*
        self.peer_configs: list[PeerConfig] = list(config.peers)
        self.peer_ids: dict[str, str] = {}  # peer url → server id learnt from its caps
        self.urls: list[str] = []
        self.store_thread = StoreThread()
        self.identity: Identity
        self.store: Store
        self.keystore: KeyStore
        self.ingest_queue: IngestQueue
        self.repairs = None  # set by start(): node.repair.RepairManager
        self.peers = None  # set by start(): node.peers.PeerManager
        self._server = None
        self._stopping = False
        self._snapshots = None
        self._background: set[asyncio.Task] = set()
        self._renewal: asyncio.TimerHandle | None = None
        self._to_publish: dict[str, list[bytes]] = {}  # PublishEvent commands not yet authored

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from node.runtime.links import PeerManager
        from node.runtime.repair import RepairManager
        from node.transport.server import FederationApp
        from node.transport.serving import start_server
        from node.view.builder import SnapshotBuilder

        config = self.config
        data_dir = Path(config.data_dir)
        self.identity = load_identity(data_dir, config.server_id)
        self.store = await self.store_thread.open(str(data_dir / "events.sqlite3"))
        self.keystore = KeyStore(
            closed=config.closed,
            on_change=lambda doc, source: self.store_thread.submit(
                self.store.save_pin, doc.server_id, doc.to_dict(), source
            ),
            on_provisional_replaced=lambda old, new: self.store_thread.submit(
                self._verify_provisional_again, old, new
            ),
        )
        self.keystore.load(await self.store_thread.run(self.store.load_pins))
        known = await self.store_thread.run(self.store.load_peer_ids)
        configured = {p.url for p in self.peer_configs}
        for url, server_id in known.items():
            if url in configured:
                self.peer_ids[url] = server_id
                self.keystore.allow(server_id)
        self.replay = DurableReplayCache(self.store, self.store_thread)
        self.replay.load(
            await self.store_thread.run(self.store.replay_entries, time.time() - REPLAY_WINDOW)
        )
        self.hello_auth = HelloAuthenticator(self.server_id, self.keystore, self.replay)
        self.request_auth = RequestAuthenticator(
            self.server_id, self.keystore, self.replay, config.closed
        )
        ingest = Ingest(
            self.store,
            self.keystore.key_for,
            lambda author, _key_id: self.keystore.is_provisional(author),
        )
        self.ingest_queue = IngestQueue(
            ingest, self.store_thread, self.relay_peers, self._on_stored, KeyFetcher(self)
        )
        self.ingest_queue.start()
        self._server = await start_server(
            FederationApp(self),
            config.listen_host,
            config.listen_port,
            certfile=str(config.tls_cert) if config.tls_cert else None,
            keyfile=str(config.tls_key) if config.tls_key else None,
        )
        port = self._server.port
        self.urls = listen_urls(config.scheme, config.listen_host, port)
        self.identity.url = config.advertise_url or self.urls[0]
        self.keystore.repin(self.identity.key_document())
        self._snapshots = SnapshotBuilder(self)
        self._renewal = asyncio.get_running_loop().call_later(RENEW_CHECK, self._renew_key)
        self.repairs = RepairManager(self)
        self.peers = PeerManager(self)
        for peer in self.peer_configs:
            self.peers.add(peer)
        self.log(f"node {self.server_id} key {self.identity.key_id} on {', '.join(self.urls)}")

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._renewal is not None:
            self._renewal.cancel()
        if self.peers is not None:
            await self.peers.stop()
        if self.repairs is not None:
            await self.repairs.stop()
        for runner in list(self.runners):
            runner.close(ErrorCode.SHUTDOWN, "server stopping")
        if self.runners:
            await asyncio.sleep(0)  # let writers flush the SHUTDOWN frames
        if self._server is not None:
            await self._server.stop()
        for runner in list(self.runners):
            runner.abort("server stopped")
        for task in list(self._background):
            task.cancel()
        await self.ingest_queue.stop()
        await self.store_thread.run(self.store.close)
        self.store_thread.close()

    def _renew_key(self) -> None:
        """Once a day: re-sign our key document before it expires (a node may run for
        longer than the year a document is valid); peers see a renewal (§3.2)."""
        if self.identity.renew_if_due(time.time()):
            self.keystore.repin(self.identity.key_document())
            self.log(f"key document renewed, valid until {self.identity.valid_until}")
        if not self._stopping:
            self._renewal = asyncio.get_running_loop().call_later(RENEW_CHECK, self._renew_key)

    @property
    def url(self) -> str:
        return self.identity.url

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log_lines.append(f"{stamp} {message}")
        log.info(message)
        if self.on_log is not None:
            self.on_log(message)

    # ------------------------------------------------------------------ groups and peers

    def serves_group(self, group_id: str) -> bool:
        return any(group_matches(p, group_id) for p in self.config.supported_groups)

    def relay_peers(self, group_id: str) -> list[str]:
        """Configured peers of the group whose server id we know (the outbox owners)."""
        out = []
        for peer in self.peer_configs:
            sid = self.peer_ids.get(peer.url)
            if sid and (not peer.groups or group_id in peer.groups) and sid != self.server_id:
                out.append(sid)
        return out

    def peer_learned(self, url: str, server_id: str) -> None:
        """A configured peer's server id, from its caps: from now on (and after a restart,
        before it is reachable again) the events we store are queued in its outbox."""
        if self.peer_ids.get(url) != server_id:
            self.store_thread.submit(self.store.save_peer_id, url, server_id)
        self.peer_ids[url] = server_id
        self.keystore.allow(server_id)

    def _verify_provisional_again(self, old: Pin, new: Pin) -> None:
        """On the store thread (§3.2): a HELLO, confirmed or configured pin replaced a
        key document that a hop supplied. The events that document verified are checked
        against the new key: those that pass lose their mark, the others are removed and
        reported against the hop."""
        author, store = new.server_id, self.store
        passed: dict[str, list[str]] = {}
        failed: list[StoredEvent] = []
        for ev in store.provisional_events(author):
            message = event_string(ev.group_id, ev.event_id, ev.author, ev.seq, ev.content_hash)
            if ev.key_id == new.key_id and verify_signature(
                new.doc.public_key, message, ev.signature
            ):
                passed.setdefault(ev.group_id, []).append(ev.event_id)
            else:
                failed.append(ev)
        for group_id, ids in passed.items():
            store.confirm_events(group_id, ids)
        for ev in failed:
            store.delete_event(ev.group_id, ev.event_id)
        if failed:
            self.log(
                f"{len(failed)} events of {author} did not verify with its pinned key "
                f"{new.key_id} and were removed; their key document came from {old.via}"
            )
        elif passed:
            self.log(f"{sum(map(len, passed.values()))} events of {author} confirmed")

    # ------------------------------------------------------------------ sessions

    def new_session(self, group_id: str, role: Role, peer_id: str | None) -> StreamSession:
        config = self.config
        observer = (
            self.frame_log.observer(lambda: session.peer_id, group_id)
            if self.frame_log is not None
            else None
        )
        expect = peer_id if role is Role.INITIATOR else None

        def make_hello(to: str, now: float) -> Frame:
            return self.identity.make_hello(
                to=to,
                group_id=group_id,
                frame_id=str(ULID.from_timestamp(now)),
                timestamp=format_rfc3339(now),
                max_message_size=config.max_message_size,
                ping_interval_ms=int(config.ping_interval * 1000),
                capabilities=CAPABILITIES,
                supported_groups=config.supported_groups,
            )

        def authenticate(frame: Frame, now: float) -> object:
            return self.hello_auth(frame, now, expect)

        session = StreamSession(
            SessionConfig(
                server_id=self.server_id,
                group_id=group_id,
                role=role,
                peer_id=peer_id,
                max_message_size=config.max_message_size,
                ping_interval=config.ping_interval,
                initial_credit_events=config.initial_credit_events,
                initial_credit_bytes=config.initial_credit_bytes,
                frame_observer=observer,
            ),
            make_hello=make_hello,
            authenticate=authenticate,
            now=time.time(),
        )
        return session

    def open_stream(self, group_id: str) -> StreamRunner:
        """FederationHandler: an inbound stream that passed the header checks."""
        if self._stopping:
            raise ProtocolError(ErrorCode.SHUTDOWN, "server stopping")
        if len(self.runners) >= MAX_STREAMS:
            raise ProtocolError(ErrorCode.OVERLOADED, "too many streams")
        session = self.new_session(group_id, Role.ACCEPTOR, None)
        runner = StreamRunner(self, session, on_end=self._stream_ended)
        self.runners.add(runner)
        self.counters["streams_accepted"] += 1
        return runner

    def attach_initiator(self, group_id: str, peer_id: str, peer_url: str) -> StreamRunner:
        session = self.new_session(group_id, Role.INITIATOR, peer_id)
        runner = StreamRunner(self, session, peer_url=peer_url, on_end=self._stream_ended)
        self.runners.add(runner)
        self.counters["streams_initiated"] += 1
        return runner

    def stream_up(self, runner: StreamRunner) -> bool:
        """A handshake completed. Returns whether the stream drains this peer's outbox."""
        peer = runner.peer_id or "?"
        self.log(f"stream up: {peer} {runner.group_id} ({runner.role.value})")
        self._apply_faults(runner)
        if runner.role is Role.ACCEPTOR and self.peers is not None:
            self.peers.peer_connected(peer)
        if self.repairs is not None:
            self.repairs.after_handshake(runner)
        if peer not in self.relay_peers(runner.group_id):
            return False
        # One stream per peer and group drains the outbox; a second one only relays live.
        for other in self.runners:
            if (
                other is not runner
                and other.uses_outbox
                and not other.finished
                and other.peer_id == peer
                and other.group_id == runner.group_id
            ):
                return False
        return True

    def stream_event(self, runner: StreamRunner, event: object) -> None:
        """What a stream's session reports that the node only logs."""
        where = f"{runner.peer_id or '?'} {runner.group_id}"
        match event:
            case s.ErrorReceived(code=code, message=message):
                self.log(f"{code} from {where}: {message}")
            case s.ErrorSent(code=code, message=message):
                self.log(f"{code} to {where}: {message}")
            case s.Stalled(stalled=True):
                self.log(f"stream stalled: {where}")

    def _stream_ended(self, runner: StreamRunner) -> None:
        self.runners.discard(runner)
        self.log(
            f"stream down: {runner.peer_id or '?'} {runner.group_id} "
            f"({runner.role.value}): {runner.end_reason}"
        )
        if runner.uses_outbox:
            # Hand the outbox to another live stream with the same peer, if any.
            for other in self.runners:
                if (
                    other.peer_id == runner.peer_id
                    and other.group_id == runner.group_id
                    and not other.finished
                    and other.session.state == s.UP
                    and not other.uses_outbox
                ):
                    other.uses_outbox = True
                    other.notify_stored([], "")
                    break

    def _on_stored(self, group_id: str, events: list[Event], hop: str) -> None:
        self.counters["events_stored"] += len(events)
        for runner in list(self.runners):
            if runner.group_id == group_id:
                runner.notify_stored(events, hop)

    async def outbox_pending(
        self, peer_id: str, group_id: str, after: str, limit: int
    ) -> list[Event]:
        rows = await self.store_thread.run(
            self.store.outbox_pending, peer_id, group_id, after, limit
        )
        return [r.to_event() for r in rows]

    # ------------------------------------------------------------------ faults

    def set_fault(self, stream_key: str, fault: str, enabled: bool) -> None:
        active = self.faults.setdefault(stream_key, set())
        if enabled:
            active.add(fault)
        else:
            active.discard(fault)
        self.log(f"fault {fault} {'on' if enabled else 'off'} for {stream_key}")
        for runner in list(self.runners):
            if runner.key == stream_key:
                self._apply_faults(runner)
        if self.peers is not None:
            self.peers.faults_changed()

    def link_cut(self, peer_id: str | None, group_id: str) -> bool:
        return any(
            FAULT_CUT in faults and key.split("|")[:2] == [peer_id or "?", group_id]
            for key, faults in self.faults.items()
        )

    def _apply_faults(self, runner: StreamRunner) -> None:
        faults = self.faults.get(runner.key, set())
        if FAULT_CUT in faults and not runner.finished:
            runner.abort("link cut (fault injection)")
            return
        runner.pause_acks(FAULT_ACK_PAUSED in faults)
        if FAULT_CREDIT_ONE in faults:
            runner.session.set_credit_window(1, self.config.max_message_size)
        else:
            runner.session.set_credit_window(
                self.config.initial_credit_events, self.config.initial_credit_bytes
            )

    # ------------------------------------------------------------------ commands

    def execute(self, command: Command) -> None:
        """Carry out a dashboard command (on the node's loop)."""
        loop = asyncio.get_running_loop()
        match command:
            case PublishEvent(group_id=group, ciphertext=ciphertext):
                # Commands that arrive together (a burst) are authored in one transaction.
                if not self._to_publish:
                    loop.call_soon(self._publish_queued)
                self._to_publish.setdefault(group, []).append(ciphertext)
            case Repair(peer_id=peer, group_id=group):
                if self.repairs is not None:
                    self.repairs.request(peer, group)
            case AddPeer(url=url, groups=groups):
                self.add_peer(PeerConfig(url, tuple(groups)))
            case SetFault(stream_key=key, fault=fault, enabled=enabled):
                self.set_fault(key, fault, enabled)

    def _publish_queued(self) -> None:
        queued, self._to_publish = self._to_publish, {}
        loop = asyncio.get_running_loop()
        for group, ciphertexts in queued.items():
            task = loop.create_task(self.publish_many(group, ciphertexts))
            self._background.add(task)
            task.add_done_callback(self._publish_done)

    def _publish_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log(f"publishing a test event failed: {task.exception()}")

    def add_peer(self, peer: PeerConfig) -> None:
        if any(p.url == peer.url for p in self.peer_configs):
            self.log(f"peer {peer.url} is already configured")
            return
        self.peer_configs.append(peer)
        if self.peers is not None:
            self.peers.add(peer)
        self.log(f"peer added: {peer.url} {' '.join(peer.groups)}")

    async def publish(self, group_id: str, ciphertext: bytes) -> str:
        """Author, sign, store and relay one event carrying client-made ciphertext."""
        return (await self.publish_many(group_id, [ciphertext]))[0]

    async def publish_many(self, group_id: str, ciphertexts: list[bytes]) -> list[str]:
        """Author several events in one transaction (one fsync for a burst)."""
        if not is_group_id(group_id):
            raise ValueError(f"invalid group id {group_id!r}")
        relay = self.relay_peers(group_id)
        events, outcomes = await self.store_thread.run(
            self._author_events, group_id, ciphertexts, relay
        )
        stored = [e for e, o in zip(events, outcomes, strict=True) if type(o) is s.Stored]
        self.counters["events_published"] += len(stored)
        for o in outcomes:
            if type(o) is s.Rejected:
                self.counters["events_rejected"] += 1
                self.log(f"own event rejected: {o.code} {o.message}")
        if stored:
            self._on_stored(group_id, stored, self.server_id)
        return [e.event_id for e in events]

    def _author_events(
        self, group_id: str, ciphertexts: list[bytes], relay: list[str]
    ) -> tuple[list[Event], list]:
        """On the store thread: reserve each seq, sign and store, all in one transaction,
        so a crash leaves neither a reused seq nor a hole in our own sequence."""
        store = self.store
        with store.transaction():
            events = [
                self.identity.sign_event(
                    group_id, str(ULID()), store.next_own_seq(group_id, self.server_id), c
                )
                for c in ciphertexts
            ]
            outcomes = self.ingest_queue.ingest.process(
                group_id, [(e, self.server_id) for e in events], relay, now=time.time()
            )
        return events, outcomes

    # ------------------------------------------------------------------ FederationHandler

    def caps(self) -> dict:
        c = self.config
        return {
            "server_id": self.server_id,
            "versions": [PROTOCOL_VERSION],
            "capabilities": CAPABILITIES,
            "supported_groups": c.supported_groups,
            "max_message_size": c.max_message_size,
            "limits": {
                "max_concurrent_streams": 100,
                "initial_credit": {
                    "events": c.initial_credit_events,
                    "bytes": c.initial_credit_bytes,
                },
                "ping_interval_ms": int(c.ping_interval * 1000),
            },
        }

    def key_current(self) -> dict:
        return self.identity.key_document().to_dict()

    def key_document(self, server_id: str) -> dict | None:
        if server_id == self.server_id:
            return self.key_current()
        return self.keystore.document(server_id)

    def authenticate_request(
        self, header: str | None, method: str, path_and_query: str, body: bytes
    ) -> str | None:
        return self.request_auth.check(header, method, path_and_query, body, time.time())

    async def send(self, group_id: str, line: bytes) -> tuple[int, list[bytes]]:
        frame = parse_frame(line)
        if frame.type != "EVENT":
            raise ProtocolError(ErrorCode.BAD_FRAME, f"send takes one EVENT, not {frame.type}")
        if frame.sequence != 1:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a one-shot EVENT has sequence 1", frame.id)
        if frame.group_id != group_id:
            raise ProtocolError(ErrorCode.BAD_FRAME, "group_id differs from the URL", frame.id)
        if self.frame_log is not None:
            self.frame_log.record("in", frame.origin, group_id, "EVENT", frame.size, frame.payload)
        outcome = await self.ingest_queue.process(group_id, frame.payload, frame.origin)
        if type(outcome) is s.Rejected:
            self.counters["events_rejected"] += 1
            raise ProtocolError(outcome.code, outcome.message, frame.id)
        stored = type(outcome) is s.Stored
        ids = [outcome.event_id] if stored else []
        lines = [self._reply_frame("ACK", 1, Ack(1, ids), group_id)]
        if stored and outcome.equivocation:
            err = Error(ErrorCode.EQUIVOCATION, outcome.message, frame.id, False)
            lines.append(self._reply_frame("ERROR", 2, err, group_id))
        return 200, lines

    def _reply_frame(self, ftype: str, sequence: int, payload: object, group_id: str) -> bytes:
        frame = Frame(ftype, str(ULID()), self.server_id, sequence, payload)
        return encode_frame(frame)

    async def digest(self, group_id: str, query: dict[str, str]) -> dict:
        q = parse_digest_query(query)
        return await self.store_thread.run(
            self.store.digest, group_id, self.server_id, q.lo, q.hi, q.buckets
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
        lines = await self.store_thread.run(self._checkpoint_lines, group_id, request)
        for line_out in lines:
            yield line_out

    def _checkpoint_lines(self, group_id: str, request: CheckpointRequest) -> list[bytes]:
        """On the store thread: the EVENT lines and the closing CHECKPOINT of one page."""
        store = self.store
        lines: dict[str, bytes] = {}

        def line_size(event_id: str) -> int:
            held = store.get_event(group_id, event_id)
            event = held.to_event() if held is not None else None
            frame = Frame("EVENT", str(ULID()), self.server_id, len(lines) + 1, event, group_id)
            line = lines[event_id] = encode_frame(frame)
            return len(line) - 1

        ids, payload = respond(request, store, group_id, line_size)
        out = [lines[i] for i in ids]
        final = Frame(
            "CHECKPOINT", str(ULID()), self.server_id, len(out) + 1, Checkpoint(payload), group_id
        )
        out.append(encode_frame(final))
        return out

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> NodeSnapshot:
        """A by-value picture of the node (call it on the node's loop)."""
        assert self._snapshots is not None
        return self._snapshots.build()
