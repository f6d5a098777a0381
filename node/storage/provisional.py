"""Events verified with a hop-supplied key, checked again when a stronger pin replaces it.

PROTOCOL §3.2: a key document fetched through a hop is only provisionally trusted. When a
HELLO, a confirmation at the author's own URL or the configuration pins the author's key,
the events the provisional document verified are checked against the pinned key: those
that pass lose their mark, the others are removed (and reported against the hop).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.protocol.identity import verify_signature
from node.protocol.keystore import Pin
from node.protocol.signing import event_string
from node.storage.store import Store, StoredEvent


@dataclass(frozen=True, slots=True)
class Recheck:
    confirmed: int
    removed: int


def recheck_provisional(store: Store, new: Pin) -> Recheck:
    """On the store thread: confirm or remove ``new.server_id``'s provisional events."""
    author = new.server_id
    passed: dict[str, list[str]] = {}
    failed: list[StoredEvent] = []
    for ev in store.provisional_events(author):
        message = event_string(ev.group_id, ev.event_id, ev.author, ev.seq, ev.content_hash)
        if ev.key_id == new.key_id and verify_signature(new.doc.public_key, message, ev.signature):
            passed.setdefault(ev.group_id, []).append(ev.event_id)
        else:
            failed.append(ev)
    for group_id, ids in passed.items():
        store.confirm_events(group_id, ids)
    for ev in failed:
        store.delete_event(ev.group_id, ev.event_id)
    return Recheck(sum(map(len, passed.values())), len(failed))
