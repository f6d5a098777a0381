"""Fault injection for demos: cut a link, pause our ACKs, shrink the credit we grant.

A fault is set on a link, (peer, group), whatever our role on it, and outlives its
streams: it applies to every stream that serves the link now or later, initiator or
acceptor, until it is switched off. A cut link is refused in both directions: our links
do not dial it and repairs do not run (they ask :meth:`FaultBoard.link_cut`), and a
stream the peer opens to us is dropped as soon as its HELLO names the peer; its signed
digest, checkpoint and send requests in that group are answered 503 (OVERLOADED, with
Retry-After), as if we were away (``node.runtime.federation.FederationApi.admit``).

A configured peer whose server id is not known yet is named by its URL (its row on the
dashboard is); a fault set on that name moves to the server id once a link learns it
(:meth:`FaultBoard.move`), so it follows the row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from node.protocol.session import StreamSession
from node.runtime.stream_key import UNKNOWN_PEER
from node.view.snapshot import Fault

CUT_REASON = "link cut (fault injection)"


class FaultTarget(Protocol):
    """What a fault acts on: a live stream."""

    session: StreamSession
    finished: bool
    group_id: str

    @property
    def peer_id(self) -> str | None: ...

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
        self._faults: dict[tuple[str, str], set[Fault]] = {}
        self._window = (window_events, window_bytes)
        self._one_event = (1, max_message_size)
        self._log = log
        self.on_change: Callable[[str, str], None] = lambda peer, group: None

    def set(self, peer_id: str, group_id: str, fault: Fault, enabled: bool) -> bool:
        """Switch ``fault`` on or off for the link; returns whether anything changed."""
        key = (peer_id, group_id)
        active = self._faults.setdefault(key, set())
        if (fault in active) == enabled:
            return False
        if enabled:
            active.add(fault)
        else:
            active.discard(fault)
            if not active:
                del self._faults[key]
        self._log(f"fault {fault} {'on' if enabled else 'off'} for {peer_id} {group_id}")
        self.on_change(peer_id, group_id)
        return True

    def clear_all(self) -> int:
        """Switch every fault off; returns how many were on."""
        cleared = list(self._faults.items())
        self._faults.clear()
        for (peer, group), faults in cleared:
            self._log(f"faults off for {peer} {group}: {', '.join(sorted(faults))}")
            self.on_change(peer, group)
        return sum(len(faults) for _, faults in cleared)

    def move(self, old_peer: str, new_peer: str) -> None:
        """Faults set on ``old_peer`` (a URL) apply to ``new_peer`` (its server id) from now."""
        moved = [
            (group, faults) for (peer, group), faults in self._faults.items() if peer == old_peer
        ]
        for group, faults in moved:
            del self._faults[(old_peer, group)]
            self._faults.setdefault((new_peer, group), set()).update(faults)
            self._log(
                f"faults of {old_peer} {group} follow it as {new_peer}: {', '.join(sorted(faults))}"
            )
            self.on_change(old_peer, group)
            self.on_change(new_peer, group)

    def of(self, peer_id: str | None, group_id: str) -> frozenset[Fault]:
        return frozenset(self._faults.get((peer_id or UNKNOWN_PEER, group_id), ()))

    def active(self) -> list[tuple[str, str, Fault]]:
        """Every fault switched on, as (peer, group, fault), in a stable order."""
        return sorted((p, g, f) for (p, g), faults in self._faults.items() for f in faults)

    def link_cut(self, peer_id: str | None, group_id: str) -> bool:
        """Is the link with ``peer_id`` in ``group_id`` cut?"""
        return Fault.CUT in self._faults.get((peer_id or UNKNOWN_PEER, group_id), ())

    def apply(self, stream: FaultTarget) -> bool:
        """Bring a stream in line with its link's faults; False when it was cut."""
        faults = self.of(stream.peer_id, stream.group_id)
        if Fault.CUT in faults:
            if not stream.finished:
                stream.abort(CUT_REASON)
            return False
        stream.pause_acks(Fault.ACK_PAUSED in faults)
        events, nbytes = self._one_event if Fault.CREDIT_ONE in faults else self._window
        stream.session.set_credit_window(events, nbytes)
        return True
