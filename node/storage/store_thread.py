"""The one thread that owns the SQLite store, and the group-commit ingest queue on it.

SQLite work (fsync included) and Ed25519 verification (pynacl releases the GIL)
happen off the event loop, so the loop keeps reading, writing and answering PINGs
while a batch commits. Everything that touches the store goes through this single
thread, which keeps the store's in-memory indexes and its transactions in lock step
without locks.

Group commit falls out of the queue: while one batch is being verified and committed,
new EVENTs from every stream pile up, and the next batch takes them all at once.

Verification has its own small pool (one thread per core, at most four): a batch is cut
into chunks whose cheap checks and Ed25519 verification run there in parallel, and the
next batch is verified while the previous one commits. That is what lets one stream use
both cores of a small machine; the store itself stays on its one thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from node.protocol.errors import ErrorCode
from node.protocol.frames import Event
from node.storage.ingest import REJECTED, STORED, Batch, Ingest, Outcome, check_signatures

log = logging.getLogger("tapsim.ingest")
T = TypeVar("T")


class KeySource(Protocol):
    """Finds author keys the node lacks (node.keyfetch.KeyFetcher)."""

    def missing(self, author: str, hop: str) -> bool: ...

    async def fetch(self, author: str, hop: str) -> bool: ...


MAX_BATCH = 2048
MIN_CHUNK = 32  # events per verification job: below this, a thread hop costs more than it saves
VERIFY_WORKERS = max(1, min(4, os.cpu_count() or 1))

OutcomeCallback = Callable[[Outcome], None]


class StoreThread:
    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tapsim-store"
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``fn`` later on the store thread, in submission order, without waiting."""
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class IngestQueue:
    """EVENTs from every stream (and from ``send``/checkpoint/publish), batched per commit.

    ``relay_peers(group)`` names the peers whose outbox a stored event joins (the
    ingest leaves out the event's hop); ``on_stored(group, events, hop)`` is called on
    the loop after the commit so live streams can send them on.
    """

    def __init__(
        self,
        ingest: Ingest,
        store_thread: StoreThread,
        relay_peers: Callable[[str], list[str]],
        on_stored: Callable[[str, list[Event], str], None],
        keys: KeySource | None = None,
    ) -> None:
        self.ingest = ingest
        self._keys = keys
        self._thread = store_thread
        self._relay_peers = relay_peers
        self._on_stored = on_stored
        self._pending: list[tuple[str, Event, str, OutcomeCallback]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._key_waits: set[asyncio.Task] = set()
        self._in_flight = 0  # taken from _pending, not yet committed
        self._workers = VERIFY_WORKERS
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=VERIFY_WORKERS, thread_name_prefix="tapsim-verify"
        )
        self.batches = 0
        self.events = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest")

    async def stop(self) -> None:
        for task in list(self._key_waits):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def backlog(self) -> int:
        """Events queued or being verified/committed."""
        return len(self._pending) + self._in_flight

    def submit(self, group_id: str, event: Event, hop: str, callback: OutcomeCallback) -> None:
        """Queue one event; ``callback(outcome)`` runs on the loop once it is durable.

        An event whose author's key we lack waits while the key is fetched through
        its hop; the ingest then verifies it, or rejects it with UNKNOWN_KEY.
        """
        keys = self._keys
        if keys is not None and keys.missing(event.author, hop):
            task = asyncio.ensure_future(self._after_key(group_id, event, hop, callback))
            self._key_waits.add(task)
            task.add_done_callback(self._key_waits.discard)
            return
        self._pending.append((group_id, event, hop, callback))
        self._wake.set()

    async def _after_key(
        self, group_id: str, event: Event, hop: str, callback: OutcomeCallback
    ) -> None:
        assert self._keys is not None
        try:
            await self._keys.fetch(event.author, hop)
        except Exception:  # whatever happened, the ingest decides (UNKNOWN_KEY at worst)
            log.exception("fetching the key of %s through %s failed", event.author, hop)
        finally:
            self._pending.append((group_id, event, hop, callback))
            self._wake.set()

    async def process(self, group_id: str, event: Event, hop: str) -> Outcome:
        """Queue one event and wait for its durable outcome."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.submit(group_id, event, hop, future.set_result)
        return await future

    async def _run(self) -> None:
        """Take batches; verify each on the pool while the previous one commits.

        Two stages, each one batch deep: the signatures of batch k+1 are checked on the
        verification pool (both cores: pynacl releases the GIL) while batch k commits on
        the store thread (its fsync releases the GIL too). Commits and their callbacks stay
        in arrival order, and nothing is acknowledged before its commit has returned.
        """
        committing: asyncio.Task | None = None
        try:
            while True:
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                self._in_flight += len(batch)
                by_group: dict[str, list[tuple[Event, str]]] = {}
                for group_id, event, hop, _ in batch:
                    by_group.setdefault(group_id, []).append((event, hop))
                try:
                    prepared = await self._verify(by_group)
                except Exception as exc:  # a bug in the checks: reject, never acknowledge
                    prepared = exc
                if committing is not None:
                    await committing  # keep commits (and their ACKs) in order
                committing = asyncio.ensure_future(self._commit_and_report(batch, prepared))
        finally:
            if committing is not None and not committing.done():
                with contextlib.suppress(BaseException):
                    await committing

    async def _verify(self, by_group: dict[str, list[tuple[Event, str]]]) -> list[Batch]:
        """Cheap checks and Ed25519 verification of one batch, in chunks on the pool."""
        loop = asyncio.get_running_loop()
        ingest = self.ingest
        jobs = []
        for group_id, items in by_group.items():
            n = len(items)
            parts = min(self._workers, max(1, n // MIN_CHUNK))
            step = -(-n // parts)
            for i in range(0, n, step):
                chunk = items[i : i + step]
                jobs.append(
                    loop.run_in_executor(self._pool, _prepare_and_verify, ingest, group_id, chunk)
                )
        return list(await asyncio.gather(*jobs))

    async def _commit_and_report(
        self,
        batch: list[tuple[str, Event, str, OutcomeCallback]],
        prepared: list[Batch] | Exception,
    ) -> None:
        try:
            if isinstance(prepared, Exception):
                raise prepared
            relays = {b.group_id: self._relay_peers(b.group_id) for b in prepared}
            results = await self._thread.run(self._commit, prepared, relays)
        except Exception as exc:  # a store failure: nothing of it is acknowledged
            self._in_flight -= len(batch)
            message = f"store failure: {exc}"
            for _, event, _, callback in batch:
                failed = Outcome(REJECTED, event.event_id, ErrorCode.INTERNAL, message)
                _safe(callback, failed)
            return
        self._in_flight -= len(batch)
        self.batches += 1
        self.events += len(batch)
        positions = dict.fromkeys(results, 0)
        stored: dict[tuple[str, str], list[Event]] = {}
        for group_id, event, hop, callback in batch:
            i = positions[group_id]
            positions[group_id] = i + 1
            outcome = results[group_id][i]
            if outcome.status == STORED:
                stored.setdefault((group_id, hop), []).append(event)
            _safe(callback, outcome)
        for (group_id, hop), events in stored.items():
            self._on_stored(group_id, events, hop)

    def _commit(
        self, prepared: list[Batch], relays: dict[str, list[str]]
    ) -> dict[str, list[Outcome]]:
        """On the store thread: every chunk of the batch in one transaction (one fsync)."""
        now = time.time()
        ingest = self.ingest
        out: dict[str, list[Outcome]] = {}
        with ingest.store.transaction():
            for b in prepared:
                out.setdefault(b.group_id, []).extend(ingest.commit(b, relays[b.group_id], now=now))
        return out


def _prepare_and_verify(ingest: Ingest, group_id: str, items: list[tuple[Event, str]]) -> Batch:
    """On a pool thread: §4.3 checks up to the signature. ``prepare`` reads only the store's
    in-memory indexes (no SQL), and ``commit`` re-checks duplicates on the store thread."""
    batch = ingest.prepare(group_id, items)
    batch.verified = check_signatures(batch.candidates)
    return batch


def _safe(callback: OutcomeCallback, outcome: Outcome) -> None:
    """Report an outcome; a failing receiver must not stop the ingest of every stream."""
    try:
        callback(outcome)
    except asyncio.InvalidStateError:  # a waiter that went away
        pass
    except Exception:
        log.exception("reporting the outcome of %s failed", outcome.event_id)
