"""Our HTTP/2 client: one connection per peer (re-opened when lost, refused when silent),
many full-duplex streams and one-shot requests on it. The connection itself, its streams
and flow control are in :mod:`node.transport.connection`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h2.errors

from node.transport import library_patches
from node.transport.connection import (
    MAX_RESPONSE_BODY,
    READ_SIZE,
    ClientStream,
    Connection,
    StreamReset,
    TransportError,
)

__all__ = ["ClientStream", "FederationClient", "Response", "StreamReset", "TransportError"]


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


class FederationClient:
    """HTTP/2 client for one peer ``base_url`` (``http://host:port`` = h2c prior
    knowledge, ``https://host:port`` = TLS 1.3 + ALPN h2 with certificate verification).

    ``pinned_cert_sha256`` (hex of the SHA-256 of the peer's DER certificate) replaces
    CA verification by an exact match, for self-signed federation certificates.
    The connection is opened on first use and re-opened after it was lost or GOAWAY,
    or once nothing at all was read on it for ``dead_after`` seconds (3 × the ping
    interval, §4.5): no new stream or request ever goes on a connection that silent.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        pinned_cert_sha256: str | None = None,
        connect_timeout: float = 30.0,
        dead_after: float = 90.0,
    ) -> None:
        library_patches.install()
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = f"{host}:{self.port}"
        self.connect_timeout = connect_timeout
        self.dead_after = dead_after
        self._pin = (
            bytes.fromhex(pinned_cert_sha256.replace(":", "")) if pinned_cert_sha256 else None
        )
        self._ssl = self._make_ssl(ssl_context) if parts.scheme == "https" else None
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def _make_ssl(self, context: ssl.SSLContext | None) -> ssl.SSLContext:
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if self._pin is not None:
                # The pin replaces CA and hostname checks: a self-signed cert is fine
                # exactly when its fingerprint matches.
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["h2"])
        return context

    async def _connect(self) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                    limit=READ_SIZE,
                )
                try:
                    self._check_tls(writer)
                    conn = Connection(self.base_url, reader, writer)
                    await conn.start()
                except BaseException:
                    writer.close()
                    raise
        except TimeoutError as exc:
            raise TransportError(
                self.base_url, f"no HTTP/2 connection within {self.connect_timeout:g} s"
            ) from exc
        except TransportError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(self.base_url, f"cannot connect: {exc}") from exc
        return conn

    def _check_tls(self, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        if ssl_object.selected_alpn_protocol() != "h2":
            raise TransportError(self.base_url, "peer did not negotiate ALPN h2")
        if self._pin is not None:
            der = ssl_object.getpeercert(binary_form=True) or b""
            if not hmac.compare_digest(hashlib.sha256(der).digest(), self._pin):
                raise TransportError(self.base_url, "peer certificate does not match the pin")

    async def connection(self) -> Connection:
        if self._closed:
            raise TransportError(self.base_url, "client is closed")
        conn = self._conn
        if conn is not None and conn.usable and not self._silent(conn, self.dead_after):
            return conn
        async with self._lock:
            conn = self._conn
            if conn is not None and self._silent(conn, self.dead_after):
                await self._discard(conn)
                conn = None
            if conn is None or not conn.usable:
                self._conn = conn = await self._connect()
            return conn

    async def discard_if_silent(self, silent_for: float) -> bool:
        """Drop the current connection when nothing at all was read on it for
        ``silent_for`` seconds; the next request then opens a new one.

        A peer that died without a FIN or RST (power loss, a black-holed path) leaves a
        connection TCP may never declare dead; every stream opened on it would wait out
        its own timeout, forever. Streams ping every interval and a live peer answers at
        once, so a connection silent for 3 × the ping interval is dead, not idle.
        """
        conn = self._conn
        if conn is None or not self._silent(conn, silent_for):
            return False
        await self._discard(conn)
        return True

    @staticmethod
    def _silent(conn: Connection, silent_for: float) -> bool:
        return not conn.closed and time.monotonic() - conn.last_read_at >= silent_for

    async def _discard(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None
        conn.writer.transport.abort()  # a frozen peer never drains a graceful close
        await conn.close()

    async def open_stream(
        self,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        method: str = "POST",
        end_stream: bool = False,
    ) -> ClientStream:
        conn = await self.connection()
        return await conn.open(
            method, path, self.authority, self.scheme, headers, end_stream=end_stream
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        max_body: int = MAX_RESPONSE_BODY,
    ) -> Response:
        stream = await self.open_stream(path, headers, method=method, end_stream=not body)
        # The body goes up while the response is read: a server may answer early (413,
        # 415) and stop reading, leaving our upload waiting for a window that never opens.
        upload = asyncio.ensure_future(_upload(stream, body)) if body else None
        try:
            status, response_headers = await stream.response()
            parts: list[bytes] = []
            size = 0
            while (chunk := await stream.read()) is not None:
                size += len(chunk)
                if size > max_body:
                    raise TransportError(self.base_url, f"response body over {max_body} bytes")
                parts.append(chunk)
            if upload is not None and not upload.done():
                # A complete response before our whole body: stop sending (RFC 9113 §8.1).
                upload.cancel()
                stream.reset(h2.errors.ErrorCodes.NO_ERROR)
        except BaseException:
            stream.reset()
            raise
        finally:
            if upload is not None:
                if not upload.done():
                    upload.cancel()
                # The response decides: an upload stopped by RST_STREAM(NO_ERROR) after
                # a complete response, or cancelled above, is no failure of the request.
                await asyncio.gather(upload, return_exceptions=True)
        return Response(status, response_headers, b"".join(parts))

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> FederationClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "ClientStream",
    "FederationClient",
    "Response",
    "StreamReset",
    "TransportError",
]


async def _upload(stream: ClientStream, body: bytes) -> None:
    await stream.write(body)
    stream.end()
