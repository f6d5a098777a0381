"""When anti-entropy runs (PROTOCOL §5.4), and what the dashboard sees of it.

Repairs start after each handshake we initiate (the acceptor a little later), every
10 minutes ±30 % while connected, and on demand; at most one runs per (peer, group).
One run is a :class:`~node.runtime.repair.Repair`.

Between repairs the dashboard may ask for the peer's whole-group digest alone
(:meth:`RepairManager.refresh_digest`: one small GET, one bucket) to compare with ours
taken right after it; once asked, the same is done after every repair of that link, so
what the dashboard compares is never older than the last repair.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import replace

import orjson

from node.protocol.errors import ProtocolError
from node.protocol.session import Role
from node.runtime.clients import ClientPool
from node.runtime.directory import PeerDirectory
from node.runtime.repair import Repair, RepairPorts
from node.runtime.stream_runner import StreamRunner
from node.runtime.streams import StreamRegistry
from node.storage.store import Store
from node.sync import planner as ae
from node.sync.digest import AuthorSummary, DigestQuery, parse_authors, parse_digest
from node.transport.client import TransportError
from node.transport.routes import group_path
from node.view.builder import peer_digest_snapshot, repair_snapshot
from node.view.snapshot import (
    DIGEST_FAILED,
    DIGEST_REPAIRING,
    DIGEST_UNKNOWN,
    PeerDigestSnapshot,
    RepairSnapshot,
)

PERIOD = 600.0
PERIOD_JITTER = 0.3
ACCEPTOR_DELAY = 3.0
DIGEST_TIMEOUT = 10.0  # one whole-group digest for the dashboard


class RepairManager:
    """At most one repair per (peer, group): after handshakes, periodically, on demand."""

    def __init__(
        self,
        ports: RepairPorts,
        *,
        streams: StreamRegistry,
        clients: ClientPool,
        directory: PeerDirectory,
        link_cut: Callable[[str | None, str], bool],
        owns: Callable[[str], bool] = lambda _group: True,
    ) -> None:
        self._ports = ports
        self._owns = owns  # a worker repairs only the groups it owns (docs/scaling.md)
        self._streams = streams
        self._clients = clients
        self._directory = directory
        self._link_cut = link_cut
        self._last: dict[tuple[str, str], RepairSnapshot] = {}
        self._last_stats: dict[tuple[str, str], ae.RepairStats] = {}
        # Keyword arguments of every RepairPlanner (tuning: buckets, checkpoint_threshold,
        # descent_levels…); benchmarks compare settings through it.
        self.planner_options: dict[str, object] = {}
        self._running: dict[tuple[str, str], Repair] = {}
        self._tasks: set[asyncio.Task] = set()
        self._periodic: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._digests: dict[tuple[str, str], PeerDigestSnapshot] = {}
        self._fetching: set[tuple[str, str]] = set()
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
            (peer, group)
            for peer, group in self._streams.connected_pairs()
            if (peer_id is None or peer == peer_id) and (group_id is None or group == group_id)
        }
        if peer_id and group_id:
            pairs.add((peer_id, group_id))
        for peer, group in sorted(pairs):
            self.start(peer, group)

    def start(self, peer_id: str, group_id: str) -> bool:
        key = (peer_id, group_id)
        if self._stopping or key in self._running or self._link_cut(peer_id, group_id):
            return False
        if not self._owns(group_id):
            return False
        url = self._directory.url_of(peer_id)
        if not url:
            self._ports.log(f"repair {peer_id} {group_id}: no URL known for that peer")
            return False
        repair = Repair(
            self._ports, self._clients.for_url(url), peer_id, group_id, self.planner_options
        )
        self._running[key] = repair
        task = asyncio.get_running_loop().create_task(self._run(key, repair))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

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
                snap = replace(snap, state=DIGEST_FAILED, error=repair.error)
            self._last[key] = snap
            st = self._last_stats[key] = repair.planner.stats
            self._ports.log(
                f"repair {peer} {group}: {snap.state}"
                + (f" ({snap.error})" if snap.error else "")
                + f", {st.round_trips} round trips in {st.rounds} rounds, "
                f"{st.events_fetched} fetched, "
                f"{st.events_sent} sent, {st.bytes} B"
            )
            self._schedule_next(key)
            if not self._stopping and key in self._digests:
                self.refresh_digest(peer, group)  # the dashboard watches this link

    def _schedule_next(self, key: tuple[str, str]) -> None:
        handle = self._periodic.pop(key, None)
        if handle is not None:
            handle.cancel()
        peer, group = key
        if not self._streams.live(peer, group):
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

    # ------------------------------------------------------------------ digest refresh

    def refresh_digest(self, peer_id: str, group_id: str) -> bool:
        """Fetch the peer's whole-group digest now (at most one fetch per link at a time);
        returns whether a fetch started. A failure is kept, in words, in its place."""
        key = (peer_id, group_id)
        if self._stopping or key in self._fetching:
            return False
        if self._link_cut(peer_id, group_id):
            self._digest_failed(key, "link cut (fault injection)")
            return False
        url = self._directory.url_of(peer_id)
        if not url:
            self._digest_failed(key, "no URL known for that peer")
            return False
        self._fetching.add(key)
        task = asyncio.get_running_loop().create_task(self._fetch_digest(key, url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _fetch_digest(self, key: tuple[str, str], url: str) -> None:
        peer, group = key
        path = group_path(group, "digest") + "?" + DigestQuery("", "", 1).to_query_string()
        headers = [("authorization", self._ports.signer.header(peer, "GET", path, b""))]
        try:
            async with asyncio.timeout(DIGEST_TIMEOUT):
                response = await self._clients.for_url(url).request("GET", path, headers=headers)
            if response.status != 200:
                raise TransportError(url, f"digest answered {response.status}")
            digest = parse_digest(
                orjson.loads(response.body),
                group_id=group,
                lo="",
                hi="",
                buckets=1,
                server_id=peer,
            )
            local = await self._ports.thread.run(_whole_group, self._ports.store, group)
            self._digests[key] = peer_digest_snapshot(
                peer,
                group,
                time.time(),
                (digest.count, digest.fingerprint, digest.authors or {}),
                local,
            )
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._digest_failed(key, f"no answer in {DIGEST_TIMEOUT:g} s")
        except ProtocolError as exc:
            self._digest_failed(key, exc.message)
        except (TransportError, OSError, ValueError) as exc:
            self._digest_failed(key, str(exc))
        finally:
            self._fetching.discard(key)

    def _digest_failed(self, key: tuple[str, str], reason: str) -> None:
        """Keep what we last knew of the peer's digest, marked as not current."""
        before = self._digests.get(key)
        if before is None:
            before = PeerDigestSnapshot(key[0], key[1], time.time())
        self._digests[key] = replace(before, error=reason)

    def peer_digests(self) -> tuple[PeerDigestSnapshot, ...]:
        return tuple(self._digests[k] for k in sorted(self._digests))

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


def _whole_group(store: Store, group_id: str) -> tuple[int, str, dict[str, AuthorSummary]]:
    """Our whole-group digest (on the store thread)."""
    count, fingerprint = store.summary(group_id)
    try:
        authors = parse_authors(store.authors(group_id))
    except ProtocolError:  # our own store is the authority; show what we can
        authors = {}
    return count, fingerprint, authors
