"""The content checks of PROTOCOL §4.3 and the group-committed storing of events.

The frame-level checks (size, JSON, fields, sequence, credit, group) belong to the
session; what is left is per event and the same whichever way it arrived (stream,
``send``, checkpoint): content hash, duplicate, author key, signature, equivocation.

Ingest runs in steps, each on the thread that owns what it reads, so the expensive one
can leave the store thread while nothing reads the store anywhere else:

1. :meth:`Ingest.screen` (store thread, cheap): which events are already held with the
   content hash they claim, from the store's in-memory index.
2. :meth:`Ingest.keys` (where the key store lives: the event loop): the author key of
   each event not already held.
3. :func:`check` and :func:`check_signatures` (pure, any thread): decode and hash the
   ciphertext, apply the §4.3 order (hash, duplicate, key, signature) and verify the
   Ed25519 signatures. Verification is most of the cost per event and pynacl releases
   the GIL, so chunks of a batch run on a pool.
4. :meth:`Ingest.commit` (store thread): one transaction for the whole batch:
   re-check duplicates (the store may have moved on since step 1), resolve equivocation,
   insert, and queue every stored event in the outbox of each relay peer but its hop.
   When ``commit`` returns, the batch is durable and may be acknowledged.

Outcomes are the session's own (:class:`~node.protocol.session.Stored`,
:class:`~node.protocol.session.Duplicate`, :class:`~node.protocol.session.Rejected`),
handed to it unchanged. :meth:`Ingest.prepare` runs steps 1–3 on the calling thread and
:meth:`Ingest.process` all of them.
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
from node.protocol.session import Duplicate, Outcome, Rejected, Stored
from node.protocol.signing import event_string
from node.storage.store import Store, StoredEvent

KeyLookup = Callable[[str, str], bytes | None]
"""(author, key_id) → the author's 32-byte verify key if key_id is its pinned key."""

ProvisionalLookup = Callable[[str, str], bool]
"""(author, key_id) → True when that key is only provisionally trusted (§3.2)."""

AuthorKey = tuple[bytes | None, bool]
"""What step 2 found for one event: (verify key or None, provisionally trusted)."""


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
    # (index, event_id, content_hash) of events screen() found already held: it may run
    # while an earlier batch's transaction is still open, so commit() confirms each one.
    duplicates: list[tuple[int, str, str]] = field(default_factory=list)
    # False when the checks ran without a full duplicate screen (only a guess of what is
    # held): commit() then applies the duplicate check itself, in its §4.3 place, to what
    # the later checks refused (after_duplicate) and to every candidate.
    screened: bool = True
    after_duplicate: list[tuple[int, str, str, Rejected]] = field(default_factory=list)


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


def check(
    group_id: str,
    items: Sequence[tuple[Event, str]],
    held: Sequence[bool],
    keys: Sequence[AuthorKey | None],
    *,
    screened: bool = True,
) -> Batch:
    """The §4.3 checks up to the signature, in their order, from what steps 1 and 2 found.

    With ``screened`` false, ``held`` is only a guess (what is surely held) and the
    commit completes the duplicate check. Pure: reads only its arguments, so it may run
    on any thread.
    """
    sha256 = hashlib.sha256
    b64decode = base64.b64decode
    outcomes: list[Outcome | None] = [None] * len(items)
    candidates: list[Candidate] = []
    duplicates: list[tuple[int, str, str]] = []
    after_duplicate: list[tuple[int, str, str, Rejected]] = []
    for i, (ev, hop) in enumerate(items):
        event_id = ev.event_id
        raw = ev.raw_ciphertext  # decoded when the frame was parsed
        if raw is None:
            try:
                raw = b64decode(ev.ciphertext, validate=True)
            except (binascii.Error, ValueError):
                outcomes[i] = Rejected(ErrorCode.BAD_FRAME, "ciphertext is not base64", event_id)
                continue
        if ev.content_hash != "sha256:" + sha256(raw).hexdigest():
            outcomes[i] = Rejected(
                ErrorCode.HASH_MISMATCH, "content_hash does not match ciphertext", event_id
            )
            continue
        if held[i]:
            outcomes[i] = Duplicate(event_id)
            duplicates.append((i, event_id, ev.content_hash))
            continue
        key, provisional = keys[i] or (None, False)
        if key is None:
            outcomes[i] = refused = Rejected(
                ErrorCode.UNKNOWN_KEY, f"{ev.key_id} is not the key of {ev.author}", event_id
            )
            after_duplicate.append((i, event_id, ev.content_hash, refused))
            continue
        signature = ev.raw_signature
        if signature is None:
            try:
                signature = b64decode(ev.signature, validate=True)
            except (binascii.Error, ValueError):
                outcomes[i] = refused = Rejected(
                    ErrorCode.BAD_FRAME, "signature is not base64", event_id
                )
                after_duplicate.append((i, event_id, ev.content_hash, refused))
                continue
        signed = event_string(group_id, event_id, ev.author, ev.seq, ev.content_hash)
        candidates.append(Candidate(i, ev, hop, raw, key, signed, signature, provisional))
    return Batch(
        group_id,
        outcomes,
        candidates,
        duplicates=duplicates,
        screened=screened,
        after_duplicate=after_duplicate if not screened else [],
    )


