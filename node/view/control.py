"""The local control protocol, sans-IO: how a dashboard, `tapsim status` or a script
talks to a running node over its Unix socket.

It carries exactly the view's values (snapshots out, commands in), so it is the view
layer's wire and lives here; the asyncio shells are ``node.runtime.control_server`` (the
node's side) and ``tapsim_tui.attach`` (the dashboard's). Both sides are driven by bytes
in, bytes out, like ``node.protocol.session``, and are unit-tested without sockets.

One JSON object per line (NDJSON), UTF-8, at most ``MAX_LINE`` bytes from a client.
Every object has a ``type``. Version 1:

client → node
    ``{"type": "hello", "versions": [1], "client": "tapsim attach"}``   first, once
    ``{"type": "subscribe", "rate_hz": 10, "mode": "delta"}``   snapshots at ≤ 10 Hz;
        ``mode`` ``"delta"``: each snapshot's ``frame_log`` holds only the entries not
        sent to this client before; ``"full"``: the whole tail every time
    ``{"type": "unsubscribe"}``
    ``{"type": "snapshot"}``   one full snapshot now (what `tapsim status` asks)
    ``{"type": "command", "id": 7, "command": {"kind": "repair", ...}}``   kinds:
        ``publish`` (group_id, ciphertext base64), ``repair`` (peer_id, group_id; null
        for all), ``add_peer`` (url, groups), ``forget_peer`` (url,
        drop_outbox_and_pin), ``set_fault`` (peer_id, group_id, fault, enabled),
        ``clear_faults``, ``refresh_digest`` (peer_id, group_id), ``start_recording``
        (directory; "" for the node's own), ``stop_recording``
    ``{"type": "trace", "id": 8, "event_id": "01K..."}``   this node's view of one
        event's way (``node.view.trace``)

node → client
    ``{"type": "welcome", "version": 1, "server_id", "pid", "listen", "started_at"}``
    ``{"type": "snapshot", "seq": n, "mode": "delta"|"full", "snapshot": {...}}``
    ``{"type": "result", "id": 7, "ok": true}`` or ``..., "ok": false, "error": "..."}``
    ``{"type": "trace", "id": 8, "trace": {...}}``   a ``Trace``; no steps: not seen
    ``{"type": "error", "code": "...", "message": "...", "fatal": false}``; after a
        fatal error the node closes the connection

Bad input is answered with an ``error`` line and otherwise ignored; only a missing or
impossible hello is fatal. Nothing a client sends can reach the node except a decoded,
type-checked command.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

import orjson

from node.protocol.ids import is_ulid
from node.view.codec import (
    CodecError,
    decode,
    decode_command,
    decode_snapshot,
    encode_command,
    to_json,
)
from node.view.commands import Command
from node.view.framelog import TAIL as FRAME_TAIL
from node.view.snapshot import FrameLogEntry, NodeSnapshot
from node.view.trace import Trace

VERSIONS = (1,)
MAX_LINE = 256 * 1024  # a client's line: a command with a 64 KiB event, base64, fits
MAX_SNAPSHOT_LINE = 64 * 1024 * 1024  # a node's line, as a client accepts it
MAX_RATE_HZ = 10.0
MIN_RATE_HZ = 0.1
MODES = ("delta", "full")

# error codes
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
TOO_LONG = "too_long"
NOT_HELLO = "hello_first"
NO_VERSION = "unsupported_version"
FORBIDDEN = "forbidden"


class ControlError(Exception):
    """A line the peer sent that breaks the protocol."""

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


def line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


def error_line(code: str, message: str, *, fatal: bool = False) -> bytes:
    return line({"type": "error", "code": code, "message": message, "fatal": fatal})


class LineSplitter:
    """Bytes → lines of at most ``limit`` bytes; a longer line is dropped whole and
    reported once (as ``None``), and reading resumes at the next newline."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        self._buf += data
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > self.limit:
                    self._buf.clear()
                    if not self._skipping:
                        self._skipping = True
                        yield None
                return
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            if len(chunk) > self.limit:
                yield None
                continue
            if chunk.strip():
                yield chunk


