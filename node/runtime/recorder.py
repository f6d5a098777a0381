"""The wire recorder: every frame a node's streams read and write, and a snapshot a second.

The event loop only notes what it saw: one list append of the bytes read or written (with
the time and the stream's peer) per read or write, and a snapshot once a second; four
times a second it hands the list to a writer thread. Waking that thread for every read
would cost the loop more than the writing itself (each wake-up takes the interpreter lock
from the loop), so it wakes four times a second. The writer splits the bytes into frames
at their newlines (keeping a partial line until its end arrives), encodes the lines of the
format in ``node.view.recording`` and writes them, one flush per batch, opening the next
part of the file at the size cap.

Files are named ``{node}-{start, UTC}-{part}.ndjson`` in the recording's directory, so
the recordings of the nodes of one demo sit side by side and sort in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import orjson

from node.runtime.config import DEFAULT_RECORD_MAX_BYTES
from node.view.recording import (
    IN,
    FrameRecord,
    Header,
    SnapshotRecord,
    encode_frame,
    encode_header,
    encode_snapshot_record,
)
from node.view.snapshot import NodeSnapshot

SNAPSHOT_EVERY = 1.0  # seconds
HAND_OVER_EVERY = 0.25  # seconds between batches handed to the writer thread
# Batches the writer may be behind (10 s) before new ones are dropped, and said so: a disk
# slower than the wire must not fill the node's memory. The summary shows the gap.
MAX_BEHIND = 40


class Tapped(Protocol):
    """A stream the recorder can tap (node.runtime.stream_runner.StreamRunner)."""

    recording: Callable[[str, bytes], None] | None
    group_id: str

    @property
    def peer_id(self) -> str | None: ...

    @property
    def role(self) -> object: ...


class _Stream:
    """One tapped stream, as the writer thread sees it."""

    __slots__ = ("group", "number", "partial", "peers", "role", "synced", "tail")

    def __init__(self, number: int, group: str, role: str, synced: bool) -> None:
        self.number = number
        self.group = group
        self.role = role
        self.partial = {IN: b"", "out": b""}
        # The encoded fields that never change, and the peer's (null until the HELLO).
        self.tail = b"".join(
            (b',"group":', orjson.dumps(group), b',"role":', orjson.dumps(role),
             b',"stream":', orjson.dumps(number), b',"line":')
        )  # fmt: skip
        self.peers: dict[str | None, bytes] = {}
        # A stream tapped while it runs may be mid-line: its first piece is kept only
        # if it is a whole frame (see _Writer._frames).
        self.synced = {IN: synced, "out": synced}


class Recorder:
    """Start and stop recording a node's streams; :attr:`path` is the file being written."""

    def __init__(
        self,
        node: str,
        *,
        snapshot: Callable[[], NodeSnapshot],
        log: Callable[[str], None],
        max_bytes: int = DEFAULT_RECORD_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.max_bytes = max_bytes
        self._snapshot = snapshot
        self._log = log
        self._clock = clock
        self._wall = wall
        self._numbers = itertools.count(1)
        self._writer: _Writer | None = None
        self._ticker: asyncio.Task | None = None
        self._batch: list[tuple] = []  # noted on the loop, handed to the writer in one go
        self._tapped: weakref.WeakSet = weakref.WeakSet()  # untapped when recording stops
        self._dropped = 0

    @property
    def recording(self) -> bool:
        return self._writer is not None

    @property
    def path(self) -> str:
        """The file being written, or "" when not recording."""
        writer = self._writer
        return str(writer.path) if writer is not None and writer.path is not None else ""

    def start(self, directory: Path, streams: Iterable[Tapped]) -> str | None:
        """Start recording into ``directory`` (made if missing); None when started, else
        why not, in words. Call on the node's loop."""
        if self._writer is not None:
            return f"already recording to {self.path}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            writer = _Writer(directory, self.node, self.max_bytes, self._clock, self._wall)
        except OSError as exc:
            return f"cannot record to {directory}: {exc.strerror or exc}"
        self._writer = writer
        for runner in streams:
            self.attach(runner, mid_stream=True)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="recorder")
        self._log(f"recording the wire to {writer.path}")
        return None

    def attach(self, runner: Tapped, *, mid_stream: bool = False) -> None:
        """Tap a stream (a new one while recording; every live one at the start)."""
        writer = self._writer
        if writer is None:
            return
        role = getattr(runner.role, "value", str(runner.role))
        stream = _Stream(next(self._numbers), runner.group_id, role, not mid_stream)
        note, clock = self._batch.append, self._clock

        def tap(direction: str, data: bytes) -> None:
            note((clock(), direction, stream, runner.peer_id, data))

        runner.recording = tap
        self._tapped.add(runner)

    def stop(self) -> str | None:
        """Stop recording: untap the streams, write what is queued and close the file.
        Returns the last file written (None when not recording)."""
        writer = self._writer
        if writer is None:
            return None
        self._writer = None
        for runner in list(self._tapped):
            runner.recording = None
        self._tapped.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._put_snapshot()  # the last picture, so a replay ends where it stopped
        self._hand_over(writer)
        writer.close()
        last = str(writer.path)
        if writer.error:
            self._log(f"recording stopped: {writer.error}")
        else:
            self._log(f"recording stopped: {last}")
        return last

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time()
        while True:
            writer = self._writer
            if writer is None:
                return
            if writer.error:
                self._log(f"recording failed: {writer.error}")
                self.stop()
                return
            if loop.time() >= next_snapshot:
                next_snapshot += SNAPSHOT_EVERY
                self._put_snapshot()
            self._hand_over(writer)
            await asyncio.sleep(HAND_OVER_EVERY)

    def _put_snapshot(self) -> None:
        # The frame log is left out: the recording holds every frame itself.
        snapshot = dataclasses.replace(self._snapshot(), frame_log=())
        self._batch.append((self._clock(), "snapshot", None, None, snapshot))

    def _hand_over(self, writer: _Writer) -> None:
        if not self._batch:
            return
        batch = self._batch.copy()
        self._batch.clear()  # the same list: the taps append to it
        if writer.queue.qsize() >= MAX_BEHIND:
            if not self._dropped:
                self._log("recording falls behind the wire: frames dropped until it catches up")
            self._dropped += len(batch)
            return
        if self._dropped:
            self._log(f"recording caught up; {self._dropped} frames were not recorded")
            self._dropped = 0
        writer.queue.put(batch)


