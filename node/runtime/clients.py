"""One HTTP/2 client per peer URL, shared by the links, repairs and key fetches.

A peer is one connection, however many things talk to it: the initiator streams of its
groups, the repair's digests and checkpoints, the key fetches through it as a hop.
"""

from __future__ import annotations

import asyncio
import ssl

from node.transport.client import FederationClient


class ClientPool:
    def __init__(self, ssl_context: ssl.SSLContext | None, *, dead_after: float) -> None:
        """``dead_after``: seconds without reading anything after which a connection is
        dead and never reused (§4.5: 3 × our ping interval)."""
        self._ssl_context = ssl_context
        self._dead_after = dead_after
        self._clients: dict[str, FederationClient] = {}

    def for_url(self, url: str) -> FederationClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = FederationClient(
                url, ssl_context=self._ssl_context, dead_after=self._dead_after
            )
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
