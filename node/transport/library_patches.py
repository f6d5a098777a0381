"""The only place where the transport reaches into hypercorn's, h2's and hyperframe's internals.

Each patch fixes a measured problem of hypercorn 0.18 / h2 4.4 / hyperframe 6.1, is
as small as we could make it, and is pinned by tests/test_transport_patches.py, which
fails when upstream changes the behaviour we rely on or work around.

1. hypercorn advertises HTTP/2 receive windows of 65,535 bytes per stream and per
   connection and offers no setting for them (``h2_max_inbound_frame_size`` is
   assigned after h2 has read it). PROTOCOL §1 wants 4 MiB / 16 MiB so that CREDIT, not
   HTTP/2, is the backpressure.
2. When the app has sent its whole response while the peer is still sending its
   request body, hypercorn forgets the stream; the next DATA frame raises KeyError in
   the connection's reader and kills every stream of the connection. Federation
   streams close in order (§4.6: the side that ends first still reads the other side's
   final ACKs), so hypercorn must keep delivering the request body after the response
   ended, and must survive DATA for streams the app has finished with. And an app that
   answered early and stopped reading (413) deadlocked the connection at its exit:
   see :func:`_discard_unread_body`.
3. h2 formats ``repr(frame)`` for a trace log of every received frame even when no
   logger is configured; for a DATA frame that hexlifies the whole payload (about
   17 µs per 16 KB frame) to keep 20 characters of it. We make the repr cheap without
   changing a single character of its output.

4. The federation server also advertises 256 KiB DATA frames (SETTINGS_MAX_FRAME_SIZE)
   so a burst of EVENTs crosses hypercorn as one frame, and accepts them before the
   peer's SETTINGS ACK: h2 sets its frame reader's limit before it reads a chunk, so an
   ACK followed by a large frame in the same chunk was a FRAME_SIZE_ERROR.

5. hypercorn writes a complete response in three socket writes: the HEADERS frame, the
   body's DATA frame, then an empty DATA frame with END_STREAM. A federation response
   whose size is known (``content-length``: every one-shot answer) is written once: its
   HEADERS wait for the body, and the body's last DATA frame carries END_STREAM. A
   one-shot ``send`` cost ~3 writes of ~15 µs of the loop each; streamed responses
   (no ``content-length``) still send their HEADERS at once.

Patches 1, 2, 4 and 5 apply only to servers whose Config has ``federation_h2 = True`` (our
:class:`node.transport.serving.FederationConfig`), so other hypercorn users in the same
process are unaffected. Patch 3 is global and output-preserving.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hypercorn.protocol
import hyperframe.frame
from hypercorn.protocol.events import Body, Response, StreamClosed
from hypercorn.protocol.h2 import H2Protocol

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_WINDOW = 65_535
# A burst of EVENTs after a CREDIT is ~100 KB. In 16 KiB DATA frames (the default) each
# frame costs the receiver a turn of hypercorn's app queue, a feed of the session and a
# WINDOW_UPDATE written back; 256 KiB frames make it one of each per burst.
MAX_FRAME_SIZE = 256 * 1024

# --------------------------------------------------------------------------- 1 + 2


class _OrphanSink:
    """Stands in for a stream the app has finished with: its request body is dropped.

    hypercorn still acknowledges the dropped DATA (so the connection window does not
    leak), and once our response has been sent completely the peer is told to stop
    sending with RST_STREAM(NO_ERROR) (RFC 9113 §8.1).
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FederationH2Protocol) -> None:
        self._protocol = protocol

    async def handle(self, event: Any) -> None:
        protocol = self._protocol
        stream_id = event.stream_id
        protocol._remote_ended.discard(stream_id)
        if isinstance(event, Body) and stream_id not in protocol.stream_buffers:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                protocol.connection.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)


class _Streams(dict):
    """hypercorn looks streams up with ``self.streams[stream_id]`` when DATA arrives and
    dies on a KeyError; a finished stream's DATA goes to the orphan sink instead."""

    __slots__ = ("_sink",)

    def __init__(self, sink: _OrphanSink) -> None:
        super().__init__()
        self._sink = sink

    def __missing__(self, stream_id: int) -> _OrphanSink:
        return self._sink