def _parse_object(raw: bytes) -> dict:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ControlError(BAD_JSON, f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ControlError(BAD_MESSAGE, 'each line must be a JSON object with a "type"')
    return obj


# ====================================================================== node side


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node says about itself in its welcome."""

    server_id: str
    pid: int
    listen: tuple[str, ...]
    started_at: float


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Run:
    """Carry out a command; answer with :meth:`ServerSession.result`."""

    id: int
    command: Command


@dataclass(frozen=True, slots=True)
class Lookup:
    """Trace one event; answer with :meth:`ServerSession.trace_line`."""

    id: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Close:
    """End the connection (after sending what came before)."""


ServerAction = Send | Run | Lookup | Close


class ServerSession:
    """One client connection as the node sees it."""

    def __init__(self, facts: NodeFacts) -> None:
        self.facts = facts
        self.version: int | None = None
        self.client = ""
        self.rate_hz = 0.0  # 0: not subscribed
        self.mode = "delta"
        self.next_due = 0.0
        self.seq = 0
        self.closed = False
        self._frames_sent = 0  # highest frame-log index sent (delta mode)
        self._want_once = False
        self._lines = LineSplitter(MAX_LINE)

    # -- bytes in

    def receive(self, data: bytes) -> list[ServerAction]:
        out: list[ServerAction] = []
        for raw in self._lines.feed(data):
            if self.closed:
                break
            try:
                if raw is None:
                    raise ControlError(TOO_LONG, f"line longer than {MAX_LINE} bytes dropped")
                out.extend(self._message(_parse_object(raw)))
            except ControlError as exc:
                fatal = exc.fatal or self.version is None  # no hello, no conversation
                out.append(Send(error_line(exc.code, exc.message, fatal=fatal)))
                if fatal:
                    self.closed = True
                    out.append(Close())
        return out

    def _message(self, obj: dict) -> list[ServerAction]:
        kind = obj["type"]
        if self.version is None:
            if kind != "hello":
                raise ControlError(NOT_HELLO, "say hello first", fatal=True)
            return [Send(self._hello(obj))]
        match kind:
            case "hello":
                raise ControlError(BAD_MESSAGE, "hello was already said")
            case "subscribe":
                self._subscribe(obj)
                return []
            case "unsubscribe":
                self.rate_hz = 0.0
                return []
            case "snapshot":
                self._want_once = True
                return []
            case "command":
                cid = obj.get("id")
                if not isinstance(cid, int) or isinstance(cid, bool):
                    raise ControlError(BAD_MESSAGE, 'a command needs an integer "id"')
                try:
                    command = decode_command(obj.get("command"))
                except CodecError as exc:
                    return [Send(self.result(cid, str(exc)))]
                return [Run(cid, command)]
            case "trace":
                cid = obj.get("id")
                if not isinstance(cid, int) or isinstance(cid, bool):
                    raise ControlError(BAD_MESSAGE, 'a trace needs an integer "id"')
                event_id = obj.get("event_id")
                if not is_ulid(event_id):
                    raise ControlError(BAD_MESSAGE, 'a trace needs an "event_id" (a ULID)')
                return [Lookup(cid, event_id)]
            case _:
                raise ControlError(BAD_MESSAGE, f"unknown message type {kind!r}")

    def _hello(self, obj: dict) -> bytes:
        offered = obj.get("versions")
        if not isinstance(offered, list):
            raise ControlError(BAD_MESSAGE, 'hello needs "versions": [1]', fatal=True)
        common = [v for v in VERSIONS if v in offered]
        if not common:
            raise ControlError(
                NO_VERSION,
                f"no common version: this node speaks {list(VERSIONS)}, client {offered!r}",
                fatal=True,
            )
        self.version = max(common)
        client = obj.get("client")
        self.client = client[:64] if isinstance(client, str) else ""
        f = self.facts
        return line(
            {
                "type": "welcome",
                "version": self.version,
                "server_id": f.server_id,
                "pid": f.pid,
                "listen": list(f.listen),
                "started_at": f.started_at,
            }
        )

    def _subscribe(self, obj: dict) -> None:
        rate = obj.get("rate_hz", MAX_RATE_HZ)
        mode = obj.get("mode", "delta")
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate != rate:
            raise ControlError(BAD_MESSAGE, "rate_hz must be a number")
        if mode not in MODES:
            raise ControlError(BAD_MESSAGE, f"mode must be one of {', '.join(MODES)}")
        self.rate_hz = min(max(float(rate), MIN_RATE_HZ), MAX_RATE_HZ)
        self.mode = mode
        self.next_due = 0.0

    # -- bytes out

    def result(self, cid: int, error: str | None) -> bytes:
        if error is None:
            return line({"type": "result", "id": cid, "ok": True})
        return line({"type": "result", "id": cid, "ok": False, "error": error})

    def trace_line(self, cid: int, trace: Trace) -> bytes:
        head = orjson.dumps({"type": "trace", "id": cid})
        return head[:-1] + b',"trace":' + to_json(trace) + b"}\n"

    def wants_snapshot(self, now: float) -> bool:
        if self.version is None or self.closed:
            return False
        return self._want_once or (self.rate_hz > 0 and now >= self.next_due)

    def snapshot_line(self, snapshot: NodeSnapshot, now: float) -> bytes:
        """This client's next snapshot line (call when :meth:`wants_snapshot`)."""
        once, self._want_once = self._want_once, False
        periodic = self.rate_hz > 0 and now >= self.next_due
        if periodic:
            self.next_due = max(self.next_due + 1.0 / self.rate_hz, now)
        full = self.mode == "full" or (once and not periodic)
        if full:
            mode, body = "full", snapshot
        else:
            new = tuple(e for e in snapshot.frame_log if e.index > self._frames_sent)
            mode, body = "delta", replace(snapshot, frame_log=new)
        if periodic and body.frame_log:
            self._frames_sent = max(self._frames_sent, body.frame_log[-1].index)
        self.seq += 1
        head = orjson.dumps({"type": "snapshot", "seq": self.seq, "mode": mode})
        return head[:-1] + b',"snapshot":' + to_json(body) + b"}\n"


# ====================================================================== client side


@dataclass(frozen=True, slots=True)
class Welcomed:
    version: int
    node: NodeFacts


@dataclass(frozen=True, slots=True)
class SnapshotReceived:
    """A snapshot with the frame log merged: the tail the node has shown this client."""

    snapshot: NodeSnapshot


@dataclass(frozen=True, slots=True)
class CommandResult:
    id: int
    error: str | None  # None: done


@dataclass(frozen=True, slots=True)
class TraceAnswer:
    id: int
    trace: Trace


@dataclass(frozen=True, slots=True)
class NodeError:
    code: str
    message: str
    fatal: bool


ClientEvent = Welcomed | SnapshotReceived | CommandResult | TraceAnswer | NodeError


class ClientSession:
    """One connection as a dashboard or `tapsim status` sees it."""

    def __init__(self, client: str = "tapsim") -> None:
        self.client = client
        self.welcome: Welcomed | None = None
        self._ids = 0
        self._frames: deque[FrameLogEntry] = deque(maxlen=FRAME_TAIL)
        self._lines = LineSplitter(MAX_SNAPSHOT_LINE)

    def hello(self) -> bytes:
        return line({"type": "hello", "versions": list(VERSIONS), "client": self.client})

    def subscribe(self, rate_hz: float = MAX_RATE_HZ, mode: str = "delta") -> bytes:
        return line({"type": "subscribe", "rate_hz": rate_hz, "mode": mode})

    def unsubscribe(self) -> bytes:
        return line({"type": "unsubscribe"})

    def snapshot_once(self) -> bytes:
        return line({"type": "snapshot"})

    def command(self, command: Command) -> tuple[int, bytes]:
        self._ids += 1
        body = {"type": "command", "id": self._ids, "command": encode_command(command)}
        return self._ids, line(body)

    def trace(self, event_id: str) -> tuple[int, bytes]:
        self._ids += 1
        return self._ids, line({"type": "trace", "id": self._ids, "event_id": event_id})

    def receive(self, data: bytes) -> list[ClientEvent]:
        """Events from the node's bytes; raises ControlError for a line that is not
        the protocol (the connection is then not to be trusted further)."""
        out: list[ClientEvent] = []
        for raw in self._lines.feed(data):
            if raw is None:
                raise ControlError(TOO_LONG, "the node sent an overlong line")
            out.append(self._event(_parse_object(raw)))
        return out

    def _event(self, obj: dict) -> ClientEvent:
        try:
            match obj["type"]:
                case "welcome":
                    self.welcome = Welcomed(
                        version=_want(obj, "version", int),
                        node=NodeFacts(
                            server_id=_want(obj, "server_id", str),
                            pid=_want(obj, "pid", int),
                            listen=tuple(_want(obj, "listen", list)),
                            started_at=float(_want(obj, "started_at", int | float)),
                        ),
                    )
                    return self.welcome
                case "snapshot":
                    snapshot = decode_snapshot(obj.get("snapshot"))
                    if obj.get("mode") == "full":
                        self._frames.clear()
                    done = self._frames[-1].index if self._frames else 0
                    self._frames.extend(e for e in snapshot.frame_log if e.index > done)
                    merged = replace(snapshot, frame_log=tuple(self._frames))
                    return SnapshotReceived(merged)
                case "result":
                    ok = _want(obj, "ok", bool)
                    error = None if ok else str(obj.get("error") or "failed")
                    return CommandResult(_want(obj, "id", int), error)
                case "trace":
                    return TraceAnswer(_want(obj, "id", int), decode(Trace, obj.get("trace")))
                case "error":
                    return NodeError(
                        str(obj.get("code")), str(obj.get("message")), obj.get("fatal") is True
                    )
                case other:
                    raise ControlError(BAD_MESSAGE, f"unknown message type {other!r}")
        except CodecError as exc:
            raise ControlError(BAD_MESSAGE, str(exc)) from None


def _want(obj: dict, key: str, kind: type | object) -> object:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):  # type: ignore[arg-type]
        raise ControlError(BAD_MESSAGE, f"{obj.get('type')}: bad {key!r}: {value!r}")
    return value
