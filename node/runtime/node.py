"""The running node: composes the layers' parts and owns their lifecycle, nothing more.

Each part receives only the ports it uses (see the ``*Ports`` classes and constructor
arguments); the node keeps the references, starts the parts in dependency order, stops
them in reverse, and routes the dashboard's commands to the part that carries them out.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import Event
from node.protocol.ids import is_group_id
from node.protocol.keepalive import DEAD_AFTER_INTERVALS
from node.protocol.keystore import (
    REPLAY_WINDOW,
    HelloAuthenticator,
    KeyStore,
    Pin,
    RequestAuthenticator,
)
from node.protocol.session import Role
from node.runtime.activity import Counters, NodeLog
from node.runtime.clients import ClientPool
from node.runtime.config import ConfigError, NodeConfig, PeerConfig, listen_urls, parse_peer_url
from node.runtime.control_path import socket_path_for
from node.runtime.control_server import ControlPorts, ControlServer
from node.runtime.data_dir_lock import DataDirLock
from node.runtime.directory import PeerDirectory
from node.runtime.faults import FaultBoard
from node.runtime.federation import FederationApi, FederationPorts
from node.runtime.keyfetch import KeyFetcher
from node.runtime.links import LinkPorts, PeerManager, server_id_at
from node.runtime.metrics import MetricsPorts
from node.runtime.outbox import Outbox
from node.runtime.publisher import Publisher
from node.runtime.recorder import Recorder
from node.runtime.repair import RepairPorts
from node.runtime.repairs import RepairManager
from node.runtime.replay_cache import DurableReplayCache
from node.runtime.request_signer import RequestSigner
from node.runtime.seed_file import load_identity
from node.runtime.sessions import SessionFactory
from node.runtime.store_watch import StoreWatch
from node.runtime.stream_runner import StreamRunner
from node.runtime.streams import StreamRegistry
from node.storage.ingest import Ingest
from node.storage.ingest_queue import IngestQueue
from node.storage.ownership import Ownership
from node.storage.provisional import recheck_provisional
from node.storage.store import Store
from node.storage.store_thread import StoreThread
from node.transport.client import TransportError
from node.transport.server import FederationApp
from node.transport.serving import RunningServer, start_server
from node.view.builder import SnapshotBuilder, SnapshotSources
from node.view.commands import (
    AddPeer,
    ClearFaults,
    Command,
    ForgetPeer,
    PublishEvent,
    RefreshDigest,
    Repair,
    SetFault,
    StartRecording,
    StopRecording,
)
from node.view.control import NodeFacts
from node.view.framelog import FrameLog
from node.view.snapshot import Fault, LinkFault, NodeSnapshot, PeerConfigSnapshot
from node.view.trace import Trace, TraceLog

RENEW_CHECK = 86400.0  # seconds between checks that our key document is not near expiry
MAX_STREAMS = 1000  # inbound streams over all connections, beyond which we answer 503


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
        self.server_id = config.server_id
        self.started_at = time.time()
        self.frame_log = FrameLog() if record_frames else None
        self.traces = TraceLog(config.server_id) if record_frames else None
        self.log = NodeLog(on_log)
        self.counters = Counters()
        self.store_thread = StoreThread()
        self.urls: list[str] = []
        self.faults = FaultBoard(
            window_events=config.initial_credit_events,
            window_bytes=config.initial_credit_bytes,
            max_message_size=config.max_message_size,
            log=self.log,
        )
        self.clients = ClientPool(
            config.client_ssl_context(), dead_after=DEAD_AFTER_INTERVALS * config.ping_interval
        )
        self.store: Store
        self.ownership = Ownership()
        self.keystore: KeyStore
        self.directory: PeerDirectory
        self.streams: StreamRegistry
        self.ingest_queue: IngestQueue
        self.publisher: Publisher
        self.repairs: RepairManager
        self.peers: PeerManager
        self._sessions: SessionFactory
        self._outbox: Outbox
        self._snapshots: SnapshotBuilder
        self.recorder: Recorder | None = None
        self._server: RunningServer | None = None
        self._started = False
        self._stopping = False
        self._renewal: asyncio.TimerHandle | None = None
        self._commands: set[asyncio.Task] = set()  # dashboard commands that await
        self.lock = DataDirLock(Path(config.data_dir))
        self.control = ControlServer(
            ControlPorts(
                facts=self._facts, snapshot=self.snapshot, execute=self.execute, trace=self.trace
            )
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config, thread, log = self.config, self.store_thread, self.log
        data_dir = Path(config.data_dir)
        self.lock.acquire()  # before anything in the data dir is opened
        self.identity = identity = load_identity(data_dir, config.server_id)
        self.store = store = await thread.open(
            config.store_location, worker=config.worker if config.workers > 1 else None
        )
        self.ownership = await self._ownership()
        self.keystore = keystore = KeyStore(
            closed=config.closed,
            on_change=lambda doc, source: thread.submit(
                store.save_pin, doc.server_id, doc.to_dict(), source
            ),
            on_provisional_replaced=lambda old, new: thread.submit(self._recheck, old, new),
        )
        keystore.load(await thread.run(store.load_pins))
        self.directory = directory = PeerDirectory(
            self.server_id,
            list(config.peers),
            remember=lambda url, sid: thread.submit(store.save_peer_id, url, sid),
            allow=keystore.allow,
            advertised_url=lambda sid: (keystore.document(sid) or {}).get("url") or "",
        )
        directory.load(await thread.run(store.load_peer_ids))
        replay = DurableReplayCache(store, thread)
        replay.load(await thread.run(store.replay_entries, time.time() - REPLAY_WINDOW))
        self._sessions = SessionFactory(
            config,
            identity,
            HelloAuthenticator(self.server_id, keystore, replay),
            self.frame_log,
            self.traces,
        )
        ingest = Ingest(
            store, keystore.key_for, lambda author, _key_id: keystore.is_provisional(author)
        )
        keys = KeyFetcher(self.server_id, keystore, directory, self.clients, log)
        self.ingest_queue = IngestQueue(ingest, thread, directory.relay_peers, self._stored, keys)
        self.ingest_queue.start()
        self.streams = StreamRegistry(
            relay_peers=directory.relay_peers, faults=self.faults, log=log
        )
        self._outbox = Outbox(store, thread, log)
        self._store_watch = StoreWatch(
            store,
            thread,
            log=log,
            ingest_retrying=lambda: self.ingest_queue.retrying,
            on_writable=self._outbox.retry,
        )
        self.publisher = Publisher(
            identity=identity,
            store=store,
            thread=thread,
            ingest=ingest,
            relay_peers=directory.relay_peers,
            on_stored=self._stored,
            counters=self.counters,
            log=log,
        )
        self.repairs = RepairManager(
            RepairPorts(
                server_id=self.server_id,
                store=store,
                thread=thread,
                ingest=self.ingest_queue.process,
                outbox=self._outbox,
                streams=self.streams,
                link_cut=self.faults.link_cut,
                signer=RequestSigner(identity),
                log=log,
            ),
            streams=self.streams,
            clients=self.clients,
            directory=directory,
            link_cut=self.faults.link_cut,
            owns=lambda group: self.ownership.owns(group),
        )
        self.peers = PeerManager(
            LinkPorts(
                server_id=self.server_id,
                default_groups=config.groups,
                ping_interval=config.ping_interval,
                owns=lambda group: self.ownership.owns(group),
                clients=self.clients,
                directory=directory,
                link_cut=self.faults.link_cut,
                faults_follow=self.faults.move,
                open_initiator=self._initiate,
                log=log,
            )
        )
        self.streams.on_handshake = self._handshake
        self.faults.on_change = self._fault_changed
        api = FederationApi(
            FederationPorts(
                config=config,
                identity=identity,
                keystore=keystore,
                request_auth=RequestAuthenticator(self.server_id, keystore, replay, config.closed),
                store=store,
                thread=thread,
                ingest=self.ingest_queue.process,
                accept_stream=self._accept,
                link_cut=self.faults.link_cut,
                counters=self.counters,
                frame_log=self.frame_log,
            )
        )
        self._server = await start_server(
            FederationApp(api),
            config.listen_host,
            config.listen_port,
            certfile=str(config.tls_cert) if config.tls_cert else None,
            keyfile=str(config.tls_key) if config.tls_key else None,
        )
        self.urls = listen_urls(config.scheme, config.listen_host, self._server.port)
        identity.url = config.advertise_url or self.urls[0]
        keystore.repin(identity.key_document())
        self._snapshots = SnapshotBuilder(self._snapshot_sources())
        self.recorder = Recorder(
            self.server_id,
            snapshot=self.snapshot,
            log=log,
            max_bytes=config.record_max_bytes,
        )
        if config.record_dir is not None:
            why_not = self.recorder.start(Path(config.record_dir), self.streams)
            if why_not is not None:
                raise ConfigError(f"--record: {why_not}")
        control_path = socket_path_for(data_dir)
        await self.control.start(control_path)
        self.lock.update(url=self.urls[0], urls=self.urls, control=str(control_path))
        self._renewal = asyncio.get_running_loop().call_later(RENEW_CHECK, self._renew_key)
        self._started = True
        for peer in directory.configs:
            self.peers.add(peer)
        log(f"node {self.server_id} key {identity.key_id} on {', '.join(self.urls)}")

    async def _ownership(self) -> Ownership:
        """Which groups this worker initiates streams for (docs/scaling.md). One worker
        owns every group; several record their count and claim an owner for each group
        they serve in the shared store, so each group has one, written down."""
        config, store, thread = self.config, self.store, self.store_thread
        if config.workers == 1:
            return Ownership()
        recorded = await thread.run(store.worker_count, config.workers)
        if recorded != config.workers:
            raise ConfigError(
                f"--worker {config.worker}/{config.workers}: the store records "
                f"{recorded} workers; start each worker as K/{recorded}, or change the count "
                "with 'tapsim workers resize'"
            )
        groups = {*config.groups, *(g for p in config.peers for g in p.groups)}
        rows = await thread.run(store.claim_owners, sorted(groups), config.workers)
        ownership = Ownership(config.worker, config.workers, rows)
        mine = ownership.mine(sorted(groups))
        self.log(f"worker {ownership.label}: owns {len(mine)} of {len(groups)} groups")
        return ownership

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._renewal is not None:
            self._renewal.cancel()
        await self.control.stop()
        if self._started:
            await self.peers.stop()
            await self.repairs.stop()
            self.streams.close_all(ErrorCode.SHUTDOWN, "server stopping")
            if len(self.streams):
                await asyncio.sleep(0)  # let writers flush the SHUTDOWN frames
        if self._server is not None:
            await self._server.stop()
        if self._started:
            self.streams.abort_all("server stopped")
            if self.recorder is not None:
                self.recorder.stop()
            self.publisher.cancel()
            self._store_watch.stop()
            await self.ingest_queue.stop()
        await self.clients.close()
        if hasattr(self, "store"):
            await self.store_thread.run(self.store.close)
        self.store_thread.close()
        self.lock.release()

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

    # ------------------------------------------------------------------ streams

    def _accept(self, group_id: str) -> StreamRunner:
        """An inbound stream that passed the transport's header checks."""
        if self._stopping:
            raise ProtocolError(ErrorCode.SHUTDOWN, "server stopping")
        if len(self.streams) >= MAX_STREAMS:
            raise ProtocolError(ErrorCode.OVERLOADED, "too many streams")
        self.counters.streams_accepted += 1
        return self._runner(group_id, Role.ACCEPTOR, None, "")

    def _initiate(self, group_id: str, peer_id: str, peer_url: str) -> StreamRunner:
        self.counters.streams_initiated += 1
        return self._runner(group_id, Role.INITIATOR, peer_id, peer_url)

    def _runner(self, group_id: str, role: Role, peer_id: str | None, url: str) -> StreamRunner:
        runner = StreamRunner(
            self._sessions.new(group_id, role, peer_id),
            ingest=self.ingest_queue.submit,
            outbox=self._outbox,
            hooks=self.streams,
            log=self.log,
            peer_url=url,
        )
        self.streams.add(runner)
        if self.recorder is not None and self.recorder.recording:
            self.recorder.attach(runner)
        return runner

    def _handshake(self, runner: StreamRunner) -> None:
        if runner.role is Role.ACCEPTOR and runner.peer_id:
            self.peers.peer_connected(runner.peer_id)
        self.repairs.after_handshake(runner)

    def _stored(self, group_id: str, events: list[Event], hop: str) -> None:
        self.counters.events_stored += len(events)
        if self.traces is not None:
            self.traces.stored(group_id, events, hop, time.time())
        self.streams.notify_stored(group_id, events, hop)

    def trace(self, event_id: str) -> Trace:
        """This node's view of one recent event's way (none when frames are not recorded)."""
        if self.traces is None:
            return Trace(event_id, nodes=(self.server_id,))
        return self.traces.trace(event_id)

    def _fault_changed(self, peer_id: str, group_id: str) -> None:
        self.streams.apply_faults(peer_id, group_id)
        self.peers.wake_all()

    def _recheck(self, old: Pin, new: Pin) -> None:
        """On the store thread: a stronger pin replaced a hop-supplied key document."""
        result = recheck_provisional(self.store, new)
        author = new.server_id
        if result.removed:
            self.log(
                f"{result.removed} events of {author} did not verify with its pinned key "
                f"{new.key_id} and were removed; their key document came from {old.via}"
            )
        elif result.confirmed:
            self.log(f"{result.confirmed} events of {author} confirmed")

    # ------------------------------------------------------------------ commands

    def execute(self, command: Command) -> str | None:
        """Carry out a dashboard command (on the node's loop); None when done, else why
        not, in words (the control socket answers each command with it)."""
        match command:
            case PublishEvent(group_id=group, ciphertext=ciphertext):
                if not is_group_id(group):
                    return f"bad group id {group!r}"
                if not self.ownership.owns(group):
                    return (
                        f"{group} belongs to worker {self.ownership.owner(group)}, not this "
                        f"one ({self.ownership.label}): publish there"
                    )
                self.publisher.queue(group, ciphertext)
            case Repair(peer_id=peer, group_id=group):
                self.repairs.request(peer, group)
            case AddPeer(url=url, groups=groups):
                try:
                    peer = PeerConfig(parse_peer_url(url), tuple(groups))
                except ConfigError as exc:
                    self.log(f"peer not added: {exc}")
                    return str(exc)
                self._in_background(self.add_peer_checked(peer))
            case ForgetPeer(url=url, drop_outbox_and_pin=drop):
                self._in_background(self.forget_peer(url, drop=drop))
            case SetFault(peer_id=peer, group_id=group, fault=fault, enabled=enabled):
                try:
                    self.faults.set(peer, group, Fault(fault), enabled)
                except ValueError as exc:
                    return f"bad fault {fault!r} for {peer} {group}: {exc}"
            case ClearFaults():
                self.faults.clear_all()
            case RefreshDigest(peer_id=peer, group_id=group):
                self.repairs.refresh_digest(peer, group)
            case StartRecording(directory=directory):
                return self.start_recording(Path(directory) if directory else None)
            case StopRecording():
                if self.recorder is None or self.recorder.stop() is None:
                    return "not recording"
        return None

    def start_recording(self, directory: Path | None = None) -> str | None:
        """Record the wire into ``directory`` (default: the --record dir, else
        ``recordings`` in the data dir); None when recording, else why not."""
        if self.recorder is None:
            return "the node is not running"
        if directory is None:
            directory = Path(self.config.record_dir or Path(self.config.data_dir) / "recordings")
        return self.recorder.start(directory, self.streams)

    def _facts(self) -> NodeFacts:
        return NodeFacts(self.server_id, os.getpid(), tuple(self.urls), self.started_at)

    def _in_background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def add_peer_checked(self, peer: PeerConfig) -> bool:
        """Add a peer unless it is one already: the same URL, or another URL at which a
        server we already federate with answers (its caps name a known server id). An
        unreachable URL is added (and retried) after saying so."""
        if self.directory.configured(peer.url):
            self.log(f"peer not added: {peer.url} is already a peer")
            return False
        try:
            server_id = await server_id_at(self.clients.for_url(peer.url), peer.url)
        except TransportError as exc:
            self.log(f"{peer.url} did not answer ({exc.args[-1]}); adding it anyway")
            server_id = None
        if server_id == self.server_id:
            self.log(f"peer not added: {peer.url} is this node itself")
            return False
        if server_id is not None:
            known = self.directory.url_of_id(server_id) or next(
                (r.peer_url or "an inbound stream" for r in self.streams
                 if r.peer_id == server_id), None,
            )  # fmt: skip
            if known is not None:
                self.log(f"peer not added: {peer.url} is {server_id}, already a peer ({known})")
                return False
        if self.directory.configured(peer.url):  # added meanwhile
            return False
        self.add_peer(peer)
        return True

    async def forget_peer(self, url: str, *, drop: bool = False) -> bool:
        """Stop federating with a configured peer; with ``drop``, delete its outbox and
        its pin too. A peer of the config file comes back at the next start."""
        if not self.directory.configured(url):
            self.log(f"{url} is not a peer")
            return False
        groups = next(p.groups for p in self.directory.configs if p.url == url)
        server_id = self.directory.remove(url)
        await self.peers.remove(url)
        what = f"peer forgotten: {url}" + (f" ({server_id})" if server_id else "")
        if drop and server_id is not None:
            groups = groups or await self.store_thread.run(self.store.groups)
            dropped = await self._outbox.drop(server_id, groups)
            if self.keystore.forget(server_id):
                self.store_thread.submit(self.store.delete_pin, server_id)
            what += f"; its outbox ({dropped} events) and pin dropped"
        elif server_id is not None:
            what += "; its outbox and pin kept"
        self.log(what)
        return True

    def add_peer(self, peer: PeerConfig) -> None:
        if self.directory.configured(peer.url):
            self.log(f"peer {peer.url} is already configured")
            return
        self.directory.add(peer)
        self.peers.add(peer)
        self.log(f"peer added: {peer.url} {' '.join(peer.groups)}")

    async def publish(self, group_id: str, ciphertext: bytes) -> str:
        """Author, sign, store and relay one event carrying client-made ciphertext."""
        return (await self.publisher.publish_many(group_id, [ciphertext]))[0]

    async def publish_many(self, group_id: str, ciphertexts: list[bytes]) -> list[str]:
        return await self.publisher.publish_many(group_id, ciphertexts)

    # ------------------------------------------------------------------ snapshots

    def _snapshot_sources(self) -> SnapshotSources:
        directory = self.directory
        return SnapshotSources(
            identity=self.identity,
            started_at=self.started_at,
            groups=self.config.groups,
            urls=lambda: self.urls,
            streams=lambda: self.streams,
            links=self.peers.statuses,
            faults=self.faults.of,
            active_faults=lambda: tuple(LinkFault(*f) for f in self.faults.active()),
            gone=self.streams.gone,
            peer_key=self._peer_key,
            peer_digests=self.repairs.peer_digests,
            repairs=self.repairs,
            store=lambda: self.store_thread.summary,
            peers=lambda: tuple(
                PeerConfigSnapshot(p.url, directory.ids.get(p.url), tuple(p.groups))
                for p in directory.configs
            ),
            counters=lambda: dict(
                self.counters.as_dict(), ingest_backlog=self.ingest_queue.backlog
            ),
            log_lines=lambda: self.log.lines,
            frame_log=self.frame_log,
            recording=lambda: self.recorder.path if self.recorder is not None else "",
        )

    def _peer_key(self, peer_id: str) -> tuple[str, str] | None:
        """The peer's pinned key id and pairing code, for the read-aloud check."""
        pin = self.keystore.pin(peer_id)
        return None if pin is None else (pin.key_id, pin.doc.pairing_code)

    def snapshot(self) -> NodeSnapshot:
        """A by-value picture of the node (call it on the node's loop)."""
        return self._snapshots.build()

    def metrics_ports(self) -> MetricsPorts:
        """What ``node.runtime.metrics`` reads (on the node's loop)."""

        def ack_lags() -> list[float | None]:
            now = time.time()
            return [r.session.ack_lag(now) for r in self.streams if r.session.state == "up"]

        return MetricsPorts(
            snapshot=self.snapshot, repairs=self.repairs.snapshots, ack_lags=ack_lags
        )
