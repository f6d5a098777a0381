"""Helper for tests/test_store.py: write to a store, say so, then wait to be SIGKILLed.

``commit``: commit one event (with an outbox entry and an own seq) and print "committed".
``open-tx``: insert an event inside a transaction that never commits, print "inside".
"""

from __future__ import annotations

import sys

from node.protocol.signing import content_hash
from node.storage.backends import open_store
from node.storage.store import StoredEvent

GROUP = "g!crash"


def main() -> None:
    path, mode, event_id = sys.argv[1:4]
    store = open_store(path)
    body = event_id.encode()
    ev = StoredEvent(
        GROUP, event_id, "server-alice", 0, body, content_hash(body), "ed25519:AAAAAAAA", "sig"
    )
    if mode == "commit":
        with store.transaction():
            ev.seq = store.next_own_seq(GROUP)
            store.insert_event(ev)
            store.outbox_add("server-bob", GROUP, [event_id])
        print("committed", flush=True)
    else:
        with store.transaction():
            ev.seq = store.next_own_seq(GROUP)
            store.insert_event(ev)
            print("inside", flush=True)
            sys.stdin.read()
    sys.stdin.read()  # wait for the kill


if __name__ == "__main__":
    main()
