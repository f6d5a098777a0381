"""The command line and the config file's node options, merged into a checked NodeConfig.

Flags win over the config file; the file's values are type-checked first so a wrong
type is one line, not a traceback. Each value is then checked by the node's own rules
(``node.runtime.config``: listen address, server and group ids, the peer-URL rule).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from node.runtime.config import (
    ConfigError,
    NodeConfig,
    PeerConfig,
    check_group_id,
    check_server_id,
    parse_listen,
    parse_peer_url,
)

PROG = "tapsim"


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("tapsim", appauthor=False))


def _add_node_options(p: argparse.ArgumentParser, *, headless: bool) -> None:
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=None,
        help="address to serve the federation endpoints on (default 127.0.0.1:8448; "
        "port 0 picks a free port)",
    )
    p.add_argument("--server-id", metavar="ID", help="this server's id (default: from config)")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="where the key and the event store live (default: the user data dir)",
    )
    p.add_argument(
        "--peer",
        metavar="URL",
        action="append",
        default=[],
        help="a peer to federate with, e.g. http://10.0.0.5:8448 (repeatable)",
    )
    p.add_argument(
        "--group",
        metavar="G",
        action="append",
        default=[],
        help="a group to serve and federate, e.g. g!team (repeatable; default: serve any)",
    )
    p.add_argument("--tls-cert", metavar="FILE", type=Path, help="TLS certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", type=Path, help="TLS private key (PEM)")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        type=Path,
        help="extra CA certificates (PEM) to trust for https:// peers, besides the system's "
        "(e.g. a peer's self-signed certificate)",
    )
    p.add_argument(
        "--closed",
        action="store_true",
        help="accept only servers in the peer list (closed federation)",
    )
    p.add_argument(
        "--ping-interval",
        metavar="SECONDS",
        type=float,
        default=None,
        help="keepalive PING interval (1–300 s, default 30)",
    )
    if not headless:
        p.add_argument(
            "--config",
            metavar="FILE",
            type=Path,
            help="TOML config file (default: config.toml in the user config dir)",
        )


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line errors the rest of the CLI gives (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="A terminal dashboard that runs a TapsIM federation node and shows "
        "what the federation is doing, live.",
    )
    _add_node_options(parser, headless=False)
    sub = parser.add_subparsers(dest="command", metavar="{demo,node,attach,status,serve}")
    demo = sub.add_parser(
        "demo",
        help="three in-process nodes federating on loopback, with the dashboard",
        description="Start alice, bob and carol on free loopback ports with throwaway data, "
        "federating in g!demo with a modest stream of test events, and show the dashboard.",
    )
    demo.add_argument("--nodes", type=int, default=3, help="how many nodes (2–6, default 3)")
    demo.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="test events per second each node authors (default 1; 0 for none)",
    )
    node = sub.add_parser(
        "node",
        help="run a node without the dashboard",
        description="Run a federation node headless. Prints 'listening on URL' when ready "
        "and one line per notable event; stops on SIGINT/SIGTERM.",
    )
    _add_node_options(node, headless=True)
    _add_monitor_options(node, sub)
    return parser


def _add_monitor_options(node: argparse.ArgumentParser, sub) -> None:
    """`tapsim node --metrics`, and the commands that look at a running node."""
    node.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9448)",
    )
    data_dir_help = "the running node's data dir (default: the user data dir, as `tapsim`)"
    attach = sub.add_parser(
        "attach",
        help="the dashboard over a running node; quitting leaves the node running",
        description="Attach the dashboard to the node running on a data dir, through its "
        "control socket. Several dashboards can attach at once; if the node stops, the "
        "dashboard says so and re-attaches when it returns.",
    )
    status = sub.add_parser(
        "status",
        help="one-shot status of a running node (exit 3 when none runs)",
        description="Print a running node's status: streams, outboxes, repairs, errors. "
        "Exit 0 when the node answers, 3 when no node runs on the data dir.",
    )
    status.add_argument("--json", action="store_true", help="one JSON object (documented)")
    serve = sub.add_parser(
        "serve",
        help="the attach dashboard in a web browser",
        description="Serve the attach dashboard to a web browser (textual-serve).",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:8000",
        help="where the browser connects (default 127.0.0.1:8000: this machine only)",
    )
    for p in (attach, status, serve):
        p.add_argument("--data-dir", metavar="DIR", type=Path, help=data_dir_help)
        p.add_argument(
            "--config",
            metavar="FILE",
            type=Path,
            help="TOML config file, for the default data dir and passphrases",
        )


def monitored_data_dir(args: argparse.Namespace, defaults: dict) -> Path:
    """The data dir `attach`, `status` and `serve` look at: --data-dir, else where
    `tapsim` with the same config file keeps its node."""
    if args.data_dir:
        return Path(args.data_dir)
    if isinstance(defaults.get("data_dir"), str):
        return Path(defaults["data_dir"])
    server_id = defaults.get("server_id")
    return _default_data_dir() / (server_id if isinstance(server_id, str) else _host_server_id())


def _host_server_id() -> str:
    """A default server id from the host name, reduced to the allowed characters."""
    import re
    import socket

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64].strip("-.")
    return name or "tapsim"


# Config-file keys and the type each must have (the TOML types, in words for errors).
_CONFIG_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "listen": ((str,), 'a string like "0.0.0.0:8448"'),
    "server_id": ((str,), "a string"),
    "data_dir": ((str,), "a path string"),
    "groups": ((list,), "a list of group ids"),
    "peers": ((list,), "a list of URLs"),
    "tls_cert": ((str,), "a path string"),
    "tls_key": ((str,), "a path string"),
    "tls_ca": ((str,), "a path string"),
    "closed": ((bool,), "true or false"),
    "ping_interval": ((int, float), "a number of seconds"),
}


def _checked_defaults(defaults: dict) -> dict:
    """The config file's node options, each of the type it must be, else a ConfigError."""
    for key, (types, words) in _CONFIG_TYPES.items():
        if key not in defaults:
            continue
        value = defaults[key]
        if not isinstance(value, types) or (bool in types) != isinstance(value, bool):
            raise ConfigError(f"config: {key} must be {words}, not {value!r}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config: {key} must be {words}")
    return defaults


