"""CREDIT accounting of PROTOCOL §4.2, one ledger per direction of a stream.

Credit is the stream's only backpressure: HTTP/2 windows are kept wide, so if these
numbers are wrong either the peer floods us (memory) or the stream deadlocks. Both
ledgers are plain integers updated in O(1) per EVENT, because they sit on the hot path.
"""

from __future__ import annotations

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import MAX_CREDIT, Credit


class InboundCredit:
    """The credit we grant the peer: enforce it on every EVENT read, decide top-ups.

    The invariant of §4.2 is ``granted ≤ processed + window`` per unit, where
    *processed* only advances when the shell reports an EVENT's checks complete
    (stored, duplicate or rejected). Credit therefore tracks durable progress, not
    bytes read: a slow store slows the peer instead of growing our memory.
    """

    __slots__ = (
        "consumed_bytes",
        "consumed_events",
        "granted_bytes",
        "granted_events",
        "processed_bytes",
        "processed_events",
        "window_bytes",
        "window_events",
    )

    def __init__(self, window_events: int, window_bytes: int) -> None:
        self.window_events = 0
        self.window_bytes = 0
        self.set_window(window_events, window_bytes)
        self.granted_events = 0
        self.granted_bytes = 0
        self.consumed_events = 0
        self.consumed_bytes = 0
        self.processed_events = 0
        self.processed_bytes = 0

    def set_window(self, events: int, nbytes: int) -> None:
        """Change the window (e.g. a demo fault). Credit already granted is never revoked."""
        if not (0 <= events <= MAX_CREDIT and 0 <= nbytes <= MAX_CREDIT):
            raise ValueError("credit window must be within 0..2^31-1 in both units")
        self.window_events = events
        self.window_bytes = nbytes

    @property
    def remaining_events(self) -> int:
        """Events the peer may still send before it must wait for our next grant."""
        return self.granted_events - self.consumed_events

    @property
    def remaining_bytes(self) -> int:
        return self.granted_bytes - self.consumed_bytes

    def consume(self, size: int) -> None:
        """Charge one EVENT line of ``size`` bytes, or FLOW_CONTROL_VIOLATION if it overdraws."""
        if self.consumed_events >= self.granted_events:
            raise ProtocolError(ErrorCode.FLOW_CONTROL_VIOLATION, "1 event over credit")
        if self.consumed_bytes + size > self.granted_bytes:
            over = self.consumed_bytes + size - self.granted_bytes
            raise ProtocolError(ErrorCode.FLOW_CONTROL_VIOLATION, f"{over} bytes over credit")
        self.consumed_events += 1
        self.consumed_bytes += size

    def processed(self, size: int) -> None:
        self.processed_events += 1
        self.processed_bytes += size

    def below_half(self) -> bool:
        """The peer's remaining credit fell below half the window in either unit (§4.2)."""
        return (
            2 * (self.granted_events - self.consumed_events) < self.window_events
            or 2 * (self.granted_bytes - self.consumed_bytes) < self.window_bytes
        )

    def grantable(self) -> tuple[int, int]:
        """How much a grant may add now while keeping ``granted ≤ processed + window``."""
        events = self.processed_events + self.window_events - self.granted_events
        nbytes = self.processed_bytes + self.window_bytes - self.granted_bytes
        return (events if events > 0 else 0, nbytes if nbytes > 0 else 0)

    def grant(self) -> Credit | None:
        """Grant in both units up to the bound; None when there is nothing to add."""
        events, nbytes = self.grantable()
        if not events and not nbytes:
            return None
        self.granted_events += events
        self.granted_bytes += nbytes
        return Credit(events, nbytes)


class OutboundCredit:
    """The credit the peer granted us: what we may still send (§4.2).

    A sender that lacks either unit must wait; :meth:`fits` is the check the session
    runs before it accepts an EVENT for sending.
    """

    __slots__ = ("bytes", "events", "granted_bytes", "granted_events")

    def __init__(self) -> None:
        self.events = 0  # remaining
        self.bytes = 0
        self.granted_events = 0  # lifetime totals, for the dashboard
        self.granted_bytes = 0

    def add(self, grant: Credit) -> None:
        """Apply a CREDIT frame; outstanding credit above 2^31−1 is FLOW_CONTROL_VIOLATION."""
        events = self.events + grant.events
        nbytes = self.bytes + grant.bytes
        if events > MAX_CREDIT or nbytes > MAX_CREDIT:
            raise ProtocolError(ErrorCode.FLOW_CONTROL_VIOLATION, "outstanding credit above 2^31-1")
        self.events = events
        self.bytes = nbytes
        self.granted_events += grant.events
        self.granted_bytes += grant.bytes

    def fits(self, size: int, reserved_events: int = 0, reserved_bytes: int = 0) -> bool:
        """One more EVENT line of ``size`` bytes fits, after what is already reserved."""
        return self.events - reserved_events >= 1 and self.bytes - reserved_bytes >= size

    def consume(self, size: int) -> None:
        self.events -= 1
        self.bytes -= size
