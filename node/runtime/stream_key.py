"""The name of a stream: (peer, group, role), stable across reconnects.

Faults, rate history and the dashboard's rows follow a stream by this key; its text form
``peer|group|role`` is what crosses to the dashboard and back in commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from node.protocol.session import Role

UNKNOWN_PEER = "?"  # an acceptor's peer before its HELLO is authenticated


class _Named(Protocol):
    @property
    def peer_id(self) -> str | None: ...

    group_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class StreamKey:
    """(peer, group, role): stable across reconnects, so faults and history follow it."""

    peer_id: str
    group_id: str
    role: Role

    def __str__(self) -> str:
        return f"{self.peer_id}|{self.group_id}|{self.role.value}"

    @classmethod
    def of(cls, stream: _Named) -> StreamKey:
        return cls(stream.peer_id or UNKNOWN_PEER, stream.group_id, stream.role)

    @classmethod
    def parse(cls, text: str) -> StreamKey:
        """The inverse of ``str(key)``; raises ValueError for anything else."""
        peer, group, role = text.rsplit("|", 2)
        return cls(peer, group, Role(role))
