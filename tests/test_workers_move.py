"""Moving a group from one worker to the other, by the procedure of docs/scaling.md.

Server ``alice`` runs as two in-process workers (``Node`` with ``worker``/``workers``)
sharing one seed and one PostgreSQL store behind a real HAProxy; ``bob`` federates with
the load balancer's URL. The group is moved with `tapsim workers move`, then: restart
the old owner, reload HAProxy with the map `tapsim workers map` prints, restart the new
owner. Afterwards the new owner opens the group's stream to bob and may author in it,
the old owner neither, and events flow both ways in the moved group.

Skips, saying why, without ``TAPSIM_TEST_POSTGRES`` or without HAProxy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.haproxy import HAProxy, free_port, haproxy_binary

from node.runtime.config import NodeConfig, PeerConfig
from node.runtime.node import Node
from node.storage.ownership import hash_owner
from node.view.commands import PublishEvent
from tapsim_tui.cli import main
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.support.stores import SKIP_REASON, Stores, postgres_url

pytestmark = [
    pytest.mark.skipif(postgres_url() is None, reason=SKIP_REASON),
    pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed"),
]

GROUPS = ("g!move-a", "g!move-b", "g!move-c", "g!move-d")


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
def stores(tmp_path, request):
    made = Stores("postgresql", tmp_path, request.node.originalname)
    yield made
    made.close()


def _worker(tmp: Path, k: int, port: int, store: str, bob: str, lb: str) -> Node:
    return Node(
        NodeConfig(
            server_id="alice",
            data_dir=tmp / f"alice-{k}",
            listen_port=port,
            groups=GROUPS,
            peers=[PeerConfig(bob, GROUPS)],
            store=store,
            worker=k,
            workers=2,
            advertise_url=lb,
        )
    )


async def test_a_moved_group_is_served_and_authored_by_its_new_owner(tmp_path, stores, capsys):
    group = GROUPS[0]
    old = hash_owner(group, 2)
    new = 1 - old
    url = stores.location("alice")
    ports = [free_port(), free_port()]
    proxy = HAProxy(tmp_path, [("127.0.0.1", p) for p in ports])
    seed = os.urandom(32)
    for k in (0, 1):
        (tmp_path / f"alice-{k}").mkdir()
        (tmp_path / f"alice-{k}" / "identity.key").write_bytes(seed)
        (tmp_path / f"alice-{k}" / "identity.key").chmod(0o600)
    workers: dict[int, Node] = {}
    bob = None
    try:
        await proxy.start()
        bob = await start_node(tmp_path, "bob", groups=GROUPS, peers=[proxy.url])
        for k in (0, 1):
            workers[k] = _worker(tmp_path, k, ports[k], url, bob.url, proxy.url)
            await workers[k].start()
        await wait_until(lambda: streams_up(bob, "alice", group), what="alice's stream")
        assert group in workers[old].peers.links[bob.url].links
        assert group not in workers[new].peers.links[bob.url].links

        # The move, in the documented order.
        assert main(["workers", "move", group, str(new), "--store", url]) == 0
        await workers[old].stop()
        workers[old] = _worker(tmp_path, old, ports[old], url, bob.url, proxy.url)
        await workers[old].start()
        capsys.readouterr()
        assert main(["workers", "map", "--store", url]) == 0
        rows = dict(line.split() for line in capsys.readouterr().out.splitlines())
        assert rows[group] == str(new)
        await proxy.restart({g: int(k) for g, k in rows.items()})
        await workers[new].stop()
        workers[new] = _worker(tmp_path, new, ports[new], url, bob.url, proxy.url)
        await workers[new].start()

        assert group in workers[new].peers.links[bob.url].links
        assert group not in workers[old].peers.links[bob.url].links
        assert "belongs to worker" in (
            workers[old].execute(PublishEvent(group, b"from the old owner")) or ""
        )
        assert workers[new].execute(PublishEvent(group, b"from the new owner")) is None
        await bob.publish(group, b"from bob")
        await wait_until(lambda: summary(bob, group)[0] == 2, what="alice's event at bob")
        await wait_until(
            lambda: summary(workers[new], group) == summary(bob, group), what="bob's at alice"
        )
        # bob's own stream for the group reaches the new owner through HAProxy.
        await wait_until(
            lambda: any(r.peer_id == "bob" and r.group_id == group and r.role.value == "acceptor"
                        for r in workers[new].streams),
            what="bob's stream at the new owner",
        )  # fmt: skip
    finally:
        for node in workers.values():
            await node.stop()
        if bob is not None:
            await bob.stop()
        proxy.stop()
