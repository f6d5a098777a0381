"""The ASGI app serving PROTOCOL §3 under ``/_taps/federation``.

Two things shape this module. First, the check order of §3 is part of the contract
(an independent implementation tests it): path shape, method, media type, Accept,
the body's size (413), request authentication, group, then query and body; every
failure is one NDJSON ERROR frame with the status of §3. Second, hypercorn's HTTP/2
quirks: it stops reading the whole connection while one stream's app queue is full,
and its ``send`` never blocks on a closed HTTP/2 window. So the stream endpoint gets
one receive loop that never awaits anything but ``receive()``, and a separate writer
whose pace is set by the endpoint's (credit-bounded) ``outgoing()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from ulid import ULID

from node.protocol.errors import HTTP_STATUS, ErrorCode, ProtocolError, is_fatal
from node.protocol.frames import encode_dict
from node.protocol.ids import is_group_id, is_server_id
from node.transport.handler import FederationHandler, StreamEndpoint
from node.transport.media import (
    FRAME_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    accepts_frames,
    is_frame_media_type,
)
from node.transport.routes import FRAME_ENDPOINTS, Endpoint, Route, match_route

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_FRAME_CT = FRAME_MEDIA_TYPE.encode()
_JSON_CT = JSON_MEDIA_TYPE.encode()
_CHUNK = 64 * 1024  # batch checkpoint lines into chunks of about this size


class _Disconnected(Exception):
    """The client went away before we could answer."""


def error_status(code: ErrorCode | str) -> int:
    """The HTTP status for an error outside a stream (§3); codes the table does not
    name are problems with the request (400), except INTERNAL (500)."""
    status = HTTP_STATUS.get(code)  # type: ignore[call-overload]
    if status is not None:
        return status
    return 500 if code == ErrorCode.INTERNAL else 400


def error_frame(origin: str, code: ErrorCode | str, message: str, ref: str | None = None) -> bytes:
    """One ERROR frame line as the body of an error response (sequence 1, fresh id)."""
    return encode_dict(
        {
            "type": "ERROR",
            "id": str(ULID()),
            "origin": origin,
            "sequence": 1,
            "payload": {"code": str(code), "message": message, "ref": ref, "fatal": is_fatal(code)},
        }
    )


class FederationApp:
    """ASGI 3 app; ``handler`` is the node (see :mod:`node.transport.handler`).

    ``close_grace`` bounds how long a stream whose response has ended waits for the
    peer to end its request body (§4.6 orderly close) before it is abandoned.
    ``retry_after`` is the ``Retry-After`` (seconds) sent with every 503.
    """

    def __init__(
        self, handler: FederationHandler, *, close_grace: float = 10.0, retry_after: int = 5
    ) -> None:
        self.handler = handler
        self.close_grace = close_grace
        self.retry_after = retry_after
        self.open_streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ responses

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes | None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [(b"content-length", b"%d" % len(body))]
        if content_type is not None:
            headers.append((b"content-type", content_type))
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _respond_error(
        self, send: Send, exc: ProtocolError, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        status = error_status(exc.code)
        if status == 503:
            extra = [*(extra or ()), (b"retry-after", b"%d" % self.retry_after)]
        body = error_frame(self.handler.server_id, exc.code, exc.message, exc.ref)
        await self._respond(send, status, body, _FRAME_CT, extra)

    async def _respond_json(self, send: Send, doc: dict) -> None:
        await self._respond(send, 200, orjson.dumps(doc), _JSON_CT)

    # ------------------------------------------------------------------ dispatch

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._dispatch(scope, receive, tracked_send)
        except _Disconnected:
            pass
        except ProtocolError as exc:
            if not started:
                await self._respond_error(tracked_send, exc)
        except Exception:
            log.exception("federation request %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await self._respond_error(
                    tracked_send, ProtocolError(ErrorCode.INTERNAL, "internal error")
                )

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        route = match_route(raw_path)
        if route is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such endpoint")
        method = scope["method"]
        if method != route.method:
            await self._respond_error(
                send,
                ProtocolError(ErrorCode.METHOD_NOT_ALLOWED, f"use {route.method}"),
                [(b"allow", route.method.encode())],
            )
            return
        headers = _Headers(scope["headers"])
        if route.endpoint in FRAME_ENDPOINTS:
            if not is_frame_media_type(headers.single(b"content-type")):
                raise ProtocolError(
                    ErrorCode.BAD_MEDIA_TYPE, f"Content-Type must be {FRAME_MEDIA_TYPE}"
                )
            if not accepts_frames(headers.joined(b"accept")):
                await self._respond(send, 406, b"", None)
                return

        endpoint = route.endpoint
        if endpoint is Endpoint.CAPS:
            await self._respond_json(send, self.handler.caps())
        elif endpoint is Endpoint.KEY_CURRENT:
            await self._respond_json(send, self.handler.key_current())
        elif endpoint is Endpoint.KEY:
            doc = self.handler.key_document(route.arg) if is_server_id(route.arg) else None
            if doc is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, "no pinned key for that server id")
            await self._respond_json(send, doc)
        elif endpoint is Endpoint.STREAM:
            self._check_group(route)
            await self._stream(route.arg, receive, send)  # type: ignore[arg-type]
        else:
            await self._one_shot(scope, route, headers, receive, send)

    def _check_group(self, route: Route) -> None:
        group_id = route.arg
        if not is_group_id(group_id) or not self.handler.serves_group(group_id):  # type: ignore[arg-type]
            raise ProtocolError(ErrorCode.GROUP_UNSUPPORTED, f"group {group_id!r} is not served")

    async def _one_shot(
        self, scope: Scope, route: Route, headers: _Headers, receive: Receive, send: Send
    ) -> None:
        handler = self.handler
        body = b""
        if route.method == "POST":
            # §3.3: the header signs the body's hash, so the body is read (413 beyond
            # max_message_size) before the header and the group are checked.
            body = await _read_body(receive, handler.max_message_size + 2)
            _check_line_sizes(body, handler.max_message_size)
        query: bytes = scope.get("query_string", b"")
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path_and_query = (raw_path + b"?" + query if query else raw_path).decode("latin-1")
        origin = handler.authenticate_request(
            headers.joined(b"authorization"), route.method, path_and_query, body
        )
        self._check_group(route)
        group_id: str = route.arg  # type: ignore[assignment]
        handler.admit(origin, group_id)
        if route.endpoint is Endpoint.DIGEST:
            doc = await handler.digest(group_id, _parse_query(query))
            await self._respond_json(send, doc)
        elif route.endpoint is Endpoint.SEND:
            line = _single_line(body, handler.max_message_size)
            status, lines = await handler.send(group_id, line, origin)
            await self._respond(send, status, _join_lines(lines), _FRAME_CT)
        else:
            line = _single_line(body, handler.max_message_size)
            await self._checkpoint(group_id, line, send)

    async def _checkpoint(self, group_id: str, line: bytes, send: Send) -> None:
        result: Any = self.handler.checkpoint(group_id, line)
        if inspect.isawaitable(result):
            result = await result
        lines = aiter(result)
        try:
            first = await anext(lines)
        except StopAsyncIteration:
            first = None
        # Errors before the first line become an error response (raised to _http).
        headers = [(b"content-type", _FRAME_CT)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        batch = bytearray()
        if first is not None:
            batch += _with_newline(first)
            try:
                async for item in lines:
                    batch += _with_newline(item)
                    if len(batch) >= _CHUNK:
                        await send(
                            {"type": "http.response.body", "body": bytes(batch), "more_body": True}
                        )
                        batch.clear()
            except ProtocolError as exc:
                log.warning("checkpoint response for %s cut short: %s", group_id, exc)
        await send({"type": "http.response.body", "body": bytes(batch), "more_body": False})

    # ------------------------------------------------------------------ stream endpoint

    async def _stream(self, group_id: str, receive: Receive, send: Send) -> None:
        endpoint = self.handler.open_stream(group_id)
        self.open_streams += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", _FRAME_CT)],
                }
            )
            await self._duplex(endpoint, receive, send)
        finally:
            self.open_streams -= 1

    async def _duplex(self, endpoint: StreamEndpoint, receive: Receive, send: Send) -> None:
        request_ended = asyncio.Event()
        reader = asyncio.create_task(_pump_in(endpoint, receive, request_ended))
        writer = asyncio.create_task(_pump_out(endpoint, send))
        ended_wait: asyncio.Task | None = None
        outcome = "the server is stopping"  # what abort() is told unless the stream completes
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if not writer.done():
                # Only a disconnect ends the reader: the client reset the stream or the
                # connection died while our response was still open.
                outcome = _disconnect_reason(reader)
                return
            if writer.exception() is not None:
                outcome = f"writing the response failed: {writer.exception()!r}"
                return
            # Our response is complete; let the peer end its side in order (§4.6).
            if not request_ended.is_set():
                ended_wait = asyncio.create_task(request_ended.wait())
                done, _ = await asyncio.wait(
                    {reader, ended_wait},
                    timeout=self.close_grace,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    outcome = "the peer did not end its request body after our response"
                    return
                if not request_ended.is_set():
                    outcome = _disconnect_reason(reader)
                    return
            outcome = ""
        finally:
            if outcome:
                endpoint.abort(outcome)
            tasks = [task for task in (reader, writer, ended_wait) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- helpers


class _Headers:
    """Request header lookup by lowercase byte name (ASGI gives them lowercased)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[bytes, bytes]]) -> None:
        self._items = items

    def _values(self, name: bytes) -> list[str]:
        return [v.decode("latin-1") for k, v in self._items if k == name]

    def single(self, name: bytes) -> str | None:
        values = self._values(name)
        return values[0] if len(values) == 1 else None

    def joined(self, name: bytes) -> str | None:
        values = self._values(name)
        return ", ".join(values) if values else None


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refused (413) as soon as it exceeds ``limit`` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body += message.get("body", b"")
        if len(body) > limit:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"request body over {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


