"""What the dashboard needs to show a node that has not started yet, and how often.

The node runs in a child process (``tapsim_tui.nodeprocess``); these pieces are shared by
every way of running one: the picture shown before the first snapshot, and how often
snapshots are published while someone is looking. The words of a failed start are in
``tapsim_tui.settings.start_errors``.
"""

from __future__ import annotations

import time

from node.view.snapshot import NodeSnapshot

PUBLISH_EVERY = 0.1  # seconds between snapshots while the UI reads them
IDLE_AFTER = 1.0  # stop building snapshots when nobody asked for this long


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
