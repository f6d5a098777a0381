"""Watching the store's ability to write: said once when it stops and once when it
resumes, and probed meanwhile so that the node resumes by itself.

While the store cannot write (disk full, a size limit, an I/O error) the ingest queue
holds its batch and retries it, which withholds ACKs and credit; this watch is the part
that tells the operator, and that finds out when writes succeed again even when no
batch is waiting (say a failed outbox removal or pin): it then makes a small real write
every few seconds. When writes succeed again it lets the outbox remove what peers
acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from node.storage.errors import StoreUnavailable
from node.storage.store import Store
from node.storage.store_thread import StoreThread

PROBE_FIRST = 0.25  # seconds between probes, doubling ...
PROBE_MAX = 4.0  # ... up to this


class StoreWatch:
    def __init__(
        self,
        store: Store,
        thread: StoreThread,
        *,
        log: Callable[[str], None],
        ingest_retrying: Callable[[], bool],
        on_writable: Callable[[], None],
    ) -> None:
        self._store = store
        self._thread = thread
        self._log = log
        self._ingest_retrying = ingest_retrying
        self._on_writable = on_writable
        self.failing_since: float | None = None
        self._probe: asyncio.Task | None = None
        thread.on_write_error = self.changed

    def changed(self, error: str | None) -> None:
        """On the loop: the store's write_error changed (StoreThread.on_write_error)."""
        if error is not None and self.failing_since is None:
            self.failing_since = time.time()
            self._log(
                f"store cannot write: {error}; acknowledging nothing and withholding credit "
                "until it can (streams stay up)"
            )
            if self._probe is None or self._probe.done():
                self._probe = asyncio.get_running_loop().create_task(self._probing())
        elif error is None and self.failing_since is not None:
            down = time.time() - self.failing_since
            self.failing_since = None
            self._log(f"store writes again after {down:.1f} s: acknowledging and granting credit")
            self._on_writable()

    async def _probing(self) -> None:
        delay = PROBE_FIRST
        while self._thread.summary.write_error is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX)
            if not self._ingest_retrying():  # a retried batch is the better probe
                with contextlib.suppress(StoreUnavailable):
                    await self._thread.run(self._store.probe_write)

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
