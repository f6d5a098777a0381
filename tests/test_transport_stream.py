"""The full-duplex stream endpoint and the client's streams, over real loopback HTTP/2."""

from __future__ import annotations

import asyncio
import random
import socket
from types import SimpleNamespace

import pytest
from support.echo import EchoHandler, filler_line

from node.protocol.decoder import LineDecoder
from node.transport import (
    FRAME_MEDIA_TYPE,
    FederationApp,
    FederationClient,
    TransportError,
    start_server,
)
from node.transport.connection import STREAM_WINDOW, StreamReset
from node.transport.serving import PortInUse, make_config

P = "/_taps/federation/encrypted-groups"
CT = [("content-type", FRAME_MEDIA_TYPE)]
WAIT = 20.0  # upper bound for any single wait; the tests finish far sooner


@pytest.fixture
async def node():
    handler = EchoHandler(max_message_size=65536)
    app = FederationApp(handler, close_grace=5.0)
    server = await start_server(app, "127.0.0.1", 0)
    client = FederationClient(server.url)
    yield SimpleNamespace(handler=handler, server=server, client=client, app=app)
    await client.close()
    await server.stop()


async def read_until(stream, predicate) -> bytes:
    data = b""
    while not predicate(data):
        chunk = await asyncio.wait_for(stream.read(), WAIT)
        assert chunk is not None, f"stream ended early after {len(data)} bytes"
        data += chunk
    return data


async def read_all(stream) -> bytes:
    parts = []
    while (chunk := await asyncio.wait_for(stream.read(), WAIT)) is not None:
        parts.append(chunk)
    return b"".join(parts)


async def test_server_writes_before_the_request_body_ends(node):
    stream = await node.client.open_stream(f"{P}/g!greet/stream", CT)
    status, headers = await asyncio.wait_for(stream.response(), WAIT)
    assert status == 200
    assert dict(headers)["content-type"] == FRAME_MEDIA_TYPE
    # Nothing written yet, and already a line from the server.
    assert await read_until(stream, lambda d: d.endswith(b"\n")) == b'{"hello":"g!greet"}\n'
    await stream.write(b'{"n": 1}\n{"n"')
    assert await read_until(stream, lambda d: d.endswith(b"\n")) == b'{"n": 1}\n'
    await stream.write(b": 2}\n")
    assert await read_until(stream, lambda d: d.endswith(b"\n")) == b'{"n": 2}\n'
    stream.end()
    assert await read_all(stream) == b""
    endpoint = node.handler.endpoints[0]
    await asyncio.wait_for(endpoint.done.wait(), WAIT)
    assert endpoint.eof and endpoint.aborted is None and endpoint.lines == 2


