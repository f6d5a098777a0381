"""Signed one-shot requests (PROTOCOL §3.3): our ``Authorization`` headers.

A receiver's replay cache refuses a second request with the same timestamp and
signature, so the timestamps this node signs never repeat, even within a millisecond.
"""

from __future__ import annotations

import time

from node.protocol.identity import Identity
from node.protocol.ids import format_rfc3339


class RequestSigner:
    """Signs §3.3 headers with a timestamp that never repeats for this node."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self._last_ms = 0

    def header(self, receiver: str, method: str, path: str, body: bytes) -> str:
        ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return self._identity.authorization_header(
            receiver=receiver,
            method=method,
            path_and_query=path,
            body=body,
            ts=format_rfc3339(ms / 1000),
        )
