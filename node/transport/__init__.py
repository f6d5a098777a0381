"""HTTP/2 transport of the federation node (PROTOCOL §1 and §3).

Server side: :class:`FederationApp` (ASGI) run by :func:`start_server` (hypercorn in
the current loop). Client side: :class:`FederationClient` (our own h2 client). The node
plugs in through :class:`FederationHandler` / :class:`StreamEndpoint`.
"""

from node.transport.client import (
    ClientStream,
    FederationClient,
    Response,
    StreamReset,
    TransportError,
)
from node.transport.handler import FederationHandler, StreamEndpoint
from node.transport.media import FRAME_MEDIA_TYPE, JSON_MEDIA_TYPE
from node.transport.routes import PREFIX
from node.transport.server import FederationApp
from node.transport.serving import PortInUse, RunningServer, start_server

__all__ = [
    "FRAME_MEDIA_TYPE",
    "JSON_MEDIA_TYPE",
    "PREFIX",
    "ClientStream",
    "FederationApp",
    "FederationClient",
    "FederationHandler",
    "PortInUse",
    "Response",
    "RunningServer",
    "StreamEndpoint",
    "StreamReset",
    "TransportError",
    "start_server",
]
