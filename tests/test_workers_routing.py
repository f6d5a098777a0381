"""Several workers, one server: which worker owns a group, and HAProxy routing to it.

The ownership rule is pure (``node.storage.ownership``); the store writes it down
(SQLite here, the shared PostgreSQL store in ``test_workers_kill``); HAProxy computes
the same rule from the request path with the config `tapsim workers haproxy` prints.
The routing test runs a real HAProxy in front of two real HTTP/2 servers that say
who they are; it skips when HAProxy is not installed.
"""

from __future__ import annotations

import zlib

import orjson
import pytest
from support.echo import EchoHandler
from support.haproxy import HAProxy, haproxy_binary

from node.runtime.config import ConfigError, parse_worker
from node.storage.ownership import Ownership, hash_owner
from node.storage.sqlite_store import SQLiteStore
from node.transport import FederationApp, FederationClient, start_server
from node.transport.routes import PREFIX, group_path
from tapsim_tui.cli import main
from tapsim_tui.workers import haproxy_config, owners_map

GROUPS = [f"g!team-{i}" for i in range(24)] + ["g!a", "g!Z_9.x-y", "g!" + "q" * 128]


def test_hash_owner_is_crc32_of_the_utf8_bytes_mod_n():
    # A fixed vector: the rule is part of the deployment (HAProxy computes it too).
    assert zlib.crc32(b"g!test") == 0xA1A939E5
    assert hash_owner("g!test", 2) == 0xA1A939E5 % 2
    assert hash_owner("g!test", 3) == 0xA1A939E5 % 3
    spread = [hash_owner(g, 2) for g in GROUPS]
    assert 0 < sum(spread) < len(spread)  # both workers get groups


def test_a_row_wins_over_the_hash_and_one_worker_owns_everything():
    moved = next(g for g in GROUPS if hash_owner(g, 2) == 0)
    two = Ownership(1, 2, {moved: 1})
    assert two.owns(moved)
    assert two.mine(GROUPS) == [g for g in GROUPS if g == moved or hash_owner(g, 2) == 1]
    assert Ownership().mine(GROUPS) == GROUPS


@pytest.mark.parametrize(
    ("text", "error"),
    [("1", "give K/N"), ("a/2", "give K/N"), ("2/2", "numbered 0 to 1"), ("0/0", "1 to 64")],
)
def test_bad_worker_option_is_one_line(text, error):
    with pytest.raises(ConfigError, match=error):
        parse_worker(text)
    assert parse_worker("1/3") == (1, 3)


def test_sqlite_store_writes_the_owners_down():
    store = SQLiteStore.open(":memory:")
    assert store.worker_count(0) == 0  # reading records nothing
    assert store.worker_count(2) == 2
    assert store.worker_count(3) == 2  # the first count recorded stands
    rows = store.claim_owners(GROUPS[:4], 2)
    assert rows == {g: hash_owner(g, 2) for g in GROUPS[:4]}
    store.set_owner(GROUPS[0], 1 - rows[GROUPS[0]])
    assert store.claim_owners(GROUPS[:4], 2)[GROUPS[0]] == 1 - rows[GROUPS[0]]  # kept
    store.set_worker_count(3)
    assert store.worker_count(0) == 3
    assert owners_map(store.owners()).splitlines()[0] == f"{GROUPS[0]} {1 - rows[GROUPS[0]]}"


def test_workers_subcommand_moves_a_group_and_prints_the_map(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))  # no user config
    data = tmp_path / "w"
    data.mkdir()
    store = SQLiteStore.open(str(data / "events.sqlite3"))
    store.worker_count(2)
    store.claim_owners(["g!a", "g!b"], 2)
    store.close()
    assert main(["workers", "move", "g!a", "1", "--data-dir", str(data)]) == 0
    assert main(["workers", "map", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"g!a 1\ng!b {hash_owner('g!b', 2)}\n" in out
    assert main(["workers", "move", "g!a", "2", "--data-dir", str(data)]) == 2
    assert "records 2 workers" in capsys.readouterr().err
    assert main(["workers", "haproxy", "--worker-at", "127.0.0.1:1"]) == 2
    assert "2+ workers" in capsys.readouterr().err


class NamedEcho(EchoHandler):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.server_id = name


needs_haproxy = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed")


@needs_haproxy
async def test_haproxy_routes_each_group_to_its_owner_and_the_rest_to_any_worker(tmp_path):
    servers = [await start_server(FederationApp(NamedEcho(f"w{k}")), "127.0.0.1", 0)
               for k in range(2)]  # fmt: skip
    moved = GROUPS[0]
    owners = {moved: 1 - hash_owner(moved, 2)}  # a row that disagrees with the hash
    proxy = HAProxy(tmp_path, [("127.0.0.1", s.port) for s in servers], owners)
    client = None
    try:
        await proxy.start()
        client = FederationClient(proxy.url)
        for group in GROUPS:
            r = await client.request("GET", group_path(group, "digest"))
            assert r.status == 200, (group, r.status, r.body[:200])
            body = orjson.loads(r.body)
            assert body["group_id"] == group
            expected = owners.get(group, hash_owner(group, 2))
            assert body["server_id"] == f"w{expected}", group
        answered = set()
        for _ in range(4):
            r = await client.request("GET", f"{PREFIX}/caps")
            answered.add(orjson.loads(r.body)["server_id"])
        assert answered == {"w0", "w1"}  # round robin over both
        await servers[0].stop()  # worker 0 dies: anything else goes to worker 1
        for _ in range(4):
            r = await client.request("GET", f"{PREFIX}/caps")
            assert r.status == 200 and orjson.loads(r.body)["server_id"] == "w1"
        # Its groups are not sent elsewhere: 503, and the peer retries later (§4.5).
        orphan = next(g for g in GROUPS if owners.get(g, hash_owner(g, 2)) == 0)
        r = await client.request("GET", group_path(orphan, "digest"))
        assert r.status == 503
    finally:
        if client is not None:
            await client.close()
        proxy.stop()
        for s in servers:
            await s.stop()


def test_the_haproxy_config_names_every_worker_by_index():
    cfg = haproxy_config(("0.0.0.0", 8448), [("10.0.0.1", 9001), ("10.0.0.2", 9001)], "/m.map")
    assert "bind 0.0.0.0:8448 proto h2" in cfg
    assert "backend worker1\n    server w1 10.0.0.2:9001 proto h2" in cfg
    assert "crc32,mod(2)" in cfg and "map(/m.map)" in cfg


def test_docs_show_the_exact_config_the_command_prints():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "scaling.md").read_text()
    block = "# One tapsim server" + doc.split("   ```\n   # One tapsim server", 1)[1]
    shown = "".join(line.removeprefix("   ") + "\n"
                    for line in block.split("   ```", 1)[0].splitlines())  # fmt: skip
    workers = [("10.0.0.11", 8448), ("10.0.0.12", 8448)]
    assert shown == haproxy_config(("0.0.0.0", 8448), workers)
