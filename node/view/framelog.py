"""A bounded tail of the frames a node reads and writes, for the dashboard's frame log.

Recording must cost next to nothing on the hot path, so a record is a tuple pushed
onto a bounded deque; the words of each entry are written only when a snapshot asks
for them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from node.protocol.frames import Ack, Credit, Error, Event, Hello, Pong
from node.view.snapshot import FrameLogEntry

TAIL = 400


def summarize(ftype: str, payload: Any) -> str:
    """One line of plain words about a frame's payload."""
    match payload:
        case Event():
            return f"{payload.author} #{payload.seq} {payload.event_id[-8:]}"
        case Ack():
            n = len(payload.event_ids)
            return f"through {payload.through}" + (f", {n} new" if n else "")
        case Credit():
            return f"+{payload.events} ev, +{payload.bytes} B"
        case Error():
            return f"{payload.code}{' (fatal)' if payload.fatal else ''}: {payload.message}"
        case Hello():
            return f"{payload.server_id} → {payload.to} v{payload.version} {payload.key_id}"
        case Pong():
            return f"for {payload.ping_id[-8:]}"
        case _:
            return ""


class FrameLog:
    def __init__(self, size: int = TAIL) -> None:
        self._records: deque[tuple] = deque(maxlen=size)
        self._entries: deque[FrameLogEntry] = deque(maxlen=size)  # records put in words
        self._index = 0

    @property
    def last_index(self) -> int:
        return self._index

    def observer(self, peer: Callable[[], str | None], group_id: str) -> Callable[..., None]:
        """A session ``frame_observer`` that records into this log for one stream."""
        records = self._records
        clock = time.time

        def observe(direction: str, ftype: str, sequence: int, size: int, payload: Any) -> None:
            self._index += 1
            who = peer()
            if who is None:  # before the HELLO is checked: its claim, marked unproven
                claimed = getattr(payload, "server_id", None) if ftype == "HELLO" else None
                who = f"{claimed}?" if isinstance(claimed, str) else "?"
            records.append(
                (
                    self._index,
                    clock(),
                    direction,
                    who,
                    group_id,
                    ftype,
                    sequence,
                    size,
                    payload,
                )
            )

        return observe

    def record(
        self, direction: str, peer: str, group_id: str, ftype: str, size: int, payload: Any
    ) -> None:
        """A frame outside any stream (send, checkpoint), sequence 1."""
        self._index += 1
        self._records.append(
            (self._index, time.time(), direction, peer, group_id, ftype, 1, size, payload)
        )

    def entries(self, newest: int | None = None) -> tuple[FrameLogEntry, ...]:
        """The tail in words; each record is put in words once, however often asked.

        ``newest``: put at most that many of the records new since the last call in words
        (the newest ones); the others are never shown. At thousands of frames a second a
        dashboard writes a few dozen lines a tick, and wording every frame would cost the
        node more than it shows anyone.
        """
        done = self._entries[-1].index if self._entries else 0
        fresh = []
        for record in reversed(self._records):
            if record[0] <= done or (newest is not None and len(fresh) >= newest):
                break
            fresh.append(record)
        self._entries.extend(_entry(record) for record in reversed(fresh))
        return tuple(self._entries)


def _entry(record: tuple) -> FrameLogEntry:
    index, at, direction, peer, group_id, ftype, sequence, size, payload = record
    is_event = isinstance(payload, Event)
    return FrameLogEntry(
        index=index,
        at=at,
        direction=direction,
        peer_id=peer,
        group_id=group_id,
        type=ftype,
        sequence=sequence,
        size=size,
        summary=summarize(ftype, payload),
        is_error=ftype == "ERROR",
        event_id=payload.event_id if is_event else None,
        ciphertext=payload.ciphertext if is_event else None,
    )
