"""The command line, built from the one schema, and the node's options merged into a
checked NodeConfig.

Every subcommand is a :class:`Subcommand` in one registry (``tapsim_tui.cli``), so a
new one is one entry there: its name, its help, whether it takes the node options, the
function that adds its own flags and the one that runs it. The node options (and
``--config``) are accepted before or after the subcommand's name: ``tapsim --peer URL
node`` and ``tapsim node --peer URL`` are the same; a subcommand that takes no node
options refuses them by name instead of dropping them.

A value comes from a flag, else the config file, else the schema's default
(``settings.schema``); each is then checked by the node's own rules
(``node.runtime.config``: listen address, server and group ids, the peer-URL rule), and
an error names the flag or the file and key it came from.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from node.runtime.config import (
    ConfigError,
    NodeConfig,
    PeerConfig,
    check_group_id,
    check_server_id,
    check_store_url,
    parse_listen,
    parse_peer_url,
    parse_worker,
)
from tapsim_tui.settings.schema import (
    BOOL,
    LIST,
    NODE_OPTIONS,
    PING_RANGE,
    Given,
    from_file,
    from_flag,
)

PROG = "tapsim"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_TOP = "top:"  # dest prefix of an option given before the subcommand


@dataclass(frozen=True, slots=True)
class Subcommand:
    """One `tapsim NAME`: its help, its own flags, and what runs it.

    ``node_options``: it takes the node options (flags and config file). If not,
    ``refuse_node_options`` says why, for the error when one is given anyway.
    """

    name: str
    summary: str
    description: str
    run: Callable[[argparse.Namespace], int]
    node_options: bool = True
    refuse_node_options: str = ""
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line errors the rest of the CLI gives (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {self.prog} --help)\n")


class _TopParser(_Parser):
    """The `tapsim` parser: after parsing, the options given before the subcommand are
    merged with those after it (lists add up, a later value wins)."""

    subcommands: dict[str, Subcommand]
    own_options: dict[str, str]  # an option only a subcommand has → that subcommand

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        import sys

        argv = list(sys.argv[1:] if args is None else args)
        for arg in argv:
            if arg in self.subcommands or arg == "--":
                break
            name = arg.split("=", 1)[0]
            if name in self.own_options:
                command = self.own_options[name]
                self.error(f"{name} is an option of '{PROG} {command}': give it after "
                           f"the command ('{PROG} {command} {name} …')")  # fmt: skip
        ns, rest = super().parse_known_args(argv, namespace)
        try:
            return _merge(ns, self.subcommands.get(getattr(ns, "command", None) or "")), rest
        except ConfigError as exc:
            self.error(str(exc))


def _merge(ns: argparse.Namespace, command: Subcommand | None) -> argparse.Namespace:
    for option in (*NODE_OPTIONS, _CONFIG_OPTION):
        before = vars(ns).pop(_TOP + option.key, None)
        after = getattr(ns, option.key, None)
        if before is None:
            value = after
        elif command is not None and not command.node_options and option is not _CONFIG_OPTION:
            flag = option.flag if before is not False else "--no-" + option.flag[2:]
            raise ConfigError(
                f"{flag} does not apply to '{PROG} {command.name}': {command.refuse_node_options}"
            )
        elif option.kind == LIST:
            value = [*before, *(after or [])]
        else:
            value = before if after is None else after
        setattr(ns, option.key, value)
    return ns


@dataclass(frozen=True, slots=True)
class _ConfigOption:
    key: str = "config"
    flag: str = "--config"
    kind: str = "path"


_CONFIG_OPTION = _ConfigOption()


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("tapsim", appauthor=False)) / "config.toml"


def _default_data_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("tapsim", appauthor=False))


def _add_node_options(p: argparse.ArgumentParser, *, prefix: str = "") -> None:
    group = p.add_argument_group(
        "node options", "each also a key of the config file (the name after the flag)"
    )
    for o in NODE_OPTIONS:
        words = f"{o.help} (default: {o.default_words}; config: {o.key})"
        if o.kind == BOOL:
            group.add_argument(
                o.flag, dest=prefix + o.key, action=argparse.BooleanOptionalAction,
                default=None, help=words,
            )  # fmt: skip
        else:
            group.add_argument(
                o.flag, dest=prefix + o.key, metavar=o.metavar, default=None,
                action="append" if o.kind == LIST else "store", help=words,
            )  # fmt: skip


def _add_config_option(p: argparse.ArgumentParser, *, prefix: str = "") -> None:
    p.add_argument(
        "--config",
        dest=prefix + "config",
        metavar="FILE",
        default=None,
        help=f"TOML config file (default: {default_config_path()}; see '{PROG} config')",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tapsim")
    except PackageNotFoundError:
        return "unknown"


def config_keys_help() -> str:
    """The config file's keys, by example, for the help texts."""
    rows = [(f"{o.key} = {o.example}", o.flag) for o in NODE_OPTIONS]
    rows += [
        ("[passphrases]", 'group id = "passphrase" (test events)'),
        ('"g!team" = "…"', ""),
        ("[keymap]", 'binding id = "keys" (ids: the help screen)'),
        ('send_event = "e"', ""),
    ]
    lines = "\n".join(
        f"  {left:<38}{'# ' + right if right else ''}".rstrip() for left, right in rows
    )
    return (
        f"config file: {default_config_path()}\n(or --config FILE); a flag wins over it, "
        f"an unknown key is an error:\n{lines}\n"
        f"'{PROG} config' prints the effective configuration and where each value came from."
    )


