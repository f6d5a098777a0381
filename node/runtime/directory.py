"""Who our peers are: the configured peer URLs, and the server ids learnt at them.

A configured peer's server id comes from its ``GET /caps`` and is remembered across
restarts, so the events we store while it is away join its outbox (§4). The directory
answers the two questions the rest of the node asks: whose outbox does a stored event of
a group join (``relay_peers``), and at which URL is a server (``url_of``).
"""

from __future__ import annotations

from collections.abc import Callable

from node.runtime.config import PeerConfig


class PeerDirectory:
    def __init__(
        self,
        server_id: str,
        peers: list[PeerConfig],
        *,
        remember: Callable[[str, str], None],
        allow: Callable[[str], None],
        advertised_url: Callable[[str], str],
    ) -> None:
        """``remember(url, server_id)`` persists a learnt id; ``allow(server_id)`` admits it
        on a closed node; ``advertised_url(server_id)`` is the URL its pinned key document
        names ("" if none)."""
        self.server_id = server_id
        self.configs: list[PeerConfig] = list(peers)
        self.ids: dict[str, str] = {}  # peer url → server id
        self._remember = remember
        self._allow = allow
        self._advertised_url = advertised_url

    def load(self, known: dict[str, str]) -> None:
        """Ids learnt in a past run, for the peers still configured."""
        configured = {p.url for p in self.configs}
        for url, server_id in known.items():
            if url in configured:
                self.ids[url] = server_id
                self._allow(server_id)

    def configured(self, url: str) -> bool:
        return any(p.url == url for p in self.configs)

    def add(self, peer: PeerConfig) -> None:
        self.configs.append(peer)

    def remove(self, url: str) -> str | None:
        """Forget a configured peer; returns the server id known at its URL, if any."""
        self.configs = [p for p in self.configs if p.url != url]
        return self.ids.pop(url, None)

    def url_of_id(self, server_id: str) -> str | None:
        """The configured URL at which ``server_id`` answered, if any."""
        return next((url for url, sid in self.ids.items() if sid == server_id), None)

    def learned(self, url: str, server_id: str) -> None:
        """A configured peer's server id, from its caps: from now on (and after a restart,
        before it is reachable again) the events we store are queued in its outbox."""
        if self.ids.get(url) != server_id:
            self._remember(url, server_id)
        self.ids[url] = server_id
        self._allow(server_id)

    def relay_peers(self, group_id: str) -> list[str]:
        """Configured peers of the group whose server id we know (the outbox owners)."""
        out = []
        for peer in self.configs:
            sid = self.ids.get(peer.url)
            if sid and (not peer.groups or group_id in peer.groups) and sid != self.server_id:
                out.append(sid)
        return out

    def url_of(self, server_id: str) -> str:
        """Where to reach ``server_id``: a configured URL, else its key document's."""
        for url, sid in self.ids.items():
            if sid == server_id:
                return url
        return self._advertised_url(server_id)
