"""`tapsim attach`, `tapsim status` and `tapsim serve`: looking at a node that runs already.

Each finds the node by its data dir (``--data-dir``, else where `tapsim` keeps its node
with the same config file) and talks to it only through its control socket; none of them
can stop it. Textual is imported only by the commands that draw.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tapsim_tui.settings import read_config
from tapsim_tui.settings.options import monitored_data_dir


def run_monitor(args: argparse.Namespace) -> int:
    source = read_config(args)
    data = source.data
    data_dir = monitored_data_dir(args, data, source.path)
    if args.command == "status":
        from tapsim_tui.status import run_status

        return run_status(data_dir, as_json=args.json)
    passphrases = data.get("passphrases", {})
    passphrases = passphrases if isinstance(passphrases, dict) else {}
    if args.command == "serve":
        from tapsim_tui.serve import run_serve

        return run_serve(data_dir, args.listen, config=args.config)
    return run_attach(data_dir, passphrases=passphrases)


def run_attach(data_dir: Path, *, passphrases: dict[str, str]) -> int:
    """The dashboard over the node on ``data_dir``; it must be running when we start."""
    from tapsim_tui.attach import AttachedNode, NoNode, connect
    from tapsim_tui.status import EXIT_NO_NODE

    try:
        connect(data_dir, client="tapsim attach").close()  # a clear error before the screen
    except NoNode as exc:
        print(f"tapsim: {exc}", file=sys.stderr)
        return EXIT_NO_NODE
    except OSError as exc:
        print(f"tapsim: error: {data_dir}: the control socket did not answer: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    from tapsim_tui.app import TapsimApp
    from tapsim_tui.launch import on_sighup

    handle = AttachedNode.for_data_dir(data_dir)
    handle.start()
    try:
        handle.wait_attached(5.0)
        app = TapsimApp([handle], passphrases=passphrases)
        on_sighup(app)
        app.run()
    finally:
        handle.close()
    return 0
