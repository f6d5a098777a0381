"""Which key speaks for which server id, node-wide (PROTOCOL §3.2), and the checks that use it.

:class:`KeyStore` is the pin policy of §3.2 and nothing else: trust on first use from a
HELLO, renewal by the same key, refusal of another key until the pin lapses or an
operator re-pins, provisional documents that never override a real pin, and the
closed-federation peer list. It holds no crypto of its own beyond verifying documents,
and no storage: the SQLite store backs it through ``load`` and an ``on_change``
callback, so this module stays importable without a database.

:class:`HelloAuthenticator` and :class:`RequestAuthenticator` run the §4.1 and §3.3
check sequences in the contract's order, so the first failing check is the one
reported, with a message that names it. They take ``now`` from the caller (sans-IO).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from node.protocol import frames, signing
from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.identity import (
    KeyDocument,
    parse_authorization,
    verify_key_document,
    verify_signature,
)
from node.protocol.ids import is_server_id, parse_rfc3339

CONFIGURED = "configured"
HELLO = "hello"
CONFIRMED = "confirmed"
PROVISIONAL = "provisional"
SOURCES = (CONFIGURED, HELLO, CONFIRMED, PROVISIONAL)

# How much a source is trusted when the same key arrives from two of them: the pin keeps
# the strongest, so a HELLO renewing a configured key does not demote it.
_RANK = {PROVISIONAL: 0, HELLO: 1, CONFIRMED: 1, CONFIGURED: 2}

REPLAY_WINDOW = 600.0  # §4.1 / §3.3: ids and signatures are remembered this long
MAX_SKEW = 300.0  # §4.1 / §3.3: allowed distance between the peer's clock and ours


def _auth(message: str, ref: str | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.AUTH_FAILED, message, ref)


@dataclass(frozen=True, slots=True)
class Pin:
    """One server's pinned key document and where it came from."""

    doc: KeyDocument
    source: str
    via: str | None = None  # the hop that supplied a provisional document

    @property
    def server_id(self) -> str:
        return self.doc.server_id

    @property
    def key_id(self) -> str:
        return self.doc.key_id

    @property
    def provisional(self) -> bool:
        return self.source == PROVISIONAL

    def lapsed(self, now: float) -> bool:
        return self.doc.valid_until_ts <= now


@dataclass(frozen=True, slots=True)
class PinUpdate:
    """What a pin operation did: ``kind`` is new, renewed, replaced or unchanged."""

    server_id: str
    old: Pin | None
    new: Pin
    kind: str

    @property
    def replaced_provisional(self) -> bool:
        """The node must re-verify the events it marked as verified by ``old`` (§3.2)."""
        return self.old is not None and self.old.provisional and not self.new.provisional