class Ingest:
    """The §4.3 steps over one store; see the module docstring for which runs where."""

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
        """Steps 1–3 but the signatures, on the calling thread: no writes."""
        held = self.screen(group_id, items)
        return check(group_id, items, held, self.keys(items, held))

    def screen(self, group_id: str, items: Sequence[tuple[Event, str]]) -> list[bool]:
        """Step 1, on the store thread: is each event held with the content hash it claims?"""
        match = self.store.match
        return [match(group_id, ev.event_id, ev.content_hash) is True for ev, _ in items]

    def keys(
        self, items: Sequence[tuple[Event, str]], held: Sequence[bool]
    ) -> list[AuthorKey | None]:
        """Step 2, where the key store lives: the author key of each event not held."""
        key_lookup = self.key_lookup
        provisional_lookup = self.provisional_lookup
        out: list[AuthorKey | None] = []
        for (ev, _), dup in zip(items, held, strict=True):
            if dup:
                out.append(None)
                continue
            key = key_lookup(ev.author, ev.key_id)
            provisional = (
                provisional_lookup(ev.author, ev.key_id)
                if key is not None and provisional_lookup is not None
                else False
            )
            out.append((key, provisional))
        return out

    def commit(self, batch: Batch, relay_peers: Sequence[str] = (), *, now: float) -> list[Outcome]:
        """Step 4: signature results, duplicates again, equivocation, insert, outbox; one
        commit. Raises :class:`~node.storage.errors.StoreUnavailable` (nothing kept) when
        the store cannot write now; the same batch may then be committed again later."""
        if batch.verified is None:
            batch.verified = check_signatures(batch.candidates)
        store = self.store
        group_id = batch.group_id
        outcomes = batch.outcomes
        relay: dict[str, list[str]] = {peer: [] for peer in relay_peers}
        # New events go in with one statement per batch. One that shares its event_id or
        # (author, seq) with an earlier one of the same batch must see it in the store,
        # so what is pending goes in first (then the usual checks find it).
        pending: list[StoredEvent] = []
        pending_keys: set[object] = set()
        with store.transaction():
            for i, event_id, content_hash in batch.duplicates:
                # Held when screen() looked, but perhaps only by a transaction that has
                # since rolled back: an ACK must never cover that (§4.4). Every slot is
                # set afresh, so a commit retried after a failed one decides anew.
                outcomes[i] = (
                    Duplicate(event_id)
                    if store.match(group_id, event_id, content_hash)
                    else Rejected(
                        ErrorCode.INTERNAL, "store changed under the check; resend", event_id
                    )
                )
            screened = batch.screened
            for i, event_id, content_hash, refused in batch.after_duplicate:
                # Unscreened: a held event is a duplicate before its key is looked at.
                held_now = store.match(group_id, event_id, content_hash)
                outcomes[i] = Duplicate(event_id) if held_now else refused
            for cand, ok in zip(batch.candidates, batch.verified, strict=True):
                ev = cand.event
                event_id = ev.event_id
                if not ok:
                    outcomes[cand.index] = (
                        Duplicate(event_id)
                        if not screened and store.match(group_id, event_id, ev.content_hash)
                        else Rejected(
                            ErrorCode.BAD_SIGNATURE, "event signature does not verify", event_id
                        )
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
                seq_key = (ev.author, ev.seq)
                if event_id in pending_keys or seq_key in pending_keys:
                    store.insert_events(pending)
                    pending, pending_keys = [], set()
                held = store.match(group_id, event_id, ev.content_hash)
                if held:
                    outcomes[cand.index] = Duplicate(event_id)
                    continue
                if held is False:
                    outcome = self._same_id(stored)
                elif store.seq_held(group_id, ev.author, ev.seq):
                    outcome = self._same_seq(stored)
                else:
                    pending.append(stored)
                    pending_keys.add(event_id)
                    pending_keys.add(seq_key)
                    outcome = Stored(event_id)
                outcomes[cand.index] = outcome
                if type(outcome) is Stored:
                    for peer, queued in relay.items():
                        if peer != cand.hop:
                            queued.append(event_id)
            if pending:
                store.insert_events(pending)
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
            return Stored(
                ev.event_id,
                equivocation=True,
                message=f"{ev.author} signed two versions of {ev.event_id}; this one is kept",
            )
        return Rejected(
            ErrorCode.EQUIVOCATION,
            f"{ev.author} signed two versions of {ev.event_id}; the other one is kept",
            ev.event_id,
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
            return Stored(ev.event_id)
        store.mark_equivocating(ev.group_id, ev.author)
        return Stored(
            ev.event_id,
            equivocation=True,
            message=f"{ev.author} signed seq {ev.seq} for {ev.event_id} and {others[0]}",
        )
