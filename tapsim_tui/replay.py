"""`tapsim replay`: wire recordings played back into the dashboard, or summed up in text.

:func:`load` reads the files of one or more nodes (``node.view.recording``), every record
kept in memory by node, bad lines reported and skipped. A :class:`Player` holds the
replay's position on the recordings' shared monotonic clock, its speed and pause; a
:class:`ReplayNode` per node is a ``NodeHandle`` that shows the snapshot recorded last
before the position, with the frame log rebuilt from the recorded frames, and refuses
every command ("replay: read-only"). No Textual here: ``--summary`` runs without it.
"""

from __future__ import annotations

import bisect
import dataclasses
import gzip
import itertools
import sys
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node.protocol.errors import ProtocolError
from node.protocol.frames import Error, Event, parse_frame
from node.view.commands import Command
from node.view.framelog import TAIL, summarize
from node.view.recording import (
    BadLine,
    FrameRecord,
    Header,
    SnapshotRecord,
    read_records,
)
from node.view.snapshot import FrameLogEntry, NodeSnapshot
from node.view.trace import Trace, trace_recordings
from tapsim_tui.node_start import starting_snapshot

READ_ONLY = "replay: read-only"
SPEEDS = (1.0, 10.0)
SEEK_STEP = 10.0  # seconds of [ and ]
GAP = 2.0  # seconds without any record of a node that the summary reports


class ReplayError(Exception):
    """Nothing to replay (no file, unreadable, no record); the message says which, in words."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A line of a file that could not be read, where and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(slots=True)
class NodeRecording:
    """Every record of one node, in time order."""

    name: str
    headers: list[Header] = field(default_factory=list)
    frames: list[FrameRecord] = field(default_factory=list)
    snapshots: list[SnapshotRecord] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    snapshot_times: list[float] = field(default_factory=list)

    def settle(self) -> None:
        self.frames.sort(key=lambda r: r.t)
        self.snapshots.sort(key=lambda r: r.t)
        self.frame_times = [r.t for r in self.frames]
        self.snapshot_times = [r.t for r in self.snapshots]

    @property
    def start(self) -> float:
        return min(self.frame_times[:1] + self.snapshot_times[:1])

    @property
    def end(self) -> float:
        return max(self.frame_times[-1:] + self.snapshot_times[-1:])


@dataclass(slots=True)
class Recording:
    """The records of every file given, by node (in the order first seen)."""

    nodes: dict[str, NodeRecording]
    problems: list[Problem]
    files: list[str]
    wall_offset: float  # add to a monotonic time for the wall clock

    @property
    def start(self) -> float:
        return min(n.start for n in self.nodes.values())

    @property
    def end(self) -> float:
        return max(n.end for n in self.nodes.values())

    def wall(self, t: float) -> float:
        return t + self.wall_offset


def load(paths: Sequence[Path]) -> Recording:
    """Every record of the files (of one or several nodes); :class:`ReplayError` when a
    file cannot be read or no file holds a record. Bad lines are kept as problems."""
    nodes: dict[str, NodeRecording] = {}
    problems: list[Problem] = []
    offset: float | None = None
    for path in paths:
        try:
            lines = read_lines(Path(path))
        except (OSError, EOFError) as exc:
            raise ReplayError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
        for record in read_records(lines):
            if isinstance(record, BadLine):
                problems.append(Problem(str(path), record.number, record.reason))
                continue
            node = nodes.get(record.node)
            if node is None:
                node = nodes[record.node] = NodeRecording(record.node)
            if isinstance(record, Header):
                node.headers.append(record)
                if offset is None:
                    offset = record.wall - record.mono
            elif isinstance(record, FrameRecord):
                node.frames.append(record)
            else:
                node.snapshots.append(record)
                if offset is None:  # a file whose header was lost: the snapshot's clock
                    offset = record.snapshot.taken_at - record.t
    for node in list(nodes.values()):
        node.settle()
        if not node.frames and not node.snapshots:
            del nodes[node.name]
    if not nodes:
        raise ReplayError(f"no recording in {', '.join(map(str, paths))}")
    return Recording(nodes, problems, [str(p) for p in paths], offset or 0.0)


def read_lines(path: Path) -> list[bytes]:
    """A recording file's lines; a ``.gz`` one (e.g. compressed to keep) read through gzip."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return f.readlines()
    with path.open("rb") as f:
        return f.readlines()


