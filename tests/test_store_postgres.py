"""What only the PostgreSQL store has to prove, beside the suite it shares with SQLite.

- The same events give the same fingerprints, digests and author maps on both backends,
  before and after a reopen (the index rebuilt at start from each database).
- A store of schema 1 (the previous release's fixture, copied into PostgreSQL) is
  migrated at open with everything in it; a store of a newer schema, another program's
  tables, a wrong URL or an unreachable server stop ``tapsim node`` with one line.
- One node per store: a second one is refused while the first holds it.
- A lost connection is "cannot write now" (StoreUnavailable, nothing kept, the index as
  the database holds it), and the next call reconnects; a node whose session is cut again
  and again while events arrive loses nothing and stores nothing twice.

Every test but the two that need no server skips without ``TAPSIM_TEST_POSTGRES``.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from node.storage import postgres_schema
from node.storage.backends import open_store
from node.storage.errors import StoreFileError, StoreUnavailable
from node.storage.postgres_store import PostgresStore
from node.storage.sqlite_schema import SCHEMA_VERSION
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.procnodes import assert_exactly_once, db_rows, rows_fingerprint
from tests.support.stores import SKIP_REASON, Stores, postgres_url
from tests.test_store import GROUP, make, ulid
from tests.test_store_file import FIXTURE, assert_holds_the_fixture

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg(tmp_path, request):
    if postgres_url() is None:
        pytest.skip(SKIP_REASON)
    made = Stores("postgresql", tmp_path, request.node.originalname)
    yield made
    made.close()


def _node_error(tmp_path: Path, store: str) -> str:
    """`tapsim node --store STORE`'s stderr, which must be its one line, exit status 1."""
    out = subprocess.run(
        [sys.executable, "-m", "tapsim_tui.cli", "node", "--listen", "127.0.0.1:0",
         "--server-id", "pg", "--data-dir", str(tmp_path / "data"), "--store", store],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "listening on" not in out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tapsim: error: "), out.stderr
    return lines[0]


# --------------------------------------------------------------------------- same answers


def test_the_same_events_give_the_same_fingerprints_on_both_backends(pg, tmp_path):
    lite = Stores("sqlite", tmp_path)
    both = [open_store(lite.location()), open_store(pg.location())]
    rng = random.Random(17)
    events = [
        make(n, author=rng.choice(["server-alice", "server-bob"]), seq=rng.randint(1, 40))
        for n in rng.sample(range(1, 400), 300)
    ]
    versions = [make(n, seq=n, body=b"other %d" % n) for n in range(1, 400, 7)]

    def answers(store) -> list:
        bounds = [("", ""), (ulid(50), ulid(300)), (ulid(120), "")]
        return [
            store.summary(GROUP),
            store.authors(GROUP),
            store.groups(),
            *(store.digest(GROUP, "server-x", lo, hi, 9) for lo, hi in bounds),
            store.ids_in_range(GROUP, ulid(10), ulid(90)),
        ]

    try:
        for store in both:
            store.insert_events(events[:150])
            for ev in events[150:]:
                store.insert_event(ev)
            for ev in versions:  # §4.3: the lower content hash wins, on both
                store.replace_event(ev)
            store.delete_event(GROUP, events[0].event_id)
        assert answers(both[0]) == answers(both[1])
        before = answers(both[0])
        for store in both:
            store.close()
        both = [open_store(lite.location()), open_store(pg.location())]
        assert answers(both[0]) == answers(both[1]) == before
    finally:
        for store in both:
            store.close()


# --------------------------------------------------------------------------- schema


def test_a_schema_1_store_is_migrated_with_everything_in_it(pg, tmp_path):
    url = pg.location()
    copy = tmp_path / "v1.sqlite3"
    shutil.copy2(FIXTURE / "alice" / "events.sqlite3", copy)
    src = sqlite3.connect(copy)
    with psycopg.connect(url, autocommit=True) as db, db.transaction():
        postgres_schema._create_1(db)
        db.execute("UPDATE tapsim_schema SET version = 1")
        for table in ("events", "outbox", "pins", "replay", "own_seq", "equivocators", "peer_ids"):
            with db.cursor().copy(f"COPY {table} FROM STDIN") as rows:  # type: ignore[arg-type]
                for row in src.execute(f"SELECT * FROM {table}"):
                    rows.write_row(row)
    src.close()
    store = open_store(url)
    try:
        assert_holds_the_fixture(store)
    finally:
        store.close()
    schema, db = pg.schemas[url], pg.admin()
    row = db.execute(f'SELECT version FROM "{schema}".tapsim_schema').fetchone()
    assert row == (SCHEMA_VERSION,)
    assert db.execute(f'SELECT count(*) FROM "{schema}".meta').fetchone() == (0,)


def test_a_store_of_a_newer_schema_stops_the_node_with_one_line(pg, tmp_path):
    url = pg.location()
    open_store(url).close()
    schema = pg.schemas[url]
    pg.admin().execute(f'UPDATE "{schema}".tapsim_schema SET version = %s', (SCHEMA_VERSION + 1,))
    line = _node_error(tmp_path, url)
    assert f"was written by a newer tapsim (store schema {SCHEMA_VERSION + 1}" in line
    assert "upgrade tapsim" in line
    row = pg.admin().execute(f'SELECT version FROM "{schema}".tapsim_schema').fetchone()
    assert row == (SCHEMA_VERSION + 1,)  # left as it was


def test_another_programs_tables_are_refused_and_left_alone(pg, tmp_path):
    url = pg.location()
    schema = pg.schemas[url]
    pg.admin().execute(f'CREATE TABLE "{schema}".events (id integer)')
    line = _node_error(tmp_path, url)
    assert f"schema {schema} of " in line and "is not a tapsim event store" in line
    tables = pg.admin().execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    assert [r[0] for r in tables] == ["events"]


def test_an_unreachable_server_stops_the_node_with_one_line(tmp_path):
    nowhere = tmp_path / "no-server"
    nowhere.mkdir()
    line = _node_error(tmp_path, f"postgresql://tapsim:s3cret@/tapsim?host={nowhere}")
    assert line.startswith("tapsim: error: cannot reach the event store postgresql://tapsim:***@")
    assert "s3cret" not in line and "No such file or directory" in line


def test_a_wrong_url_stops_the_node_with_one_line(tmp_path):
    line = _node_error(tmp_path, "postgresql://tapsim@/tapsim?sslmode=sometimes")
    assert line.startswith("tapsim: error: bad store URL postgresql://tapsim@/tapsim?")
    assert "sslmode" in line


# --------------------------------------------------------------------------- one node, lost links


def test_a_second_node_on_the_same_store_is_refused(pg, monkeypatch):
    monkeypatch.setattr(postgres_schema, "LOCK_WAIT", 0.2)
    url = pg.location()
    first = open_store(url)
    try:
        with pytest.raises(StoreFileError, match="is in use by another node"):
            open_store(url)
    finally:
        first.close()
    open_store(url).close()  # free again once the first has closed


def test_commits_are_durable_even_where_the_server_says_otherwise(pg):
    url = pg.location().replace("options=", "options=-csynchronous_commit%3Doff%20")
    store = open_store(url)
    try:
        assert store._db.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert store._db.execute("SHOW search_path").fetchone()[0].startswith("t_")
    finally:
        store.close()


def _cut(pg: Stores, store: PostgresStore) -> None:
    """The server ends the store's session, as a restart or a failover would."""
    pid = store._db.info.backend_pid
    pg.admin().execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_lost_connection_is_cannot_write_now_and_the_next_call_reconnects(pg):
    store = open_store(pg.location())
    assert isinstance(store, PostgresStore)
    try:
        store.insert_event(make(1))
        _cut(pg, store)
        with pytest.raises(StoreUnavailable):
            store.insert_event(make(2, seq=2))
        assert store.write_error is not None
        assert store.summary(GROUP)[0] == 1 and store.get_event(GROUP, ulid(2)) is None
        assert store.insert_event(make(2, seq=2)) is True  # reconnected
        assert store.write_error is None

        # Cut inside a transaction: nothing of it is kept, the index included.
        before = store.digest(GROUP, "s", "", "", 4)
        with pytest.raises(StoreUnavailable), store.transaction():
            store.insert_event(make(3, seq=3))
            store.outbox_add("server-bob", GROUP, [ulid(3)])
            _cut(pg, store)
            store.insert_event(make(4, seq=4))
        assert store.insert_event(make(5, seq=5)) is True
        assert store.get_event(GROUP, ulid(3)) is None
        assert store.outbox_count("server-bob", GROUP) == 0
        assert store.ids_in_range(GROUP) == [ulid(1), ulid(2), ulid(5)]
        store.delete_event(GROUP, ulid(5))
        assert store.digest(GROUP, "s", "", "", 4) == before
    finally:
        store.close()


def test_both_backends_have_every_migration():
    """One SCHEMA_VERSION for both: a migration added to one must be added to the other."""
    from node.storage import sqlite_schema

    steps = set(range(1, SCHEMA_VERSION))
    assert set(sqlite_schema.MIGRATIONS) == set(postgres_schema.MIGRATIONS) == steps


async def test_a_node_whose_database_session_is_cut_loses_nothing_and_resumes(pg, tmp_path):
    """The server ends bob's session again and again while alice's events arrive: each
    cut is "cannot write now" (no ACK for what was not committed), bob reconnects by
    itself, and in the end his database holds alice's events exactly once."""
    bob = await start_node(tmp_path, "bob", store=pg.location("bob"))
    alice = await start_node(tmp_path, "alice", peers=[bob.url], store=pg.location("alice"))
    try:
        await wait_until(lambda: streams_up(alice, "bob"), what="alice → bob up")
        for burst in range(4):
            await alice.publish_many("g!test", [b"cut %d/%d" % (burst, k) for k in range(150)])
            _cut(pg, bob.store)  # type: ignore[arg-type]
        await wait_until(
            lambda: (
                summary(bob) == summary(alice) and alice.store.outbox_count("bob", "g!test") == 0
            ),
            what="bob to hold everything alice sent, acknowledged",
        )
    finally:
        await alice.stop()
        await bob.stop()
    rows = db_rows(pg.location("bob"), "g!test")
    assert rows_fingerprint(rows) == summary(alice)
    assert_exactly_once(rows, authors={"alice": 600})
