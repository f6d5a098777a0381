"""The content checks of PROTOCOL §4.3 and the group-committed storing of events.

The frame-level checks (size, JSON, fields, sequence, credit, group) belong to the
session; what is left is per event and the same whichever way it arrived (stream,
``send``, checkpoint): content hash, duplicate, author key, signature, equivocation.

Ingest runs in three steps so the expensive one can leave the writer thread:

1. :meth:`Ingest.prepare` (writer thread, cheap): decode and hash the ciphertext,
   recognise duplicates from the store's memory, look the author's key up.
2. :func:`check_signatures` (pure, any thread): Ed25519 verification is most of the cost
   per event and pynacl releases the GIL, so chunks of a batch can run on a thread pool.
3. :meth:`Ingest.commit` (writer thread): one transaction for the whole batch:
   re-check duplicates (the store may have moved on since step 1), resolve equivocation,
   insert, and queue every stored event in the outbox of each relay peer but its hop.
   When ``commit`` returns, the batch is durable and may be acknowledged.

:meth:`Ingest.process` runs the three in sequence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from node.protocol.errors import ErrorCode
from node.protocol.frames import Event
from node.protocol.signing import event_string
from node.storage.store import Store, StoredEvent

STORED = "stored"
DUPLICATE = "duplicate"
REJECTED = "rejected"

KeyLookup = Callable[[str, str], bytes | None]
"""(author, key_id) → the author's 32-byte verify key if key_id is its pinned key."""

ProvisionalLookup = Callable[[str, str], bool]
"""(author, key_id) → True when that key is only provisionally trusted (§3.2)."""


@dataclass(slots=True)
class Outcome:
    """What became of one event. ``code`` is set for rejections and for a stored event
    that equivocates (``equivocation`` True: store, ACK and relay it, and also send the
    non-fatal EQUIVOCATION ERROR)."""

    status: str
    event_id: str
    code: ErrorCode | None = None
    message: str = ""
    equivocation: bool = False


@dataclass(slots=True)
class Candidate:
    """An event that passed the cheap checks and waits for its signature check."""

    index: int
    event: Event
    hop: str
    ciphertext: bytes
    verify_key: bytes
    signed: bytes  # the event signing string
    signature: bytes
    provisional: bool


@dataclass(slots=True)
class Batch:
    group_id: str
    outcomes: list[Outcome | None]
    candidates: list[Candidate] = field(default_factory=list)
    verified: list[bool] | None = None
    # (index, content_hash) of events prepare() found already held: prepare may run while
    # an earlier batch's transaction is still open, so commit() confirms each one.
    duplicates: list[tuple[int, str]] = field(default_factory=list)


def check_signatures(candidates: Sequence[Candidate]) -> list[bool]:
    """Ed25519 verification of each candidate. Pure, so it may run on any thread."""
    out = []
    append = out.append
    for c in candidates:
        try:
            crypto_sign_open(c.signature + c.signed, c.verify_key)
        except BadSignatureError:
            append(False)
        else:
            append(True)
    return out


def _rejected(event_id: str, code: ErrorCode, message: str) -> Outcome:
    return Outcome(REJECTED, event_id, code, message)


