"""What a node counts and says: its counters and its log, shared by the runtime's parts.

Each part receives only the callable or the counters it uses; the dashboard reads both
through the snapshot.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

log = logging.getLogger("tapsim.node")

LOG_LINES = 200  # kept for the dashboard


@dataclass(slots=True)
class Counters:
    events_stored: int = 0
    events_published: int = 0
    events_rejected: int = 0
    streams_accepted: int = 0
    streams_initiated: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class NodeLog:
    """One line per notable event: to the ``tapsim.node`` logger, the dashboard's tail,
    and an optional callback (the headless node prints them)."""

    def __init__(self, on_line: Callable[[str], None] | None = None) -> None:
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self._on_line = on_line

    def __call__(self, message: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {message}")
        log.info(message)
        if self._on_line is not None:
            self._on_line(message)