class KeyStore:
    """Node-wide key pins per server id, following §3.2 exactly."""

    def __init__(
        self,
        *,
        closed: bool = False,
        allowed: Iterable[str] = (),
        on_change: Callable[[KeyDocument, str], None] | None = None,
        on_provisional_replaced: Callable[[Pin, Pin], None] | None = None,
    ) -> None:
        self.closed = closed
        self._allowed: set[str] = set(allowed)
        self._pins: dict[str, Pin] = {}
        # author -> (key_id, public key): the one lookup on the per-event hot path.
        self._keys: dict[str, tuple[str, bytes]] = {}
        self.on_change = on_change
        self.on_provisional_replaced = on_provisional_replaced

    # -- start-up

    def load(self, entries: Iterable[tuple[dict, str]]) -> int:
        """Install pins saved earlier (``(doc_dict, source)`` pairs); returns how many.

        Saved documents were verified when pinned, so expiry is not re-checked (a lapsed
        pin still verifies old events), but the signature is: a tampered database row
        must not become trust. Rows that fail are skipped.
        """
        loaded = 0
        for doc_dict, source in entries:
            if source not in SOURCES:
                continue
            try:
                doc = KeyDocument.from_dict(doc_dict)
                verify_key_document(doc, now=float("-inf"))
            except ProtocolError:
                continue
            self._set(Pin(doc, source))
            loaded += 1
        return loaded

    # -- closed federation

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self._allowed)

    def allow(self, server_id: str) -> None:
        self._allowed.add(server_id)

    def check_allowed(self, server_id: str) -> None:
        if self.closed and server_id not in self._allowed:
            raise _auth(f"{server_id} is not in the peer list of this closed federation")

    # -- reading

    def pin(self, server_id: str) -> Pin | None:
        return self._pins.get(server_id)

    def pins(self) -> list[Pin]:
        return [self._pins[s] for s in sorted(self._pins)]

    def key_for(self, author: str, key_id: str) -> bytes | None:
        """The key that verifies ``author``'s events signed under ``key_id``, else None.

        A lapsed pin still answers: events signed while it was valid stay verifiable.
        """
        entry = self._keys.get(author)
        if entry is None or entry[0] != key_id:
            return None
        return entry[1]

    def is_provisional(self, author: str) -> bool:
        pin = self._pins.get(author)
        return pin is not None and pin.provisional

    def document(self, server_id: str) -> dict | None:
        """The pinned document as its server published it, for ``GET /keys/{serverId}``.

        Provisional documents are not served: they are not pinned until confirmed.
        """
        pin = self._pins.get(server_id)
        if pin is None or pin.provisional:
            return None
        return pin.doc.to_dict()

    # -- pinning

    def check_pin(self, doc: KeyDocument, now: float) -> None:
        """AUTH_FAILED if a verified ``doc`` from a HELLO may not (re)pin its server id.

        Separate from :meth:`pin_hello` so the authenticator can run the closed check
        after this one, as §4.1 orders, without having pinned anything yet.
        """
        pin = self._pins.get(doc.server_id)
        if pin is None or pin.provisional or pin.doc.public_key == doc.public_key:
            return
        if pin.lapsed(now):
            return
        raise _auth(
            f"key {doc.key_id} of {doc.server_id} differs from its pinned key {pin.key_id} "
            f"({pin.source}, valid until {pin.doc.valid_until})"
        )

    def pin_hello(self, doc: KeyDocument, now: float) -> PinUpdate:
        """Pin (TOFU), renew or replace after a lapse, from a HELLO-verified document."""
        self.check_pin(doc, now)
        return self._install(doc, HELLO, None)

    def pin_confirmed(self, doc: KeyDocument, now: float) -> PinUpdate:
        """Pin a hop-supplied document that its own server confirmed at ``GET /keys/current``."""
        verify_key_document(doc, now)
        self.check_pin(doc, now)
        return self._install(doc, CONFIRMED, None)

    def pin_provisional(self, doc: KeyDocument, now: float, via: str) -> PinUpdate | None:
        """Accept an unconfirmed hop-supplied document, if nothing stronger is in the way.

        Returns None when it is not taken: a HELLO, confirmed or configured pin exists
        (with the same key it already verifies the author's events), or another
        provisional document with a different key came first.
        """
        verify_key_document(doc, now)
        pin = self._pins.get(doc.server_id)
        if pin is not None and (not pin.provisional or pin.doc.public_key != doc.public_key):
            return None
        return self._install(doc, PROVISIONAL, via)

    def repin(self, doc: KeyDocument, now: float | None = None) -> PinUpdate:
        """The operator's (or the configuration's) word: pin ``doc`` whatever was pinned.

        The document must still carry its own valid signature; its expiry is checked
        only when ``now`` is given.
        """
        verify_key_document(doc, float("-inf") if now is None else now)
        old = self._pins.get(doc.server_id)
        if old is not None and old.doc.public_key != doc.public_key:
            return self._replace(old, Pin(doc, CONFIGURED))
        return self._install(doc, CONFIGURED, None)

    def _install(self, doc: KeyDocument, source: str, via: str | None) -> PinUpdate:
        """Apply a document the caller has already judged acceptable."""
        old = self._pins.get(doc.server_id)
        if old is None:
            new = Pin(doc, source, via)
            self._set(new)
            self._changed(new)
            return PinUpdate(doc.server_id, None, new, "new")
        if old.doc.public_key != doc.public_key:
            return self._replace(old, Pin(doc, source, via))
        # Same key: keep the later document (renewal) and the stronger source.
        newer = doc if doc.valid_until_ts >= old.doc.valid_until_ts else old.doc
        if _RANK[source] > _RANK[old.source]:
            new = Pin(newer, source, via)
        else:
            new = Pin(newer, old.source, old.via)
        if new == old:
            return PinUpdate(doc.server_id, old, old, "unchanged")
        self._set(new)
        self._changed(new)
        if old.provisional and not new.provisional and self.on_provisional_replaced:
            self.on_provisional_replaced(old, new)
        return PinUpdate(doc.server_id, old, new, "renewed")

    def _replace(self, old: Pin, new: Pin) -> PinUpdate:
        self._set(new)
        self._changed(new)
        update = PinUpdate(new.server_id, old, new, "replaced")
        if update.replaced_provisional and self.on_provisional_replaced:
            self.on_provisional_replaced(old, new)
        return update

    def forget(self, server_id: str) -> bool:
        """An operator forgot this peer: drop its pin (a key seen later at that id is
        pinned afresh, on first use) and its place in a closed federation's list."""
        self._allowed.discard(server_id)
        self._keys.pop(server_id, None)
        return self._pins.pop(server_id, None) is not None

    def _set(self, pin: Pin) -> None:
        self._pins[pin.server_id] = pin
        self._keys[pin.server_id] = (pin.doc.key_id, pin.doc.public_key)

    def _changed(self, pin: Pin) -> None:
        if self.on_change is not None:
            self.on_change(pin.doc, pin.source)


