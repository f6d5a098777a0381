"""Pins for node/transport/library_patches.py.

Two kinds of test: the upstream behaviour we work around is still there (if one of
these fails, upstream changed: re-check whether the patch is still needed and still
correct), and our patch is in effect end to end.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings

import h2.connection
import h2.events
import hyperframe.frame
import pytest
from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.protocol.h2 import H2Protocol
from hypothesis import given
from hypothesis import strategies as st
from support.echo import EchoHandler

from node.transport import FRAME_MEDIA_TYPE, FederationApp, FederationClient, start_server
from node.transport import library_patches as patches

WAIT = 20.0


def _stock_h2_protocol(config: Config) -> H2Protocol:
    async def send(event):  # pragma: no cover - never called by __init__
        raise AssertionError

    return H2Protocol(None, config, WorkerContext(None), None, None, False, None, None, send)


# --------------------------------------------------------------------------- upstream


def test_upstream_hypercorn_still_advertises_64k_windows_and_ignores_frame_size():
    config = Config()
    config.h2_max_inbound_frame_size = 1024 * 1024
    protocol = _stock_h2_protocol(config)
    assert protocol.connection.local_settings.initial_window_size == 65_535
    assert protocol.connection.inbound_flow_control_window == 65_535
    assert protocol.connection.max_inbound_frame_size == 16_384


def test_upstream_hypercorn_builds_h2_protocol_through_the_patched_name():
    import hypercorn.protocol as protocol_module

    source = inspect.getsource(protocol_module.ProtocolWrapper)
    assert source.count("H2Protocol(") >= 2  # ALPN h2 and prior knowledge / upgrade
    patches.install()
    assert protocol_module.H2Protocol is patches.FederationH2Protocol


def test_upstream_hypercorn_app_queue_is_an_asyncio_queue():
    assert "return app_queue.put" in inspect.getsource(TaskGroup.spawn_app)


def test_upstream_h2_still_formats_every_received_frame():
    source = inspect.getsource(h2.connection.H2Connection._receive_frame)
    assert "repr(frame)" in source


async def test_upstream_hypercorn_dies_on_data_after_an_early_response():
    """Stock hypercorn (no federation marker): DATA for a stream whose response is
    complete raises KeyError in the connection reader and kills every stream."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/other":  # keeps its response open until the client leaves
            while (await receive())["type"] != "http.disconnect":
                pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    config = Config()
    config.errorlog = None
    server = await start_server(app, "127.0.0.1", 0, config=config)
    client = FederationClient(server.url)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: None)  # hypercorn's KeyError log
    try:
        bystander = await client.open_stream("/other")
        await asyncio.wait_for(bystander.response(), WAIT)
        stream = await client.open_stream("/early")
        await asyncio.wait_for(stream.response(), WAIT)
        assert await asyncio.wait_for(stream.read(), WAIT) is None
        await stream.write(b"late data")
        with pytest.raises(Exception, match="connection lost"):
            await asyncio.wait_for(bystander.read(), WAIT)
    finally:
        await client.close()
        await server.stop()
        with warnings.catch_warnings():  # the coroutine hypercorn's crash left behind
            warnings.simplefilter("ignore", RuntimeWarning)
            gc.collect()
        loop.set_exception_handler(previous)


# --------------------------------------------------------------------------- ours


async def test_federation_server_advertises_4mib_stream_and_16mib_connection_windows():
    server = await start_server(FederationApp(EchoHandler()), "127.0.0.1", 0)
    client = FederationClient(server.url)
    try:
        assert (await client.request("GET", "/_taps/federation/caps")).status == 200
        conn = await client.connection()
        assert conn.h2.remote_settings.initial_window_size == 4 * 1024 * 1024
        assert conn.h2.outbound_flow_control_window == 16 * 1024 * 1024
        assert conn.h2.remote_settings.max_concurrent_streams == 100
        # And a single stream can really have 4 MiB in flight (the echo reads it all).
        stream = await client.open_stream(
            "/_taps/federation/encrypted-groups/g!sink/stream",
            [("content-type", FRAME_MEDIA_TYPE)],
        )
        await asyncio.wait_for(stream.write(b"x" * 1000 + b"\n"), WAIT)
        stream.end()
        assert await asyncio.wait_for(stream.read(), WAIT) is None
    finally:
        await client.close()
        await server.stop()


