"""A node whose store cannot write acknowledges nothing, withholds credit, keeps its
streams up, says so once, and resumes by itself (issue 11, data safety).

Two real limits, on real files:

- ``RLIMIT_FSIZE`` on a ``tapsim node`` process, set and lifted from outside with
  ``prlimit``: the kernel refuses to grow its WAL (EFBIG), exactly what a full disk
  looks like to SQLite. A raw peer streams events to it and reads every frame back.
- SQLite's own size limit (``PRAGMA max_page_count``) on an in-process node, where the
  test can also read the node's snapshot (the dashboard's banner, ``status``).

After recovery the node is SIGKILLed and its file read directly: every acknowledged
event is there, each exactly once, and the fingerprint is that of what was sent.
"""

from __future__ import annotations

import itertools
import os
import resource
import time

import orjson
from ulid import ULID

from node.sync.fingerprint import Accumulator, event_term, fingerprint
from node.transport.client import FederationClient
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.procnodes import ProcNode, assert_exactly_once, db_rows, rows_fingerprint
from tests.rawpeer import CT, group_path, handshake, make_identity

GROUP = "g!test"
UNLIMITED = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
WAIT = 60.0


def _largest_file(directory) -> int:
    return max(p.stat().st_size for p in directory.iterdir() if p.is_file())


def _acks(raw) -> list[dict]:
    return [f["payload"] for f in raw.frames if f.get("type") == "ACK"]


def _acked_ids(raw) -> list[str]:
    return [e for ack in _acks(raw) for e in ack.get("event_ids", ())]


def _through(raw) -> int:
    return max((ack["through"] for ack in _acks(raw)), default=0)


def _count(raw, ftype: str) -> int:
    return sum(1 for f in raw.frames if f.get("type") == ftype)


async def test_a_node_process_that_cannot_write_acks_nothing_and_resumes(tmp_path):
    bob = ProcNode(tmp_path, "bob")
    await bob.start()
    client = FederationClient(bob.url)
    alice = make_identity("alice", 7)
    sent: dict[str, bytes] = {}

    async def event(i: int) -> int:
        ciphertext = f"event {i} ".encode() * 40
        event_id = str(ULID())
        await raw.event(i, ciphertext, event_id=event_id)
        ev = alice.sign_event(GROUP, event_id, i, ciphertext)
        sent[event_id] = ev.content_hash.encode()
        return raw.seq

    try:
        raw = await handshake(client, alice, GROUP, "bob")
        for i in range(1, 6):
            last = await event(i)
        await raw.wait_for(lambda f: f.get("type") == "ACK" and f["payload"]["through"] >= last)
        assert len(_acked_ids(raw)) == 5

        # From now on the WAL cannot grow: every commit fails with EFBIG.
        resource.prlimit(
            bob.pid, resource.RLIMIT_FSIZE, (_largest_file(bob.data_dir), resource.RLIM_INFINITY)
        )
        mark_frames, mark_lines = len(raw.frames), len(bob.lines)
        acked_before, credits_before = len(_acked_ids(raw)), _count(raw, "CREDIT")
        for i in range(6, 46):
            last = await event(i)
        await wait_until(
            lambda: bob.line_after(mark_lines, "store cannot write") is not None,
            WAIT,
            "bob to say its store cannot write",
        )
        # The stream is up and answers: a PING sent after the events gets its PONG.
        await raw.send("PING", {})
        await raw.wait_for(lambda f: f.get("type") == "PONG", WAIT)
        assert not raw.ended
        later = raw.frames[mark_frames:]
        assert not [f for f in later if f.get("type") in ("ACK", "CREDIT", "ERROR")], later
        assert len(_acked_ids(raw)) == acked_before and _count(raw, "CREDIT") == credits_before

        # A one-shot send is told to come back later, not held and not acknowledged.
        other = alice.sign_event(GROUP, str(ULID()), 1000, b"sent while full")
        body = orjson.dumps(
            {
                "type": "EVENT",
                "id": str(ULID()),
                "origin": "alice",
                "sequence": 1,
                "group_id": GROUP,
                "payload": other.to_dict(),
            }
        )
        r = await client.request("POST", group_path(GROUP, "send"), headers=CT, body=body + b"\n")
        assert r.status == 503 and r.header("retry-after"), (r.status, r.body)
        assert orjson.loads(r.body.split(b"\n")[0])["payload"]["code"] == "OVERLOADED"

        resource.prlimit(bob.pid, resource.RLIMIT_FSIZE, UNLIMITED)
        await raw.wait_for(
            lambda f: f.get("type") == "ACK" and f["payload"]["through"] >= last, WAIT
        )
        await raw.wait_for(lambda f: f in raw.frames[mark_frames:] and f["type"] == "CREDIT", WAIT)
        await wait_until(lambda: bob.line_after(mark_lines, "store writes again") is not None, WAIT)
        acked = _acked_ids(raw)
        assert sorted(acked) == sorted(sent), "every event acknowledged as stored, once"
        assert sum("store cannot write" in line for line in bob.lines) == 1
        assert not raw.ended and _through(raw) >= last
    finally:
        await client.close()
        if bob.running:
            bob.kill()  # SIGKILL: what was acknowledged must be on disk already
        bob.cleanup()

    rows = db_rows(bob.db_path, GROUP)
    assert_exactly_once(rows, authors={"alice": 45})
    acc = Accumulator()
    for event_id, content_hash in sent.items():
        acc.add(event_term(event_id, content_hash.decode()))
    assert rows_fingerprint(rows) == (len(sent), fingerprint(acc.total, acc.count))