class _Writer:
    """The thread that writes one recording, part after part."""

    def __init__(
        self,
        directory: Path,
        node: str,
        max_bytes: int,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error = ""
        self._node = node
        self._max = max(max_bytes, 4096)
        self._clock, self._wall = clock, wall
        self._name = b',"node":' + orjson.dumps(node)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall()))
        base = f"{node}-{stamp}"
        for n in itertools.count(2):  # a second recording started in the same second
            if not any(directory.glob(f"{base}-*.ndjson")):
                break
            base = f"{node}-{stamp}.{n}"
        self._base = directory / base
        self._part = -1
        self._size = 0
        self.path: Path | None = None
        self._file = None
        self._open_next()
        self._thread = threading.Thread(target=self._run, name=f"recorder {node}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(10.0)

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        self._part += 1
        self.path = Path(f"{self._base}-{self._part:03d}.ndjson")
        self._file = open(self.path, "xb", buffering=1 << 16)  # noqa: SIM115
        header = encode_header(
            Header(self._node, self._node, self._part, self._wall(), self._clock())
        )
        self._file.write(header)
        self._size = len(header)

    def _write(self, line: bytes) -> None:
        if self._size + len(line) > self._max and self._size > 0:
            self._open_next()
        self._file.write(line)  # type: ignore[union-attr]
        self._size += len(line)

    def _run(self) -> None:
        get = self.queue.get
        while True:
            batch = get()
            if batch is None:
                break
            try:
                for item in batch:
                    if not self.error:
                        self._item(item)
            except OSError as exc:
                self.error = f"{self.path}: {exc.strerror or exc}"
            except Exception as exc:  # a bug: stop recording and say so, never pile up
                self.error = f"{self.path}: {type(exc).__name__}: {exc}"
            if not self.error:
                try:
                    self._file.flush()  # type: ignore[union-attr]
                except OSError as exc:
                    self.error = f"{self.path}: {exc.strerror or exc}"
        with contextlib.suppress(OSError):
            self._file.close()  # type: ignore[union-attr]

    def _item(self, item: tuple) -> None:
        t, direction, stream, peer, data = item
        if stream is None:
            self._write(encode_snapshot_record(SnapshotRecord(t, self._node, data)))
            return
        lines = self._frames(stream, direction, data)
        if not lines:
            return
        encoded_peer = stream.peers.get(peer)
        if encoded_peer is None:
            encoded_peer = stream.peers[peer] = b',"peer":' + orjson.dumps(peer)
        head = b"".join(
            (b'{"k":"frame","t":', orjson.dumps(t), _DIRECTION[direction], self._name,
             encoded_peer, stream.tail)
        )  # fmt: skip
        dumps = orjson.dumps
        try:
            encoded = [head + dumps(line.decode()) + b"}\n" for line in lines]
        except UnicodeDecodeError:  # not UTF-8: the format's own way (surrogateescape)
            for line in lines:
                record = FrameRecord(
                    t, direction, self._node, peer, stream.group, stream.role, stream.number, line
                )
                self._write(_encode_odd_frame(record))
            return
        out = b"".join(encoded)
        if self._size + len(out) <= self._max:
            self._write(out)
        else:  # line by line: the part ends at the line that would cross the cap
            for line in encoded:
                self._write(line)

    @staticmethod
    def _frames(stream: _Stream, direction: str, data: bytes) -> list[bytes]:
        pieces = (stream.partial[direction] + data).split(b"\n")
        stream.partial[direction] = pieces.pop()
        if pieces and not stream.synced[direction]:
            stream.synced[direction] = True
            if not _whole_frame(pieces[0]):
                pieces.pop(0)
        return pieces


_DIRECTION = {IN: b',"dir":"in"', "out": b',"dir":"out"'}


def _encode_odd_frame(record: FrameRecord) -> bytes:
    """A frame that is not UTF-8 (a peer's protocol violation), kept byte for byte with
    ``surrogateescape`` as the format says; orjson refuses those, the stdlib writes them
    (as ``\\udcXX`` escapes, which a reader may report as a bad line)."""
    try:
        return encode_frame(record)
    except TypeError:
        obj = orjson.loads(encode_frame(dataclasses.replace(record, line=b"")))
        obj["line"] = record.line.decode("utf-8", "surrogateescape")
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _whole_frame(piece: bytes) -> bool:
    """Whether the first piece of a stream tapped mid-way is a whole frame (a JSON
    object), not the tail of one."""
    if not piece.startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(piece), dict)
    except orjson.JSONDecodeError:
        return False