class Player:
    """Where the replay is on the recordings' clock, how fast it goes, whether it runs."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.start = recording.start
        self.end = recording.end
        self.position = self.start
        self.speed = SPEEDS[0]
        self.paused = False
        self.version = 0  # bumped by every jump (seek, step): the screen re-reads history

    @property
    def elapsed(self) -> float:
        return self.position - self.start

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def at_end(self) -> bool:
        return self.position >= self.end

    def wall(self) -> float:
        """The wall-clock time at the position: the dashboard's "now"."""
        return self.recording.wall(self.position)

    def advance(self, seconds: float) -> None:
        """Play on for ``seconds`` of real time (nothing while paused); stops at the end."""
        if self.paused or self.at_end:
            return
        self.position = min(self.end, self.position + seconds * self.speed)

    def seek(self, position: float) -> None:
        self.position = min(self.end, max(self.start, position))
        self.version += 1

    def toggle_pause(self) -> None:
        if self.at_end and self.paused is False:
            self.seek(self.start)  # play again from the start
            return
        self.paused = not self.paused

    def next_speed(self) -> float:
        self.speed = SPEEDS[(SPEEDS.index(self.speed) + 1) % len(SPEEDS)]
        return self.speed

    def step(self) -> None:
        """Pause and move to the next recorded snapshot of any node."""
        self.paused = True
        later = [
            n.snapshot_times[i]
            for n in self.recording.nodes.values()
            if (i := bisect.bisect_right(n.snapshot_times, self.position + 1e-6))
            < len(n.snapshot_times)
        ]
        self.seek(min(later) if later else self.end)


class ReplayNode:
    """One recorded node as a ``NodeHandle``: its snapshots at the player's position."""

    read_only = True
    status: str | None = None  # always "attached": nothing to wait for
    url = ""

    def __init__(self, recorded: NodeRecording, player: Player) -> None:
        self.recorded = recorded  # every record kept, e.g. for a trace across nodes
        self.player = player
        self._entries: dict[int, FrameLogEntry] = {}
        self._notices: deque[str] = deque(maxlen=10)

    @property
    def server_id(self) -> str:
        return self.recorded.name

    def snapshot(self) -> NodeSnapshot:
        position = self.player.position
        rec = self.recorded
        i = bisect.bisect_right(rec.snapshot_times, position)
        if i:
            base = rec.snapshots[i - 1].snapshot
        elif rec.snapshots:  # before this node's first snapshot: its name only
            base = dataclasses.replace(
                starting_snapshot(rec.name), started_at=rec.snapshots[0].snapshot.started_at
            )
        else:
            base = starting_snapshot(rec.name)
        upto = bisect.bisect_right(rec.frame_times, position)
        log = tuple(self._entry(k) for k in range(max(0, upto - TAIL), upto))
        return dataclasses.replace(base, frame_log=log, recording="")

    def submit(self, command: Command) -> None:
        self._notices.append(READ_ONLY)

    def trace(self, event_id: str, timeout: float = 0.0) -> Trace | None:
        """This node's recorded view of one event up to the player's position; every
        node's headers go in so all nodes share one wall-clock offset."""
        headers = [h for node in self.player.recording.nodes.values() for h in node.headers]
        upto = bisect.bisect_right(self.recorded.frame_times, self.player.position)
        trace, _ = trace_recordings(event_id, [[*headers, *self.recorded.frames[:upto]]])
        return trace

    def drain_notices(self) -> list[str]:
        out = list(self._notices)
        self._notices.clear()
        return out

    def _entry(self, k: int) -> FrameLogEntry:
        entry = self._entries.get(k)
        if entry is None:
            entry = self._entries[k] = frame_entry(
                k + 1, self.recorded.frames[k], self.player.recording.wall
            )
        return entry


