"""The group-commit ingest queue: EVENTs from every stream, checked and stored in batches.

Group commit falls out of the queue: while one batch is being verified and committed,
new EVENTs from every stream pile up, and the next batch takes them all at once.

Each batch goes through the steps of :mod:`node.storage.ingest` where their data lives:
the duplicate screen on the store thread (it reads the store's index), the author-key
lookups on the loop (the key store's home), decoding, hashing and Ed25519 verification
on a small pool (one thread per core, at most four: pynacl releases the GIL, so one
stream can use both cores of a small machine), and the commit on the store thread. The
pool sees event bytes and keys, never the store.

Pipelining: batch k+1 is verified while batch k commits. The store thread runs its jobs
in order, so the screen of batch k+1 is queued there ahead of the commit of batch k: it
takes microseconds, and the verification it unblocks overlaps the commit's fsync.

When the store cannot write (disk full, a size limit, an I/O error), a batch is neither
acknowledged nor rejected: its commit is retried, backing off, until it succeeds. Stream
EVENTs wait, and since credit follows outcomes, their peers run out of credit and stop
sending while the streams stay up. A one-shot ``send`` or checkpoint result is answered
at once with ``OVERLOADED`` (503, retry later) instead of holding its request open.
All of this is on the failure path: a commit that succeeds costs nothing more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from node.protocol.errors import ErrorCode
from node.protocol.frames import Event
from node.protocol.session import Outcome, Rejected, Stored
from node.storage.errors import StoreUnavailable
from node.storage.ingest import AuthorKey, Batch, Ingest, check, check_signatures
from node.storage.store_thread import StoreThread

log = logging.getLogger("tapsim.ingest")


class KeySource(Protocol):
    """Finds author keys the node lacks (node.keyfetch.KeyFetcher)."""

    def missing(self, author: str, hop: str) -> bool: ...

    async def fetch(self, author: str, hop: str) -> bool: ...


MAX_BATCH = 2048
MIN_CHUNK = 32  # events per verification job: below this, a thread hop costs more than it saves
VERIFY_WORKERS = max(1, min(4, os.cpu_count() or 1))
RETRY_FIRST = 0.05  # seconds before a failed commit is tried again, doubling ...
RETRY_MAX = 2.0  # ... up to this: a full disk may get room back at any moment

OutcomeCallback = Callable[[Outcome], None]
Items = list[tuple[Event, str]]
# (group, event, hop, callback, waits): ``waits`` is False for a one-shot request, which
# is answered OVERLOADED rather than held while the store cannot write.
Entry = tuple[str, Event, str, OutcomeCallback, bool]


@dataclass(slots=True)
class _Taken:
    """One batch as taken from the queue, and the future of its duplicate screen."""

    entries: list[Entry]
    by_group: dict[str, Items] = field(default_factory=dict)
    screened: asyncio.Future[dict[str, list[bool]]] | None = None


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
        self._pending: list[Entry] = []
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
        self.store_failures = 0  # commits that failed because the store could not write
        self.retrying = False  # a batch waits for the store to write again

    def _overloaded(self, event_id: str) -> Rejected:
        why = self._thread.summary.write_error or "it cannot write now"
        return Rejected(ErrorCode.OVERLOADED, f"store unavailable ({why}); retry later", event_id)

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

    def submit(
        self,
        group_id: str,
        event: Event,
        hop: str,
        callback: OutcomeCallback,
        *,
        waits: bool = True,
    ) -> None:
        """Queue one event; ``callback(outcome)`` runs on the loop once it is durable.

        An event whose author's key we lack waits while the key is fetched through
        its hop; the ingest then verifies it, or rejects it with UNKNOWN_KEY. With
        ``waits`` false, a store that cannot write answers OVERLOADED instead of holding
        the event until it can.
        """
        keys = self._keys
        if keys is not None and keys.missing(event.author, hop):
            task = asyncio.ensure_future(self._after_key((group_id, event, hop, callback, waits)))
            self._key_waits.add(task)
            task.add_done_callback(self._key_waits.discard)
            return
        self._pending.append((group_id, event, hop, callback, waits))
        self._wake.set()

    async def _after_key(self, entry: Entry) -> None:
        assert self._keys is not None
        _, event, hop, _, _ = entry
        try:
            await self._keys.fetch(event.author, hop)
        except Exception:  # whatever happened, the ingest decides (UNKNOWN_KEY at worst)
            log.exception("fetching the key of %s through %s failed", event.author, hop)
        finally:
            self._pending.append(entry)
            self._wake.set()

    async def process(self, group_id: str, event: Event, hop: str) -> Outcome:
        """Queue one event and wait for its durable outcome (a one-shot request: while
        the store cannot write, OVERLOADED at once)."""
        if self.retrying or self._thread.summary.write_error is not None:
            return self._overloaded(event.event_id)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.submit(group_id, event, hop, future.set_result, waits=False)
        return await future

    def _take(self) -> _Taken:
        """The next batch, with its duplicate screen queued on the store thread at once."""
        taken = _Taken(self._pending[:MAX_BATCH])
        del self._pending[:MAX_BATCH]
        self._in_flight += len(taken.entries)
        for group_id, event, hop, _, _ in taken.entries:
            taken.by_group.setdefault(group_id, []).append((event, hop))
        screen = self.ingest.screen
        by_group = taken.by_group
        taken.screened = asyncio.wrap_future(
            self._thread.submit(lambda: {g: screen(g, items) for g, items in by_group.items()})
        )
        return taken

    async def _run(self) -> None:
        """Take batches; verify each on the pool while the previous one commits.

        Commits and their callbacks stay in arrival order, and nothing is acknowledged
        before its commit has returned.
        """
        committing: asyncio.Task | None = None
        following: _Taken | None = None
        try:
            while True:
                if following is None:
                    if not self._pending:
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    following = self._take()
                taken, following = following, None
                try:
                    assert taken.screened is not None
                    prepared: list[Batch] | Exception = await self._verify(
                        taken.by_group, await taken.screened
                    )
                except Exception as exc:  # a bug in the checks: reject, never acknowledge
                    prepared = exc
                if self._pending:  # its screen goes ahead of this batch's commit
                    following = self._take()
                if committing is not None:
                    await committing  # keep commits (and their ACKs) in order
                committing = asyncio.ensure_future(self._commit_and_report(taken, prepared))
        finally:
            if committing is not None and not committing.done():
                if self.retrying:  # the store cannot write: nothing of it was acknowledged
                    committing.cancel()
                with contextlib.suppress(BaseException):
                    await committing

    async def _verify(
        self, by_group: dict[str, Items], screened: dict[str, list[bool]]
    ) -> list[Batch]:
        """Key lookups here on the loop, then the pure checks in chunks on the pool."""
        loop = asyncio.get_running_loop()
        jobs = []
        for group_id, items in by_group.items():
            held = screened[group_id]
            keys = self.ingest.keys(items, held)
            n = len(items)
            parts = min(self._workers, max(1, n // MIN_CHUNK))
            step = -(-n // parts)
            for i in range(0, n, step):
                j = i + step
                jobs.append(
                    loop.run_in_executor(
                        self._pool, _check, group_id, items[i:j], held[i:j], keys[i:j]
                    )
                )
        return list(await asyncio.gather(*jobs))

    async def _commit_and_report(self, taken: _Taken, prepared: list[Batch] | Exception) -> None:
        entries = taken.entries
        answered = False  # the one-shot entries have had their OVERLOADED
        try:
            if isinstance(prepared, Exception):
                raise prepared
            relays = {b.group_id: self._relay_peers(b.group_id) for b in prepared}
            delay = RETRY_FIRST
            while True:
                try:
                    results = await self._thread.run(self._commit, prepared, relays)
                    break
                except StoreUnavailable:
                    self.store_failures += 1
                    self.retrying = True
                    if not answered:
                        answered = True
                        for _, event, _, callback, waits in entries:
                            if not waits:
                                _safe(callback, self._overloaded(event.event_id))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
        except Exception as exc:  # any other failure: nothing of it is acknowledged
            self._in_flight -= len(entries)
            self.retrying = False
            message = f"store failure: {exc}"
            for _, event, _, callback, waits in entries:
                if waits or not answered:
                    _safe(callback, Rejected(ErrorCode.INTERNAL, message, event.event_id))
            return
        self.retrying = False
        self._in_flight -= len(entries)
        self.batches += 1
        self.events += len(entries)
        positions = dict.fromkeys(results, 0)
        stored: dict[tuple[str, str], list[Event]] = {}
        for group_id, event, hop, callback, waits in entries:
            i = positions[group_id]
            positions[group_id] = i + 1
            outcome = results[group_id][i]
            if type(outcome) is Stored:
                stored.setdefault((group_id, hop), []).append(event)
            if waits or not answered:
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


def _check(group_id: str, items: Items, held: list[bool], keys: list[AuthorKey | None]) -> Batch:
    """On a pool thread: the pure §4.3 checks and the signatures of one chunk."""
    batch = check(group_id, items, held, keys)
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
