"""A real HAProxy in front of workers, for the tests of several workers behind one URL.

It runs the haproxy.cfg that `tapsim workers haproxy` prints (``tapsim_tui.workers``),
so the tested routing is the shipped one, in the foreground (``-db``) on a free loopback
port. HAProxy needs fixed ports, so free ones are found by binding port 0 and closing.
Readiness is a TCP connect polled with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tapsim_tui.workers import haproxy_config, owners_map

WAIT = 60.0


def haproxy_binary() -> str | None:
    """The haproxy executable (Debian puts it in /usr/sbin, not always on PATH)."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_listening(port: int, timeout: float = WAIT, what: str = "") -> None:
    """Until a TCP connect to 127.0.0.1:``port`` succeeds (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class HAProxy:
    """``await start()`` → its URL; ``stop()``. Workers are ``(host, port)`` in order."""

    def __init__(
        self,
        tmp: Path,
        workers: Sequence[tuple[str, int]],
        owners: Mapping[str, int] | None = None,
    ) -> None:
        binary = haproxy_binary()
        assert binary is not None, "haproxy is not installed"
        self.binary = binary
        self.dir = tmp / "haproxy"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.workers = list(workers)
        self.owners = dict(owners or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        map_file = self.dir / "owners.map"
        map_file.write_text(owners_map(self.owners))
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(haproxy_config(("127.0.0.1", self.port), self.workers, str(map_file)))
        return cfg

    async def start(self) -> str:
        cfg = self.write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "haproxy.log").open("ab"),
        )
        deadline = time.monotonic() + WAIT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {self.log()}")
            try:
                await wait_listening(self.port, 0.2, "haproxy")
                return self.url
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    async def restart(self, owners: Mapping[str, int] | None = None) -> None:
        """A new map (a moved group): stop and start on the same port."""
        if owners is not None:
            self.owners = dict(owners)
        self.stop()
        await self.start()

    def log(self) -> str:
        path = self.dir / "haproxy.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
