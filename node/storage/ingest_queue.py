"""The group-commit ingest queue: EVENTs from every stream, checked and stored in batches.

Group commit falls out of the queue: while one batch is being verified and committed,
new EVENTs from every stream pile up, and the next batch takes them all at once.

Each batch goes through the steps of :mod:`node.storage.ingest` where their data lives:
the author-key lookups on the loop (the key store's home), decoding, hashing and Ed25519
verification on a small pool (one thread per core, at most four: pynacl releases the
GIL, so one stream can use both cores of a small machine), and the commit on the store
thread. The pool sees event bytes and keys, never the store. There is no separate
duplicate screen on the store thread (it would wait behind the fsync of the commit
before, and the pool with it): the loop guesses what is held from the events this queue
saw committed (below), and the commit makes the duplicate check exact, in its §4.3
place (a held event is a duplicate whatever its key or signature).

Pipelining: a batch is cut into chunks of at most 64 events, each one job on the pool,
and the chunks are committed in arrival order as they come back checked: the first as
soon as it is, together with every chunk after it already checked by then (group
commit). So the first part of a window (§4.2) is durable, acknowledged and granted as
credit again while the rest is still being verified, and the peer's next events arrive
meanwhile, and go to the pool at once, their verification overlapping those commits.

A one-shot ``send`` of an event this queue stored recently is answered on the loop, and
a relayed copy of one is not verified again: the queue keeps a bounded view of events
it saw committed (never a provisional one, which a
stronger key may still remove, §3.2; never one an equivocation may have replaced, since
every candidate's id leaves the view before its commit). After the §4.3 hash check, such
an event is a duplicate without a turn of the store thread or the pool.

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
import hashlib
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from node.protocol.errors import ErrorCode
from node.protocol.frames import Event, b64decode_canonical
from node.protocol.session import Duplicate, Outcome, Rejected, Stored
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
# ... and at most this many: a window of 256 events (§4.2) is verified as four chunks, the
# first ones committed (and their credit granted) while the last ones are still checked.
MAX_CHUNK = 64
VERIFY_WORKERS = max(1, min(4, os.cpu_count() or 1))
COMMITTED_VIEW = 4096  # recently committed events answered as duplicates on the loop
RETRY_FIRST = 0.05  # seconds before a failed commit is tried again, doubling ...
RETRY_MAX = 2.0  # ... up to this: a full disk may get room back at any moment

OutcomeCallback = Callable[[Outcome], None]
Items = list[tuple[Event, str]]
# (group, event, hop, callback, waits): ``waits`` is False for a one-shot request, which
# is answered OVERLOADED rather than held while the store cannot write.
Entry = tuple[str, Event, str, OutcomeCallback, bool]


@dataclass(slots=True)
class _Chunk:
    """Consecutive events of one group, checked as one job on the pool."""

    entries: list[Entry]
    checked: asyncio.Future[Batch]


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
        self._committer: asyncio.Task | None = None
        self._key_waits: set[asyncio.Task] = set()
        self._in_flight = 0  # taken from _pending, not yet committed
        # Chunks handed to the pool, in arrival order; the committer takes them from the
        # front. _chunked counts their events: at MAX_BATCH the feeder waits for commits.
        self._chunks: deque[_Chunk] = deque()
        self._chunked = 0
        self._checked = asyncio.Event()  # a chunk joined _chunks
        self._room = asyncio.Event()  # a commit made room under MAX_BATCH
        self._stopping = False
        # (group, event_id) → content_hash of events seen durably stored, newest last.
        self._committed: OrderedDict[tuple[str, str], str] = OrderedDict()
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
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="ingest")
        self._committer = loop.create_task(self._commit_loop(), name="ingest commits")

    async def stop(self) -> None:
        """Stop taking events; a commit under way finishes (unless the store cannot write)."""
        self._stopping = True
        for task in list(self._key_waits):
            task.cancel()
        for task in (self._task, self._committer):
            if task is None:
                continue
            if task is self._task or self.retrying:
                task.cancel()
            self._checked.set()
            with contextlib.suppress(BaseException):
                await task
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
        if self._committed_duplicate(group_id, event):
            return Duplicate(event.event_id)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.submit(group_id, event, hop, future.set_result, waits=False)
        return await future

    def _committed_duplicate(self, group_id: str, event: Event) -> bool:
        """Is ``event`` one this queue saw committed, with a ciphertext that hashes right?

        The §4.3 order holds: the hash is checked first; anything else (a wrong hash,
        an event not in the view) takes the full path, which reports it.
        """
        key = (group_id, event.event_id)
        held = self._committed.get(key)
        if held is None or held != event.content_hash:
            return False
        raw = event.raw_ciphertext
        if raw is None:
            raw = b64decode_canonical(event.ciphertext)
        if raw is None or "sha256:" + hashlib.sha256(raw).hexdigest() != held:
            return False
        self._committed.move_to_end(key)
        return True

    async def _run(self) -> None:
        """Feed the pool: take what is pending and hand it over in chunks at once.

        No turn of the store thread first: it may be in the fsync of an earlier commit,
        and verification would wait for it. What is held is guessed on the loop from
        the committed view (a relayed copy of a recent event is caught there), and the
        commit completes the duplicate check in its §4.3 place.
        """
        committed = self._committed
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._chunked >= MAX_BATCH:
                self._room.clear()
                await self._room.wait()
                continue
            entries = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            self._in_flight += len(entries)
            by_group: dict[str, list[Entry]] = {}
            for entry in entries:
                by_group.setdefault(entry[0], []).append(entry)
            for group_id, group_entries in by_group.items():
                items = [(e[1], e[2]) for e in group_entries]
                held = [
                    committed.get((group_id, ev.event_id)) == ev.content_hash for ev, _ in items
                ]
                self._hand_over(group_id, group_entries, items, held)

    def _hand_over(
        self, group_id: str, entries: list[Entry], items: Items, held: list[bool]
    ) -> None:
        """Key lookups here on the loop, then the pure checks in chunks on the pool."""
        loop = asyncio.get_running_loop()
        try:
            keys = self.ingest.keys(items, held)
        except Exception as exc:  # a bug in the checks: reject, never acknowledge
            failed = loop.create_future()
            failed.set_exception(exc)
            self._queue_chunk(_Chunk(entries, failed))
            return
        n = len(items)
        step = max(MIN_CHUNK, min(MAX_CHUNK, -(-n // self._workers)))
        for i in range(0, n, step):
            j = i + step
            checked = loop.run_in_executor(
                self._pool, _check, group_id, items[i:j], held[i:j], keys[i:j]
            )
            self._queue_chunk(_Chunk(entries[i:j], checked))

    def _queue_chunk(self, chunk: _Chunk) -> None:
        self._chunks.append(chunk)
        self._chunked += len(chunk.entries)
        self._checked.set()

    async def _commit_loop(self) -> None:
        """Commit checked chunks in arrival order: the first one as soon as it is checked,
        with every chunk after it already checked by then (group commit), up to MAX_BATCH.

        Commits and their callbacks stay in arrival order, and nothing is acknowledged
        before its commit has returned.
        """
        chunks = self._chunks
        while not self._stopping:
            if not chunks:
                self._checked.clear()
                await self._checked.wait()
                continue
            with contextlib.suppress(Exception):  # its exception is read below
                await asyncio.shield(chunks[0].checked)
            taken = [chunks.popleft()]
            count = len(taken[0].entries)
            while chunks and chunks[0].checked.done() and count < MAX_BATCH:
                count += len(chunks[0].entries)
                taken.append(chunks.popleft())
            await self._commit_and_report(taken, count)
            self._chunked -= count
            self._room.set()

    async def _commit_and_report(self, taken: list[_Chunk], count: int) -> None:
        prepared: list[Batch] = []
        failed: dict[int, Exception] = {}
        for n, chunk in enumerate(taken):
            exc = chunk.checked.exception()
            if exc is None:
                prepared.append(chunk.checked.result())
            else:
                failed[n] = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
        answered = False  # the one-shot entries have had their OVERLOADED
        results: list[list[Outcome]] = []
        committed = self._committed
        for b in prepared:  # a commit may replace a held version (equivocation, §4.3)
            for c in b.candidates:
                committed.pop((b.group_id, c.event.event_id), None)
        try:
            relays = {b.group_id: self._relay_peers(b.group_id) for b in prepared}
            delay = RETRY_FIRST
            while prepared:
                try:
                    results = await self._thread.run(self._commit, prepared, relays)
                    break
                except StoreUnavailable:
                    self.store_failures += 1
                    self.retrying = True
                    if not answered:
                        answered = True
                        for chunk in taken:
                            for _, event, _, callback, waits in chunk.entries:
                                if not waits:
                                    _safe(callback, self._overloaded(event.event_id))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
        except Exception as exc:  # any other failure: nothing of it is acknowledged
            self._in_flight -= count
            self.retrying = False
            for chunk in taken:
                _reject(chunk.entries, f"store failure: {exc}", answered)
            return
        self.retrying = False
        self._in_flight -= count
        self.batches += 1
        self.events += count
        stored: dict[tuple[str, str], list[Event]] = {}
        batches = iter(zip(prepared, results, strict=True))
        for n, chunk in enumerate(taken):
            if n in failed:
                _reject(chunk.entries, f"store failure: {failed[n]}", answered)
                continue
            batch, outcomes = next(batches)
            provisional = {c.index for c in batch.candidates if c.provisional}
            for i, ((group_id, event, hop, callback, waits), outcome) in enumerate(
                zip(chunk.entries, outcomes, strict=True)
            ):
                if type(outcome) is Stored:
                    stored.setdefault((group_id, hop), []).append(event)
                    if not outcome.equivocation and i not in provisional:
                        committed[(group_id, event.event_id)] = event.content_hash
                if waits or not answered:
                    _safe(callback, outcome)
        while len(committed) > COMMITTED_VIEW:
            committed.popitem(last=False)
        for (group_id, hop), events in stored.items():
            self._on_stored(group_id, events, hop)

    def _commit(self, prepared: list[Batch], relays: dict[str, list[str]]) -> list[list[Outcome]]:
        """On the store thread: every chunk taken in one transaction (one fsync)."""
        now = time.time()
        ingest = self.ingest
        with ingest.store.transaction():
            return [ingest.commit(b, relays[b.group_id], now=now) for b in prepared]


def _check(group_id: str, items: Items, held: list[bool], keys: list[AuthorKey | None]) -> Batch:
    """On a pool thread: the pure §4.3 checks and the signatures of one chunk (its
    duplicate check completed by the commit)."""
    batch = check(group_id, items, held, keys, screened=False)
    batch.verified = check_signatures(batch.candidates)
    return batch


def _reject(entries: list[Entry], message: str, answered: bool) -> None:
    """Reject what could not be stored (one-shot entries already answered are skipped)."""
    for _, event, _, callback, waits in entries:
        if waits or not answered:
            _safe(callback, Rejected(ErrorCode.INTERNAL, message, event.event_id))


def _safe(callback: OutcomeCallback, outcome: Outcome) -> None:
    """Report an outcome; a failing receiver must not stop the ingest of every stream."""
    try:
        callback(outcome)
    except asyncio.InvalidStateError:  # a waiter that went away
        pass
    except Exception:
        log.exception("reporting the outcome of %s failed", outcome.event_id)
