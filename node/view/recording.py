"""The wire recording's file format: one JSON object per line, version 1.

A recording holds what crossed a node's streams, byte for byte, and a snapshot of the
node every second, so a dashboard can replay it and a trace can follow an event across
the nodes recorded. The node relays only ciphertext, so a recording holds nothing the
node itself could read.

Every file opens with a header line naming the format and its version; a file rotated
at its size cap opens with a header again, with the next ``part``. Times are the
machine's monotonic clock, shared by every process of one machine, so the files of
several nodes of one demo line up; the header ties it to the wall clock.

Lines::

    {"format": "tapsim-recording", "version": 1, "node": "alice", "server_id": "...",
     "part": 0, "wall": 1764860000.0, "mono": 1234.5}
    {"k": "frame", "t": 1234.6, "dir": "out", "node": "alice", "peer": "bob.example",
     "group": "g!team", "role": "initiator", "stream": 3, "line": "{...}"}
    {"k": "snapshot", "t": 1235.5, "node": "alice", "snapshot": {...}}

``peer`` is null until the peer's HELLO is authenticated; ``stream`` numbers the node's
streams so the frames of two streams with one peer and group stay apart; ``line`` is
the frame exactly as on the wire, without its newline.

Reading never stops at a bad line: :func:`read_records` yields a :class:`BadLine`
saying where and why, and goes on. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from node.view.codec import CodecError, decode_snapshot, to_json
from node.view.snapshot import NodeSnapshot

FORMAT = "tapsim-recording"
VERSION = 1
IN = "in"
OUT = "out"


@dataclass(frozen=True, slots=True)
class Header:
    node: str
    server_id: str
    part: int
    wall: float  # time.time() ...
    mono: float  # ... and time.monotonic() at the same instant

    def wall_time(self, t: float) -> float:
        """The wall-clock time of a record's monotonic ``t``."""
        return self.wall + (t - self.mono)


@dataclass(frozen=True, slots=True)
class FrameRecord:
    t: float
    direction: str  # IN | OUT
    node: str
    peer: str | None
    group: str
    role: str  # "initiator" | "acceptor"
    stream: int
    line: bytes  # the frame as on the wire, without its newline


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    t: float
    node: str
    snapshot: NodeSnapshot


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that could not be read: reported, skipped, never fatal."""

    number: int  # 1-based, within its file
    reason: str


Record = Header | FrameRecord | SnapshotRecord


def encode_header(header: Header) -> bytes:
    return (
        orjson.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "node": header.node,
                "server_id": header.server_id,
                "part": header.part,
                "wall": header.wall,
                "mono": header.mono,
            }
        )
        + b"\n"
    )


def encode_frame(record: FrameRecord) -> bytes:
    return (
        orjson.dumps(
            {
                "k": "frame",
                "t": record.t,
                "dir": record.direction,
                "node": record.node,
                "peer": record.peer,
                "group": record.group,
                "role": record.role,
                "stream": record.stream,
                "line": record.line.decode("utf-8", "surrogateescape"),
            }
        )
        + b"\n"
    )


def encode_snapshot_record(record: SnapshotRecord) -> bytes:
    snapshot = orjson.Fragment(to_json(record.snapshot))
    return (
        orjson.dumps({"k": "snapshot", "t": record.t, "node": record.node, "snapshot": snapshot})
        + b"\n"
    )


def decode_line(raw: bytes) -> Record:
    """One line as a record; ``ValueError`` with a short reason when it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON (truncated?)") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    try:
        if "format" in obj:
            return _header(obj)
        kind = obj.get("k")
        if kind == "frame":
            return _frame(obj)
        if kind == "snapshot":
            return SnapshotRecord(
                t=_number(obj, "t"),
                node=_text(obj, "node"),
                snapshot=decode_snapshot(obj["snapshot"]),
            )
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]!r}") from None
    except CodecError as exc:
        raise ValueError(f"bad snapshot: {exc}") from None
    raise ValueError(f"unknown record kind {kind!r}")


def read_records(lines: Iterable[bytes]) -> Iterator[Record | BadLine]:
    """Every record of one file's lines, with a :class:`BadLine` for each one unread."""
    for number, raw in enumerate(lines, 1):
        raw = raw.rstrip(b"\r\n")
        if not raw:
            continue
        try:
            yield decode_line(raw)
        except ValueError as exc:
            yield BadLine(number, str(exc))


def _header(obj: dict[str, Any]) -> Header:
    if obj["format"] != FORMAT:
        raise ValueError(f"not a {FORMAT} file")
    version = obj.get("version")
    if version != VERSION:
        raise ValueError(f"format version {version!r}; this tapsim reads version {VERSION}")
    return Header(
        node=_text(obj, "node"),
        server_id=_text(obj, "server_id"),
        part=int(_number(obj, "part")),
        wall=_number(obj, "wall"),
        mono=_number(obj, "mono"),
    )


def _frame(obj: dict[str, Any]) -> FrameRecord:
    direction = obj["dir"]
    if direction not in (IN, OUT):
        raise ValueError(f"direction {direction!r}")
    peer = obj["peer"]
    if peer is not None and not isinstance(peer, str):
        raise ValueError("peer is not a string")
    return FrameRecord(
        t=_number(obj, "t"),
        direction=direction,
        node=_text(obj, "node"),
        peer=peer,
        group=_text(obj, "group"),
        role=_text(obj, "role"),
        stream=int(_number(obj, "stream")),
        line=_text(obj, "line").encode("utf-8", "surrogateescape"),
    )


def _number(obj: dict[str, Any], key: str) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} is not a number")
    return float(value)


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value
