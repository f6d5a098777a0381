"""Author keys of relayed events, fetched through the hop (PROTOCOL §3.2, §4.3).

An event relayed by B but authored by A can only be verified with A's key. When no
pin for A exists, the node asks the hop for ``GET /keys/A``, checks the document's own
signature, then confirms it at A's own ``url`` when that answers: the same key there
pins it as confirmed; another key there refuses it; no answer leaves it provisional
(it verifies A's events, which are marked, and never overrides a stronger pin).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import quote

import orjson

from node.protocol.errors import ProtocolError
from node.protocol.identity import KeyDocument, verify_key_document
from node.protocol.keystore import KeyStore
from node.runtime.clients import ClientPool
from node.runtime.directory import PeerDirectory
from node.transport.client import TransportError
from node.transport.routes import PREFIX

FETCH_TIMEOUT = 10.0


class KeyFetcher:
    def __init__(
        self,
        server_id: str,
        keystore: KeyStore,
        directory: PeerDirectory,
        clients: ClientPool,
        log: Callable[[str], None],
    ) -> None:
        self._server_id = server_id
        self._keystore = keystore
        self._directory = directory
        self._clients = clients
        self._log = log
        self._inflight: dict[str, asyncio.Future[bool]] = {}

    def missing(self, author: str, hop: str) -> bool:
        """True when ``author``'s events cannot be verified yet and the hop may know."""
        return author != hop and author != self._server_id and self._keystore.pin(author) is None

    async def fetch(self, author: str, hop: str) -> bool:
        """Fetch and pin ``author``'s key through ``hop``; one fetch per author at a time."""
        future = self._inflight.get(author)
        if future is None:
            future = asyncio.ensure_future(self._fetch(author, hop))
            self._inflight[author] = future
            future.add_done_callback(lambda _f: self._inflight.pop(author, None))
        return await asyncio.shield(future)

    async def _get_json(self, base_url: str, path: str) -> dict | None:
        client = self._clients.for_url(base_url)
        async with asyncio.timeout(FETCH_TIMEOUT):
            response = await client.request("GET", path)
        if response.status != 200:
            return None
        value = orjson.loads(response.body)
        return value if isinstance(value, dict) else None

    async def _fetch(self, author: str, hop: str) -> bool:
        log = self._log
        hop_url = self._directory.url_of(hop)
        if not hop_url:
            log(f"key of {author}: no URL known for hop {hop}")
            return False
        try:
            raw = await self._get_json(hop_url, f"{PREFIX}/keys/{quote(author, safe='')}")
            if raw is None:
                log(f"key of {author}: {hop} does not know it")
                return False
            doc = KeyDocument.from_dict(raw)
            if doc.server_id != author:
                log(f"key of {author}: {hop} answered a document for {doc.server_id}")
                return False
            now = time.time()
            verify_key_document(doc, now)
            confirmed = None
            if doc.url:
                try:
                    confirmed = await self._get_json(doc.url, f"{PREFIX}/keys/current")
                except (TransportError, OSError, TimeoutError, orjson.JSONDecodeError):
                    confirmed = None
            if confirmed is not None:
                if confirmed.get("public_key") != doc.public_key_b64:
                    log(f"key of {author}: its own server shows another key; refused")
                    return False
                self._keystore.pin_confirmed(doc, now)
                log(f"key of {author} pinned ({doc.key_id}, via {hop}, confirmed)")
            else:
                self._keystore.pin_provisional(doc, now, hop)
                log(f"key of {author} pinned provisionally ({doc.key_id}, via {hop})")
            return True
        except (TransportError, OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            log(f"key of {author} via {hop}: {exc}")
        except ProtocolError as exc:
            log(f"key of {author} via {hop} refused: {exc.message}")
        except (ValueError, UnicodeError) as exc:  # e.g. a signed but unusable url
            log(f"key of {author} via {hop}: unusable document ({exc})")
        return False
