"""The one thread that owns the store: every read and write of it, in submission order.

Database work (SQLite's fsync, PostgreSQL's round trips) happens off the event loop, so
the loop keeps reading, writing and answering PINGs while a batch commits. Everything
that touches the store, its in-memory index included, runs on this single thread, which
keeps the index and the transactions in lock step without locks. The only other threads
near the store are the ingest's verification pool, which sees nothing but event bytes
and keys (:mod:`node.storage.ingest_queue`).

The loop learns about the store without asking through :attr:`StoreThread.summary`: after
each job that changed it, this thread publishes a new immutable
:class:`~node.storage.summary.StoreSummary`. When the store's ability to write changes
(a write failed for want of space, or one succeeded again), :attr:`StoreThread.on_write_error`
is called on the loop: the node says so once, in its log, instead of once per failed job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from node.storage.backends import open_store
from node.storage.store import Store
from node.storage.summary import StoreSummary, SummaryBoard

log = logging.getLogger("tapsim.store")
T = TypeVar("T")


class StoreThread:
    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tapsim-store"
        )
        self._store: Store | None = None
        self._board = SummaryBoard()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Called on the loop with the store's write_error each time it changes.
        self.on_write_error: Callable[[str | None], None] | None = None

    @property
    def summary(self) -> StoreSummary:
        """The store as of the last job that changed it: read it from the loop, no lock."""
        return self._board.current

    async def open(self, location: str, *, worker: int | None = None) -> Store:
        """Open the store at ``location`` on this thread, which owns it from now on."""
        self._loop = asyncio.get_running_loop()
        return await self.run(self._open, location, worker)

    def _open(self, location: str, worker: int | None) -> Store:
        self._store = open_store(location, worker=worker)
        return self._store

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._job, fn, args))

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``fn`` later on the store thread, in submission order, without waiting."""
        return self._executor.submit(self._job, fn, args)

    def _job(self, fn: Callable[..., T], args: tuple) -> T:
        try:
            return fn(*args)
        finally:
            self._publish()

    def _publish(self) -> None:
        store = self._store
        if store is None:
            return
        before = self._board.current.write_error
        try:
            self._board.publish(store)
        except Exception:  # the job's own result (a commit, an ACK) must not depend on it
            log.exception("publishing the store summary failed")
        after = self._board.current.write_error
        if after != before and self.on_write_error is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                self._loop.call_soon_threadsafe(self.on_write_error, after)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
