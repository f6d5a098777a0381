"""Issue 6, item 5: memory and start-up.

    uv run python bench/footprint.py [--runs 3] [--streams 1,10,100]

- **RSS** (VmRSS) of a `tapsim node` child idle, then with 1, 10 and 100 open streams
  (bench peers, each on its own HTTP/2 connection, handshaken, idle), measured after the
  streams are up; ratio against the same node's idle RSS.
- **start-up of `tapsim node`**: spawn to the `listening on` line; baseline: spawn to exit
  of ``python -c pass`` (the interpreter alone) in the same run.
- **start-up of `tapsim demo`** to first paint: spawned on a pseudo-terminal (150×45),
  timed until its screen shows the first node's name; baseline: a one-widget Textual app
  on the same pseudo-terminal, timed until its text shows. Both are then quit with `q`.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, BenchPeer, NodeProcess, append_result, median, table

TRIVIAL_APP = """
from textual.app import App
from textual.widgets import Static
class A(App):
    def compose(self):
        yield Static("trivial-app-ready")
A().run()
"""


async def rss_with_streams(counts: list[int]) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-"))
    node = NodeProcess("bench-b", tmp / "b")
    peers: list[BenchPeer] = []
    out: dict[str, float] = {}
    try:
        await asyncio.sleep(0.5)
        out["rss_idle_kb"] = node.rss_kb()
        for target in counts:
            while len(peers) < target:
                batch = [
                    BenchPeer(f"bench-p{len(peers) + i}", node.url)
                    for i in range(min(20, target - len(peers)))
                ]
                await asyncio.gather(*(p.open("bench-b") for p in batch))
                peers.extend(batch)
            await asyncio.sleep(0.5)
            out[f"rss_{target}_streams_kb"] = node.rss_kb()
    finally:
        for p in peers:
            await p.close()
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def node_startup() -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-"))
    try:
        node = NodeProcess("bench-s", tmp / "s")
        ready = node.ready_after
        node.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return ready, time.perf_counter() - t


def time_to_text(cmd: list[str], needle: bytes, timeout: float = 60) -> float:
    """Spawn ``cmd`` on a 150×45 pty; seconds until ``needle`` appears in its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 150, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="150", LINES="45")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, cwd=str(ROOT), env=env, start_new_session=True
    )
    os.close(slave)
    seen = b""
    found = float("nan")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen = (seen + chunk)[-200000:]
            if needle in seen:
                found = time.perf_counter() - start
                break
        os.write(master, b"q")
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGHUP)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        os.close(master)
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", default="1,10,100")
    args = parser.parse_args()
    counts = [int(c) for c in args.streams.split(",") if c]

    rss_runs = []
    for r in range(args.runs):
        rss_runs.append(await rss_with_streams(counts))
        print(
            f"run {r + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in rss_runs[-1].items()),
            flush=True,
        )
    starts = [node_startup() for _ in range(args.runs + 2)]
    demo = [
        time_to_text([sys.executable, "-m", "tapsim_tui.cli", "demo", "--rate", "0"], b"alice")
        for _ in range(args.runs)
    ]
    trivial = [
        time_to_text([sys.executable, "-c", TRIVIAL_APP], b"trivial-app-ready")
        for _ in range(args.runs)
    ]

    res: dict[str, float] = {k: median([r[k] for r in rss_runs]) for k in rss_runs[0]}
    for c in counts:
        res[f"rss_{c}_streams_ratio"] = res[f"rss_{c}_streams_kb"] / res["rss_idle_kb"]
    if counts:
        top = counts[-1]
        res["kb_per_stream"] = (res[f"rss_{top}_streams_kb"] - res["rss_idle_kb"]) / top
    res["node_startup_s"] = median([s for s, _ in starts])
    res["python_startup_s"] = median([p for _, p in starts])
    res["node_startup_ratio"] = res["node_startup_s"] / res["python_startup_s"]
    res["demo_first_paint_s"] = median(demo)
    res["trivial_textual_first_paint_s"] = median(trivial)
    res["demo_first_paint_ratio"] = res["demo_first_paint_s"] / res["trivial_textual_first_paint_s"]

    print()
    rows = [("RSS idle node", res["rss_idle_kb"] / 1024, "MiB", "")]
    for c in counts:
        rows.append(
            (
                f"RSS with {c} streams",
                res[f"rss_{c}_streams_kb"] / 1024,
                "MiB",
                f"× {res[f'rss_{c}_streams_ratio']:.2f}",
            )
        )
    rows += [
        ("per stream (at the largest count)", res.get("kb_per_stream", float("nan")), "KiB", ""),
        (
            "tapsim node start-up",
            res["node_startup_s"] * 1e3,
            "ms",
            f"× {res['node_startup_ratio']:.1f} of python -c pass",
        ),
        ("python -c pass", res["python_startup_s"] * 1e3, "ms", ""),
        (
            "tapsim demo to first paint",
            res["demo_first_paint_s"] * 1e3,
            "ms",
            f"× {res['demo_first_paint_ratio']:.1f} of trivial app",
        ),
        ("trivial Textual app first paint", res["trivial_textual_first_paint_s"] * 1e3, "ms", ""),
    ]
    table(rows, (f"measure (median of {args.runs} runs)", "value", "unit", "ratio"))
    append_result(
        "footprint", {"runs": args.runs, "streams": counts}, {"median": res, "rss_runs": rss_runs}
    )


if __name__ == "__main__":
    asyncio.run(main())
