"""What the dashboard needs to start a node and to show one that has not started yet.

The node runs in a child process (``tapsim_tui.nodeprocess``); these pieces are shared by
every way of starting one: the wording of start errors, the picture shown before the first
snapshot, and how often snapshots are published while someone is looking.
"""

from __future__ import annotations

import time

from node.view.snapshot import NodeSnapshot

PUBLISH_EVERY = 0.1  # seconds between snapshots while the UI reads them
IDLE_AFTER = 1.0  # stop building snapshots when nobody asked for this long


class NodeStartError(Exception):
    """The node could not start; the message is fit to show the user as is."""


def starting_snapshot(server_id: str) -> NodeSnapshot:
    """What the dashboard shows of a node before its first snapshot: its name, no more."""
    now = time.time()
    return NodeSnapshot(
        taken_at=now,
        server_id=server_id,
        listen_urls=(),
        key_id="",
        pairing_code="",
        started_at=now,
    )


def describe_start_error(exc: BaseException) -> str:
    """One line a user can act on, for the errors a node start can meet."""
    from node.runtime.seed_file import IdentityError
    from node.transport.serving import PortInUse

    if isinstance(exc, PortInUse):
        return str(exc)
    if isinstance(exc, IdentityError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"cannot use {exc.filename}: permission denied"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"
