"""The interface between the HTTP/2 transport and the node.

The transport owns HTTP: routing, the check order of PROTOCOL §3, media types, body
limits, error bodies and the full-duplex plumbing of the stream endpoint. The node owns
everything the frames mean. This module is the whole contract between the two, kept
small so that the node can be tested without sockets and the transport without a node.

Errors: any method may raise :class:`node.errors.ProtocolError`; the transport answers
it with the HTTP status of §3 (``OVERLOADED``/``SHUTDOWN`` → 503 with ``Retry-After``)
and one ERROR frame as the body. Any other exception is answered ``500 INTERNAL``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class StreamEndpoint(Protocol):
    """One accepted stream (``POST …/stream``), created once the request headers passed
    every check of §3 and the ``200`` is about to be sent.

    ``feed`` and ``feed_eof`` are called from the transport's receive loop, which must
    never wait (hypercorn stops reading the whole connection when one stream's queue is
    full), so they must not block: CREDIT bounds what the peer may send.
    ``outgoing`` is awaited by a separate writer task; it must be bounded by the
    session's own credit (hypercorn buffers without limit when the HTTP/2 window is
    closed) and should return as many complete lines as are ready at once, since one
    line per DATA frame is an order of magnitude slower than 16 KB batches.
    """

    def feed(self, data: bytes) -> None:
        """Request body bytes exactly as read; lines may be split anywhere."""

    def feed_eof(self) -> None:
        """The peer ended its request body (END_STREAM)."""

    async def outgoing(self) -> bytes | None:
        """The next chunk of the response body, or None to end the response."""

    def abort(self, reason: str) -> None:
        """The stream is gone (client reset, connection lost, server stopping).

        After ``abort`` nothing more is fed and ``outgoing`` is no longer awaited
        (the writer task is cancelled), so the endpoint just releases its state.
        """


class FederationHandler(Protocol):
    server_id: str
    max_message_size: int

    def caps(self) -> dict:
        """The caps document of §3.1."""

    def key_current(self) -> dict:
        """This server's key document (§3.2)."""

    def key_document(self, server_id: str) -> dict | None:
        """The pinned key document of ``server_id`` as that server published it, or None."""

    def serves_group(self, group_id: str) -> bool:
        """Whether a syntactically valid group id is served (else 404 GROUP_UNSUPPORTED)."""

    def authenticate_request(
        self, header: str | None, method: str, path_and_query: str, body: bytes
    ) -> str | None:
        """Check the ``Authorization: Taps …`` header of §3.3 on send/digest/checkpoint.

        Returns the authenticated origin, or None when there is no header and the node
        is open; raises ``ProtocolError(AUTH_FAILED)`` otherwise.
        """

    def admit(self, origin: str | None, group_id: str) -> None:
        """Whether a send/digest/checkpoint request from ``origin`` (as authenticated,
        None when unsigned) in a served group is answered at all: raise a ProtocolError
        to refuse it (e.g. OVERLOADED → 503 while the link with that peer is cut)."""

    def open_stream(self, group_id: str) -> StreamEndpoint:
        """Accept a stream for a served group (may raise OVERLOADED/SHUTDOWN → 503)."""

    async def send(self, group_id: str, line: bytes, origin: str | None) -> tuple[int, list[bytes]]:
        """Handle the single frame line of ``POST …/send`` (``\\n`` stripped, a trailing
        ``\\r`` kept). ``origin`` is the authenticated origin of a signed request (§3.3:
        then the hop, whatever the frame says), None for an unsigned one. Returns the
        status and the NDJSON response lines."""

    async def digest(self, group_id: str, query: dict[str, str]) -> dict:
        """The digest document of §5.2; ``query`` keeps blank values (``buckets=``)."""

    def checkpoint(self, group_id: str, line: bytes) -> AsyncIterator[bytes]:
        """The NDJSON lines answering the single CHECKPOINT line of §5.3 (an async
        generator). A ProtocolError raised before the first line becomes an error
        response; later ones can only cut the response short."""
