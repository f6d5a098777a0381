"""What attached dashboards cost a node: events/s with three attached vs none, same run.

    uv run python bench/attach_overhead.py [--events 5000] [--runs 3]

Two `tapsim node` processes, ``a`` peering with ``b`` in one group. Each run authors
``--events`` events at ``a`` (publish commands over its control socket, in batches of
100) and times until ``b`` has stored them all (read from ``b``'s snapshots): the
federation's events/s end to end. Modes alternate run by run so drift hits both alike:

- **none**: nobody attached (but this bench's own one-shot polls of ``b``);
- **three**: three dashboards' connections (``tapsim_tui.attach.AttachedNode``, 10 Hz,
  delta frame log, as `tapsim attach` runs them) attached to each of ``a`` and ``b``,
  from a separate process, as real dashboards would be.

Prints the medians and their ratio (target ≥ 0.9) and appends them to results.ndjson.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import append_result, median  # noqa: E402

from node.view.commands import PublishEvent  # noqa: E402
from tapsim_tui.attach import connect, fetch_snapshot  # noqa: E402
from tests.procnodes import ProcNode  # noqa: E402

GROUP = "g!bench"
DASHBOARDS = """
import sys, threading
from pathlib import Path
from tapsim_tui.attach import AttachedNode
handles = [AttachedNode.for_data_dir(Path(d), client="bench dashboard")
           for d in sys.argv[1:] for _ in range(3)]
for h in handles:
    h.start()
for h in handles:
    h.wait_attached(60)
print("attached", flush=True)
sys.stdin.read()
"""


def stored(data_dir: Path) -> int:
    _, snap = fetch_snapshot(data_dir)
    return next((g.count for g in snap.groups if g.group_id == GROUP), 0)


async def one_run(a: ProcNode, b: ProcNode, events: int, run: int) -> float:
    base = stored(b.data_dir)
    with connect(a.data_dir, client="bench feeder") as conn:
        conn.sock.settimeout(None)
        # Read the results as they come: a client that never reads its answers is
        # eventually not read from either (the node's backpressure, per connection).
        answers = asyncio.get_running_loop().run_in_executor(
            None, lambda: [conn.next_event() for _ in range(events)]
        )
        start = time.perf_counter()
        for first in range(0, events, 100):
            batch = b"".join(
                conn.session.command(PublishEvent(GROUP, f"r{run} e{i}".encode()))[1]
                for i in range(first, min(events, first + 100))
            )
            await asyncio.to_thread(conn.send, batch)
        await answers
        while stored(b.data_dir) < base + events:
            await asyncio.sleep(0.05)
        return events / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-attach-"))
    a = ProcNode(tmp, "a", groups=(GROUP,))
    b = None
    rates: dict[str, list[float]] = {"none": [], "three": []}
    try:
        await a.start()
        b = ProcNode(tmp, "b", groups=(GROUP,), peers=[a.url])
        await b.start()
        while not any(s.state == "up" for s in fetch_snapshot(b.data_dir)[1].streams):
            await asyncio.sleep(0.1)
        await one_run(a, b, 500, -1)  # warm-up
        for run in range(args.runs * 2):
            mode = ("none", "three")[run % 2]
            dash = None
            if mode == "three":
                dash = subprocess.Popen(
                    [sys.executable, "-c", DASHBOARDS, str(a.data_dir), str(b.data_dir)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert dash.stdout is not None and dash.stdout.readline().strip() == "attached"
            try:
                rate = await one_run(a, b, args.events, run)
            finally:
                if dash is not None:
                    dash.communicate("", timeout=30)
            rates[mode].append(rate)
            print(f"run {run + 1}: {mode:5} {rate:8.0f} events/s", flush=True)
    finally:
        for node in (a, b):
            if node is not None:
                node.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    none, three = median(rates["none"]), median(rates["three"])
    print(f"median events/s: none {none:.0f}, three attached {three:.0f}, "
          f"ratio {three / none:.2f} (target >= 0.9)")  # fmt: skip
    append_result(
        "attach_overhead",
        {"events": args.events, "runs": args.runs},
        {"events_per_s_none": none, "events_per_s_three": three, "ratio": three / none},
    )


if __name__ == "__main__":
    asyncio.run(main())
