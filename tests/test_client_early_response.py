"""Our client and a server that answers before it has read the request body.

RFC 9113 §8.1: a server may send a complete response before the whole request and then
stop reading. Such a server here never returns a byte of window and never resets the
stream, the worst case: a client that first finishes its upload and only then reads the
response waits for a window that never opens. Ours must return the response.
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from node.transport import FederationClient

BODY = 10 * 1024 * 1024  # well past the 65,535-byte default windows the server keeps


class _EarlyResponder:
    """A bare h2 server: answers 413 to every request at once, reads no body."""

    def __init__(self) -> None:
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests += 1
                        conn.send_headers(event.stream_id, [(":status", "413")])
                        conn.send_data(event.stream_id, b"too large\n", end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()


async def test_a_complete_early_response_ends_the_upload_and_the_request():
    responder = _EarlyResponder()
    server = await asyncio.start_server(responder.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = FederationClient(f"http://127.0.0.1:{port}")
    try:
        response = await asyncio.wait_for(
            client.request("POST", "/upload", body=b"z" * BODY), timeout=60
        )
        assert response.status == 413 and response.body == b"too large\n"
        # The connection is still good for the next request.
        again = await asyncio.wait_for(client.request("POST", "/again", body=b"x"), timeout=60)
        assert again.status == 413 and responder.requests == 2
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