async def test_the_snapshot_alerts_while_the_store_cannot_write(tmp_path):
    """Two in-process nodes; bob's store hits SQLite's size limit while alice streams."""
    bob = await start_node(tmp_path, "bob")
    alice = await start_node(tmp_path, "alice", peers=[bob.url])

    def limit(pages: int | None) -> None:  # on bob's store thread, on bob's own connection
        db = bob.store._db  # the size limit is a setting of the connection
        n = pages if pages is not None else db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={n}")

    try:
        await wait_until(lambda: streams_up(alice, "bob") and streams_up(bob, "alice"), WAIT)
        await alice.publish(GROUP, b"before")
        await wait_until(lambda: summary(bob) == summary(alice), WAIT, "the first event")
        held = summary(bob)
        assert bob.snapshot().alerts == ()

        await bob.store_thread.run(limit, None)
        await alice.publish_many(GROUP, [os.urandom(2000) for _ in range(60)])
        await wait_until(lambda: bob.snapshot().alerts != (), WAIT, "bob's alert")
        (alert,) = bob.snapshot().alerts
        assert "store cannot write" in alert and "full" in alert, alert
        assert summary(bob) == held
        assert alice.store_thread.summary.outbox("bob", GROUP) == 60  # nothing acknowledged
        assert streams_up(alice, "bob") and streams_up(bob, "alice")
        runner = next(r for r in alice.streams if r.peer_id == "bob")
        assert runner.session.unacked > 0

        started = time.monotonic()
        await bob.store_thread.run(limit, 1073741823)
        await wait_until(lambda: summary(bob) == summary(alice), WAIT, "bob to catch up")
        await wait_until(lambda: alice.store_thread.summary.outbox("bob", GROUP) == 0, WAIT)
        await wait_until(lambda: bob.snapshot().alerts == (), WAIT, "the alert to clear")
        assert time.monotonic() - started < WAIT
        # One line per change of state, never one per failed write. Under load a small
        # write can fit in pages freed meanwhile, so the outage may end and begin again.
        log = bob.snapshot().log_lines
        changes = [
            "cannot" if "store cannot write" in line else "again"
            for line in log
            if "store cannot write" in line or "store writes again" in line
        ]
        assert changes and changes[0] == "cannot" and changes[-1] == "again", log
        assert all(a != b for a, b in itertools.pairwise(changes)), log
        assert streams_up(alice, "bob") and streams_up(bob, "alice")
    finally:
        await alice.stop()
        await bob.stop()
