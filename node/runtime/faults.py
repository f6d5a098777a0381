"""Fault injection for demos: cut a link, pause our ACKs, shrink the credit we grant.

A fault is set on a :class:`~node.runtime.stream_key.StreamKey` and outlives the stream:
a cut link stays cut across reconnects (links and repairs ask :meth:`FaultBoard.link_cut`)
until it is switched off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from node.protocol.session import StreamSession
from node.runtime.stream_key import UNKNOWN_PEER, StreamKey
from node.view.snapshot import Fault


class FaultTarget(Protocol):
    """What a fault acts on: a live stream."""

    session: StreamSession
    finished: bool

    def abort(self, reason: str) -> None: ...

    def pause_acks(self, paused: bool) -> None: ...


class FaultBoard:
    def __init__(
        self,
        *,
        window_events: int,
        window_bytes: int,
        max_message_size: int,
        log: Callable[[str], None],
    ) -> None:
        self._faults: dict[StreamKey, set[Fault]] = {}
        self._window = (window_events, window_bytes)
        self._one_event = (1, max_message_size)
        self._log = log
        self.on_change: Callable[[StreamKey], None] = lambda key: None

    def set(self, key: StreamKey, fault: Fault, enabled: bool) -> None:
        active = self._faults.setdefault(key, set())
        if enabled:
            active.add(fault)
        else:
            active.discard(fault)
        self._log(f"fault {fault} {'on' if enabled else 'off'} for {key}")
        self.on_change(key)

    def of(self, key: StreamKey) -> frozenset[Fault]:
        return frozenset(self._faults.get(key, ()))

    def link_cut(self, peer_id: str | None, group_id: str) -> bool:
        """Is any stream with ``peer_id`` in ``group_id`` cut, in either role?"""
        return any(
            Fault.CUT in faults
            and key.peer_id == (peer_id or UNKNOWN_PEER)
            and key.group_id == group_id
            for key, faults in self._faults.items()
        )

    def apply(self, key: StreamKey, stream: FaultTarget) -> None:
        faults = self._faults.get(key, set())
        if Fault.CUT in faults and not stream.finished:
            stream.abort("link cut (fault injection)")
            return
        stream.pause_acks(Fault.ACK_PAUSED in faults)
        events, nbytes = self._one_event if Fault.CREDIT_ONE in faults else self._window
        stream.session.set_credit_window(events, nbytes)