def node_config_from_args(args: argparse.Namespace, defaults: dict | None = None) -> NodeConfig:
    """Turn parsed options (and config-file defaults) into a validated NodeConfig."""
    defaults = _checked_defaults(defaults or {})
    host, port = parse_listen(args.listen or defaults.get("listen", "127.0.0.1:8448"))
    server_id = check_server_id(args.server_id or defaults.get("server_id") or _host_server_id())
    groups = tuple(check_group_id(g) for g in (args.group or defaults.get("groups", [])))
    peer_urls = args.peer or defaults.get("peers", [])
    peers = [PeerConfig(parse_peer_url(u), groups) for u in peer_urls]
    ping = args.ping_interval if args.ping_interval is not None else defaults.get("ping_interval")
    ping = 30.0 if ping is None else float(ping)
    if not 1.0 <= ping <= 300.0:
        raise ConfigError("--ping-interval must be between 1 and 300 seconds")
    cert = args.tls_cert or defaults.get("tls_cert")
    key = args.tls_key or defaults.get("tls_key")
    if bool(cert) != bool(key):
        raise ConfigError("--tls-cert and --tls-key go together")
    ca = args.tls_ca or defaults.get("tls_ca")
    for label, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{label}: no such file: {path}")
    data_dir = args.data_dir or (Path(defaults["data_dir"]) if "data_dir" in defaults else None)
    config = NodeConfig(
        server_id=server_id,
        data_dir=Path(data_dir) if data_dir else _default_data_dir() / server_id,
        listen_host=host,
        listen_port=port,
        groups=groups,
        peers=peers,
        tls_cert=Path(cert) if cert else None,
        tls_key=Path(key) if key else None,
        tls_ca=Path(ca) if ca else None,
        closed=bool(args.closed or defaults.get("closed", False)),
        ping_interval=ping,
    )
    config.client_ssl_context()  # a bad --tls-ca fails here, in one line
    return config


DEMO_NODES = (2, 6)


def check_demo_options(args: argparse.Namespace) -> None:
    """`tapsim demo`'s own flags."""
    low, high = DEMO_NODES
    if not low <= args.nodes <= high:
        raise ConfigError(f"--nodes must be between {low} and {high}")
    if args.rate < 0:
        raise ConfigError("--rate must be 0 or more")
