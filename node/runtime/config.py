"""What a node is told at start: who it is, where it listens, whom it federates with.

Parsing and validation of user input live here (not in the CLI) so the headless
node, the dashboard and the demo all reject bad input with the same words.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from node.protocol.ids import is_group_id, is_server_id
from node.storage.location import is_postgres_url

DEFAULT_PORT = 8448
DEFAULT_RECORD_MAX_BYTES = 64 * 1024 * 1024  # a wire recording's file size, then the next part

_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # a name or IPv4
_PORT_RE = re.compile(r"[0-9]{1,5}")
STORE_FILE = "events.sqlite3"  # the default store, in the data dir


class ConfigError(ValueError):
    """Bad user input, with a message fit to print as one line."""


@dataclass(frozen=True, slots=True)
class PeerConfig:
    url: str  # scheme://host:port, no path
    groups: tuple[str, ...]


@dataclass(slots=True)
class NodeConfig:
    server_id: str
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    groups: tuple[str, ...] = ()  # served and federated; empty = serve every group ("*")
    peers: list[PeerConfig] = field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # PEM certificates trusted, besides the system's CAs, when we connect to https://
    # peers: how a federation of self-signed certificates is verified, not skipped.
    tls_ca: Path | None = None
    closed: bool = False
    ping_interval: float = 30.0
    initial_credit_events: int = 256
    initial_credit_bytes: int = 1 << 20
    max_message_size: int = 65536
    advertise_url: str | None = None  # the `url` of our key document; derived when None
    # One worker of several serving this identity from one database (docs/scaling.md):
    # this one initiates streams only for the groups it owns (node.storage.ownership).
    worker: int = 0
    workers: int = 1
    # Where the events live: a postgresql:// URL, else the SQLite file in the data dir.
    store: str | None = None
    record_dir: Path | None = None  # record the wire from the start (node.runtime.recorder)
    record_max_bytes: int = DEFAULT_RECORD_MAX_BYTES

    @property
    def store_location(self) -> str:
        """What :func:`node.storage.backends.open_store` opens for this node."""
        return self.store or str(Path(self.data_dir) / STORE_FILE)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def supported_groups(self) -> list[str]:
        return list(self.groups) if self.groups else ["*"]

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every outgoing connection (peers, repair, key fetches);
        None means the client's default (system CAs only)."""
        return _client_ssl_context(str(self.tls_ca)) if self.tls_ca else None


@functools.lru_cache(maxsize=8)
def _client_ssl_context(cafile: str) -> ssl.SSLContext:
    # One context per CA file, shared by all clients: loading the system store is slow.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        context.load_verify_locations(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-ca {cafile}: not a PEM certificate file ({exc})") from None
    return context


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT`, `:PORT` or `PORT`; port 0 picks a free port."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"bad listen address {value!r}: use [IPv6]:PORT")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    else:
        host, port = "", text
    host = host or "127.0.0.1"
    try:
        port_no = int(port)
    except ValueError:
        raise ConfigError(f"bad listen address {value!r}: the port must be a number") from None
    if not 0 <= port_no <= 65535:
        raise ConfigError(f"bad listen address {value!r}: port out of range")
    return host, port_no


def parse_peer_url(value: str) -> str:
    """The one rule for a peer's URL, wherever it comes from (--peer, the config file's
    ``peers``, the dashboard's Add-peer dialog): ``http`` or ``https``, a host, an optional
    port (default 8448), nothing else: no path, query, fragment, user name or password.

    Returns it normalised to ``scheme://host:port`` (scheme and host in lower case, the
    port explicit), which is also a valid URL on the wire (``frames.is_valid_url``).
    A single trailing ``/`` (the empty path) is allowed and dropped.
    """
    text = value.strip()

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"bad peer URL {value!r}: {reason}")

    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise bad("it must start with http:// or https://")
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#"):
        raise bad("give only scheme://host[:port], no path, query or fragment")
    if "@" in rest:
        raise bad("give only scheme://host[:port], no user name or password")
    port_text: str | None = None
    if rest.startswith("["):
        host, sep, after = rest[1:].partition("]")
        if not sep or (after and not after.startswith(":")):
            raise bad("an IPv6 address goes in brackets: http://[::1]:8448")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
        if "%" in host:
            raise bad("no IPv6 zone (%…) in a peer URL")
        host = f"[{host.lower()}]"
        if after:
            port_text = after[1:]
    else:
        host, sep, after = rest.partition(":")
        if sep:
            port_text = after
        if ":" in after:
            raise bad("an IPv6 address goes in brackets: http://[::1]:8448")
        if not host:
            raise bad("no host")
        if not _HOST_RE.fullmatch(host):
            raise bad(f"{host!r} is not a host name: letters, digits, '.', '-' and '_'")
        host = host.lower()
    port = DEFAULT_PORT
    if port_text is not None:
        if not _PORT_RE.fullmatch(port_text):
            raise bad("the port must be a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise bad("port out of range (1–65535)")
    return f"{scheme}://{host}:{port}"


MAX_WORKERS = 64


def parse_worker(value: str) -> tuple[int, int]:
    """``K/N``: this process is worker K (from 0) of N sharing one identity and database."""
    index, sep, count = value.strip().partition("/")
    if not sep or not index.isdigit() or not count.isdigit():
        raise ConfigError(f"bad worker {value!r}: give K/N, e.g. 0/2 (worker 0 of 2)")
    k, n = int(index), int(count)
    if not 1 <= n <= MAX_WORKERS:
        raise ConfigError(f"bad worker {value!r}: give 1 to {MAX_WORKERS} workers")
    if not k < n:
        raise ConfigError(f"bad worker {value!r}: workers are numbered 0 to {n - 1}")
    return k, n


def check_store_url(value: str) -> str:
    """``--store``: a PostgreSQL URL (the SQLite store needs none: it is in the data dir).
    Whether the server answers, and accepts the rest of the URL, is learnt at start."""
    text = value.strip()
    if not is_postgres_url(text):
        raise ConfigError(
            f"bad store {value!r}: give a postgresql://USER@HOST/DATABASE URL "
            "(leave the store out to keep events in the data dir's SQLite file)"
        )
    return text


def check_server_id(value: str) -> str:
    if not is_server_id(value):
        raise ConfigError(f"bad server id {value!r}: 1–64 characters from A-Z a-z 0-9 . _ -")
    return value


def check_group_id(value: str) -> str:
    if not is_group_id(value):
        raise ConfigError(
            f"bad group id {value!r}: 'g!' followed by 1–128 characters from A-Z a-z 0-9 . _ -"
        )
    return value


def lan_addresses() -> list[str]:
    """IPv4 addresses of this host other than loopback, found without sending packets."""
    found: list[str] = []
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        addr = info[4][0]
        if not ipaddress.ip_address(addr).is_loopback and addr not in found:
            found.append(addr)
    return found


def listen_urls(scheme: str, host: str, port: int) -> list[str]:
    """The URLs peers can use to reach a listener (every LAN address for 0.0.0.0)."""
    if host in ("0.0.0.0", "::", ""):
        hosts = lan_addresses() or ["127.0.0.1"]
    else:
        hosts = [host]
    return [f"{scheme}://[{h}]:{port}" if ":" in h else f"{scheme}://{h}:{port}" for h in hosts]
