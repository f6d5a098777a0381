"""`tapsim serve` in a real headless Chromium: the page gets a live dashboard that is a
`tapsim attach` on the node's control socket, and closing the browser leaves the node be."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.browser import Browser, find_chromium

from tests.nodes import wait_until
from tests.procnodes import ROOT, ProcNode


def _attach_processes(data_dir: Path) -> list[int]:
    """Pids of `tapsim attach` processes looking at ``data_dir``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"attach" in argv and os.fsencode(str(data_dir)) in argv:
            found.append(int(pid))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_without_a_node_says_so(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tapsim_tui.cli", "serve", "--data-dir", str(tmp_path / "x")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 3 and "no node is running" in out.stderr


async def test_the_browser_shows_the_attach_dashboard(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium here: install Debian's `chromium` (.ci/run does) to run this")
    node = ProcNode(tmp_path, "alice")
    serve = None
    try:
        await node.start()
        port = _free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "tapsim_tui.cli", "serve", "--data-dir", str(node.data_dir),
             "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert serve.stdout is not None
        assert "serving the dashboard of" in serve.stdout.readline()
        url = f"http://127.0.0.1:{port}/"

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await wait_until(listening, 60, "tapsim serve to listen")
        async with Browser(chromium) as browser:
            await browser.goto(url)

            async def terminal_live() -> bool:
                classes = await browser.evaluate("document.body.className") or ""
                return "-first-byte" in classes

            deadline = 90
            for _ in range(deadline * 10):
                if await terminal_live():
                    break
                await asyncio.sleep(0.1)
            assert await terminal_live(), "the page never got the dashboard's first bytes"
            await wait_until(lambda: _attach_processes(node.data_dir), 60, "an attach process")
            shot = os.environ.get("TAPSIM_SERVE_SCREENSHOT")
            if shot:  # for the README's picture of the browser view
                await asyncio.sleep(1.0)  # let the first full paint land: a picture, no check
                await browser.screenshot(Path(shot))
        await wait_until(lambda: not _attach_processes(node.data_dir), 60, "the attach to end")
        assert node.running
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(20)
        node.cleanup()
