"""A store file the node cannot use stops it with one line, and is never touched.

Each bad file is real: a store made by the node and then truncated or overwritten in
the middle, a file that is not SQLite at all, another program's SQLite database, and a
store stamped by a newer schema. Opening one raises ``StoreFileError`` naming the file
and what to do, and leaves its bytes as they were; ``tapsim node`` on it exits 1 with
that line and no traceback. A store written by the previous release (the committed
fixture, made by tests/fixtures/make_store_v1.py) opens and is migrated, with its
events, outbox, pins, replay cache and counters intact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from node.storage.errors import StoreFileError
from node.storage.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION
from node.storage.sqlite_store import SQLiteStore
from node.storage.store import StoredEvent
from tests.nodes import start_node, summary

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"
ROOT = Path(__file__).resolve().parent.parent


def _make_store(path: Path, n: int = 300) -> None:
    store = SQLiteStore.open(str(path))
    with store.transaction():
        for i in range(n):
            ct = f"event {i} ".encode() * 20
            store.insert_event(
                StoredEvent(
                    "g!test",
                    f"01J{i:023d}",
                    "alice",
                    i + 1,
                    ct,
                    "sha256:" + hashlib.sha256(ct).hexdigest(),
                    "ed25519:AAAAAAAA",
                    "sig",
                    hop="alice",
                )
            )
        store.outbox_add("bob", "g!test", [f"01J{i:023d}" for i in range(10)])
    store.close()  # the last connection checkpoints the WAL into the file


def _truncated(path: Path) -> None:
    _make_store(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _overwritten(path: Path) -> None:
    _make_store(path)
    size = path.stat().st_size
    with path.open("r+b") as f:  # garbage over a page in the middle of the events' b-tree
        f.seek((size // 4096 // 2) * 4096)
        f.write(b"\xa5" * 4096)


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"these are not the bytes of a database\n" * 200)


def _foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE recipes (name TEXT, steps TEXT)")
    db.execute("INSERT INTO recipes VALUES ('bread', 'knead')")
    db.commit()
    db.close()


def _newer(path: Path) -> None:
    _make_store(path, 3)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()


BAD: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncated, "is damaged"),
    "overwritten": (_overwritten, "is damaged"),
    "not sqlite": (_not_sqlite, "is not an SQLite database"),
    "foreign": (_foreign, "not a tapsim event store"),
    "newer": (_newer, "written by a newer tapsim"),
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_store_file_is_refused_and_left_alone(tmp_path, kind):
    path = tmp_path / "events.sqlite3"
    make, words = BAD[kind]
    make(path)
    before = _digest(path)
    with pytest.raises(StoreFileError) as caught:
        SQLiteStore.open(str(path))
    message = str(caught.value)
    assert str(path) in message and words in message, message
    assert "\n" not in message
    assert "move it aside" in message or "upgrade tapsim" in message, message
    assert _digest(path) == before, "the bad file was written to"


@pytest.mark.parametrize("kind", ["truncated", "not sqlite", "newer"])
def test_tapsim_node_on_a_bad_store_exits_1_with_one_line(tmp_path, kind):
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    path = data_dir / "events.sqlite3"
    make, words = BAD[kind]
    make(path)
    before = _digest(path)
    command = [sys.executable, "-m", "tapsim_tui.cli", "node", "--listen", "127.0.0.1:0"]
    out = subprocess.run(
        [*command, "--server-id", "n", "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("tapsim: error: ") and str(path) in lines[0] and words in lines[0]
    assert "listening on" not in out.stdout
    assert _digest(path) == before


def test_a_new_store_is_stamped_with_the_schema_version(tmp_path):
    path = tmp_path / "events.sqlite3"
    SQLiteStore.open(str(path)).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()
    SQLiteStore.open(str(path)).close()  # and opens again as it is


# --------------------------------------------------------------------------- upgrades


@pytest.fixture
def old_data_dir(tmp_path) -> Path:
    """A copy of the fixture (the committed files are never opened in place)."""
    data_dir = tmp_path / "alice"
    shutil.copytree(FIXTURE / "alice", data_dir)
    return data_dir


def test_the_fixture_is_what_the_previous_release_wrote():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    assert expected["user_version"] == 1 < SCHEMA_VERSION
    assert expected["events"] and expected["outbox"] and expected["replay"]
    assert any(server == "bob" for server, _ in expected["pins"])


def assert_holds_the_fixture(store) -> None:
    """``store`` holds everything the previous release's fixture held (either backend)."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    group = expected["group"]
    assert store.summary(group) == (expected["count"], expected["fingerprint"])
    held = store.get_events(group, [e[0] for e in expected["events"]])
    assert [[e.event_id, e.author, e.seq, e.content_hash] for e in held] == expected["events"]
    queued = expected["outbox"]
    assert store.outbox_counts() == {("bob", group): len(queued)}
    pending = store.outbox_pending("bob", group)
    assert [["bob", group, e.event_id] for e in pending] == queued
    assert sorted((doc["server_id"], source) for doc, source in store.load_pins()) == [
        tuple(p) for p in expected["pins"]
    ]
    assert [list(r) for r in store.replay_entries(0.0)] == expected["replay"]
    (_, next_seq), *_ = expected["own_seq"]
    assert store.next_own_seq(group, "alice") == next_seq
    assert store.load_peer_ids() == {url: sid for url, sid in expected["peer_ids"]}


def test_a_store_of_the_previous_release_opens_with_everything_in_it(old_data_dir):
    store = SQLiteStore.open(str(old_data_dir / "events.sqlite3"))
    try:
        assert_holds_the_fixture(store)
    finally:
        store.close()
    db = sqlite3.connect(old_data_dir / "events.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


async def test_a_node_starts_on_the_previous_release_data_dir(old_data_dir):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    node = await start_node(old_data_dir.parent, "alice")
    try:
        assert summary(node, expected["group"]) == (expected["count"], expected["fingerprint"])
        assert node.store_thread.summary.outbox("bob", expected["group"]) == len(expected["outbox"])
        assert node.keystore.document("bob") is not None  # the pin survived
        event_id = await node.publish(expected["group"], b"after the upgrade")
        held = await node.store_thread.run(node.store.get_event, expected["group"], event_id)
        assert held is not None and held.seq == expected["own_seq"][0][1]
    finally:
        await node.stop()
