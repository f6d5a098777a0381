"""A running node seen through its control socket: the one path from a node to a screen.

:class:`AttachedNode` is the dashboard's ``NodeHandle`` for any node, whether the
dashboard started it (``tapsim``, ``tapsim demo``: a child process) or an operator did
(``tapsim node`` under systemd or tmux, looked at with ``tapsim attach``). A reader thread
keeps one connection, decodes each snapshot (``node.view.control``: JSON, checked, never
pickled) and keeps the latest; when the node goes away it says so and connects again as
soon as a node answers on that data dir again. Quitting the dashboard only closes the
connection: the node keeps running.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from node.runtime.control_path import find_socket
from node.view.commands import Command
from node.view.control import (
    ClientSession,
    CommandResult,
    ControlError,
    NodeError,
    SnapshotReceived,
    TraceAnswer,
    Welcomed,
)
from node.view.snapshot import NodeSnapshot
from node.view.trace import Trace
from tapsim_tui.node_start import starting_snapshot

RETRY_EVERY = 0.5  # seconds between attempts to reach a node that is not there
# Snapshots a second asked of the node. The dashboard repaints at most four times a
# second (`screens.main.BUSY_REPAINT`): every snapshot more is decoded for nothing, and
# decoding is most of what an idle dashboard over several nodes costs.
SNAPSHOT_HZ = 4.0
CONNECT_TIMEOUT = 5.0


class NoNode(Exception):
    """No node answers on that data dir; the message says where and what to do."""


def no_node_words(data_dir: Path) -> str:
    return f"no node is running on {data_dir} (start one with `tapsim node --data-dir {data_dir}`)"


class Connection:
    """One blocking connection to a node's control socket, welcomed."""

    def __init__(self, path: Path, *, client: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.session = ClientSession(client)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self._pending: deque = deque()
        try:
            self.sock.connect(str(path))
            self.send(self.session.hello())
            first = self.next_event()
        except BaseException:
            self.sock.close()
            raise
        if isinstance(first, NodeError):
            self.sock.close()
            raise ControlError(first.code, first.message, fatal=True)
        if not isinstance(first, Welcomed):
            self.sock.close()
            raise ControlError("bad_message", "the node did not welcome us")
        self.welcome = first

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_event(self):
        """The next event from the node; raises ConnectionError at its end."""
        while not self._pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the node closed the connection")
            self._pending.extend(self.session.receive(data))
        return self._pending.popleft()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(data_dir: Path, *, client: str, timeout: float = CONNECT_TIMEOUT) -> Connection:
    """Connect to the node on ``data_dir``; :class:`NoNode` when none answers there."""
    try:
        return Connection(find_socket(data_dir), client=client, timeout=timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NoNode(no_node_words(data_dir)) from None


def fetch_snapshot(data_dir: Path, *, timeout: float = CONNECT_TIMEOUT):
    """(welcome, one full snapshot) of the node on ``data_dir``, for `tapsim status`."""
    conn = connect(data_dir, client="tapsim status", timeout=timeout)
    try:
        conn.send(conn.session.snapshot_once())
        while True:
            event = conn.next_event()
            if isinstance(event, SnapshotReceived):
                return conn.welcome, event.snapshot
            if isinstance(event, NodeError) and event.fatal:
                raise ControlError(event.code, event.message, fatal=True)
    finally:
        conn.close()


class _Answer:
    __slots__ = ("ready", "trace")

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.trace: Trace | None = None


class AttachedNode:
    """A ``NodeHandle`` over a node's control socket, re-attaching when it returns.

    ``locate`` gives the socket's path at each attempt (a restarted node may have bound a
    new fallback path). ``status`` is None while attached, else what is wrong, in words;
    :meth:`drain_notices` hands the app the answers to commands that failed.
    """

    def __init__(
        self,
        name: str,
        locate: Callable[[], Path],
        *,
        rate_hz: float = SNAPSHOT_HZ,
        client: str = "tapsim attach",
    ) -> None:
        self._name = name
        self._locate = locate
        self._rate_hz = rate_hz
        self._client = client
        self._latest: NodeSnapshot | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._attached = threading.Event()
        self._notices: deque[str] = deque(maxlen=50)
        self._traces: dict[int, _Answer] = {}  # trace requests awaiting their answer
        self._thread: threading.Thread | None = None
        self.status: str | None = "attaching…"
        self.attach_count = 0  # connections made so far (a re-attach counts again)
        self.url = ""

    @classmethod
    def for_data_dir(cls, data_dir: Path, **kw) -> AttachedNode:
        return cls(Path(data_dir).name, lambda: find_socket(Path(data_dir)), **kw)

    # ------------------------------------------------------------------ NodeHandle

    @property
    def server_id(self) -> str:
        return self._name

    def snapshot(self) -> NodeSnapshot:
        return self._latest or starting_snapshot(self._name)

    def submit(self, command: Command) -> None:
        conn = self._conn
        if conn is None:
            self._notices.append(f"not sent: {self.status or 'not attached'}")
            return
        try:
            with self._send_lock:
                _id, data = conn.session.command(command)
                conn.send(data)
        except OSError:
            self._notices.append(f"not sent: the node {self._name} went away")

    def trace(self, event_id: str, timeout: float = CONNECT_TIMEOUT) -> Trace | None:
        """The node's view of one event's way; None when it does not answer in time.
        Blocks: call it from a worker thread."""
        conn = self._conn
        if conn is None:
            return None
        answer = _Answer()
        try:
            with self._send_lock:
                cid, data = conn.session.trace(event_id)
                self._traces[cid] = answer
                conn.send(data)
        except OSError:
            return None
        try:
            if not answer.ready.wait(timeout):
                return None
        finally:
            self._traces.pop(cid, None)
        return answer.trace

    def drain_notices(self) -> list[str]:
        out = []
        while self._notices:
            out.append(self._notices.popleft())
        return out

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"attach {self._name}", daemon=True)
        self._thread.start()

    def wait_attached(self, timeout: float) -> bool:
        return self._attached.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        was_attached = False
        while not self._closed.is_set():
            try:
                conn = Connection(self._locate(), client=self._client)
            except (OSError, ControlError) as exc:
                if was_attached:
                    self.status = f"node {self._name} stopped — re-attaching when it returns"
                elif isinstance(exc, ControlError):
                    self.status = f"the node refused us: {exc.message}"
                else:
                    self.status = f"waiting for node {self._name} to start"
                self._closed.wait(RETRY_EVERY)
                continue
            self._attach(conn)
            was_attached = True
            self.status = f"node {self._name} stopped — re-attaching when it returns"
            self._closed.wait(RETRY_EVERY / 5)

    def _attach(self, conn: Connection) -> None:
        conn.sock.settimeout(None)  # from now on, reads wait for the node's next line
        node = conn.welcome.node
        self._name = node.server_id
        self.url = node.listen[0] if node.listen else ""
        try:
            conn.send(conn.session.subscribe(self._rate_hz, "delta"))
            self._conn = conn
            self.attach_count += 1
            if self._closed.is_set():
                return
            while True:
                event = conn.next_event()
                match event:
                    case SnapshotReceived(snapshot=snapshot):
                        self._latest = snapshot
                        if self.status is not None:
                            self.status = None
                            self._attached.set()
                    case TraceAnswer(id=cid, trace=trace):
                        answer = self._traces.get(cid)
                        if answer is not None:
                            answer.trace = trace
                            answer.ready.set()
                    case CommandResult(error=error) if error is not None:
                        self._notices.append(f"{self._name}: {error}")
                    case NodeError(message=message):
                        self._notices.append(f"{self._name} said: {message}")
        except (OSError, ControlError):
            pass
        finally:
            self._conn = None
            conn.close()
