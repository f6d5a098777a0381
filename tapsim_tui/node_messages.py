"""What the dashboard and a node's child process say over their pipe: only its life.

The pipe carries the start (ready, or why not) and the stop; the node's snapshots and the
dashboard's commands go over the node's control socket (``tapsim_tui.attach``), the same
way as for a node the dashboard did not start. These cross the pipe pickled: both ends are
this program, parent and child.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- dashboard → node -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the node and end the process."""


ToNode = Stop

# -- node → dashboard -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The node started: where it listens, and where its control socket is."""

    url: str
    control: str


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The node could not start; `reason` is one line fit to show the user."""

    reason: str


FromNode = Ready | StartFailed
