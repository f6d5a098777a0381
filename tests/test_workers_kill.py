"""Two workers of one server behind HAProxy, one SIGKILLed mid-traffic: nothing is lost
or stored twice (docs/scaling.md).

Server ``alice`` runs as two ``tapsim node --worker K/2`` processes sharing one identity
seed and one PostgreSQL store, behind a real HAProxy (the config `tapsim workers
haproxy` prints). ``bob``, a plain node with its SQLite file, federates with alice's
load-balanced URL over 12 groups; both sides author events in every group. Worker 1 is
SIGKILLed while it publishes and receives, and restarted on its port. Then every group
holds the same events on both sides (same count and §5.1 fingerprint), each exactly
once: no id, no (author, seq) and no content twice, nothing worker 1 reported as
committed is missing, and each worker opened streams for its own groups only.

Skips, saying why, without ``TAPSIM_TEST_POSTGRES`` or without HAProxy.
"""

from __future__ import annotations

import os

import pytest
from support.haproxy import HAProxy, free_port, haproxy_binary

from node.storage.ownership import hash_owner
from tests.nodes import WAIT, start_node, wait_until
from tests.procnodes import ProcNode, assert_exactly_once, rows_fingerprint
from tests.support.stores import SKIP_REASON, Stores, postgres_url

pytestmark = [
    pytest.mark.skipif(postgres_url() is None, reason=SKIP_REASON),
    pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed"),
]

GROUPS = tuple(f"g!load-{i}" for i in range(12))
ALICE_EVENTS = 360  # per worker, a batch at a time over the groups it owns
BOB_EVENTS = 30  # per group
BATCH = 10
_ROWS = "SELECT event_id, author, seq, ciphertext, content_hash FROM events WHERE group_id = %s"


def _published(node: ProcNode) -> int:
    """The last ``published K`` the worker printed: committed, whatever comes after."""
    lines = [ln for ln in node.lines if ln.startswith("published ")]
    return int(lines[-1].split()[1]) if lines else 0


@pytest.fixture
def stores(tmp_path, request):
    made = Stores("postgresql", tmp_path, request.node.originalname)
    yield made
    made.close()


async def test_a_worker_killed_mid_traffic_loses_nothing_and_stores_nothing_twice(tmp_path, stores):
    assert {hash_owner(g, 2) for g in GROUPS} == {0, 1}  # each worker owns some
    url = stores.location("alice")
    ports = [free_port(), free_port()]
    proxy = HAProxy(tmp_path, [("127.0.0.1", p) for p in ports])
    seed = os.urandom(32)  # one identity: the same seed file in each worker's data dir
    workers: list[ProcNode] = []
    bob = None
    try:
        await proxy.start()
        bob = await start_node(tmp_path, "bob", groups=GROUPS, peers=[proxy.url])
        for k, port in enumerate(ports):
            data_dir = tmp_path / f"alice-{k}"
            data_dir.mkdir()
            (data_dir / "identity.key").write_bytes(seed)
            (data_dir / "identity.key").chmod(0o600)
            w = ProcNode(
                tmp_path,
                f"alice-{k}",
                server_id="alice",
                peers=[bob.url],
                groups=GROUPS,
                module="tests.burst_node",
                pre=("--count", str(ALICE_EVENTS), "--batch", str(BATCH), "--all-groups", "--"),
                store=url,
                extra=("--worker", f"{k}/2", "--advertise-url", proxy.url),
            )
            w.port = port
            workers.append(w)
            await w.start()
        w0, w1 = workers

        async def publish_bob(first: int, end: int) -> None:
            for group in GROUPS:
                await bob.publish_many(group, [b"bob-%s-%04d" % (group.encode(), i)
                                               for i in range(first, end)])  # fmt: skip

        await publish_bob(0, BOB_EVENTS // 2)
        # Kill worker 1 mid-burst, while bob's events flow to it too.
        await wait_until(lambda: _published(w1) >= ALICE_EVENTS // 3, WAIT, "worker 1 to publish")
        w1.kill()
        committed = _published(w1)
        assert committed < ALICE_EVENTS, "worker 1 finished before the kill: make it longer"
        await publish_bob(BOB_EVENTS // 2, BOB_EVENTS)  # while it is down
        w1.pre = ("--count", "0", "--")  # restarted, it publishes nothing more
        await w1.start()

        admin = stores.admin()

        def alice_rows(group: str) -> list[tuple]:
            return [
                (r[0], r[1], r[2], bytes(r[3]), r[4])
                for r in admin.execute(_ROWS.replace("events", f"{_schema(url)}.events"),
                                       (group,)).fetchall()
            ]  # fmt: skip

        def converged() -> bool:
            for group in GROUPS:
                g = bob.store_thread.summary.group(group)
                if rows_fingerprint(alice_rows(group)) != (g.count, g.fingerprint):
                    return False
            return "burst done" in "\n".join(w0.lines)

        await wait_until(converged, 3 * WAIT, "both sides to hold the same events")

        alice_by_worker = {0: 0, 1: 0}
        for group in GROUPS:
            rows = alice_rows(group)
            held = await bob.store_thread.run(bob.store.ids_in_range, group)
            bob_rows = [
                (e.event_id, e.author, e.seq, e.ciphertext, e.content_hash)
                for e in await bob.store_thread.run(bob.store.get_events, group, held)
            ]
            assert sorted(rows) == sorted(bob_rows), group
            assert_exactly_once(rows)
            authored = [r for r in rows if r[1] == "alice"]
            seqs = sorted(r[2] for r in authored)
            assert seqs == list(range(1, len(seqs) + 1)), f"alice's seqs in {group}"
            assert sum(r[1] == "bob" for r in rows) == BOB_EVENTS, group
            alice_by_worker[hash_owner(group, 2)] += len(authored)
        assert alice_by_worker[0] == ALICE_EVENTS
        assert committed <= alice_by_worker[1] < committed + BATCH + 1
        for k, w in enumerate(workers):  # each opened streams for its own groups only
            up = [ln for ln in w.lines if ln.startswith("stream up: bob ")]
            opened = {ln.split()[3] for ln in up if ln.endswith("(initiator)")}
            assert opened == {g for g in GROUPS if hash_owner(g, 2) == k}, k
    finally:
        for w in workers:
            w.cleanup()
        if bob is not None:
            await bob.stop()
        proxy.stop()


def _schema(url: str) -> str:
    """The schema a test store URL names (``options=-csearch_path=…``)."""
    from urllib.parse import parse_qsl, urlsplit

    options = dict(parse_qsl(urlsplit(url).query))["options"]
    return options.split("search_path=", 1)[1]
