"""The one seam between the dashboard and a node: snapshots out, commands in.

The dashboard never reaches into a node. Whatever runs the node (a thread with its
own asyncio loop, or a scripted stand-in for tests and screenshots) offers these
three members, and the UI is built against nothing else. That keeps the node's
work from stuttering the interface and lets every screen be tested without sockets.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from node.view.commands import Command
from node.view.snapshot import NodeSnapshot


@runtime_checkable
class NodeHandle(Protocol):
    @property
    def server_id(self) -> str: ...

    def snapshot(self) -> NodeSnapshot:
        """A picture of the node by value; thread-safe and cheap (called up to 10 Hz)."""
        ...

    def submit(self, command: Command) -> None:
        """Hand a command to the node; thread-safe and never blocks the caller."""
        ...


# A handle may also offer ``trace(event_id, timeout) -> Trace | None``: the node's view
# of one event's way (``node.view.trace``), blocking, asked from a worker thread. The
# trace screen skips handles without it.