# --------------------------------------------------------------------------- replay


class ReplayCache(Protocol):
    """Remembers HELLO ids and request signatures for the replay window (§4.1, §3.3)."""

    def check_and_record(self, key: str, now: float, window: float = REPLAY_WINDOW) -> bool:
        """True if ``key`` was not seen within ``window`` seconds (and record it now)."""
        ...


class MemoryReplayCache:
    """In-memory replay cache, for tests and for a node without a durable one.

    Entries are kept in insertion order, which is time order while ``now`` does not go
    backwards, so expiry pops from the front in amortised O(1). ``max_entries`` bounds
    memory under a flood; past it the oldest entries go first.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_record(self, key: str, now: float, window: float = REPLAY_WINDOW) -> bool:
        seen = self._seen
        horizon = now - window
        while seen:
            first_key, first_at = next(iter(seen.items()))
            if first_at > horizon:
                break
            del seen[first_key]
        at = seen.get(key)
        if at is not None and at > horizon:
            return False
        seen[key] = now
        seen.move_to_end(key)
        while len(seen) > self._max:
            seen.popitem(last=False)
        return True


# --------------------------------------------------------------------------- authenticators


class HelloAuthenticator:
    """The §4.1 authentication of a peer's HELLO, after frame and field validation.

    ``frames.parse_frame`` has already checked the version and every field; this runs
    the rest in the contract's order: server_id = origin (BAD_FRAME), key document,
    signature, ``to``, clock, replay, pin, closed (AUTH_FAILED). Only when all pass is
    the document pinned.
    """

    def __init__(
        self,
        server_id: str,
        keystore: KeyStore,
        replay_cache: ReplayCache,
        max_skew: float = MAX_SKEW,
    ) -> None:
        self.server_id = server_id
        self.keystore = keystore
        self.replay_cache = replay_cache
        self.max_skew = max_skew
        self.last_update: PinUpdate | None = None

    def __call__(
        self, frame: frames.Frame, now: float, expect_server_id: str | None = None
    ) -> KeyDocument:
        """Authenticate ``frame`` (a parsed HELLO); returns the peer's pinned key document.

        ``expect_server_id`` is for initiators: the acceptor must be the server addressed.
        """
        hello = frame.payload
        if not isinstance(hello, frames.Hello):
            raise ProtocolError(ErrorCode.HELLO_REQUIRED, f"expected HELLO, got {frame.type}")
        ref = frame.id
        if hello.server_id != frame.origin:
            raise ProtocolError(
                ErrorCode.BAD_FRAME,
                f"HELLO server_id {hello.server_id} differs from frame origin {frame.origin}",
                ref,
            )
        try:
            doc = KeyDocument.from_hello(hello)
            verify_key_document(doc, now)
        except ProtocolError as exc:
            exc.ref = ref
            raise
        message = signing.hello_string(
            hello.server_id,
            hello.to,
            frame.group_id or "",
            frame.id,
            frame.timestamp or "",
            hello.key_id,
            hello.version,
            hello.max_message_size,
            hello.url,
        )
        if not verify_signature(doc.public_key, message, hello.signature):
            raise _auth(f"HELLO signature of {hello.server_id} does not verify", ref)
        if hello.to != self.server_id:
            raise _auth(f"HELLO is addressed to {hello.to}, not to {self.server_id}", ref)
        if expect_server_id is not None and hello.server_id != expect_server_id:
            raise _auth(f"acceptor is {hello.server_id}, not {expect_server_id} as addressed", ref)
        sent_at = parse_rfc3339(frame.timestamp)
        if sent_at is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, "HELLO timestamp is not RFC 3339", ref)
        skew = sent_at - now
        if abs(skew) > self.max_skew:
            side = "ahead of" if skew > 0 else "behind"
            raise _auth(
                f"clock skew {abs(skew):.0f} s exceeds {self.max_skew:.0f} s "
                f"(HELLO of {hello.server_id} timestamped {frame.timestamp} is {side} our clock)",
                ref,
            )
        if not self.replay_cache.check_and_record("hello:" + frame.id, now, REPLAY_WINDOW):
            raise _auth(f"HELLO id {frame.id} replayed within {REPLAY_WINDOW:.0f} s", ref)
        try:
            self.keystore.check_pin(doc, now)
            self.keystore.check_allowed(hello.server_id)
        except ProtocolError as exc:
            exc.ref = ref
            raise
        self.last_update = self.keystore.pin_hello(doc, now)
        return doc


class RequestAuthenticator:
    """The §3.3 check of the ``Authorization`` header of send, digest and checkpoint."""

    def __init__(
        self,
        server_id: str,
        keystore: KeyStore,
        replay_cache: ReplayCache,
        closed: bool,
        max_skew: float = MAX_SKEW,
    ) -> None:
        self.server_id = server_id
        self.keystore = keystore
        self.replay_cache = replay_cache
        self.closed = closed
        self.max_skew = max_skew

    def check(
        self,
        header: str | None,
        method: str,
        path_and_query: str,
        body: bytes,
        now: float,
    ) -> str | None:
        """The authenticated origin, or None for an unsigned request on an open node.

        A header that is present and fails is AUTH_FAILED even on an open node (§3.3).
        """
        if header is None or header.strip() == "":
            if self.closed:
                raise _auth("this closed node requires a signed Authorization header")
            return None
        auth = parse_authorization(header)
        if auth is None:
            raise _auth('malformed Authorization header (Taps origin="…", key="…", ts, sig)')
        origin = auth["origin"]
        if not is_server_id(origin):
            raise _auth(f"Authorization origin {origin!r} is not a server id")
        pin = self.keystore.pin(origin)
        if pin is None or pin.provisional:
            raise _auth(f"no pinned key for {origin}")
        if auth["key"] != pin.key_id:
            raise _auth(f"key {auth['key']} is not the pinned key {pin.key_id} of {origin}")
        ts = auth["ts"]
        message = signing.request_string(origin, self.server_id, method, path_and_query, ts, body)
        if not verify_signature(pin.doc.public_key, message, auth["sig"]):
            raise _auth(f"request signature of {origin} does not verify")
        sent_at = parse_rfc3339(ts)
        if sent_at is None:
            raise _auth(f"Authorization ts {ts!r} is not an RFC 3339 time")
        skew = sent_at - now
        if abs(skew) > self.max_skew:
            raise _auth(f"clock skew {abs(skew):.0f} s exceeds {self.max_skew:.0f} s")
        if not self.replay_cache.check_and_record("sig:" + auth["sig"], now, REPLAY_WINDOW):
            raise _auth(f"request signature replayed within {REPLAY_WINDOW:.0f} s")
        if (self.closed or self.keystore.closed) and origin not in self.keystore.allowed:
            raise _auth(f"{origin} is not in the peer list of this closed federation")
        return origin
