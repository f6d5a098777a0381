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
    """Switch a demo fault (node.view.snapshot.FAULT_*) on or off for the link with
    ``peer_id`` in ``group_id``: it applies to every stream of that link, in either
    role, now and after reconnects."""

    peer_id: str
    group_id: str
    fault: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class ClearFaults:
    """Switch every fault off."""


@dataclass(frozen=True, slots=True)
class RefreshDigest:
    """Fetch the peer's whole-group digest (one small request) to compare with ours."""

    peer_id: str
    group_id: str


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Record every frame of every stream, and a snapshot a second, into ``directory``
    ("": the node's own choice: its --record dir, else ``recordings`` in its data dir)."""

    directory: str = ""


@dataclass(frozen=True, slots=True)
class StopRecording:
    """Stop recording and close the file."""


Command = (
    PublishEvent
    | Repair
    | AddPeer
    | ForgetPeer
    | SetFault
    | ClearFaults
    | RefreshDigest
    | StartRecording
    | StopRecording
)
