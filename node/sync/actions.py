"""What the repair planner (:mod:`node.sync.planner`) reads, asks and reports.

Its view of our own set (:class:`DigestSource`, :class:`EventRef`), the requests it asks
the shell to perform (:class:`FetchDigest`, :class:`SendCheckpoint`,
:class:`SendEvents`), how a repair ends (:class:`Done`, :class:`Failed`) with its
:class:`RepairStats`, and the :class:`RepairState` the dashboard shows. Plain values:
the shell and the view use them without the planner's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from node.sync.checkpoint import CheckpointRequest
from node.sync.digest import AuthorSummary, DigestQuery


class RepairState(StrEnum):
    """Where a repair of one (peer, group) stands: what the dashboard's digest column shows."""

    UNKNOWN = "unknown"
    EQUAL = "equal"
    DIFFERS = "differs"
    REPAIRING = "repairing"
    FAILED = "failed"
    EQUIVOCATION = "equivocation"


class DigestSource(Protocol):
    """Our own side of a group, read-only; the store implements it (group first).

    The planner reads ``summary``, ``authors``, ``range_summary`` and ``ids_in_range``;
    ``digest`` is the same source answering a peer's `GET …/digest`.
    """

    def summary(self, group: str) -> tuple[int, str]: ...

    def authors(self, group: str) -> dict[str, dict[str, int]]: ...

    def range_summary(self, group: str, lo: str, hi: str) -> tuple[int, str]: ...

    def digest(self, group: str, server_id: str, lo: str, hi: str, buckets: int) -> dict: ...

    def ids_in_range(self, group: str, lo: str, hi: str) -> list[str]: ...


class EventRef(Protocol):
    """What the planner reads of an EVENT in a checkpoint response (node.frames.Event fits)."""

    @property
    def event_id(self) -> str: ...

    @property
    def content_hash(self) -> str: ...


# --------------------------------------------------------------------------- actions
# eq=False: two requests for the same thing are still two requests; the shell hands
# back the very object it answers, and the planner finds its bookkeeping by identity.


@dataclass(eq=False, frozen=True, slots=True)
class FetchDigest:
    lo: str
    hi: str
    buckets: int

    @property
    def query(self) -> DigestQuery:
        return DigestQuery(self.lo, self.hi, self.buckets)


@dataclass(eq=False, frozen=True, slots=True)
class SendCheckpoint:
    request: CheckpointRequest

    @property
    def payload(self) -> dict:
        return self.request.to_payload()


@dataclass(eq=False, frozen=True, slots=True)
class SendEvents:
    """Send our versions of these events to the peer (on the stream or by `send`).

    ``equivocation`` marks versions sent so the peer can apply the lower-hash rule:
    the peer may answer them with a non-fatal EQUIVOCATION, which is no failure.
    """

    event_ids: tuple[str, ...]
    equivocation: bool = False


@dataclass(eq=False, frozen=True, slots=True)
class Done:
    stats: RepairStats


@dataclass(eq=False, frozen=True, slots=True)
class Failed:
    reason: str
    stats: RepairStats


Request = FetchDigest | SendCheckpoint | SendEvents
Action = FetchDigest | SendCheckpoint | SendEvents | Done | Failed


# What a repair learned of one range of the group's event-id space (RepairStats.range_marks).
MARK_EQUAL = "equal"  # compared: both sides hold the same events there
MARK_DIFFERS = "differs"  # compared: the sides differ there
MARK_REPAIRED = "repaired"  # its checkpoint exchange completed
MAX_RANGE_MARKS = 512  # kept per repair: coarse ranges come first, then finer ones


@dataclass(slots=True)
class RepairStats:
    started_at: float
    finished_at: float | None = None
    round_trips: int = 0  # requests answered (each is one HTTP exchange)
    rounds: int = 0  # longest chain of dependent requests: the latency in round trips
    digests: int = 0
    checkpoints: int = 0  # CHECKPOINT requests, pages included
    pages: int = 0  # of which continuation pages (`after` a previous page's `next`)
    sends: int = 0
    passes: int = 0
    ranges_compared: int = 0
    mismatching_ranges: list[tuple[str, str]] = field(default_factory=list)
    # (lo, hi, MARK_*) in the order learned; "" is the open end (§5.3).
    range_marks: list[tuple[str, str, str]] = field(default_factory=list)
    events_fetched: int = 0
    events_sent: int = 0
    bytes: int = 0  # as reported by the shell for each exchange
    local_count: int | None = None
    local_fingerprint: str | None = None
    remote_count: int | None = None
    remote_fingerprint: str | None = None
    local_authors: dict[str, AuthorSummary] = field(default_factory=dict)
    remote_authors: dict[str, AuthorSummary] = field(default_factory=dict)
    we_lack_at_least: int = 0  # from the authors maps, before any repair
    peer_lacks_at_least: int = 0
    tails_only: bool = False
    equivocations: set[str] = field(default_factory=set)
    unresolved: list[tuple[str, str]] = field(default_factory=list)
    converged: bool | None = None
    error: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at
