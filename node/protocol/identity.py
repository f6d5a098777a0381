"""Who this node is, and how anyone proves who they are (PROTOCOL §3.2, §3.3, §4.1, §4.3).

Three things live here because they share one key type and one set of signing strings:

- :class:`KeyDocument`, the self-signed statement "server X uses key K until T", which
  travels in every HELLO and is served from ``GET /keys/…``. It keeps the strings exactly
  as the publisher wrote them, because the signature covers those strings, not their
  meaning (a re-formatted ``valid_until`` would no longer verify).
- Free verification functions that never raise on hostile input: a peer's garbage must
  become a clear ``AUTH_FAILED`` or a ``False``, never a crash of the session.
- :class:`Identity`, our own Ed25519 key pair. Its seed is the one secret the node has, so
  it is kept out of every repr; reading and writing it is the runtime's job
  (:mod:`node.runtime.seed_file`), so this module does no I/O.

Pin policy (who is trusted for which server id) is not here but in :mod:`node.protocol.keystore`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from node.protocol import frames, signing
from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.ids import CROCKFORD, format_rfc3339, is_server_id, parse_rfc3339

ALGORITHM = "ed25519"
SEED_SIZE = 32
KEY_LIFETIME = 365 * 86400.0  # a fresh key document is valid for a year …
RENEW_BEFORE = 30 * 86400.0  # … and is re-signed when less than 30 days remain

_KEY_ID_RE = re.compile(r"ed25519:[A-Za-z0-9_-]{8}")


def _auth(message: str, ref: str | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.AUTH_FAILED, message, ref)


def _b64decode(value: str) -> bytes | None:
    """Canonical padded base64 (§2), strictly; None instead of an exception."""
    return frames.b64decode_canonical(value)


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def pairing_code_for(public_key: bytes) -> str:
    """Four groups of four Crockford characters (80 bits of SHA-256 of the key).

    Meant to be read aloud between two operators to compare keys out of band: long
    enough that a forged key will not match by chance, short enough to say.
    """
    n = int.from_bytes(hashlib.sha256(public_key).digest()[:10], "big")
    chars = "".join(CROCKFORD[(n >> (5 * i)) & 31] for i in range(15, -1, -1))
    return "-".join(chars[i : i + 4] for i in range(0, 16, 4))


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class KeyDocument:
    """A server's self-signed key document, with the strings exactly as published."""

    server_id: str
    key_id: str
    public_key: bytes
    public_key_b64: str
    url: str
    valid_until: str
    valid_until_ts: float
    signature: str

    def to_dict(self) -> dict[str, Any]:
        """The §3.2 JSON document, byte-identical in value to what the server signed."""
        return {
            "server_id": self.server_id,
            "key_id": self.key_id,
            "algorithm": ALGORITHM,
            "public_key": self.public_key_b64,
            "url": self.url,
            "valid_until": self.valid_until,
            "signature": self.signature,
        }

    def signing_string(self) -> bytes:
        return signing.key_string(
            self.server_id, self.key_id, self.public_key_b64, self.url, self.valid_until
        )

    @property
    def pairing_code(self) -> str:
        return pairing_code_for(self.public_key)

    @classmethod
    def from_dict(cls, d: object) -> KeyDocument:
        """Parse a §3.2 document (from ``GET /keys/…`` or the store); AUTH_FAILED if malformed.

        Malformed is AUTH_FAILED rather than BAD_FRAME because a key document is
        credentials, not a frame: whoever handed it to us failed to authenticate.
        """
        if not isinstance(d, dict):
            raise _auth("key document must be a JSON object")
        algorithm = d.get("algorithm", ALGORITHM)
        if algorithm != ALGORITHM:
            raise _auth(f"key document algorithm {algorithm!r} is not {ALGORITHM!r}")
        return cls._build(
            d.get("server_id"),
            d.get("key_id"),
            d.get("public_key"),
            d.get("url"),
            d.get("valid_until"),
            d.get("signature"),
        )

    @classmethod
    def from_hello(cls, hello: frames.Hello) -> KeyDocument:
        """The sender's key document carried by a HELLO (``key_signature`` is its signature)."""
        return cls._build(
            hello.server_id,
            hello.key_id,
            hello.public_key,
            hello.url,
            hello.valid_until,
            hello.key_signature,
        )

    @classmethod
    def _build(
        cls,
        server_id: object,
        key_id: object,
        public_key_b64: object,
        url: object,
        valid_until: object,
        signature: object,
    ) -> KeyDocument:
        if not is_server_id(server_id):
            raise _auth("key document server_id is missing or malformed")
        assert isinstance(server_id, str)
        if not isinstance(key_id, str) or _KEY_ID_RE.fullmatch(key_id) is None:
            raise _auth(f"key document of {server_id}: key_id is missing or malformed")
        if not isinstance(public_key_b64, str):
            raise _auth(f"key document of {server_id}: public_key is missing")
        public_key = _b64decode(public_key_b64)
        if public_key is None or len(public_key) != 32:
            raise _auth(f"key document of {server_id}: public_key is not base64 of 32 bytes")
        if not isinstance(url, str) or not frames.is_valid_url(url):
            raise _auth(f"key document of {server_id}: url must be empty or scheme://host:port")
        valid_until_ts = parse_rfc3339(valid_until)
        if valid_until_ts is None:
            raise _auth(f"key document of {server_id}: valid_until is not an RFC 3339 time")
        assert isinstance(valid_until, str)
        if not isinstance(signature, str):
            raise _auth(f"key document of {server_id}: signature is missing")
        raw_sig = _b64decode(signature)
        if raw_sig is None or len(raw_sig) != 64:
            raise _auth(f"key document of {server_id}: signature is not base64 of 64 bytes")
        return cls(
            server_id,
            key_id,
            public_key,
            public_key_b64,
            url,
            valid_until,
            valid_until_ts,
            signature,
        )


