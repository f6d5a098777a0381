"""The StoreSummary the store thread publishes for the loop: right, immutable, incremental."""

from __future__ import annotations

import pytest

from node.protocol.ids import CROCKFORD
from node.protocol.signing import content_hash
from node.storage.backends import open_store
from node.storage.store import StoredEvent
from node.storage.store_thread import StoreThread
from node.storage.summary import EMPTY_GROUP, SummaryBoard
from node.sync.digest import EMPTY_FINGERPRINT, AuthorSummary

A, B = "g!alpha", "g!beta"


def ulid(n: int) -> str:
    return "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(25, -1, -1))


def make(group: str, n: int, author: str = "server-alice", seq: int | None = None) -> StoredEvent:
    body = f"{group}/{n}".encode()
    return StoredEvent(
        group, ulid(n), author, n if seq is None else seq, body, content_hash(body), "k", "s"
    )


@pytest.fixture
def store():
    s = open_store(":memory:")
    yield s
    s.close()


def assert_matches(board: SummaryBoard, store) -> None:
    """The published summary says what the store itself says."""
    current = board.current
    assert list(current.groups) == store.groups()
    for group_id in {*store.groups(), A, B}:
        g = current.group(group_id)
        assert (g.count, g.fingerprint) == store.summary(group_id)
        assert {a: vars_of(s) for a, s in g.authors.items()} == store.authors(group_id)
        assert list(g.equivocators) == store.equivocators(group_id)
    assert dict(current.outboxes) == store.outbox_counts()


def vars_of(s: AuthorSummary) -> dict:
    return {"max_seq": s.max_seq, "contiguous_seq": s.contiguous_seq, "count": s.count}


def test_summary_follows_every_kind_of_write(store):
    board = SummaryBoard()
    board.publish(store)
    assert board.current.groups == () and board.current.group(A) is EMPTY_GROUP
    for n in (1, 2, 4):
        store.insert_event(make(A, n))
    store.insert_event(make(B, 9, author="server-bob", seq=1))
    store.outbox_add("server-carol", A, [ulid(1), ulid(2)])
    board.publish(store)
    assert board.current.groups == (A, B)
    assert board.current.group(A).authors["server-alice"] == AuthorSummary(4, 2, 3)
    assert board.current.outbox("server-carol", A) == 2
    assert_matches(board, store)

    store.outbox_remove("server-carol", A, [ulid(1)])
    board.publish(store)
    assert board.current.outbox("server-carol", A) == 1
    store.mark_equivocating(B, "server-bob")
    board.publish(store)
    assert board.current.group(B).equivocators == ("server-bob",)
    store.delete_event(A, ulid(1))
    store.delete_event(A, ulid(2))
    store.delete_event(A, ulid(4))
    board.publish(store)
    assert board.current.groups == (B,)
    assert board.current.group(A) is EMPTY_GROUP
    assert board.current.outbox("server-carol", A) == 0
    assert_matches(board, store)


def test_published_summaries_never_change_and_untouched_groups_are_shared(store):
    board = SummaryBoard()
    store.insert_event(make(A, 1))
    store.insert_event(make(B, 1))
    board.publish(store)
    before = board.current
    beta = before.group(B)
    store.insert_event(make(A, 2))
    board.publish(store)
    after = board.current
    assert after is not before
    assert before.group(A).count == 1 and after.group(A).count == 2  # the old one stays
    assert after.group(B) is beta  # only the group the write touched was read again
    with pytest.raises(TypeError):
        after.by_group[A] = EMPTY_GROUP  # type: ignore[index]
    with pytest.raises(TypeError):
        after.group(A).authors["x"] = AuthorSummary(1, 1, 1)  # type: ignore[index]
    board.publish(store)  # nothing written since: nothing republished
    assert board.current is after


def test_a_rolled_back_write_is_not_published(store):
    board = SummaryBoard()
    store.insert_event(make(A, 1))
    board.publish(store)
    published = board.current.group(A)
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_event(make(A, 2))
        store.outbox_add("server-carol", A, [ulid(2)])
        raise RuntimeError("the commit failed")
    board.publish(store)
    assert board.current.group(A) == published
    assert board.current.outbox("server-carol", A) == 0
    assert_matches(board, store)


async def test_the_store_thread_publishes_after_each_job(tmp_path):
    thread = StoreThread()
    try:
        store = await thread.open(str(tmp_path / "events.sqlite3"))
        assert thread.summary.group(A).fingerprint == EMPTY_FINGERPRINT
        await thread.run(store.insert_event, make(A, 1))
        assert thread.summary.groups == (A,)  # the job's result comes after its publishing
        await thread.run(store.outbox_add, "server-carol", A, [ulid(1)])
        assert thread.summary.outbox("server-carol", A) == 1
        thread.submit(store.outbox_remove, "server-carol", A, [ulid(1)]).result()
        assert thread.summary.outbox("server-carol", A) == 0
        assert thread.summary.group(A).count == 1
        await thread.run(store.close)
    finally:
        thread.close()