def build_parser(subcommands: Sequence[Subcommand]) -> argparse.ArgumentParser:
    parser = _TopParser(
        prog=PROG,
        description=textwrap.fill(
            "A terminal dashboard that runs a TapsIM federation node and shows what the "
            "federation is doing, live. With no command, it opens the dashboard over one "
            "node, its identity and data kept under the user data dir."
        ),
        epilog=f"{config_keys_help()}\n\nexit status: {EXIT_OK} ok, {EXIT_FAILURE} runtime "
        f"failure, {EXIT_USAGE} usage or config error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.subcommands = {c.name: c for c in subcommands}
    parser.own_options = {}
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    _add_config_option(parser, prefix=_TOP)
    _add_node_options(parser, prefix=_TOP)
    sub = parser.add_subparsers(
        dest="command", title="commands", metavar="COMMAND", parser_class=_Parser
    )
    for command in subcommands:
        p = sub.add_parser(
            command.name,
            help=command.summary,
            description=textwrap.fill(command.description),
            epilog=config_keys_help() if command.node_options else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_config_option(p)
        if command.node_options:
            _add_node_options(p)
        if command.add_arguments is not None:
            shared = set(p._option_string_actions)
            command.add_arguments(p)
            for option in set(p._option_string_actions) - shared:
                if option not in parser._option_string_actions:  # e.g. serve's own --listen
                    parser.own_options.setdefault(option, command.name)
    return parser


def _host_server_id() -> str:
    """A default server id from the host name, reduced to the allowed characters."""
    import re
    import socket

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64].strip("-.")
    return name or "tapsim"


def resolve(
    args: argparse.Namespace, data: Mapping[str, object] | None = None, path: Path | None = None
) -> dict[str, Given]:
    """Each node option's value and where it came from: flag, else file, else default.

    ``data`` is the config file's parsed and checked document (``config_file``)."""
    given: dict[str, Given] = {}
    for option in NODE_OPTIONS:
        raw = getattr(args, option.key, None)
        if raw is not None:
            given[option.key] = from_flag(option, raw)
        elif data and path is not None and (found := from_file(option, data, path)):
            given[option.key] = found
        else:
            given[option.key] = Given(option.default, "default")
    if given["server_id"].value is None:
        given["server_id"] = Given(_host_server_id(), "default")
    if given["data_dir"].value is None:
        root = _default_data_root()
        given["data_dir"] = Given(root / str(given["server_id"].value), "default")
    return given


def _checked(given: Given, check: Callable[[str], object]) -> object:
    try:
        return check(given.value)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise given.error(str(exc)) from None


def node_config_from_args(
    args: argparse.Namespace, data: Mapping[str, object] | None = None, path: Path | None = None
) -> NodeConfig:
    """Flags over the config file's values over the defaults, as a validated NodeConfig;
    a ConfigError names the flag, or the file and key, that is wrong."""
    return node_config_from(resolve(args, data, path))


def node_config_from(given: Mapping[str, Given]) -> NodeConfig:
    host, port = _checked(given["listen"], parse_listen)  # type: ignore[misc]
    server_id = _checked(given["server_id"], check_server_id)
    groups = tuple(_checked(Given(g, given["groups"].where), check_group_id)
                   for g in given["groups"].value)  # type: ignore[union-attr]  # fmt: skip
    peers = [
        PeerConfig(_checked(Given(u, given["peers"].where), parse_peer_url), groups)  # type: ignore[arg-type]
        for u in given["peers"].value  # type: ignore[union-attr]
    ]
    ping = given["ping_interval"]
    low, high = PING_RANGE
    if not low <= float(ping.value) <= high:  # type: ignore[arg-type]
        raise ping.error(f"{ping.value:g} s is out of range: give {low:g} to {high:g} seconds")
    record_mb = given["record_max_mb"]
    if not 1 <= float(record_mb.value) <= 1024 * 1024:  # type: ignore[arg-type]
        raise record_mb.error(f"{record_mb.value:g} MB: give 1 MB or more")
    cert, key, ca = given["tls_cert"], given["tls_key"], given["tls_ca"]
    if (cert.value is None) != (key.value is None):
        present, missing = (cert, "tls_key") if key.value is None else (key, "tls_cert")
        if present.where.startswith("--"):
            missing = "--" + missing.replace("_", "-")
        raise present.error(f"{missing} is missing: a certificate and its key go together")
    for item in (cert, key, ca):
        if item.value is not None and not Path(item.value).is_file():  # type: ignore[arg-type]
            raise item.error(f"no such file: {item.value}")
    worker, workers = _checked(given["worker"], parse_worker)  # type: ignore[misc]
    advertise = given["advertise_url"]
    advertise_url = None if advertise.value is None else _checked(advertise, parse_peer_url)
    store = given["store"]
    config = NodeConfig(
        store=None if store.value is None else _checked(store, check_store_url),  # type: ignore[arg-type]
        server_id=server_id,  # type: ignore[arg-type]
        data_dir=Path(given["data_dir"].value),  # type: ignore[arg-type]
        listen_host=host,
        listen_port=port,
        groups=groups,  # type: ignore[arg-type]
        peers=peers,
        tls_cert=cert.value,  # type: ignore[arg-type]
        tls_key=key.value,  # type: ignore[arg-type]
        tls_ca=ca.value,  # type: ignore[arg-type]
        closed=bool(given["closed"].value),
        ping_interval=float(ping.value),  # type: ignore[arg-type]
        advertise_url=advertise_url,  # type: ignore[arg-type]
        worker=worker,
        workers=workers,
        record_dir=given["record"].value,  # type: ignore[arg-type]
        record_max_bytes=int(float(record_mb.value) * 1024 * 1024),  # type: ignore[arg-type]
    )
    try:
        config.client_ssl_context()  # a bad CA file fails here, in one line
    except ConfigError as exc:
        raise ca.error(f"{ca.value}: {str(exc).removeprefix(f'--tls-ca {ca.value}: ')}") from None
    return config


DEMO_NODES = (2, 6)


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    low, high = DEMO_NODES
    p.add_argument(
        "--nodes",
        type=int,
        default=3,
        metavar="N",
        help=f"how many nodes ({low}-{high}; default 3)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="R",
        help="test events per second each node authors (default 1; 0 for none)",
    )
    p.add_argument(
        "--record",
        metavar="DIR",
        default=None,
        help="each node records its wire into DIR (one file per node; tapsim replay DIR/*)",
    )
    p.add_argument(
        "--record-max-mb",
        metavar="MB",
        type=float,
        default=None,
        help="size of a recording's file before the next part opens (default 64)",
    )


def check_demo_options(args: argparse.Namespace) -> None:
    """`tapsim demo`'s own flags."""
    low, high = DEMO_NODES
    if not low <= args.nodes <= high:
        raise ConfigError(f"--nodes {args.nodes}: give {low} to {high} nodes")
    if args.rate < 0:
        raise ConfigError(f"--rate {args.rate:g}: give 0 or more events per second")
    if args.record is not None and not args.record:
        raise ConfigError("--record: give a directory, not an empty string")
    if args.record_max_mb is not None and not args.record_max_mb >= 1:
        raise ConfigError(f"--record-max-mb {args.record_max_mb:g}: give 1 MB or more")


def add_metrics_argument(p: argparse.ArgumentParser) -> None:
    """`tapsim node --metrics HOST:PORT`: Prometheus exposition (node.runtime.metrics)."""
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9448)",
    )


def add_monitor_arguments(
    p: argparse.ArgumentParser, *, json: bool = False, listen: bool = False
) -> None:
    """The flags of `attach`, `status` and `serve`: which running node, and how to show it."""
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="the running node's data dir (default: the one `tapsim` uses with this config)",
    )
    if json:
        p.add_argument("--json", action="store_true", help="one JSON object (documented)")
    if listen:
        p.add_argument(
            "--listen",
            metavar="HOST:PORT",
            default="127.0.0.1:8000",
            help="where the browser connects (default 127.0.0.1:8000: this machine only)",
        )


def monitored_data_dir(args: argparse.Namespace, data: Mapping, config_file: Path) -> Path:
    """The data dir `attach`, `status` and `serve` look at: --data-dir, else where
    `tapsim` with the same config file keeps its node (``data`` is that file's table; a
    relative path in it is relative to the file, as for every command)."""
    if args.data_dir:
        return Path(args.data_dir)
    given = data.get("data_dir")
    if isinstance(given, str):
        path = Path(given).expanduser()
        return path if path.is_absolute() else config_file.parent / path
    server_id = data.get("server_id")
    return _default_data_root() / (server_id if isinstance(server_id, str) else _host_server_id())
