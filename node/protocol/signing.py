"""The exact signing strings of PROTOCOL §3.2, §3.3, §4.1 and §4.3.

UTF-8, fields joined by ``\\n``, no trailing newline. They live in one place
because the vectors pin them byte for byte and every signer and verifier must
agree on them.
"""

from __future__ import annotations

import base64
import hashlib


def key_id_for(public_key: bytes) -> str:
    """``ed25519:`` + first 8 chars of unpadded base64url(SHA-256(public key))."""
    digest = hashlib.sha256(public_key).digest()
    return "ed25519:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:8]


def key_string(server_id: str, key_id: str, public_key: str, url: str, valid_until: str) -> bytes:
    return f"taps.v1.key\n{server_id}\n{key_id}\n{public_key}\n{url}\n{valid_until}".encode()


def hello_string(
    server_id: str,
    to: str,
    group_id: str,
    frame_id: str,
    timestamp: str,
    key_id: str,
    version: str,
    max_message_size: int,
    url: str,
) -> bytes:
    return (
        f"taps.v1.hello\n{server_id}\n{to}\n{group_id}\n{frame_id}\n{timestamp}\n"
        f"{key_id}\n{version}\n{max_message_size}\n{url}"
    ).encode()


def event_string(group_id: str, event_id: str, author: str, seq: int, content_hash: str) -> bytes:
    return f"taps.v1.event\n{group_id}\n{event_id}\n{author}\n{seq}\n{content_hash}".encode()


def request_string(
    origin: str, receiver: str, method: str, path_and_query: str, ts: str, body: bytes
) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return (
        f"taps.v1.request\n{origin}\n{receiver}\n{method}\n{path_and_query}\n{ts}\n{body_hash}"
    ).encode()


def content_hash(ciphertext: bytes) -> str:
    return "sha256:" + hashlib.sha256(ciphertext).hexdigest()