class FederationH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 protocol with large receive windows and orderly half-close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._federation = bool(getattr(self.config, "federation_h2", False))
        # Streams whose response is complete while the peer still sends its body.
        self._half_closed: set[int] = set()
        self._remote_ended: set[int] = set()
        if self._federation:
            self.streams = _Streams(_OrphanSink(self))
            values = dict(self.connection.local_settings.items())
            values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = STREAM_WINDOW
            values[h2.settings.SettingCodes.MAX_FRAME_SIZE] = MAX_FRAME_SIZE
            self.connection.local_settings = h2.settings.Settings(
                client=False, initial_values=values
            )
            # h2 applies a larger frame size once the peer ACKs our SETTINGS, but sets
            # its frame reader's limit before it reads a chunk: an ACK and a large DATA
            # frame in one chunk was FRAME_SIZE_ERROR. Accept them from the start.
            self.connection.max_inbound_frame_size = MAX_FRAME_SIZE

    async def initiate(
        self, headers: list[tuple[bytes, bytes]] | None = None, settings: bytes | None = None
    ) -> None:
        await super().initiate(headers, settings)
        if self._federation:
            # The connection window is not a SETTING: it grows by WINDOW_UPDATE only.
            self.connection.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
            await self._flush()

    async def stream_send(self, event: Any) -> None:
        if (
            self._federation
            and isinstance(event, Response)
            and any(name == b"content-length" for name, _ in event.headers)
        ):
            # Patch 5: the body follows at once; _send_data writes the HEADERS with it.
            status = (b":status", b"%d" % event.status_code)
            headers = [status, *event.headers, *self.config.response_headers("h2")]
            with contextlib.suppress(KeyError, h2.exceptions.ProtocolError):  # as upstream
                self.connection.send_headers(event.stream_id, headers)
            return
        if (
            self._federation
            and isinstance(event, StreamClosed)
            and event.stream_id in self.streams
            and event.stream_id not in self._remote_ended
            and event.stream_id not in self._half_closed
        ):
            # The response is complete but the request body is not: keep the stream so
            # the app still reads it. The app's exit sends StreamClosed again.
            self._half_closed.add(event.stream_id)
            return
        await super().stream_send(event)

    async def _send_data(self, stream_id: int) -> None:
        if not self._federation:
            await super()._send_data(stream_id)
            return
        # Upstream's, but the last of a body goes as one DATA frame with END_STREAM and
        # one write (patch 5), instead of a DATA frame, a write, an empty one, a write.
        try:
            buffer = self.stream_buffers[stream_id]
            chunk_size = min(
                self.connection.local_flow_control_window(stream_id),
                self.connection.max_outbound_frame_size,
            )
            data = await buffer.pop(max(0, chunk_size))
            if buffer.complete:
                if data:
                    self.connection.send_data(stream_id, data, end_stream=True)
                else:
                    self.connection.end_stream(stream_id)
                await self._flush()
                del self.stream_buffers[stream_id]
                self.priority.remove_stream(stream_id)
            elif data:
                self.connection.send_data(stream_id, data)
                await self._flush()
            else:
                self.priority.block(stream_id)
        except (h2.exceptions.StreamClosedError, KeyError, h2.exceptions.ProtocolError):
            # The stream or connection closed while this waited to send: close it.
            buffer = self.stream_buffers.pop(stream_id, None)
            if buffer is not None:
                await buffer.close()
            with contextlib.suppress(Exception):
                self.priority.remove_stream(stream_id)

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        if self._federation:
            for event in events:
                if isinstance(event, h2.events.StreamEnded):
                    self._remote_ended.add(event.stream_id)
        await super()._handle_events(events)

    async def _close_stream(self, stream_id: int) -> None:
        self._half_closed.discard(stream_id)
        self._remote_ended.discard(stream_id)
        if self._federation:
            _discard_unread_body(self.streams.get(stream_id))
        await super()._close_stream(stream_id)


def _discard_unread_body(stream: Any) -> None:
    """Empty a closing stream's app queue (``max_app_queue_size`` messages).

    hypercorn tells the app ``http.disconnect`` through the same bounded queue as the
    request body. An app that answered early (413, 415…) and stopped reading leaves it
    full, so that put blocked forever, and with it the connection's reader, which was
    itself blocked putting the next DATA into the same queue. The unread body of a
    stream that is closing is worthless, so make room.
    """
    queue = getattr(getattr(stream, "app_put", None), "__self__", None)
    if isinstance(queue, asyncio.Queue):
        while not queue.empty():
            queue.get_nowait()


def install_hypercorn_patch() -> None:
    """Make hypercorn build :class:`FederationH2Protocol` for every HTTP/2 connection
    (prior knowledge, ALPN and h2c upgrade all go through ``hypercorn.protocol.H2Protocol``)."""
    hypercorn.protocol.H2Protocol = FederationH2Protocol  # type: ignore[misc]


# --------------------------------------------------------------------------- 3

_upstream_raw_data_repr = hyperframe.frame._raw_data_repr  # kept for the pinning test
_REPR_BYTES = 11  # 22 hex digits: enough for the 20 the repr keeps plus its "..."


def _raw_data_repr(data: bytes | None) -> str:
    """hyperframe's ``_raw_data_repr`` with identical output, hexlifying 11 bytes only."""
    if not data:
        return "None"
    r = binascii.hexlify(bytes(data[:_REPR_BYTES])).decode("ascii")
    if len(r) > 20:
        r = r[:20] + "..."
    return "<hex:" + r + ">"


def _data_frame_body_repr(self: hyperframe.frame.DataFrame) -> str:
    """``_raw_data_repr(self.serialize_body())`` without building the padded body."""
    head = self.serialize_padding_data() + bytes(self.data[:_REPR_BYTES])
    if len(head) < _REPR_BYTES and self.pad_length:
        head += b"\0" * min(self.pad_length, _REPR_BYTES)
    return _raw_data_repr(head)


def install_repr_patch() -> None:
    hyperframe.frame._raw_data_repr = _raw_data_repr
    hyperframe.frame.DataFrame._body_repr = _data_frame_body_repr  # type: ignore[method-assign]


_installed = False


def install() -> None:
    """Idempotent; called on import of :mod:`node.transport`."""
    global _installed
    if not _installed:
        install_hypercorn_patch()
        install_repr_patch()
        _installed = True
