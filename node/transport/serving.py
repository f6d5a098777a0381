"""Running hypercorn inside the node's own asyncio loop.

We open the listening socket ourselves so that port 0 yields a known port before
anything is served, a busy port is a clear :class:`PortInUse` instead of a log line
from deep inside hypercorn, and the caller learns its URL at once. hypercorn's defaults
are tuned for browsers; a federation link is one long-lived HTTP/2 connection with
idle streams, so the keep-alive limits are lifted and the stream limit of §1 is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from node.transport import library_patches

log = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS = 100


class PortInUse(OSError):
    """The requested listen address is taken by another socket."""

    def __str__(self) -> str:  # the words only, without OSError's "[Errno 98]"
        return self.strerror or super().__str__()


class FederationConfig(Config):
    """hypercorn Config for federation: TLS 1.3 only, ALPN ``h2`` only, and the marker
    that enables :class:`node.transport.library_patches.FederationH2Protocol`."""

    federation_h2 = True

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        if context is not None:
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context


def make_config(*, certfile: str | None = None, keyfile: str | None = None) -> FederationConfig:
    config = FederationConfig()
    config.keep_alive_timeout = 3600.0  # idle federation connections are normal
    config.keep_alive_max_requests = 2**62  # else GOAWAY after 1000 streams
    config.h2_max_concurrent_streams = MAX_CONCURRENT_STREAMS
    config.graceful_timeout = 2.0
    config.accesslog = None
    config.errorlog = logging.getLogger("node.transport.hypercorn")
    config.include_server_header = False
    config.alpn_protocols = ["h2"]
    if certfile is not None and keyfile is not None:
        config.certfile = certfile
        config.keyfile = keyfile
    return config


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve listen host {host!r}: {exc}") from exc
    family, _, _, _, address = infos[0]
    try:
        sock = socket.create_server(address, family=family, backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"{_format_host(host)}:{port} is already in use") from exc
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class RunningServer:
    host: str
    port: int
    scheme: str
    _task: asyncio.Task = field(repr=False)
    _shutdown: asyncio.Event = field(repr=False)

    @property
    def url(self) -> str:
        """``scheme://host:port`` (the form PROTOCOL §3.2 uses for ``url``)."""
        return f"{self.scheme}://{_format_host(self.host)}:{self.port}"

    @property
    def urls(self) -> list[str]:
        return [self.url]

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def stop(self) -> None:
        """Stop accepting, give open connections hypercorn's ``graceful_timeout``, and
        swallow what ``serve()`` raises when streams were still open (ExceptionGroup)."""
        self._shutdown.set()
        current = asyncio.current_task()
        try:
            await self._task
        except asyncio.CancelledError:
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves
        except (Exception, BaseExceptionGroup) as exc:  # serve() raises groups at shutdown
            log.debug("hypercorn raised at shutdown: %r", exc)


async def start_server(
    app: Any,
    host: str,
    port: int,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    config: FederationConfig | None = None,
) -> RunningServer:
    """Serve ``app`` on ``host:port`` (0 = a free port) in the running loop.

    ``http``: h2c with prior knowledge (hypercorn detects the preface on a plain bind).
    ``https`` when ``certfile`` and ``keyfile`` are given: TLS 1.3 with ALPN ``h2``.
    Raises :class:`PortInUse` when the address is taken.
    """
    library_patches.install()
    if config is None:
        config = make_config(certfile=certfile, keyfile=keyfile)
    if config.ssl_enabled:
        config.create_ssl_context()  # fail here, not inside the serve task, on a bad cert
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn now owns the descriptor
    shutdown = asyncio.Event()
    task = asyncio.create_task(
        serve(app, config, shutdown_trigger=shutdown.wait, mode="asgi"),
        name=f"hypercorn {host}:{bound_port}",
    )
    scheme = "https" if config.ssl_enabled else "http"
    server = RunningServer(host, bound_port, scheme, task, shutdown)
    # serve() raises early (e.g. lifespan failure) before it accepts; surface that now.
    await asyncio.sleep(0)
    if task.done():
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
    return server