def random_lines(rng: random.Random, total: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < total:
        out += filler_line(i, rng.randint(12, 3000))
        i += 1
    return bytes(out)


async def test_echo_10_mb_both_directions_at_once(node):
    rng = random.Random(7)
    payload = random_lines(rng, 10 * 1024 * 1024)
    stream = await node.client.open_stream(f"{P}/g!echo/stream", CT)

    async def writer():
        pos = 0
        while pos < len(payload):
            size = rng.randint(1, 100_000)  # cuts lines anywhere, spans DATA frames
            await stream.write(payload[pos : pos + size])
            pos += size
        stream.end()

    write_task = asyncio.create_task(writer())
    echoed = await asyncio.wait_for(read_all(stream), 60)
    await write_task
    assert echoed == payload
    endpoint = node.handler.endpoints[0]
    assert endpoint.lines == payload.count(b"\n")
    assert endpoint.eof and endpoint.aborted is None


async def test_100_concurrent_streams_on_one_connection(node):
    conn = await node.client.connection()
    streams = await asyncio.gather(
        *(node.client.open_stream(f"{P}/g!echo-{i}/stream", CT) for i in range(100))
    )
    assert conn.h2.open_outbound_streams == 100

    # A 101st stream waits for a free slot instead of failing.
    extra = asyncio.create_task(node.client.open_stream(f"{P}/g!echo-extra/stream", CT))

    async def exchange(i, stream):
        lines = b"".join(filler_line(i * 1000 + k, 100 + k) for k in range(50))
        await stream.write(lines)
        size = len(lines)
        got = await read_until(stream, lambda d: len(d) >= size)
        assert got == lines
        return stream

    await asyncio.gather(*(exchange(i, s) for i, s in enumerate(streams)))
    assert not extra.done()
    streams[0].end()
    assert await read_all(streams[0]) == b""
    extra_stream = await asyncio.wait_for(extra, WAIT)
    await extra_stream.write(b'{"x":1}\n')
    assert await read_until(extra_stream, lambda d: d.endswith(b"\n")) == b'{"x":1}\n'
    for stream in [*streams[1:], extra_stream]:
        stream.end()
        assert await read_all(stream) == b""
    assert await node.client.connection() is conn
    assert len(node.handler.endpoints) == 101


async def test_a_stream_nobody_reads_does_not_stall_the_others(node):
    """Stream A gets 12 MB from the server and is never read; stream B on the same
    connection still echoes 2 MB. Our client holds at most A's 4 MiB stream window."""
    stalled = await node.client.open_stream(f"{P}/g!source-12000000/stream", CT)
    await asyncio.wait_for(stalled.response(), WAIT)
    active = await node.client.open_stream(f"{P}/g!echo/stream", CT)
    payload = random_lines(random.Random(3), 2 * 1024 * 1024)

    async def writer():
        for pos in range(0, len(payload), 50_000):
            await active.write(payload[pos : pos + 50_000])
        active.end()

    task = asyncio.create_task(writer())
    assert await asyncio.wait_for(read_all(active), 60) == payload
    await task
    buffered = sum(len(data) for data, _ in stalled._chunks)
    assert 0 < buffered <= STREAM_WINDOW
    # Reading A later gets all of it, in order.
    stalled.end()
    data = await asyncio.wait_for(read_all(stalled), 60)
    assert len(data) == 12_000_000
    decoder = LineDecoder(65536)
    assert len(decoder.feed(data)) == data.count(b"\n")


async def test_orderly_close_server_ends_first_then_reads_the_rest(node):
    stream = await node.client.open_stream(f"{P}/g!first/stream", CT)
    # The server wrote one line and ended its response before we sent anything.
    assert await read_all(stream) == b'{"hello":"g!first"}\n'
    endpoint = node.handler.endpoints[0]
    # We still send our final lines (think: ACKs); the server still reads them.
    await stream.write(b'{"ack": 1}\n' * 1000)
    stream.end()
    await asyncio.wait_for(endpoint.done.wait(), WAIT)
    assert endpoint.eof and endpoint.aborted is None
    assert endpoint.lines == 1000 and endpoint.fed_after_end == 11_000
    # The connection is healthy.
    r = await node.client.request("GET", "/_taps/federation/caps")
    assert r.status == 200


async def test_peer_that_never_ends_after_our_response_is_abandoned(node):
    node.app.close_grace = 0.2
    stream = await node.client.open_stream(f"{P}/g!first/stream", CT)
    assert await read_all(stream) == b'{"hello":"g!first"}\n'
    endpoint = node.handler.endpoints[0]
    await asyncio.wait_for(endpoint.done.wait(), WAIT)
    assert "did not end" in endpoint.aborted
    # Late DATA for the abandoned stream is refused without harming the connection.
    with pytest.raises(StreamReset):
        for _ in range(100):
            await stream.write(b'{"late": true}\n' * 100)
            await asyncio.wait_for(node.client.request("GET", "/_taps/federation/caps"), WAIT)
    assert (await node.client.request("GET", "/_taps/federation/caps")).status == 200


async def test_client_reset_aborts_the_endpoint(node):
    stream = await node.client.open_stream(f"{P}/g!echo/stream", CT)
    await stream.write(b'{"a":1}\n')
    assert await read_until(stream, lambda d: d.endswith(b"\n")) == b'{"a":1}\n'
    stream.reset()
    endpoint = node.handler.endpoints[0]
    await asyncio.wait_for(endpoint.done.wait(), WAIT)
    assert endpoint.aborted is not None and not endpoint.eof
    with pytest.raises(TransportError):
        await stream.read()
    assert (await node.client.request("GET", "/_taps/federation/caps")).status == 200


async def test_connection_loss_fails_every_stream_and_the_client_reconnects(node):
    streams = [await node.client.open_stream(f"{P}/g!echo/stream", CT) for _ in range(3)]
    for s in streams:
        await asyncio.wait_for(s.response(), WAIT)
    conn = await node.client.connection()
    conn.writer.transport.abort()  # the TCP connection dies under us
    for s in streams:
        with pytest.raises(TransportError) as info:
            await asyncio.wait_for(s.read(), WAIT)
        assert node.server.url in str(info.value)
    for endpoint in node.handler.endpoints:
        await asyncio.wait_for(endpoint.done.wait(), WAIT)
        assert endpoint.aborted is not None
    r = await node.client.request("GET", "/_taps/federation/caps")
    assert r.status == 200
    assert await node.client.connection() is not conn


async def test_stop_with_open_streams_returns_and_aborts_them():
    handler = EchoHandler()
    config = make_config()
    config.graceful_timeout = 0.2  # the node ends its streams with SHUTDOWN before this
    server = await start_server(FederationApp(handler), "127.0.0.1", 0, config=config)
    client = FederationClient(server.url)
    try:
        stream = await client.open_stream(f"{P}/g!echo/stream", CT)
        await asyncio.wait_for(stream.response(), WAIT)
        await asyncio.wait_for(server.stop(), WAIT)
        assert not server.running
        assert handler.endpoints[0].aborted is not None
        with pytest.raises(TransportError):
            while await asyncio.wait_for(stream.read(), WAIT) is not None:
                pass
        with pytest.raises(TransportError) as info:
            await client.request("GET", "/_taps/federation/caps")
        assert server.url in str(info.value)
    finally:
        await client.close()
        await server.stop()


async def test_port_in_use_is_a_clear_error(node):
    with pytest.raises(PortInUse) as info:
        await start_server(FederationApp(node.handler), "127.0.0.1", node.server.port)
    assert str(node.server.port) in str(info.value)


async def test_connect_refused_and_connect_timeout_are_transport_errors():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        client = FederationClient(f"http://127.0.0.1:{port}")
        with pytest.raises(TransportError) as info:
            await client.request("GET", "/_taps/federation/caps")
        assert f"127.0.0.1:{port}" in str(info.value)

    # A server that accepts TCP but never speaks HTTP/2.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    client = FederationClient(f"http://127.0.0.1:{port}", connect_timeout=0.3)
    with pytest.raises(TransportError) as info:
        await client.request("GET", "/_taps/federation/caps")
    assert "within 0.3 s" in str(info.value)
    silent.close()


async def test_goaway_refuses_later_streams_and_the_client_moves_to_a_new_connection():
    """A bare h2 server answers stream 1, then sends GOAWAY(last_stream_id=1), which
    refuses stream 3; the next request opens a fresh connection."""
    import h2.config
    import h2.connection
    import h2.events
    import hyperframe.frame

    connections = 0

    async def serve(reader, writer):
        nonlocal connections
        connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        requests = []
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    requests.append(event.stream_id)
            if connections == 1 and len(requests) == 2:
                # Answer stream 1, then GOAWAY(last_stream_id=1) refusing stream 3. (h2
                # refuses every frame after a GOAWAY it received, so a stream below
                # last_stream_id cannot finish after it: that case fails the connection.)
                conn.send_headers(1, [(":status", "200")])
                conn.send_data(1, b"first", end_stream=True)
                writer.write(conn.data_to_send())
                writer.write(hyperframe.frame.GoAwayFrame(0, last_stream_id=1).serialize())
                requests.append(None)
            elif connections > 1 and requests and requests[-1] is not None:
                conn.send_headers(requests[-1], [(":status", "204")], end_stream=True)
                requests.append(None)
            writer.write(conn.data_to_send())
        writer.close()

    bare = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{bare.sockets[0].getsockname()[1]}"
    client = FederationClient(url)
    try:
        one = await client.open_stream("/one", end_stream=True)
        three = await client.open_stream("/three", end_stream=True)
        assert await asyncio.wait_for(one.response(), WAIT) == (200, [])
        assert await asyncio.wait_for(read_all(one), WAIT) == b"first"
        with pytest.raises(StreamReset, match="GOAWAY"):
            await asyncio.wait_for(three.response(), WAIT)
        r = await asyncio.wait_for(client.request("GET", "/again"), WAIT)
        assert r.status == 204 and connections == 2
    finally:
        await client.close()
        bare.close()


async def test_a_connection_silent_for_dead_after_is_never_reused():
    """rev 6 (§4.5): nothing read for 3 × the ping interval: the connection is dead as a
    whole; new streams and requests go on a new one. Silence is made by moving the time
    of the last read back, not by waiting."""
    handler = EchoHandler(max_message_size=65536)
    server = await start_server(FederationApp(handler, close_grace=5.0), "127.0.0.1", 0)
    client = FederationClient(server.url, dead_after=3.0)
    try:
        first = await client.connection()
        assert (await client.request("GET", "/_taps/federation/caps")).status == 200
        assert await client.connection() is first  # busy: reused
        first.last_read_at -= 2.9
        assert await client.connection() is first  # quiet, not yet dead: reused
        stream = await client.open_stream(f"{P}/g!greet/stream", CT)
        await asyncio.wait_for(stream.response(), WAIT)
        first.last_read_at -= 3.0
        r = await asyncio.wait_for(client.request("GET", "/_taps/federation/caps"), WAIT)
        assert r.status == 200
        second = await client.connection()
        assert second is not first and first.closed and not second.closed
        # The stream on the dead connection is failed, not left to hang.
        with pytest.raises(TransportError):
            while await asyncio.wait_for(stream.read(), WAIT) is not None:
                pass
    finally:
        await client.close()
        await server.stop()
