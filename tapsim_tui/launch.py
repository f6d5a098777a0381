"""Start real nodes and put the dashboard over them: `tapsim` and `tapsim demo`.

Everything a user can get wrong (busy port, unreadable data dir, bad config) is
reported in one line before the screen opens; nothing here prints a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from node.runtime.config import NodeConfig, PeerConfig
from node.view.commands import PublishEvent
from tapsim_tui.e2e import GroupCipher
from tapsim_tui.nodeprocess import NodeProcess
from tapsim_tui.settings import (
    ConfigSource,
    NodeStartError,
    checked_keymap,
    dashboard_settings,
)

DEMO_GROUP = "g!demo"
DEMO_PASSPHRASE = "correct horse battery staple"
DEMO_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank")
CHATTER = (
    "hello from {me}",
    "{me} checking in",
    "lunch at noon?",
    "{me}: build is green",
    "ship it",
    "{me} sees {n} events",
    "ping from {me}",
)


def _fail(message: str) -> int:
    print(f"tapsim: error: {message}", file=sys.stderr)
    return 1


def on_sighup(app) -> None:
    """The terminal went away: leave cleanly instead of dying mid-write."""
    with contextlib.suppress(ValueError, OSError):  # not the main thread, or no SIGHUP
        signal.signal(signal.SIGHUP, lambda *_: app.exit())


class DemoTraffic:
    """A modest stream of test events, encrypted here, in the client layer.

    The nodes only ever receive ciphertext: the passphrase and the group key stay
    in this process's UI side, as they would in a real client.
    """

    def __init__(self, handles: list[NodeProcess], rate: float, cipher: GroupCipher) -> None:
        self.handles = handles
        self.rate = rate
        self.cipher = cipher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo traffic", daemon=True)

    def start(self) -> None:
        if self.rate > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        rng = random.Random()
        counter = itertools.count(1)
        interval = 1.0 / (self.rate * len(self.handles))
        while not self._stop.wait(interval * rng.uniform(0.5, 1.5)):
            handle = rng.choice(self.handles)
            text = rng.choice(CHATTER).format(me=handle.server_id, n=next(counter))
            handle.submit(PublishEvent(DEMO_GROUP, self.cipher.encrypt(text)))


def demo_configs(
    root: Path, count: int, record: Path | None = None, record_max_bytes: int | None = None
) -> list[NodeConfig]:
    extra = {} if record_max_bytes is None else {"record_max_bytes": record_max_bytes}
    return [
        NodeConfig(
            server_id=name,
            data_dir=root / name,
            listen_host="127.0.0.1",
            listen_port=0,
            groups=(DEMO_GROUP,),
            ping_interval=5.0,
            record_dir=record,
            **extra,  # type: ignore[arg-type]
        )
        for name in DEMO_NAMES[:count]
    ]


def free_ports(count: int) -> list[int]:
    """Free loopback ports, so every demo node knows its peers' URLs before any starts."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def launch_demo_nodes(
    root: Path, count: int, record: Path | None = None, record_max_bytes: int | None = None
) -> list[NodeProcess]:
    """Launch the demo nodes at once, each peering with every earlier one (a full mesh).

    Ports are picked beforehand so every node knows its peers' URLs; the processes start
    in parallel and the caller waits for them (:meth:`NodeProcess.wait_ready`).
    """
    configs = demo_configs(root, count, record, record_max_bytes)
    urls = []
    for config, port in zip(configs, free_ports(count), strict=True):
        config.listen_port = port
        config.peers = [PeerConfig(url, (DEMO_GROUP,)) for url in urls]
        urls.append(f"http://127.0.0.1:{port}")
    handles = [NodeProcess(config) for config in configs]
    for handle in handles:
        handle.launch()
    return handles


def run_demo(
    *,
    nodes: int,
    rate: float,
    source: ConfigSource | None = None,
    record: Path | None = None,
    record_max_bytes: int | None = None,
) -> int:
    """The dashboard paints at once; the nodes finish starting behind it.

    Their processes start in parallel with the UI (each imports the node afresh), and the
    screen shows each node as soon as its first snapshot arrives. A node that cannot
    start closes the dashboard with the reason.
    """
    from tapsim_tui.app import TapsimApp, binding_defaults

    keymap = checked_keymap(source, binding_defaults()) if source is not None else {}
    root = Path(tempfile.mkdtemp(prefix="tapsim-demo-"))
    if record is not None:
        record = record.expanduser().absolute()  # the nodes run with their own cwd
    handles = launch_demo_nodes(root, nodes, record, record_max_bytes)
    failure: list[str] = []
    app = TapsimApp(handles, passphrases={DEMO_GROUP: DEMO_PASSPHRASE}, keymap=keymap)
    traffic = DemoTraffic(handles, rate, GroupCipher.from_passphrase(DEMO_GROUP, DEMO_PASSPHRASE))

    def wait_for_nodes() -> None:
        try:
            for handle in handles:
                handle.wait_ready()
        except NodeStartError as exc:
            failure.append(str(exc))
            for _ in range(200):  # the app may still be starting: try for 10 s
                try:
                    app.call_from_thread(app.exit)
                    return
                except RuntimeError:
                    time.sleep(0.05)
            return
        traffic.start()

    try:
        threading.Thread(target=wait_for_nodes, name="demo start", daemon=True).start()
        on_sighup(app)
        app.run()
    finally:
        traffic.stop()
        for h in handles:
            h.stop()
        shutil.rmtree(root, ignore_errors=True)
    return _fail(failure[0]) if failure else 0


def run_single(args: argparse.Namespace) -> int:
    from tapsim_tui.app import TapsimApp, binding_defaults

    settings = dashboard_settings(args, binding_defaults())
    handle = NodeProcess(settings.node)
    try:
        handle.start()
    except NodeStartError as exc:
        return _fail(str(exc))
    try:
        app = TapsimApp([handle], passphrases=settings.passphrases, keymap=settings.keymap)
        on_sighup(app)
        app.run()
    finally:
        handle.stop()
    return 0
