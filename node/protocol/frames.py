"""Typed frames of PROTOCOL §2 and §4: parse and validate one NDJSON line, encode one frame.

Parsing turns a line into a :class:`Frame` whose ``payload`` is one of the payload
classes below, or raises :class:`~node.errors.ProtocolError` with the precise code
(BAD_JSON for anything that is not a JSON object, BAD_FRAME for missing or malformed
fields, VERSION_UNSUPPORTED for a HELLO of another major version). Unknown frame
types parse into a Frame with ``payload=None`` and ``known=False``: the session answers
them with a non-fatal UNKNOWN_TYPE and they still consume a sequence number.

Unknown fields are ignored everywhere, as the contract requires.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.ids import (
    is_group_id,
    is_group_pattern,
    is_server_id,
    is_ulid,
    parse_rfc3339,
)

PROTOCOL_VERSION = "1.0.0"
FRAME_TYPES = ("HELLO", "CREDIT", "EVENT", "ACK", "PING", "PONG", "ERROR", "CHECKPOINT")
MAX_CREDIT = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_WIDE_FLOAT = 2.0**63  # orjson's float for an integer literal beyond 64 bits is at least this

_KEY_ID_RE = re.compile(r"ed25519:[A-Za-z0-9_-]{8}")
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_URL_RE = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+):(\d{1,5})")


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def _is_int(value: object) -> bool:
    return type(value) is int


def b64decode_canonical(value: object) -> bytes | None:
    """The bytes of canonical padded base64 (§2), or None for anything else.

    Canonical: the standard alphabet, padded to a multiple of 4, nothing around it, and
    the bits a final padded group leaves unused are zero, so each byte string has
    exactly one encoding (``QR==`` decodes like ``QQ==`` but is not canonical).
    """
    if not isinstance(value, str):
        return None
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    tail = len(raw) % 3
    if tail and binascii.b2a_base64(raw[-tail:], newline=False) != value[-4:].encode():
        return None
    return raw


def _b64(value: object, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{name} must be a base64 string")
    raw = b64decode_canonical(value)
    if raw is None:
        raise _bad(f"{name} is not canonical padded base64")
    if size is not None and len(raw) != size:
        raise _bad(f"{name} must decode to {size} bytes")
    return raw


def _require(payload: dict, name: str) -> Any:
    try:
        return payload[name]
    except KeyError:
        raise _bad(f"payload.{name} is required") from None


def _str(payload: dict, name: str) -> str:
    value = _require(payload, name)
    if not isinstance(value, str):
        raise _bad(f"payload.{name} must be a string")
    return value


def is_valid_url(value: str) -> bool:
    """`""` or `http(s)://host:port` with an explicit port and no path (§4.1)."""
    if value == "":
        return True
    m = _URL_RE.fullmatch(value)
    return m is not None and 0 < int(m.group(2)) <= 65535


def parse_version(value: object) -> tuple[int, int]:
    if not isinstance(value, str):
        raise _bad("payload.version must be a string")
    m = _VERSION_RE.fullmatch(value)
    if m is None:
        raise _bad("payload.version must look like 1.0.0")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------- payloads


@dataclass(slots=True)
class Hello:
    server_id: str
    version: str
    capabilities: list[str]
    supported_groups: list[str]
    max_message_size: int
    ping_interval_ms: int
    key_id: str
    public_key: str
    url: str
    valid_until: str
    key_signature: str
    to: str
    signature: str

    @classmethod
    def from_dict(cls, p: dict) -> Hello:
        # §4.1 order: version first (VERSION_UNSUPPORTED), then the other fields.
        major, _minor = parse_version(_require(p, "version"))
        if major != 1:
            raise ProtocolError(
                ErrorCode.VERSION_UNSUPPORTED, f"version {p['version']} not supported (1.x)"
            )
        server_id = _str(p, "server_id")
        if not is_server_id(server_id):
            raise _bad("payload.server_id is not a valid server id")
        caps = _require(p, "capabilities")
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise _bad("payload.capabilities must be a list of strings")
        groups = _require(p, "supported_groups")
        if not isinstance(groups, list) or not all(is_group_pattern(g) for g in groups):
            raise _bad("payload.supported_groups must be a list of group patterns")
        mms = _require(p, "max_message_size")
        if not _is_int(mms) or mms < 1 or mms > MAX_CREDIT:
            raise _bad("payload.max_message_size must be a positive integer")
        pim = _require(p, "ping_interval_ms")
        if not _is_int(pim) or not 1000 <= pim <= 300000:
            raise _bad("payload.ping_interval_ms must be 1000–300000")
        key_id = _str(p, "key_id")
        if _KEY_ID_RE.fullmatch(key_id) is None:
            raise _bad("payload.key_id is malformed")
        public_key = _str(p, "public_key")
        _b64(public_key, "payload.public_key", 32)
        url = _str(p, "url")
        if not is_valid_url(url):
            raise _bad("payload.url must be empty or scheme://host:port")
        valid_until = _str(p, "valid_until")
        if parse_rfc3339(valid_until) is None:
            raise _bad("payload.valid_until is not an RFC 3339 time")
        key_signature = _str(p, "key_signature")
        _b64(key_signature, "payload.key_signature", 64)
        to = _str(p, "to")
        if not is_server_id(to):
            raise _bad("payload.to is not a valid server id")
        signature = _str(p, "signature")
        _b64(signature, "payload.signature", 64)
        return cls(
            server_id,
            p["version"],
            caps,
            groups,
            mms,
            pim,
            key_id,
            public_key,
            url,
            valid_until,
            key_signature,
            to,
            signature,
        )

    def to_dict(self) -> dict:
        return {
            "server_id": self.server_id,
            "version": self.version,
            "capabilities": self.capabilities,
            "supported_groups": self.supported_groups,
            "max_message_size": self.max_message_size,
            "ping_interval_ms": self.ping_interval_ms,
            "key_id": self.key_id,
            "public_key": self.public_key,
            "url": self.url,
            "valid_until": self.valid_until,
            "key_signature": self.key_signature,
            "to": self.to,
            "signature": self.signature,
        }


@dataclass(slots=True)
class Credit:
    events: int
    bytes: int

    @classmethod
    def from_dict(cls, p: dict) -> Credit:
        events = _require(p, "events")
        nbytes = _require(p, "bytes")
        if not _is_int(events) or not _is_int(nbytes):
            raise _bad("CREDIT events and bytes must be integers")
        if events < 0 or nbytes < 0:
            raise ProtocolError(ErrorCode.FLOW_CONTROL_VIOLATION, "negative credit grant")
        return cls(events, nbytes)

    def to_dict(self) -> dict:
        return {"events": self.events, "bytes": self.bytes}


@dataclass(slots=True)
class Event:
    """An event as authored: everything but the hop-specific envelope."""

    event_id: str
    author: str
    seq: int
    ciphertext: str
    content_hash: str
    key_id: str
    signature: str
    # The decoded ciphertext and signature when this event was parsed from a frame (the
    # frame checks decode them anyway): the §4.3 checks then need not decode them again.
    # Whoever derives an event with other ciphertext or signature must leave them None.
    raw_ciphertext: bytes | None = field(default=None, compare=False, repr=False)
    raw_signature: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, p: dict) -> Event:
        event_id = _str(p, "event_id")
        if not is_ulid(event_id):
            raise _bad("payload.event_id is not a canonical ULID")
        author = _str(p, "author")
        if not is_server_id(author):
            raise _bad("payload.author is not a valid server id")
        seq = _require(p, "seq")
        if not _is_int(seq) or seq < 1:
            raise _bad("payload.seq must be an integer ≥ 1")
        ciphertext = _str(p, "ciphertext")
        raw_ciphertext = _b64(ciphertext, "payload.ciphertext")
        content_hash = _str(p, "content_hash")
        if _HASH_RE.fullmatch(content_hash) is None:
            raise _bad("payload.content_hash must be sha256:<64 lowercase hex>")
        key_id = _str(p, "key_id")
        if _KEY_ID_RE.fullmatch(key_id) is None:
            raise _bad("payload.key_id is malformed")
        signature = _str(p, "signature")
        raw_signature = _b64(signature, "payload.signature", 64)
        return cls(
            event_id,
            author,
            seq,
            ciphertext,
            content_hash,
            key_id,
            signature,
            raw_ciphertext,
            raw_signature,
        )

    def ciphertext_bytes(self) -> bytes:
        return _b64(self.ciphertext, "payload.ciphertext")

    def to_dict(self) -> dict:
        return {
            "event_id": self.event_id,
            "author": self.author,
            "seq": self.seq,
            "ciphertext": self.ciphertext,
            "content_hash": self.content_hash,
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass(slots=True)
class Ack:
    through: int
    event_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, p: dict) -> Ack:
        through = _require(p, "through")
        if not _is_int(through) or through < 0:
            raise _bad("payload.through must be an integer ≥ 0")
        ids = p.get("event_ids", [])
        if ids is None:
            ids = []
        if not isinstance(ids, list) or not all(is_ulid(i) for i in ids):
            raise _bad("payload.event_ids must be a list of canonical ULIDs")
        return cls(through, ids)

    def to_dict(self) -> dict:
        if self.event_ids:
            return {"through": self.through, "event_ids": self.event_ids}
        return {"through": self.through}


@dataclass(slots=True)
class Ping:
    @classmethod
    def from_dict(cls, p: dict) -> Ping:
        return cls()

    def to_dict(self) -> dict:
        return {}


@dataclass(slots=True)
class Pong:
    ping_id: str

    @classmethod
    def from_dict(cls, p: dict) -> Pong:
        ping_id = _str(p, "ping_id")
        if not is_ulid(ping_id):
            raise _bad("payload.ping_id is not a canonical ULID")
        return cls(ping_id)

    def to_dict(self) -> dict:
        return {"ping_id": self.ping_id}


@dataclass(slots=True)
class Error:
    code: str
    message: str
    ref: str | None
    fatal: bool

    @classmethod
    def from_dict(cls, p: dict) -> Error:
        code = _str(p, "code")
        message = p.get("message", "")
        if not isinstance(message, str):
            raise _bad("payload.message must be a string")
        ref = p.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise _bad("payload.ref must be a string or null")
        fatal = _require(p, "fatal")
        if not isinstance(fatal, bool):
            raise _bad("payload.fatal must be a boolean")
        return cls(code, message, ref, fatal)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "ref": self.ref, "fatal": self.fatal}


@dataclass(slots=True)
class Checkpoint:
    """CHECKPOINT payloads differ by direction (§5.3); node.checkpoint interprets them."""

    body: dict

    @classmethod
    def from_dict(cls, p: dict) -> Checkpoint:
        return cls(p)

    def to_dict(self) -> dict:
        return self.body


Payload = Hello | Credit | Event | Ack | Ping | Pong | Error | Checkpoint

PAYLOAD_TYPES: dict[str, type] = {
    "HELLO": Hello,
    "CREDIT": Credit,
    "EVENT": Event,
    "ACK": Ack,
    "PING": Ping,
    "PONG": Pong,
    "ERROR": Error,
    "CHECKPOINT": Checkpoint,
}
_NEEDS_GROUP = frozenset({"HELLO", "EVENT", "CHECKPOINT"})


# --------------------------------------------------------------------------- frames


@dataclass(slots=True)
class Frame:
    type: str
    id: str
    origin: str
    sequence: int
    payload: Any
    group_id: str | None = None
    timestamp: str | None = None
    size: int = 0  # bytes of the line as read, `\r` included, `\n` excluded (§4.2)

    @property
    def known(self) -> bool:
        return self.type in PAYLOAD_TYPES

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "type": self.type,
            "id": self.id,
            "origin": self.origin,
            "sequence": self.sequence,
        }
        if self.group_id is not None:
            d["group_id"] = self.group_id
        if self.timestamp is not None:
            d["timestamp"] = self.timestamp
        d["payload"] = self.payload.to_dict() if self.payload is not None else {}
        return d


def frame_id_of(obj: object) -> str | None:
    """The `id` of a frame-shaped object, when it is a canonical ULID: the `ref` of an ERROR."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if is_ulid(value):
            return value
    return None


