"""Commands the dashboard (or a test) sends to a running node.

They are plain values so they can cross from the UI thread to the node's loop
through a thread-safe queue. Ciphertext is produced by the client layer before a
command is built: the node never sees a group key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PublishEvent:
    """Author, sign, store and relay one event carrying this ciphertext."""

    group_id: str
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class Repair:
    """Run anti-entropy now; ``None`` means every peer / every group."""

    peer_id: str | None = None
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class AddPeer:
    url: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForgetPeer:
    """Stop federating with the peer at this URL for the rest of the run. With
    ``drop_outbox_and_pin``, also delete the events queued for it and its key pin (kept
    by default: adding it again resumes where it stopped)."""

    url: str
    drop_outbox_and_pin: bool = False


@dataclass(frozen=True, slots=True)
class SetFault:
    """Switch a demo fault (node.snapshot.FAULT_*) on or off for one stream key."""

    stream_key: str
    fault: str
    enabled: bool


Command = PublishEvent | Repair | AddPeer | ForgetPeer | SetFault
