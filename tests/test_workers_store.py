"""The group → worker table in each store backend, and who may open a shared store.

Run on SQLite and on PostgreSQL (the ``stores`` fixture; PostgreSQL skips, saying why,
without ``TAPSIM_TEST_POSTGRES``). Workers share a PostgreSQL store: each holds its own
worker slot, so a second worker K, or a lone node on the workers' store, is refused.
"""

from __future__ import annotations

import pytest

from node.storage.backends import SHARED, open_store
from node.storage.errors import StoreFileError
from node.storage.ownership import hash_owner

GROUPS = [f"g!w-{i}" for i in range(12)]


def test_claims_agree_and_a_moved_row_stands(stores):
    worker = 0 if stores.is_postgres else None
    store = open_store(stores.location("shared"), worker=worker)
    try:
        assert store.worker_count(0) == 0
        assert store.worker_count(2) == 2
        assert store.worker_count(5) == 2
        assert store.claim_owners(GROUPS, 2) == {g: hash_owner(g, 2) for g in GROUPS}
        store.set_owner(GROUPS[0], 1 - hash_owner(GROUPS[0], 2))
        rows = store.claim_owners(GROUPS, 2)
        assert rows[GROUPS[0]] == 1 - hash_owner(GROUPS[0], 2)
        assert store.owners() == rows
    finally:
        store.close()


def test_workers_share_a_postgres_store_one_slot_each(stores):
    if not stores.is_postgres:
        with pytest.raises(StoreFileError, match="only on PostgreSQL"):
            open_store(stores.location("sqlite"), worker=1)
        return
    url = stores.location("shared")
    w0 = open_store(url, worker=0)
    w1 = open_store(url, worker=1)
    opened = [w0, w1]
    try:
        w0.claim_owners(GROUPS, 2)
        assert w1.owners() == w0.owners()  # one table, seen by both
        with pytest.raises(StoreFileError, match=r"worker 1 .* runs already"):
            opened.append(open_store(url, worker=1))
        with pytest.raises(StoreFileError, match="in use by another node"):
            opened.append(open_store(url))
        tool = open_store(url, worker=SHARED)  # `tapsim workers map` beside them
        opened.append(tool)
        assert tool.owners() == w0.owners()
    finally:
        for store in opened:
            store.close()
    alone = open_store(url)  # once the workers are gone, a lone node may have it
    alone.close()


async def test_a_worker_starts_only_on_a_shared_store_with_the_recorded_count(stores, tmp_path):
    from node.runtime.config import ConfigError
    from node.runtime.node import Node
    from tests.nodes import node_config

    groups = ("g!w-0", "g!w-1", "g!w-2", "g!w-3")
    store = stores.location("shared") if stores.is_postgres else None
    first = Node(node_config(tmp_path, "w0", groups=groups, store=store, worker=0, workers=2))
    if not stores.is_postgres:
        with pytest.raises(StoreFileError, match="only on PostgreSQL"):
            await first.start()
        await first.stop()
        return
    await first.start()
    try:
        assert first.ownership.mine(groups) == [g for g in groups if hash_owner(g, 2) == 0]
        other = Node(node_config(tmp_path, "w1", groups=groups, store=store, worker=1, workers=3))
        with pytest.raises(ConfigError, match="the store records 2 workers"):
            await other.start()
        await other.stop()
    finally:
        await first.stop()