def loads_object(line: bytes) -> dict:
    """JSON-decode one line into an object, or BAD_JSON (§2: also for an integer
    outside the signed 64-bit range, wherever it stands in the line)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a frame must be a JSON object")
    if _may_hold_wide_integer(obj) and _holds_wide_integer(line):
        raise ProtocolError(ErrorCode.BAD_JSON, "an integer outside the signed 64-bit range")
    return obj


def _may_hold_wide_integer(obj: dict) -> bool:
    """Whether the decoded line has a number that may have been an integer beyond 64 bits.

    orjson keeps integers up to 2^64−1 as ``int`` and turns wider ones into ``float``,
    so an ``int`` out of range is certain and a ``float`` of magnitude ≥ 2^63 is a
    suspect (it may as well have been written ``1e19``). Iterative: nesting is deep.
    """
    stack: list[Any] = [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                return True
        elif kind is float and abs(value) >= _WIDE_FLOAT:
            return True
    return False


class _WideInteger(Exception):
    pass


def _check_integer_literal(text: str) -> int:
    if len(text) > 20 or not INT64_MIN <= int(text) <= INT64_MAX:
        raise _WideInteger
    return 0


def _holds_wide_integer(line: bytes) -> bool:
    """Read the line's integer literals as written (the stdlib parser shows them)."""
    try:
        json.loads(line, parse_int=_check_integer_literal)
    except _WideInteger:
        return True
    except (ValueError, RecursionError):
        return True  # orjson read it, the stdlib cannot: too deep to tell, so refuse
    return False


