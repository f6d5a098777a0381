"""The one thread that owns the store: every read and write of it, in submission order.

SQLite work (fsync included) happens off the event loop, so the loop keeps reading,
writing and answering PINGs while a batch commits. Everything that touches the store,
its in-memory index included, runs on this single thread, which keeps the index and the
transactions in lock step without locks. The only other threads near the store are the
ingest's verification pool, which sees nothing but event bytes and keys
(:mod:`node.storage.ingest_queue`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from node.storage.backends import open_store
from node.storage.store import Store

T = TypeVar("T")


class StoreThread:
    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tapsim-store"
        )
        self._store: Store | None = None

    async def open(self, location: str) -> Store:
        """Open the store at ``location`` on this thread, which owns it from now on."""
        return await self.run(self._open, location)

    def _open(self, location: str) -> Store:
        self._store = open_store(location)
        return self._store

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``fn`` later on the store thread, in submission order, without waiting."""
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