def verify_signature(public_key: bytes, message: bytes, signature_b64: str) -> bool:
    """Ed25519 check of a base64 signature; False on any malformed input, never raises."""
    raw = _b64decode(signature_b64)
    if raw is None or len(raw) != 64 or len(public_key) != 32:
        return False
    try:
        nacl.bindings.crypto_sign_open(raw + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


def verify_key_document(doc: KeyDocument, now: float) -> None:
    """§3.2 'verified': own signature, key id of that key, not expired. Else AUTH_FAILED."""
    if not verify_signature(doc.public_key, doc.signing_string(), doc.signature):
        raise _auth(f"key document of {doc.server_id}: signature does not verify")
    expected = signing.key_id_for(doc.public_key)
    if doc.key_id != expected:
        raise _auth(
            f"key document of {doc.server_id}: key_id {doc.key_id} does not match "
            f"its public key ({expected})"
        )
    if doc.valid_until_ts <= now:
        raise _auth(f"key document of {doc.server_id} expired at {doc.valid_until}")


def verify_event(group_id: str, event: frames.Event, public_key: bytes) -> bool:
    """Whether ``event.signature`` signs the §4.3 event string under ``public_key``.

    Only the signature: the content hash and the key id are checked by the caller,
    in the §4.3 order, because they map to other error codes.
    """
    message = (
        f"taps.v1.event\n{group_id}\n{event.event_id}\n{event.author}\n"
        f"{event.seq}\n{event.content_hash}"
    ).encode()
    return verify_signature(public_key, message, event.signature)


# --------------------------------------------------------------------------- authorization

_AUTH_PARAM_RE = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]+)\s*')
_AUTH_FIELDS = ("origin", "key", "ts", "sig")


def parse_authorization(value: str) -> dict[str, str] | None:
    """``Taps origin="…", key="…", ts="…", sig="…"`` → dict of those four, or None.

    The scheme name is case-insensitive (RFC 9110); parameters may come in any order,
    quoted or not; unknown parameters are ignored; a duplicate or missing one is None.
    """
    if not isinstance(value, str):
        return None
    scheme, sep, rest = value.strip().partition(" ")
    if not sep or scheme.lower() != "taps":
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _AUTH_PARAM_RE.match(rest, pos)
        if m is None:
            return None
        name = m.group(1).lower()
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name in params:
            return None
        params[name] = raw
        pos = m.end()
        if pos < len(rest):
            if rest[pos] != ",":
                return None
            pos += 1
    if not all(f in params for f in _AUTH_FIELDS):
        return None
    return {f: params[f] for f in _AUTH_FIELDS}


# --------------------------------------------------------------------------- our identity


