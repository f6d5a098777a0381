"""Issue 6, item 4: what the dashboard costs the node it runs.

    uv run python bench/dashboard_overhead.py [--events 30000] [--runs 3] [--idle-seconds 5]

The receiving node runs in this process exactly as `tapsim` runs it: a
tests.support.node_thread.NodeThread (its own loop in a thread). A `tapsim node` child (author
``bench-a``, pre-signed events queued in its outbox, as in stream_throughput.py) streams
``--events`` events to it. Events/s are read from the node's own counter (first to last
stored event) in two modes, alternated run by run so drift hits both alike:

- **without**: NodeThread(record_frames=False) and no UI: the node as `tapsim node` runs it.
- **with**: NodeThread(record_frames=True) (the dashboard's setting) under TapsimApp,
  headless (``App.run_test()``, 150×45), ticking at its normal 10 Hz.

Idle: the same two set-ups with no traffic for ``--idle-seconds``: CPU seconds of this
process per wall second, and of the UI (main) thread alone.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    GROUP,
    NodeProcess,
    append_result,
    median,
    presign,
    seed_sender,
    self_cpu_seconds,
    table,
    thread_cpu_seconds,
)
from support.node_thread import NodeThread

from node.protocol.frames import Event
from node.runtime.config import NodeConfig
from tapsim_tui.app import TapsimApp
from tapsim_tui.nodeprocess import NodeProcess as ChildNode

RUNTIME = "process"  # set by --runtime: how the dashboard runs its node


def start_receiver(tmp: Path, with_ui: bool) -> NodeThread | ChildNode:
    config = NodeConfig(
        server_id="bench-b",
        data_dir=tmp / "b",
        listen_host="127.0.0.1",
        listen_port=0,
        groups=(GROUP,),
    )
    runtime = ChildNode if RUNTIME == "process" else NodeThread
    handle = runtime(config, record_frames=with_ui)
    handle.start()
    return handle


def stored(handle: NodeThread | ChildNode) -> int:
    if isinstance(handle, ChildNode):  # from the snapshots it pushes (10 Hz)
        return handle.snapshot().counters.get("events_stored", 0)
    node = handle._node  # a plain int read across threads; no snapshot is built for it
    return node.counters.events_stored if node is not None else 0


async def measure_rate(handle: NodeThread, target: int, timeout: float = 180) -> float:
    first_at = None
    first = 0
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        n = stored(handle)
        now = time.perf_counter()
        if first_at is None and n > 0:
            first_at, first = now, n
        if n >= target:
            assert first_at is not None
            return (n - first) / (now - first_at)
        await asyncio.sleep(0.02)
    raise RuntimeError(f"only {stored(handle)} of {target} events stored")


async def one_rate(events: list[Event], with_ui: bool) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-"))
    handle = start_receiver(tmp, with_ui)
    sender = None
    try:
        seed_sender(tmp / "a", "bench-a", "bench-b", events)
        if with_ui:
            app = TapsimApp([handle])
            async with app.run_test(size=(150, 45)):
                sender = NodeProcess("bench-a", tmp / "a", peers=[handle.url])
                return await measure_rate(handle, len(events))
        sender = NodeProcess("bench-a", tmp / "a", peers=[handle.url])
        return await measure_rate(handle, len(events))
    finally:
        if sender is not None:
            sender.stop()
        handle.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def one_idle(seconds: float, with_ui: bool) -> tuple[float, float]:
    """(process CPU s per s, UI thread CPU s per s) of an idle node with or without the UI."""
    tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-"))
    handle = start_receiver(tmp, with_ui)
    main_tid = threading.main_thread().native_id
    try:

        async def sample() -> tuple[float, float]:
            await asyncio.sleep(1.0)  # let start-up settle
            c0, m0, t0 = self_cpu_seconds(), thread_cpu_seconds(main_tid), time.perf_counter()
            await asyncio.sleep(seconds)
            c1, m1, t1 = self_cpu_seconds(), thread_cpu_seconds(main_tid), time.perf_counter()
            return (c1 - c0) / (t1 - t0), (m1 - m0) / (t1 - t0)

        if with_ui:
            app = TapsimApp([handle])
            async with app.run_test(size=(150, 45)):
                return await sample()
        return await sample()
    finally:
        handle.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument(
        "--runtime",
        choices=("process", "thread"),
        default="process",
        help="the node in a child process (what tapsim runs) or in a thread of the UI",
    )
    args = parser.parse_args()
    global RUNTIME
    RUNTIME = args.runtime

    events = presign("bench-a", args.events)
    without, with_ui = [], []
    for r in range(args.runs):
        for mode in (False, True) if r % 2 == 0 else (True, False):
            rate = await one_rate(events, mode)
            (with_ui if mode else without).append(rate)
            print(
                f"run {r + 1}: {'with' if mode else 'without'} dashboard {rate:,.0f} ev/s",
                flush=True,
            )
    idle_without = [await one_idle(args.idle_seconds, False) for _ in range(max(1, args.runs // 2))]
    idle_with = [await one_idle(args.idle_seconds, True) for _ in range(max(1, args.runs // 2))]

    res = {
        "events_per_s_without": median(without),
        "events_per_s_with": median(with_ui),
        "idle_cpu_without": median([c for c, _ in idle_without]),
        "idle_cpu_with": median([c for c, _ in idle_with]),
        "idle_ui_thread_cpu": median([m for _, m in idle_with]),
    }
    res["ratio_with_vs_without"] = res["events_per_s_with"] / res["events_per_s_without"]
    res["throughput_cost_pct"] = (1 - res["ratio_with_vs_without"]) * 100
    res["idle_dashboard_cpu_pct"] = (res["idle_cpu_with"] - res["idle_cpu_without"]) * 100
    print()
    table(
        [
            ("node events/s, no dashboard", res["events_per_s_without"], "ev/s"),
            ("node events/s, dashboard running", res["events_per_s_with"], "ev/s"),
            ("ratio with / without", res["ratio_with_vs_without"], ""),
            ("dashboard cost of throughput", res["throughput_cost_pct"], "%"),
            ("idle process CPU, no dashboard", res["idle_cpu_without"] * 100, "% of a core"),
            ("idle process CPU, dashboard", res["idle_cpu_with"] * 100, "% of a core"),
            ("  of which the UI thread", res["idle_ui_thread_cpu"] * 100, "% of a core"),
            ("idle dashboard cost", res["idle_dashboard_cpu_pct"], "% of a core"),
        ],
        (f"measure (median of {args.runs} runs)", "value", "unit"),
    )
    append_result(
        "dashboard_overhead",
        {
            "events": args.events,
            "runs": args.runs,
            "idle_seconds": args.idle_seconds,
            "runtime": args.runtime,
        },
        {"median": res, "runs": {"without": without, "with": with_ui}},
    )


if __name__ == "__main__":
    asyncio.run(main())
