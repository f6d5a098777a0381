"""The trace log's cost end to end (issue 15): events/s from alice to bob over a real
stream, both nodes recording frames, with the trace log on and off, runs interleaved.

Both nodes run in this process on one loop (like tests/nodes.py), so this is a
relative number: the same-run ratio is what to read. Alice signs as she publishes, as a
real author does. Prints a table; appends nothing to results.ndjson.

    uv run python bench/trace_overhead.py      # --events 10000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from nodes import node_config, streams_up, summary, wait_until  # noqa: E402

from node.runtime.node import Node  # noqa: E402

BATCH = 500


async def one_run(events: int, traced: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alice = Node(node_config(root, "alice"), record_frames=True)
        if not traced:
            alice.traces = None  # before start: its sessions get no trace observer
        await alice.start()
        bob = Node(node_config(root, "bob", peers=[alice.url]), record_frames=True)
        if not traced:
            bob.traces = None
        await bob.start()
        try:
            await wait_until(lambda: streams_up(bob, "alice"), 60, "stream up")
            start = time.perf_counter()
            for i in range(0, events, BATCH):
                await alice.publish_many("g!test", [b"e%08d" % k for k in range(i, i + BATCH)])
            await wait_until(lambda: summary(bob)[0] == events, 300, "bob has all")
            return events / (time.perf_counter() - start)
        finally:
            await bob.stop()
            await alice.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):
        for traced in (False, True):
            rates[traced].append(await one_run(args.events, traced))
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"{args.events} events alice → bob, median of {args.runs} interleaved runs")
    print(f"{'trace log':<12}{'events/s':>10}   runs")
    for traced, label in ((False, "off"), (True, "on")):
        runs = " ".join(f"{r:.0f}" for r in rates[traced])
        print(f"{label:<12}{statistics.median(rates[traced]):>10.0f}   {runs}")
    print(f"ratio on/off {on / off:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
