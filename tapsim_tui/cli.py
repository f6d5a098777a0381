"""The `tapsim` command: the dashboard over one node, the demo, and the headless node.

Its flags and the config file are read and checked in ``tapsim_tui.settings``. Textual
is imported only by the subcommands that show a dashboard, so `tapsim node` starts fast
and runs where no terminal UI is wanted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from node.runtime.config import parse_listen
from tapsim_tui.settings import (
    PROG,
    ConfigError,
    build_parser,
    check_demo_options,
    node_config_from_args,
)

MONITOR_COMMANDS = ("attach", "status", "serve")  # tapsim_tui.monitor


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "node":
            config = node_config_from_args(args)  # bad input fails before the slow imports
            from tapsim_tui.headless import run_headless

            metrics = parse_listen(args.metrics) if args.metrics else None
            return run_headless(config, metrics=metrics)
        if args.command in MONITOR_COMMANDS:
            from tapsim_tui.monitor import run_monitor

            return run_monitor(args)
        if args.command == "demo":
            check_demo_options(args)
            from tapsim_tui.launch import run_demo

            return run_demo(nodes=args.nodes, rate=args.rate)
        from tapsim_tui.launch import run_single

        return run_single(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