def _check_line_sizes(body: bytes, max_line: int) -> None:
    """MESSAGE_TOO_LARGE for a body line (``\\n`` excluded) over ``max_line`` bytes."""
    if len(body) > max_line and any(len(line) > max_line for line in body.split(b"\n")):
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"line longer than {max_line} bytes")


def _single_line(body: bytes, max_line: int) -> bytes:
    """The one frame line of a send/checkpoint body (``\\n`` removed, ``\\r`` kept)."""
    lines = [line for line in body.split(b"\n") if line and line != b"\r"]
    if len(lines) != 1:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"expected exactly one frame, got {len(lines)}")
    line = lines[0]
    if len(line) > max_line:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"line longer than {max_line} bytes")
    return line


def _parse_query(query: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            query.decode("ascii"), keep_blank_values=True, strict_parsing=False, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(ErrorCode.BAD_FRAME, "malformed query string") from None
    result: dict[str, str] = {}
    for name, value in pairs:
        if name in result:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"query parameter {name!r} repeated")
        result[name] = value
    return result


def _with_newline(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"


def _join_lines(lines: list[bytes]) -> bytes:
    return b"".join(_with_newline(line) for line in lines)


def _disconnect_reason(reader: asyncio.Task) -> str:
    if not reader.cancelled() and reader.exception() is not None:
        return f"reading the request failed: {reader.exception()!r}"
    return "the stream was reset or the connection was lost"


async def _pump_in(endpoint: StreamEndpoint, receive: Receive, ended: asyncio.Event) -> None:
    """Feed the request body to the endpoint until the client disconnects.

    Never awaits anything but ``receive()``: hypercorn returns HTTP/2 window only as
    DATA enters the app queue, and stops reading the connection when it is full.
    """
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            if ended.is_set():
                continue
            body = message.get("body")
            if body:
                endpoint.feed(body)
            if not message.get("more_body", False):
                ended.set()
                endpoint.feed_eof()
        elif kind == "http.disconnect":
            return


async def _pump_out(endpoint: StreamEndpoint, send: Send) -> None:
    while True:
        chunk = await endpoint.outgoing()
        if chunk is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
