"""What the dashboard and a node's child process say to each other over their pipe.

One frozen dataclass per kind of message; both ends (``tapsim_tui.nodeprocess``) match on
these types, so a new kind is added here once and the type checker sees every use.
They cross the pipe pickled, by value, like the snapshots and commands they carry.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.view.commands import Command
from node.view.snapshot import NodeSnapshot

# -- dashboard → node -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Want:
    """Somebody is looking: keep publishing snapshots (sent every WANT_EVERY seconds)."""


@dataclass(frozen=True, slots=True)
class Execute:
    """Carry out a dashboard command."""

    command: Command


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the node and end the process."""


ToNode = Want | Execute | Stop

# -- node → dashboard -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The node started: where it listens, and its first snapshot."""

    url: str
    snapshot: NodeSnapshot


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The node could not start; `reason` is one line fit to show the user."""

    reason: str


@dataclass(frozen=True, slots=True)
class Published:
    """A fresh snapshot; its frame log holds only entries not sent before."""

    snapshot: NodeSnapshot


FromNode = Ready | StartFailed | Published