def frame_entry(index: int, record: FrameRecord, wall) -> FrameLogEntry:
    """A recorded frame as the frame log shows it."""
    peer = record.peer or "?"
    try:
        frame = parse_frame(record.line)
    except (ProtocolError, ValueError) as exc:
        return FrameLogEntry(
            index, wall(record.t), record.direction, peer, record.group, "?", 0,
            len(record.line), f"unreadable frame: {exc}", is_error=True,
        )  # fmt: skip
    payload = frame.payload
    if record.peer is None and frame.type == "HELLO":
        claimed = getattr(payload, "server_id", None)
        peer = f"{claimed}?" if isinstance(claimed, str) else "?"
    is_event = isinstance(payload, Event)
    return FrameLogEntry(
        index=index,
        at=wall(record.t),
        direction=record.direction,
        peer_id=peer,
        group_id=frame.group_id or record.group,
        type=frame.type,
        sequence=frame.sequence,
        size=len(record.line),
        summary=summarize(frame.type, payload),
        is_error=frame.type == "ERROR",
        event_id=payload.event_id if is_event else None,
        ciphertext=payload.ciphertext if is_event else None,
    )


# ---------------------------------------------------------------------- --summary


def frame_type(line: bytes) -> str:
    """A recorded frame's type, without checking the rest of it."""
    try:
        return parse_frame(line).type
    except (ProtocolError, ValueError):
        return "unreadable"


def summary_lines(recording: Recording) -> list[str]:
    """The plain-text summary: per node its span, frames per type and direction, snapshots,
    every ERROR frame (and frame that does not parse), gaps (no record for longer than GAP
    seconds, or a stream's frame sequence skipping), then every bad line with file:line
    and why."""
    out = [f"files: {len(recording.files)}  nodes: {len(recording.nodes)}  "
           f"span: {recording.end - recording.start:.1f} s"]  # fmt: skip
    for node in recording.nodes.values():
        out.append("")
        out.append(
            f"{node.name}: {len(node.frames)} frames, {len(node.snapshots)} snapshots, "
            f"{node.end - node.start:.1f} s from +{node.start - recording.start:.1f} s"
        )
        counts: Counter[tuple[str, str]] = Counter()
        sequences: dict[tuple[int, str], int] = {}
        gaps: list[str] = []
        errors: list[str] = []
        for record in node.frames:
            try:
                frame = parse_frame(record.line)
                kind, sequence = frame.type, frame.sequence
            except (ProtocolError, ValueError) as exc:
                kind, sequence = "unreadable", None
                errors.append(f"  {_where(record, recording)}: unreadable frame: {exc}")
            else:
                if isinstance(frame.payload, Error):
                    errors.append(
                        f"  {_where(record, recording)}: ERROR {summarize('ERROR', frame.payload)}"
                    )
            counts[(kind, record.direction)] += 1
            key = (record.stream, record.direction)
            if sequence is not None:
                last = sequences.get(key)
                if last is not None and sequence != last + 1:
                    gaps.append(
                        f"  stream {record.stream} {record.direction} ({record.peer or '?'} "
                        f"{record.group}): sequence {last} then {sequence} "
                        f"at +{record.t - recording.start:.1f} s"
                    )
                sequences[key] = sequence
        width = max((len(k) for k, _ in counts), default=0)
        for kind in sorted({k for k, _ in counts}):
            out.append(
                f"  {kind:<{width}}  in {counts[(kind, 'in')]:>7}  out {counts[(kind, 'out')]:>7}"
            )
        times = sorted(node.frame_times + node.snapshot_times)
        for before, after in itertools.pairwise(times):
            if after - before > GAP:
                gaps.insert(
                    0,
                    f"  nothing recorded for {after - before:.1f} s "
                    f"from +{before - recording.start:.1f} s",
                )
        out.append(f"  errors: {len(errors)}")
        out.extend(errors)
        out.append(f"  gaps: {len(gaps)}")
        out.extend(gaps)
    out.append("")
    out.append(f"bad lines: {len(recording.problems)}")
    out.extend(f"  {p}" for p in recording.problems)
    return out


def _where(record: FrameRecord, recording: Recording) -> str:
    """When and on which stream a frame was, for the summary."""
    arrow = "←" if record.direction == "in" else "→"
    return (f"+{record.t - recording.start:.1f} s {arrow} {record.peer or '?'} "
            f"{record.group} stream {record.stream}")  # fmt: skip


def run_summary(paths: Iterable[Path]) -> int:
    """Print the summary; 0 when every line was read, 1 when some were not (or no file)."""
    try:
        recording = load(list(paths))
    except ReplayError as exc:
        print(f"tapsim: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(recording)))
    return 1 if recording.problems else 0
