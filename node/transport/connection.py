"""One HTTP/2 connection of our client and the streams on it, over ``h2`` and asyncio.

httpx cannot write a request body while reading the response, which a federation
stream needs (§3: the acceptor answers while the request body is still open), so this
module drives the ``h2`` state machine over ``asyncio.open_connection`` itself.

Flow control follows PROTOCOL §1: large receive windows (4 MiB per stream, 16 MiB per
connection), with the connection window returned as soon as bytes arrive and a stream's
window as the application reads them. So a stream whose reader stalls holds at most
its own 4 MiB and never blocks the others, and bytes for streams we have already
forgotten (reset, finished) cannot leak the connection window. Sending waits for the
peer's windows and for the socket to drain, so nothing buffers without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Iterable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_WINDOW = 65_535
READ_SIZE = 256 * 1024
_MAX_READ_CHUNK = 256 * 1024  # read() joins buffered DATA up to about this much
MAX_RESPONSE_BODY = 64 * 1024 * 1024
# Bytes a stream may hold that were written but not yet framed (window closed or not
# yet flushed); write() waits beyond it. Small writes made in one loop iteration are
# coalesced into full DATA frames, which costs the peer one event instead of many.
_PENDING_LIMIT = 256 * 1024
_SOCKET_HIGH_WATER = 1024 * 1024  # stop framing while the socket buffer holds this much


class TransportError(Exception):
    """The connection or a stream failed; ``url`` says which peer, ``__cause__`` why."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.message = message


class StreamReset(TransportError):
    """The peer reset the stream (RST_STREAM) or refused it (GOAWAY)."""

    def __init__(self, url: str, message: str, error_code: int) -> None:
        super().__init__(url, message)
        self.error_code = error_code


def decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, list[tuple[str, str]]]:
    status = 0
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name == b":status":
            status = int(value)
        elif not name.startswith(b":"):
            out.append((name.decode("latin-1"), value.decode("latin-1")))
    return status, out


