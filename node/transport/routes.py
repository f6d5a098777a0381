"""Path shapes of PROTOCOL §3 under ``/_taps/federation``.

Routing is the first check (404 NOT_FOUND), so it must decide on the shape alone:
``/keys/{x}`` and ``/encrypted-groups/{x}/{action}`` match whatever ``x`` is, and
whether ``x`` is a valid, served group is decided later (404 GROUP_UNSUPPORTED).
Segments are split on the raw path before percent-decoding, so ``g%21x`` and ``g!x``
name the same group while an encoded ``%2F`` can never forge an extra segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote

PREFIX = "/_taps/federation"
_PREFIX_B = PREFIX.encode()


def group_path(group_id: str, endpoint: str) -> str:
    """The path a client requests for a group endpoint (``stream``, ``send``, …)."""
    return f"{PREFIX}/encrypted-groups/{quote(group_id, safe='')}/{endpoint}"


class Endpoint(StrEnum):
    CAPS = "caps"
    KEY_CURRENT = "keys/current"
    KEY = "keys"
    STREAM = "stream"
    SEND = "send"
    DIGEST = "digest"
    CHECKPOINT = "checkpoint"


METHODS: dict[Endpoint, str] = {
    Endpoint.CAPS: "GET",
    Endpoint.KEY_CURRENT: "GET",
    Endpoint.KEY: "GET",
    Endpoint.STREAM: "POST",
    Endpoint.SEND: "POST",
    Endpoint.DIGEST: "GET",
    Endpoint.CHECKPOINT: "POST",
}

# Endpoints whose request and response bodies are frames (media type, Accept checks).
FRAME_ENDPOINTS = frozenset({Endpoint.STREAM, Endpoint.SEND, Endpoint.CHECKPOINT})

_GROUP_ACTIONS = {
    "stream": Endpoint.STREAM,
    "send": Endpoint.SEND,
    "digest": Endpoint.DIGEST,
    "checkpoint": Endpoint.CHECKPOINT,
}


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    arg: str | None = None  # the decoded server id (KEY) or group id (group endpoints)

    @property
    def method(self) -> str:
        return METHODS[self.endpoint]


def _decode(segment: bytes) -> str:
    # Invalid UTF-8 or escapes still decode to *something* that later fails the
    # group/server id syntax check; routing never raises.
    return unquote(segment.decode("latin-1"), encoding="utf-8", errors="replace")


def match_route(raw_path: bytes) -> Route | None:
    """The endpoint for a raw (still percent-encoded) path without its query, or None."""
    if not raw_path.startswith(_PREFIX_B):
        return None
    rest = raw_path[len(_PREFIX_B) :]
    if not rest.startswith(b"/"):
        return None
    parts = rest[1:].split(b"/")
    n = len(parts)
    if n == 1 and parts[0] == b"caps":
        return Route(Endpoint.CAPS)
    if n == 2 and parts[0] == b"keys":
        if parts[1] == b"current":
            return Route(Endpoint.KEY_CURRENT)
        return Route(Endpoint.KEY, _decode(parts[1]))
    if n == 3 and parts[0] == b"encrypted-groups":
        endpoint = _GROUP_ACTIONS.get(parts[2].decode("latin-1"))
        if endpoint is not None:
            return Route(endpoint, _decode(parts[1]))
    return None
