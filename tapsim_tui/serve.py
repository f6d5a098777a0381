"""`tapsim serve`: the attach dashboard in a web browser, through textual-serve.

textual-serve runs one `tapsim attach` per browser tab (a process of its own, reading the
node's control socket like any other dashboard) and relays its screen over a WebSocket.
It listens on loopback unless told otherwise: whoever reaches the page can send the node
commands, so exposing it beyond this machine is a deliberate ``--listen``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from node.runtime.config import parse_listen
from tapsim_tui.attach import NoNode, connect
from tapsim_tui.status import EXIT_NO_NODE


def attach_command(data_dir: Path, config: Path | None) -> str:
    """The command textual-serve runs for each browser tab."""
    argv = [sys.executable, "-m", "tapsim_tui.cli", "attach", "--data-dir", str(data_dir)]
    if config is not None:
        argv += ["--config", str(config)]
    return shlex.join(argv)


def run_serve(data_dir: Path, listen: str, *, config: Path | None = None) -> int:
    host, port = parse_listen(listen)
    try:
        connect(data_dir, client="tapsim serve").close()  # a clear error before serving
    except NoNode as exc:
        print(f"tapsim: {exc}", file=sys.stderr)
        return EXIT_NO_NODE
    from textual_serve.server import Server

    data_dir = data_dir.absolute()
    server = Server(attach_command(data_dir, config), host=host, port=port, title="tapsim")
    shown = f"[{host}]" if ":" in host else host
    print(f"serving the dashboard of {data_dir} on http://{shown}:{port}", flush=True)
    server.serve()
    return 0