class Identity:
    """This node's key pair and the key document it publishes.

    The document is re-signed whenever what it says changes (the URL, learnt only after
    binding port 0; or the expiry, renewed when under 30 days remain), so every HELLO
    carries the current one. The seed is never exposed: no property returns it and
    ``repr`` shows only public facts.
    """

    __slots__ = ("_doc", "_signing_key", "_url", "_valid_until", "_valid_until_ts", "server_id")

    def __init__(
        self,
        signing_key: nacl.signing.SigningKey,
        server_id: str,
        url: str,
        valid_until: str,
    ) -> None:
        if not is_server_id(server_id):
            raise ValueError(f"invalid server id {server_id!r}")
        if not frames.is_valid_url(url):
            raise ValueError(f"invalid url {url!r}: must be empty or scheme://host:port")
        ts = parse_rfc3339(valid_until)
        if ts is None:
            raise ValueError(f"valid_until {valid_until!r} is not an RFC 3339 time")
        self._signing_key = signing_key
        self.server_id = server_id
        self._url = url
        self._valid_until = valid_until
        self._valid_until_ts = ts
        self._doc = self._sign_document()

    # -- construction

    @classmethod
    def from_seed(
        cls,
        seed: bytes,
        server_id: str,
        url: str = "",
        valid_until: str | None = None,
        *,
        now: float | None = None,
    ) -> Identity:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        if valid_until is None:
            valid_until = format_rfc3339((time.time() if now is None else now) + KEY_LIFETIME)
        return cls(nacl.signing.SigningKey(seed), server_id, url, valid_until)

    # -- public facts

    @property
    def url(self) -> str:
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        if not frames.is_valid_url(value):
            raise ValueError(f"invalid url {value!r}: must be empty or scheme://host:port")
        if value != self._url:
            self._url = value
            self._doc = self._sign_document()

    @property
    def public_key(self) -> bytes:
        return self._doc.public_key

    @property
    def public_key_b64(self) -> str:
        return self._doc.public_key_b64

    @property
    def key_id(self) -> str:
        return self._doc.key_id

    @property
    def valid_until(self) -> str:
        return self._valid_until

    @property
    def valid_until_ts(self) -> float:
        return self._valid_until_ts

    @property
    def pairing_code(self) -> str:
        return pairing_code_for(self._doc.public_key)

    def __repr__(self) -> str:
        return f"Identity(server_id={self.server_id!r}, key_id={self.key_id!r}, url={self._url!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("Identity holds a private key and cannot be pickled")

    # -- documents and signatures

    def key_document(self) -> KeyDocument:
        return self._doc

    def renew_if_due(self, now: float) -> bool:
        """Re-sign the document for another year when less than 30 days remain."""
        if self._valid_until_ts - now >= RENEW_BEFORE:
            return False
        self._valid_until = format_rfc3339(now + KEY_LIFETIME)
        self._valid_until_ts = parse_rfc3339(self._valid_until) or now + KEY_LIFETIME
        self._doc = self._sign_document()
        return True

    def sign(self, message: bytes) -> str:
        return _b64encode(self._signing_key.sign(message).signature)

    def make_hello(
        self,
        *,
        to: str,
        group_id: str,
        frame_id: str,
        timestamp: str,
        max_message_size: int,
        ping_interval_ms: int,
        capabilities: list[str],
        supported_groups: list[str],
        sequence: int = 1,
    ) -> frames.Frame:
        """Our HELLO to ``to`` (§4.1): the key document plus a signature binding the stream."""
        doc = self._doc
        version = frames.PROTOCOL_VERSION
        sig = self.sign(
            signing.hello_string(
                self.server_id,
                to,
                group_id,
                frame_id,
                timestamp,
                doc.key_id,
                version,
                max_message_size,
                doc.url,
            )
        )
        hello = frames.Hello(
            server_id=self.server_id,
            version=version,
            capabilities=list(capabilities),
            supported_groups=list(supported_groups),
            max_message_size=max_message_size,
            ping_interval_ms=ping_interval_ms,
            key_id=doc.key_id,
            public_key=doc.public_key_b64,
            url=doc.url,
            valid_until=doc.valid_until,
            key_signature=doc.signature,
            to=to,
            signature=sig,
        )
        return frames.Frame("HELLO", frame_id, self.server_id, sequence, hello, group_id, timestamp)

    def sign_event(self, group_id: str, event_id: str, seq: int, ciphertext: bytes) -> frames.Event:
        """An event authored by us (§4.3), ready to store and send."""
        chash = signing.content_hash(ciphertext)
        sig = self.sign(signing.event_string(group_id, event_id, self.server_id, seq, chash))
        return frames.Event(
            event_id=event_id,
            author=self.server_id,
            seq=seq,
            ciphertext=_b64encode(ciphertext),
            content_hash=chash,
            key_id=self._doc.key_id,
            signature=sig,
        )

    def authorization_header(
        self, *, receiver: str, method: str, path_and_query: str, body: bytes, ts: str
    ) -> str:
        """The §3.3 ``Authorization`` header value for one request to ``receiver``."""
        sig = self.sign(
            signing.request_string(self.server_id, receiver, method, path_and_query, ts, body)
        )
        return f'Taps origin="{self.server_id}", key="{self.key_id}", ts="{ts}", sig="{sig}"'

    def _sign_document(self) -> KeyDocument:
        public_key = bytes(self._signing_key.verify_key)
        public_key_b64 = _b64encode(public_key)
        key_id = signing.key_id_for(public_key)
        sig = self.sign(
            signing.key_string(self.server_id, key_id, public_key_b64, self._url, self._valid_until)
        )
        return KeyDocument(
            self.server_id,
            key_id,
            public_key,
            public_key_b64,
            self._url,
            self._valid_until,
            self._valid_until_ts,
            sig,
        )