async def test_federation_server_takes_256kib_data_frames_from_the_first_chunk():
    # h2 only raises its frame reader's limit once our SETTINGS are ACKed, and sets it
    # before reading a chunk: the patch accepts large frames at once, so a client that
    # ACKs and sends a large DATA frame in one write is not refused (FRAME_SIZE_ERROR).
    server = await start_server(FederationApp(EchoHandler()), "127.0.0.1", 0)
    client = FederationClient(server.url)
    try:
        assert (await client.request("GET", "/_taps/federation/caps")).status == 200
        conn = await client.connection()
        assert conn.h2.remote_settings.max_frame_size == patches.MAX_FRAME_SIZE
        assert conn.h2.max_outbound_frame_size == 256 * 1024
        stream = await client.open_stream(
            "/_taps/federation/encrypted-groups/g!echo/stream",
            [("content-type", FRAME_MEDIA_TYPE)],
        )
        body = (b"y" * 1023 + b"\n") * 512  # 512 KiB: two full-size DATA frames
        await asyncio.wait_for(stream.write(body), WAIT)
        stream.end()
        echoed = bytearray()
        while (chunk := await asyncio.wait_for(stream.read(), WAIT)) is not None:
            echoed += chunk
        assert bytes(echoed) == body
    finally:
        await client.close()
        await server.stop()


async def test_plain_hypercorn_config_is_not_patched():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config()
    config.errorlog = None
    server = await start_server(app, "127.0.0.1", 0, config=config)
    client = FederationClient(server.url)
    try:
        assert (await client.request("GET", "/")).status == 204
        conn = await client.connection()
        assert conn.h2.remote_settings.initial_window_size == 65_535
        assert conn.h2.outbound_flow_control_window == 65_535
    finally:
        await client.close()
        await server.stop()


@given(
    data=st.binary(max_size=64),
    padded=st.booleans(),
    pad_length=st.integers(min_value=0, max_value=20),
)
def test_fast_frame_repr_is_identical_to_upstream(data, padded, pad_length):
    frame = hyperframe.frame.DataFrame(1, data, flags=["PADDED"] if padded else [])
    if padded:
        frame.pad_length = pad_length
    expected = patches._upstream_raw_data_repr(frame.serialize_body())
    assert patches._data_frame_body_repr(frame) == expected
    assert patches._raw_data_repr(data) == patches._upstream_raw_data_repr(data)
    patches.install()
    assert repr(frame).endswith(": " + expected)


async def _last_data_frame(url: str, path: str) -> tuple[bytes, bool]:
    """GET ``path`` with a bare h2 client: the payload of the response's DATA frame that
    ends the stream, and whether HEADERS came in the same read as the body's first DATA."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", host)], True
    )
    writer.write(conn.data_to_send())
    together = False
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), WAIT)
            assert chunk, "connection closed before the response ended"
            events = conn.receive_data(chunk)
            writer.write(conn.data_to_send())
            kinds = [type(e) for e in events]
            if h2.events.ResponseReceived in kinds and h2.events.DataReceived in kinds:
                together = True
            for event in events:
                if isinstance(event, h2.events.DataReceived) and event.stream_ended:
                    return event.data, together
                if isinstance(event, h2.events.StreamEnded):
                    return b"", together
    finally:
        writer.close()


async def test_upstream_hypercorn_ends_a_response_with_an_empty_data_frame():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    config = Config()
    config.errorlog = None
    server = await start_server(app, "127.0.0.1", 0, config=config)
    try:
        last, _ = await _last_data_frame(server.url, "/")
        assert last == b""  # HEADERS, DATA "ok", DATA "" + END_STREAM: three writes
    finally:
        await server.stop()


async def test_federation_server_writes_a_sized_response_as_headers_and_one_final_data_frame():
    server = await start_server(FederationApp(EchoHandler()), "127.0.0.1", 0)
    try:
        last, together = await _last_data_frame(server.url, "/_taps/federation/caps")
        assert last.startswith(b"{")  # the body itself carries END_STREAM
        assert together  # HEADERS waited for the body: one write
    finally:
        await server.stop()
