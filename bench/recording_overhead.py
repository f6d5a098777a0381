"""Issue 15: what recording the wire (`--record DIR`) costs a stream's throughput.

    uv run python bench/recording_overhead.py [--events 30000] [--runs 5]

As stream_throughput.py's node → node measure: `tapsim node` A (author ``bench-a``) holds
``--events`` pre-signed events in its outbox for `tapsim node` B and replays them over one
stream; B verifies, stores durably and ACKs. Events/s are counted at B (its digest count,
first to last stored event). Two modes, alternated run by run so drift on a shared machine
hits both alike:

- **without**: both nodes as `tapsim node` runs them;
- **with**: both nodes started with ``--record DIR``, so each writes every frame it reads
  and writes (and a snapshot a second) — what `tapsim demo --record` does to every node.

Prints the medians, the ratio with/without and the cost in percent (target ≤ 5 %), the
CPU seconds both processes spent per event in each mode (less sensitive to a busy
machine than the rate), checks
that the recordings hold every EVENT, and appends a JSON line to bench/results.ndjson.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    NodeProcess,
    append_result,
    median,
    presign,
    seed_sender,
    table,
    wait_count,
)

from node.protocol.frames import Event
from node.transport import FederationClient


def recorded_events(directory: Path) -> tuple[int, int]:
    """(EVENT frames B read, bytes of every file) in a recording directory."""
    events = 0
    size = 0
    for path in directory.glob("*.ndjson"):
        size += path.stat().st_size
        if path.name.startswith("bench-b-"):
            with path.open("rb") as f:
                events += sum(1 for line in f if b'"dir":"in"' in line and b"EVENT" in line)
    return events, size


async def one_run(tmp: Path, events: list[Event], record: bool) -> dict:
    rec = tmp / "rec"
    extra = ["--record", str(rec)] if record else []
    b = NodeProcess("bench-b", tmp / "b", extra=extra)
    a = None
    client = FederationClient(b.url)
    try:
        seed_sender(tmp / "a", "bench-a", "bench-b", events)
        a = NodeProcess("bench-a", tmp / "a", peers=[b.url], extra=extra)
        cpu0 = a.cpu_seconds() + b.cpu_seconds()
        first_at, last_at, first_count = await wait_count(client, len(events), timeout=180)
        if last_at is None or first_at is None or last_at <= first_at:
            raise RuntimeError(f"B got {first_count} of {len(events)} events: {b.lines[-5:]}")
        cpu = a.cpu_seconds() + b.cpu_seconds() - cpu0
        out = {
            "rate": (len(events) - first_count) / (last_at - first_at),
            "cpu_us_per_event": cpu / len(events) * 1e6,
        }
    finally:
        await client.close()
        if a is not None:
            a.stop()
        b.stop()
    if record:
        out["recorded_events"], out["recorded_bytes"] = recorded_events(rec)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--runs", type=int, default=5, help="runs of each mode")
    args = parser.parse_args()
    if args.events < 1000 or args.runs < 1:
        parser.error("--events ≥ 1000 and --runs ≥ 1")
    events = presign("bench-a", args.events)
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for r in range(args.runs):
        for mode in ("without", "with") if r % 2 == 0 else ("with", "without"):
            tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-"))
            try:
                result = await one_run(tmp, events, record=mode == "with")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            runs[mode].append(result)
            more = ""
            if mode == "with":
                more = (f", recorded {result['recorded_events']:,} EVENTs in, "
                        f"{result['recorded_bytes'] / 1e6:.1f} MB")  # fmt: skip
            print(
                f"run {r + 1} {mode:>7}: {result['rate']:,.0f} ev/s, "
                f"A+B CPU {result['cpu_us_per_event']:.0f} µs/event{more}",
                flush=True,
            )
    for result in runs["with"]:
        if result["recorded_events"] < args.events:
            raise RuntimeError(f"a recording misses EVENTs: {result['recorded_events']}")
    without = median([r["rate"] for r in runs["without"]])
    with_ = median([r["rate"] for r in runs["with"]])
    ratio = with_ / without
    # Each run's pair was measured back to back: their ratio is the least touched by drift.
    pairs = zip(runs["with"], runs["without"], strict=True)
    paired = median([w["rate"] / o["rate"] for w, o in pairs])
    cpu_without = median([r["cpu_us_per_event"] for r in runs["without"]])
    cpu_with = median([r["cpu_us_per_event"] for r in runs["with"]])
    med = {
        "without": without,
        "with": with_,
        "ratio": ratio,
        "cost_percent": (1 - ratio) * 100,
        "paired_ratio": paired,
        "cpu_us_per_event_without": cpu_without,
        "cpu_us_per_event_with": cpu_with,
    }
    print()
    table(
        [
            ("node → node, not recording", without, "events/s"),
            ("node → node, both nodes recording", with_, "events/s"),
            ("ratio with / without", ratio, ""),
            ("ratio with / without, run by run (median)", paired, ""),
            ("cost of recording", med["cost_percent"], "% (target ≤ 5)"),
            ("CPU of A+B per event, not recording", cpu_without, "µs"),
            ("CPU of A+B per event, recording", cpu_with, "µs"),
        ],
        (f"measure (median of {args.runs} runs each)", "value", "unit"),
    )
    append_result(
        "recording_overhead", {"events": args.events, "runs": args.runs}, {"median": med, **runs}
    )


if __name__ == "__main__":
    asyncio.run(main())
