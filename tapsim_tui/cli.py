"""The `tapsim` command: the dashboard over one node, and its subcommands.

``SUBCOMMANDS`` is the one registry of subcommands: each entry names its help, whether it
takes the node options, its own flags and the function that runs it; the parser
(``settings.options.build_parser``) is built from it. Flags and the config file are read
and checked in ``tapsim_tui.settings``. Textual is imported only by the subcommands that
show a dashboard, so `tapsim node` starts fast and runs where no terminal UI is wanted.

Exit status: 0 ok, 1 runtime failure (a node that cannot start), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from node.runtime.config import parse_listen
from tapsim_tui.settings import (
    EXIT_USAGE,
    PROG,
    ConfigError,
    ConfigSource,
    Subcommand,
    add_demo_arguments,
    check_demo_options,
    checked_keymap,
    node_config,
    node_config_from_args,
    read_config,
)
from tapsim_tui.settings import build_parser as _build_parser
from tapsim_tui.settings.options import add_metrics_argument, add_monitor_arguments
from tapsim_tui.workers import add_workers_arguments

__all__ = ["SUBCOMMANDS", "build_parser", "main", "node_config_from_args"]


def _run_dashboard(args: argparse.Namespace) -> int:
    from tapsim_tui.launch import run_single

    return run_single(args)


def _run_demo(args: argparse.Namespace) -> int:
    check_demo_options(args)
    source = read_config(args)  # checked whole; the demo uses its [keymap]
    from tapsim_tui.launch import run_demo

    record = Path(args.record) if args.record else None
    max_mb = args.record_max_mb or 64.0
    return run_demo(
        nodes=args.nodes,
        rate=args.rate,
        source=source,
        record=record,
        record_max_bytes=int(max_mb * 1024 * 1024),
    )


def _check_keymap(source: ConfigSource) -> None:
    """The [keymap] checked against the dashboard's bindings even where no dashboard runs,
    so one file is judged the same by every command (Textual is imported only for it)."""
    if "keymap" in source.data:
        from tapsim_tui.app import binding_defaults

        checked_keymap(source, binding_defaults())


def _run_node(args: argparse.Namespace) -> int:
    source = read_config(args)
    config = node_config(args, source)  # bad input fails before the slow imports
    _check_keymap(source)
    metrics = parse_listen(args.metrics) if args.metrics else None
    from tapsim_tui.headless import run_headless

    return run_headless(config, metrics=metrics)


def _run_workers(args: argparse.Namespace) -> int:
    from tapsim_tui.workers import run_workers

    source = read_config(args)
    return run_workers(args, node_config(args, source))


def _run_replay(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files]
    if args.summary:
        from tapsim_tui.replay import run_summary

        return run_summary(paths)
    source = read_config(args)  # its [passphrases] decrypt the log; its [keymap] applies
    from tapsim_tui.replay import ReplayError, load

    try:
        recording = load(paths)
    except ReplayError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    from tapsim_tui.app import binding_defaults
    from tapsim_tui.launch import DEMO_GROUP, DEMO_PASSPHRASE, on_sighup
    from tapsim_tui.replay_app import ReplayApp

    passphrases = source.data.get("passphrases", {})
    passphrases = dict(passphrases) if isinstance(passphrases, dict) else {}
    passphrases.setdefault(DEMO_GROUP, DEMO_PASSPHRASE)  # a demo's log reads as it did live
    app = ReplayApp(
        recording, passphrases=passphrases, keymap=checked_keymap(source, binding_defaults())
    )
    on_sighup(app)
    app.run()
    return 0


def _add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="recording files (any nodes, parts)")
    p.add_argument(
        "--summary",
        action="store_true",
        help="print frames per type, gaps and bad lines, and exit (1 when a line was bad)",
    )


def _run_monitor(args: argparse.Namespace) -> int:
    from tapsim_tui.monitor import run_monitor

    return run_monitor(args)


_LOOKS_ONLY = "it looks at a node that runs already; give its own options after the command"


def _run_trace(args: argparse.Namespace) -> int:
    from tapsim_tui.trace_cli import run_trace

    return run_trace(args)


def _add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    from tapsim_tui.trace_cli import add_trace_arguments

    add_trace_arguments(parser)


def _run_config(args: argparse.Namespace) -> int:
    from tapsim_tui.app import binding_defaults
    from tapsim_tui.settings import node_config_from, node_settings
    from tapsim_tui.settings.show import effective_config

    source = read_config(args)
    given = node_settings(args, source)
    node_config_from(given)  # the same checks as a start: what is shown would start
    print(effective_config(source, given, checked_keymap(source, binding_defaults())))
    return 0


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "demo",
        summary="2-6 nodes federating on loopback, with the dashboard",
        description="Start --nodes nodes (alice, bob, carol, … in turn) on free loopback "
        "ports with throwaway data dirs, federating in g!demo with a modest stream of test "
        "events, and show the dashboard over them. The config file's [keymap] applies.",
        run=_run_demo,
        node_options=False,
        refuse_node_options="the demo starts its own nodes (use it without node options)",
        add_arguments=add_demo_arguments,
    ),
    Subcommand(
        "node",
        summary="run a node without the dashboard (a service)",
        description="Run a federation node headless, with the same config file and flags "
        "as the dashboard. Prints 'listening on URL' when ready and one line per notable "
        "event; stops cleanly on SIGINT/SIGTERM.",
        run=_run_node,
        add_arguments=add_metrics_argument,
    ),
    Subcommand(
        "config",
        summary="print the effective configuration and where each value came from",
        description="Read the config file and the flags as the dashboard and 'tapsim node' "
        "would, check them, and print the effective configuration as TOML, each value "
        "with its source (flag, config file or default). Passphrases are not shown.",
        run=_run_config,
    ),
    Subcommand(
        "workers",
        summary="several workers behind HAProxy: its config, and which worker owns a group",
        description="One server may run as several 'tapsim node --worker K/N' processes "
        "sharing its identity and its store, behind HAProxy (docs/scaling.md). 'haproxy' "
        "prints the haproxy.cfg for --frontend and each --worker-at; 'map' prints the "
        "group → worker table as HAProxy's map file; 'owners' shows it; 'move GROUP K' "
        "gives a group to worker K; 'resize N' changes the worker count. The store is "
        "the one the node options name.",
        run=_run_workers,
        add_arguments=add_workers_arguments,
    ),
    Subcommand(
        "attach",
        summary="the dashboard over a running node; quitting leaves the node running",
        description="Attach the dashboard to the node running on a data dir, through its "
        "control socket. Several dashboards can attach at once; if the node stops, the "
        "dashboard says so and re-attaches when it returns.",
        run=_run_monitor,
        node_options=False,
        refuse_node_options=_LOOKS_ONLY,
        add_arguments=add_monitor_arguments,
    ),
    Subcommand(
        "replay",
        summary="play wire recordings (--record) back in the dashboard, read-only",
        description="Play the recordings of one or more nodes (tapsim, tapsim node or "
        "tapsim demo with --record) back in the dashboard: space pauses, v switches "
        "1×/10×, . steps to the next snapshot, [ and ] seek, n shows the next node; "
        "commands are refused (read-only). --summary prints frame counts per type, gaps "
        "and bad lines instead. Exit 1 when a file cannot be read (or, with --summary, "
        "when a line is bad).",
        run=_run_replay,
        node_options=False,
        refuse_node_options="it plays recordings, it runs no node",
        add_arguments=_add_replay_arguments,
    ),
    Subcommand(
        "status",
        summary="one-shot status of a running node (exit 3 when none runs)",
        description="Print a running node's status: streams, outboxes, repairs, errors. "
        "Exit 0 when the node answers, 3 when no node runs on the data dir.",
        run=_run_monitor,
        node_options=False,
        refuse_node_options=_LOOKS_ONLY,
        add_arguments=partial(add_monitor_arguments, json=True),
    ),
    Subcommand(
        "serve",
        summary="the attach dashboard in a web browser (loopback by default)",
        description="Serve the attach dashboard to a web browser (textual-serve), for the "
        "node running on a data dir.",
        run=_run_monitor,
        node_options=False,
        refuse_node_options=_LOOKS_ONLY,
        add_arguments=partial(add_monitor_arguments, listen=True),
    ),
    Subcommand(
        "trace",
        summary="one event's way across the nodes of a set of recordings",
        description="Follow one event through wire recordings (tapsim --record DIR): its "
        "author, when it was authored, and every hop it crossed on each recorded node "
        "(sent, received, stored, ACKed, relayed), with times. FILE may be a directory. "
        "Exit 0 when found, 1 when no recording holds the event.",
        run=_run_trace,
        node_options=False,
        refuse_node_options="it reads recording files; it starts and attaches to no node",
        add_arguments=_add_trace_arguments,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(SUBCOMMANDS)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {c.name: c for c in SUBCOMMANDS}
    run = commands[args.command].run if args.command else _run_dashboard
    try:
        return run(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