def parse_frame(line: bytes) -> Frame:
    """Parse one NDJSON line (without `\\n`; a trailing `\\r` is allowed) into a Frame."""
    obj = loads_object(line)
    return frame_from_dict(obj, len(line))


def frame_from_dict(obj: dict, size: int = 0) -> Frame:
    ftype = obj.get("type")
    if not isinstance(ftype, str):
        raise _bad("type is required and must be a string")
    fid = obj.get("id")
    if not is_ulid(fid):
        raise _bad("id must be a canonical ULID")
    origin = obj.get("origin")
    if not is_server_id(origin):
        raise _bad("origin must be a valid server id")
    sequence = obj.get("sequence")
    if not _is_int(sequence) or sequence < 1:
        raise _bad("sequence must be an integer ≥ 1")
    group_id = obj.get("group_id")
    if group_id is not None and not is_group_id(group_id):
        raise _bad("group_id is not a valid group id")
    cls = PAYLOAD_TYPES.get(ftype)
    if cls is None:
        return Frame(ftype, fid, origin, sequence, None, group_id, None, size)
    if group_id is None and ftype in _NEEDS_GROUP:
        raise _bad(f"group_id is required on {ftype}")
    timestamp = obj.get("timestamp")
    if ftype == "HELLO":
        if parse_rfc3339(timestamp) is None:
            raise _bad("timestamp is required on HELLO and must be RFC 3339")
    elif timestamp is not None and not isinstance(timestamp, str):
        raise _bad("timestamp must be a string")
    payload = obj.get("payload")
    if payload is None and ftype in ("PING",):
        payload = {}
    if not isinstance(payload, dict):
        raise _bad("payload must be an object")
    try:
        parsed = cls.from_dict(payload)
    except ProtocolError as exc:
        exc.ref = fid
        raise
    return Frame(ftype, fid, origin, sequence, parsed, group_id, timestamp, size)


def encode_frame(frame: Frame) -> bytes:
    """One NDJSON line, `\\n` included."""
    return orjson.dumps(frame.to_dict(), option=orjson.OPT_APPEND_NEWLINE)


def encode_dict(obj: dict) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
