"""A duplicate found while another batch's transaction was open is confirmed at commit.

The ingest queue screens a batch for duplicates on the store thread ahead of the previous
batch's commit; if that transaction rolls back, the "duplicate" was never durable, and
an ACK must not cover it (§4.4).
"""

from __future__ import annotations

import base64

import pytest

from node.protocol.errors import ErrorCode
from node.protocol.identity import Identity
from node.protocol.session import Duplicate, Rejected
from node.storage.backends import open_store
from node.storage.ingest import Ingest
from node.storage.store import StoredEvent

G = "g!recheck"


def test_a_duplicate_of_a_rolled_back_write_is_not_acknowledged(stores):
    ident = Identity.from_seed(b"\x09" * 32, "alice")
    store = open_store(stores.location())
    ingest = Ingest(store, lambda author, key_id: ident.public_key)
    event = ident.sign_event(G, "01KAZ2J2R80000000000000002", 1, b"sealed bytes")
    held = StoredEvent.from_event(
        G, event, base64.b64decode(event.ciphertext), received_at=0.0, hop="alice"
    )
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_event(held)
        batch = ingest.prepare(G, [(event, "alice")])
        assert type(batch.outcomes[0]) is Duplicate  # the open transaction's write
        raise RuntimeError("the commit failed")
    [outcome] = ingest.commit(batch, now=0.0)
    assert type(outcome) is Rejected and outcome.code == ErrorCode.INTERNAL
    # A duplicate of a committed event stays a duplicate.
    store.insert_event(held)
    [again] = ingest.commit(ingest.prepare(G, [(event, "alice")]), now=0.0)
    assert again == Duplicate(event.event_id)
    store.close()