class ClientStream:
    """One request/response exchange, both bodies open at once.

    ``status``/``headers`` are None until the response headers arrived; ``await
    stream.response()`` waits for them. ``read()`` returns response body bytes (several
    DATA frames joined) and None at the end; it raises :class:`TransportError` if the
    stream was reset or the connection lost first.
    """

    def __init__(self, connection: Connection, stream_id: int) -> None:
        self._conn = connection
        self.stream_id = stream_id
        self.status: int | None = None
        self.headers: list[tuple[str, str]] | None = None
        self._response = asyncio.get_running_loop().create_future()
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._readable = asyncio.Event()
        self._pending = bytearray()  # written, not yet handed to h2
        self._drained = asyncio.Event()  # set while _pending is under the limit
        self._drained.set()
        self._end_pending = False  # end() called while data was still pending
        self._ended = False  # the peer's END_STREAM was received
        self._local_ended = False
        self._error: TransportError | None = None
        self._unacked = 0  # bytes read by the application, window not yet returned

    # -------------------------------------------------------------- application side

    async def response(self) -> tuple[int, list[tuple[str, str]]]:
        """Wait for the response headers: (status, headers)."""
        return await asyncio.shield(self._response)

    async def read(self) -> bytes | None:
        while not self._chunks:
            if self._ended:
                return None
            if self._error is not None:
                raise self._error
            self._readable.clear()
            await self._readable.wait()
        chunks = self._chunks
        data, flow = chunks.popleft()
        if chunks and len(data) < _MAX_READ_CHUNK:
            parts = [data]
            size = len(data)
            while chunks and size < _MAX_READ_CHUNK:
                more, more_flow = chunks.popleft()
                parts.append(more)
                size += len(more)
                flow += more_flow
            data = b"".join(parts)
        self._consumed(flow)
        return data

    async def write(self, data: bytes) -> None:
        """Send request body bytes. Returns once they are queued on this stream; waits
        while more than 256 KiB are queued (the peer's windows are closed or the
        socket is slow), so a writer can never buffer without bound."""
        if self._local_ended or self._end_pending:
            raise TransportError(self._conn.url, "write after end()")
        view = memoryview(data)
        while view:
            if self._error is not None:
                raise self._error
            room = _PENDING_LIMIT - len(self._pending)
            if room <= 0:
                self._drained.clear()
                await self._drained.wait()
                continue
            self._pending += view[:room]
            view = view[room:]
            self._conn.schedule(self)

    def end(self) -> None:
        """End our request body (END_STREAM) after what was written; the response can
        still be read."""
        if self._local_ended or self._end_pending or self._error is not None:
            return
        if self._pending:
            self._end_pending = True
            self._conn.schedule(self)
        else:
            self._local_ended = True
            self._conn.end_stream(self)

    def reset(self, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Abort the stream in both directions (RST_STREAM)."""
        self._conn.reset_stream(self, error_code)

    @property
    def ended(self) -> bool:
        return self._ended and not self._chunks

    # -------------------------------------------------------------- connection side

    def _consumed(self, flow: int) -> None:
        self._unacked += flow
        if self._unacked >= STREAM_WINDOW // 4 and not self._ended and self._error is None:
            self._conn.open_stream_window(self, self._unacked)
            self._unacked = 0

    def _on_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        status, decoded = decode_headers(headers)
        if 100 <= status < 200:
            return
        self.status, self.headers = status, decoded
        if not self._response.done():
            self._response.set_result((status, decoded))

    def _on_data(self, data: bytes, flow: int) -> None:
        if not data:  # e.g. an empty DATA frame carrying END_STREAM
            if flow:
                self._consumed(flow)
            return
        self._chunks.append((data, flow))
        self._readable.set()

    def _on_end(self) -> None:
        self._ended = True
        self._readable.set()
        if not self._response.done():
            self._fail(TransportError(self._conn.url, "stream ended without response headers"))

    def _fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        if not self._response.done():
            self._response.set_exception(error)
            self._response.exception()  # retrieved: nobody may ever await it
        self._pending.clear()
        self._readable.set()
        self._drained.set()


class Connection:
    """One HTTP/2 connection: the h2 state machine, the socket and a reader task."""

    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.url = url
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        self.streams: dict[int, ClientStream] = {}
        self.closed = False
        self.goaway = False
        self.last_read_at = time.monotonic()  # when bytes last arrived (dead-peer check)
        self.error: TransportError | None = None
        self._settings_received = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._conn_unacked = 0
        self._reader_task: asyncio.Task | None = None
        self._dirty: dict[ClientStream, None] = {}  # streams with pending data, in order
        self._send_scheduled = False
        self._drain_task: asyncio.Task | None = None

    async def start(self) -> None:
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        self._flush()
        self._reader_task = asyncio.create_task(self._read_loop(), name=f"h2 reader {self.url}")
        await self._settings_received.wait()
        if self.error is not None:
            raise self.error

    @property
    def usable(self) -> bool:
        return not self.closed and not self.goaway

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)

    async def _drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            self._lost(exc)
            raise self.error from exc  # type: ignore[misc]

    # -------------------------------------------------------------- streams

    async def open(
        self,
        method: str,
        path: str,
        authority: str,
        scheme: str,
        headers: Iterable[tuple[str, str]],
        end_stream: bool,
    ) -> ClientStream:
        while True:
            if not self.usable:
                raise self.error or TransportError(self.url, "connection is closing")
            limit = self.h2.remote_settings.max_concurrent_streams
            if self.h2.open_outbound_streams < limit:
                break
            self._slot_free.clear()
            await self._slot_free.wait()
        stream_id = self.h2.get_next_available_stream_id()
        stream = ClientStream(self, stream_id)
        request = [
            (b":method", method.encode()),
            (b":scheme", scheme.encode()),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        request.extend((k.lower().encode(), v.encode()) for k, v in headers)
        self.streams[stream_id] = stream
        self.h2.send_headers(stream_id, request, end_stream=end_stream)
        stream._local_ended = end_stream
        self._flush()
        await self._drain()
        return stream

    def schedule(self, stream: ClientStream | None = None) -> None:
        """Frame pending data soon (once per loop iteration, for all streams)."""
        if stream is not None:
            self._dirty[stream] = None
        if not self._send_scheduled and self._dirty and not self.closed:
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_pending)

    def _send_pending(self) -> None:
        self._send_scheduled = False
        if self.closed:
            return
        if self.writer.transport.get_write_buffer_size() > _SOCKET_HIGH_WATER:
            if self._drain_task is None or self._drain_task.done():
                self._drain_task = asyncio.create_task(self._wait_socket())
            return
        h2conn = self.h2
        frame = h2conn.max_outbound_frame_size
        for stream in list(self._dirty):
            pending = stream._pending
            sid = stream.stream_id
            try:
                if stream._error is None and pending:
                    size = min(h2conn.local_flow_control_window(sid), len(pending))
                    sent = 0
                    while sent < size:
                        n = min(frame, size - sent)
                        h2conn.send_data(sid, bytes(pending[sent : sent + n]))
                        sent += n
                    if sent:
                        del pending[:sent]
                if stream._error is None and not pending and stream._end_pending:
                    stream._end_pending = False
                    stream._local_ended = True
                    h2conn.end_stream(sid)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
                stream._fail(TransportError(self.url, f"cannot send on stream {sid}: {exc}"))
            if not pending or stream._error is not None:
                del self._dirty[stream]  # else: waits for a WINDOW_UPDATE
                if stream._local_ended and stream._ended:
                    self._maybe_forget(stream)
            if len(pending) < _PENDING_LIMIT:
                stream._drained.set()
        self._flush()

    async def _wait_socket(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()
        self.schedule()

    def end_stream(self, stream: ClientStream) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.end_stream(stream.stream_id)
            self._flush()
        if stream._ended:
            self._maybe_forget(stream)

    def reset_stream(self, stream: ClientStream, error_code: int) -> None:
        self._dirty.pop(stream, None)
        if self.streams.pop(stream.stream_id, None) is None:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream.stream_id, error_code)
            self._flush()
        stream._fail(StreamReset(self.url, "stream reset by us", error_code))
        self._slot_free.set()

    def open_stream_window(self, stream: ClientStream, increment: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.increment_flow_control_window(increment, stream_id=stream.stream_id)
            self._flush()

    # -------------------------------------------------------------- reading

    async def _read_loop(self) -> None:
        reader = self.reader
        try:
            while True:
                data = await reader.read(READ_SIZE)
                self.last_read_at = time.monotonic()
                if not data:
                    self._lost(None)
                    return
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self._flush()  # h2 queued a GOAWAY for the peer
                    self._lost(exc, f"HTTP/2 protocol error: {exc}")
                    return
                self._dispatch(events)
                self._flush()
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self._lost(exc)
        except asyncio.CancelledError:
            self._lost(None)
            raise

    def _dispatch(self, events: list[h2.events.Event]) -> None:
        streams = self.streams
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                flow = event.flow_controlled_length
                self._conn_unacked += flow
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_data(event.data, flow)
                if self._conn_unacked >= CONNECTION_WINDOW // 4:
                    self.h2.increment_flow_control_window(self._conn_unacked)
                    self._conn_unacked = 0
            elif isinstance(event, h2.events.ResponseReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_headers(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_end()
                    self._maybe_forget(stream)
            elif isinstance(event, h2.events.WindowUpdated):
                self.schedule()
            elif isinstance(event, h2.events.StreamReset):
                stream = streams.pop(event.stream_id, None)
                if stream is not None:
                    code = int(event.error_code)
                    stream._fail(
                        StreamReset(self.url, f"stream reset by peer ({_code_name(code)})", code)
                    )
                self._slot_free.set()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._settings_received.set()
                self.schedule()
                self._slot_free.set()
            elif isinstance(event, h2.events.TrailersReceived):
                pass  # StreamEnded follows
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._on_goaway(event)
            elif isinstance(event, h2.events.InformationalResponseReceived):
                pass

    def _maybe_forget(self, stream: ClientStream) -> None:
        # h2 forgets a stream once both sides ended; so do we, but the ClientStream keeps
        # its buffered data for the application.
        h2stream = self.h2.streams.get(stream.stream_id)
        if h2stream is None or h2stream.closed:
            self.streams.pop(stream.stream_id, None)
            self._slot_free.set()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.goaway = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        code = int(event.error_code) if event.error_code is not None else 0
        for stream_id in [sid for sid in self.streams if sid > last]:
            stream = self.streams.pop(stream_id)
            stream._fail(
                StreamReset(self.url, f"stream refused by GOAWAY ({_code_name(code)})", code)
            )
        if code != 0:
            self._lost(None, f"connection closed by peer with GOAWAY ({_code_name(code)})")
        self._slot_free.set()

    def _lost(self, cause: BaseException | None, message: str = "connection lost") -> None:
        if self.error is None:
            self.error = TransportError(self.url, message)
            if cause is not None:
                self.error.__cause__ = cause
        self.closed = True
        for stream in self.streams.values():
            if not stream._ended:
                stream._fail(self.error)
            else:
                stream._pending.clear()
                stream._drained.set()
        self.streams.clear()
        self._dirty.clear()
        self._settings_received.set()
        self._slot_free.set()
        with contextlib.suppress(Exception):
            self.writer.close()

    async def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self.h2.close_connection()
                self._flush()
            self._lost(None, "connection closed by us")
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def _code_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)