class Ingest:
    def __init__(
        self,
        store: Store,
        key_lookup: KeyLookup,
        provisional_lookup: ProvisionalLookup | None = None,
    ) -> None:
        self.store = store
        self.key_lookup = key_lookup
        self.provisional_lookup = provisional_lookup

    def process(
        self,
        group_id: str,
        items: Sequence[tuple[Event, str]],
        relay_peers: Sequence[str] = (),
        *,
        now: float,
    ) -> list[Outcome]:
        """Check and store ``items`` ((event, hop server id) pairs) in one transaction.

        Outcomes are in the order of ``items``. Every stored event is queued in the
        outbox of each of ``relay_peers`` except its hop.
        """
        batch = self.prepare(group_id, items)
        batch.verified = check_signatures(batch.candidates)
        return self.commit(batch, relay_peers, now=now)

    def prepare(self, group_id: str, items: Sequence[tuple[Event, str]]) -> Batch:
        """Content hash, duplicate and author-key checks (§4.3 order), no writes."""
        store = self.store
        key_lookup = self.key_lookup
        provisional_lookup = self.provisional_lookup
        sha256 = hashlib.sha256
        b64decode = base64.b64decode
        outcomes: list[Outcome | None] = [None] * len(items)
        candidates: list[Candidate] = []
        duplicates: list[tuple[int, str]] = []
        for i, (ev, hop) in enumerate(items):
            event_id = ev.event_id
            try:
                raw = b64decode(ev.ciphertext, validate=True)
            except (binascii.Error, ValueError):
                outcomes[i] = _rejected(event_id, ErrorCode.BAD_FRAME, "ciphertext is not base64")
                continue
            if ev.content_hash != "sha256:" + sha256(raw).hexdigest():
                outcomes[i] = _rejected(
                    event_id, ErrorCode.HASH_MISMATCH, "content_hash does not match ciphertext"
                )
                continue
            if store.match(group_id, event_id, ev.content_hash):
                outcomes[i] = Outcome(DUPLICATE, event_id)
                duplicates.append((i, ev.content_hash))
                continue
            key = key_lookup(ev.author, ev.key_id)
            if key is None:
                outcomes[i] = _rejected(
                    event_id, ErrorCode.UNKNOWN_KEY, f"{ev.key_id} is not the key of {ev.author}"
                )
                continue
            try:
                signature = b64decode(ev.signature, validate=True)
            except (binascii.Error, ValueError):
                outcomes[i] = _rejected(event_id, ErrorCode.BAD_FRAME, "signature is not base64")
                continue
            signed = event_string(group_id, event_id, ev.author, ev.seq, ev.content_hash)
            provisional = provisional_lookup(ev.author, ev.key_id) if provisional_lookup else False
            candidates.append(Candidate(i, ev, hop, raw, key, signed, signature, provisional))
        return Batch(group_id, outcomes, candidates, duplicates=duplicates)

    def commit(self, batch: Batch, relay_peers: Sequence[str] = (), *, now: float) -> list[Outcome]:
        """Signature results, duplicates again, equivocation, insert, outbox: one commit."""
        if batch.verified is None:
            batch.verified = check_signatures(batch.candidates)
        store = self.store
        group_id = batch.group_id
        outcomes = batch.outcomes
        relay: dict[str, list[str]] = {peer: [] for peer in relay_peers}
        with store.transaction():
            for i, content_hash in batch.duplicates:
                # Held when prepare() looked, but perhaps only by a transaction that has
                # since rolled back: an ACK must never cover that (§4.4).
                held = outcomes[i]
                if held is not None and not store.match(group_id, held.event_id, content_hash):
                    outcomes[i] = _rejected(
                        held.event_id, ErrorCode.INTERNAL, "store changed under the check; resend"
                    )
            for cand, ok in zip(batch.candidates, batch.verified, strict=True):
                ev = cand.event
                event_id = ev.event_id
                if not ok:
                    outcomes[cand.index] = _rejected(
                        event_id, ErrorCode.BAD_SIGNATURE, "event signature does not verify"
                    )
                    continue
                stored = StoredEvent.from_event(
                    group_id,
                    ev,
                    cand.ciphertext,
                    received_at=now,
                    hop=cand.hop,
                    provisional=cand.provisional,
                )
                held = store.match(group_id, event_id, ev.content_hash)
                if held:
                    outcomes[cand.index] = Outcome(DUPLICATE, event_id)
                    continue
                if held is False:
                    outcome = self._same_id(stored)
                elif store.seq_held(group_id, ev.author, ev.seq):
                    outcome = self._same_seq(stored)
                else:
                    store.insert_event(stored)
                    outcome = Outcome(STORED, event_id)
                outcomes[cand.index] = outcome
                if outcome.status == STORED:
                    for peer, queued in relay.items():
                        if peer != cand.hop:
                            queued.append(event_id)
            for peer, queued in relay.items():
                if queued:
                    store.outbox_add(peer, group_id, queued)
        return outcomes  # type: ignore[return-value]  # every slot is filled by now

    def _same_id(self, ev: StoredEvent) -> Outcome:
        """Another version of a held event_id: the lower content_hash wins everywhere."""
        store = self.store
        previous = store.get_event(ev.group_id, ev.event_id)
        store.mark_equivocating(ev.group_id, ev.author)
        if previous is not None and previous.author != ev.author:
            store.mark_equivocating(ev.group_id, previous.author)
        if store.replace_event(ev):
            return Outcome(
                STORED,
                ev.event_id,
                ErrorCode.EQUIVOCATION,
                f"{ev.author} signed two versions of {ev.event_id}; this one is kept",
                equivocation=True,
            )
        return _rejected(
            ev.event_id,
            ErrorCode.EQUIVOCATION,
            f"{ev.author} signed two versions of {ev.event_id}; the other one is kept",
        )

    def _same_seq(self, ev: StoredEvent) -> Outcome:
        """A new event_id at a seq already held: if it is another event, both are kept."""
        store = self.store
        store.insert_event(ev)
        others = [
            o.event_id
            for o in store.events_by_author_seq(ev.group_id, ev.author, ev.seq)
            if o.event_id != ev.event_id
        ]
        if not others:  # cannot happen while seq_held was true; keep it honest anyway
            return Outcome(STORED, ev.event_id)
        store.mark_equivocating(ev.group_id, ev.author)
        return Outcome(
            STORED,
            ev.event_id,
            ErrorCode.EQUIVOCATION,
            f"{ev.author} signed seq {ev.seq} for {ev.event_id} and {others[0]}",
            equivocation=True,
        )
