"""Cost of one anti-entropy repair between two real nodes (issue 4 closing note, issue 6).

    uv run python bench/repair_cost.py [--n 100000] [--d 1 10 100] [--kinds random]

Two in-process nodes (each with its own store thread, real HTTP/2 over loopback) share
``n`` events and each holds ``d`` events the other lacks. The events are signed before
the clock starts and written straight into each store; then one repair runs and we read
its statistics: requests (HTTP exchanges), sequential rounds (the longest chain of
dependent exchanges: what latency costs), bytes of request and response bodies, wall
time. The baseline, measured in the same run, is a full transfer: the bytes of the n
EVENT lines a peer would otherwise have to ship, so every cost is also a ratio.

Issue 6 target: d = 10 in n = 100k within 8 rounds and 64 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import tempfile
import time
from pathlib import Path

from common import CIPHERTEXT_BYTES, append_result, identity_for, table

from node.protocol.frames import Frame, encode_frame
from node.protocol.ids import CROCKFORD
from node.runtime.config import NodeConfig
from node.runtime.node import Node
from node.storage.store import StoredEvent
from tests.diffsets import split_sides

G = "g!bench"
AUTHORS = ("bench-author-a", "bench-author-b", "bench-author-c")


def ulid(n: int) -> str:
    return "".join(CROCKFORD[(n >> (5 * k)) & 31] for k in range(25, -1, -1))


def sign_universe(n: int) -> list[StoredEvent]:
    """n events in id order, authored round-robin, seqs rising with ids, ~300-byte bodies."""
    rng = random.Random(1)
    idents = [identity_for(a) for a in AUTHORS]
    seqs = [0] * len(idents)
    ts = int(time.time() * 1000) - n * 20
    out = []
    for i in range(n):
        ts += rng.randint(1, 20)
        k = i % len(idents)
        seqs[k] += 1
        body = hashlib.sha256(b"%d" % i).digest() * 8
        body = body[:CIPHERTEXT_BYTES]
        ev = idents[k].sign_event(G, ulid((ts << 80) | rng.getrandbits(80)), seqs[k], body)
        out.append(StoredEvent.from_event(G, ev, body, received_at=0.0, hop=""))
    return out


def split(events: list[StoredEvent], n: int, d: int, kind: str) -> tuple[list, list]:
    """The shapes of the tests (tests/diffsets.py), plus ``one-side``: only bob lacks d
    events (d differing events in all)."""
    if kind == "one-side":
        events = events[: n + d]
        a_only = random.Random(2000 + d).sample(events, d)
        skip = {e.event_id for e in a_only}
        return events, [e for e in events if e.event_id not in skip]
    return split_sides(events[: n + 2 * d], d, kind, random.Random(1000 + d), AUTHORS)


async def start(tmp: Path, name: str) -> Node:
    node = Node(
        NodeConfig(server_id=name, data_dir=tmp / name, listen_port=0, groups=(G,)),
    )
    await node.start()
    return node


async def one_repair(tmp: Path, a_events: list, b_events: list, options: dict) -> dict:
    alice, bob = await start(tmp, "alice"), await start(tmp, "bob")
    try:
        bob.repairs.planner_options = options
        for node in (alice, bob):
            for a in AUTHORS:
                node.keystore.repin(identity_for(a).key_document())
        alice.keystore.repin(bob.identity.key_document())
        bob.keystore.repin(alice.identity.key_document())
        await alice.store_thread.run(alice.store.insert_events, a_events)
        await bob.store_thread.run(bob.store.insert_events, b_events)
        # Warm the prefix sums of both indexes (the first digest after a bulk load pays
        # for them once; a long-running node has them already).
        await alice.store_thread.run(alice.store.digest, G, "alice", "", "", 16)
        await bob.store_thread.run(bob.store.digest, G, "bob", "", "", 16)
        t0 = time.perf_counter()
        assert bob.repairs.start("alice", G)
        while bob.repairs.running("alice", G):
            await asyncio.sleep(0.002)
        wall = time.perf_counter() - t0
        st = bob.repairs.last_stats("alice", G)
        snap = next(r for r in bob.repairs.snapshots() if r.peer_id == "alice")
        equal = alice.store.summary(G) == bob.store.summary(G)
        return {
            "state": snap.state,
            "error": snap.error,
            "converged": equal,
            "requests": st.round_trips,
            "rounds": st.rounds,
            "digests": st.digests,
            "checkpoints": st.checkpoints,
            "sends": st.sends,
            "passes": st.passes,
            "fetched": st.events_fetched,
            "sent": st.events_sent,
            "bytes": st.bytes,
            "wall_ms": wall * 1000,
        }
    finally:
        await bob.stop()
        await alice.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument(
        "--kinds", nargs="+", default=["random"], choices=["random", "tails", "holes", "one-side"]
    )
    ap.add_argument("--buckets", type=int, default=None, help="planner: buckets per digest")
    ap.add_argument("--threshold", type=int, default=None, help="planner: checkpoint_threshold")
    ap.add_argument(
        "--descent-levels", type=int, default=None, help="planner: digest levels below the top"
    )
    ap.add_argument("--no-record", action="store_true", help="do not append to results.ndjson")
    args = ap.parse_args()
    options = {
        k: v
        for k, v in (
            ("buckets", args.buckets),
            ("checkpoint_threshold", args.threshold),
            ("descent_levels", args.descent_levels),
        )
        if v is not None
    }
    t0 = time.perf_counter()
    universe = sign_universe(args.n + 2 * max(args.d))
    print(f"signed {len(universe):,} events in {time.perf_counter() - t0:.1f} s (off the clock)")
    line = len(encode_frame(Frame("EVENT", ulid(1), "alice", 1, universe[0].to_event(), G)))
    full = args.n * line
    rows = []
    results = []
    for kind in args.kinds:
        for d in args.d:
            a, b = split(universe, args.n, d, kind)
            with tempfile.TemporaryDirectory(prefix="repair-bench-") as tmp:
                r = await one_repair(Path(tmp), a, b, options)
            r.update(kind=kind, d=d, n=args.n, full_transfer_bytes=full)
            r["ratio"] = r["bytes"] / full
            results.append(r)
            rows.append(
                (
                    f"{kind} d={d}",
                    r["state"],
                    r["requests"],
                    r["rounds"],
                    r["digests"],
                    r["checkpoints"],
                    r["fetched"] + r["sent"],
                    r["bytes"],
                    full,
                    f"{r['ratio']:.3%}",
                    r["wall_ms"],
                )
            )
    print(f"\nplanner options: {options or 'defaults'}")
    print(f"n = {args.n:,}, EVENT line = {line} B, full transfer = n lines = {full:,} B\n")
    table(
        rows,
        (
            "case",
            "state",
            "requests",
            "rounds",
            "digests",
            "checkpts",
            "events",
            "bytes",
            "full B",
            "ratio",
            "wall ms",
        ),
    )
    for r in results:
        if r["d"] == 10:
            ok = r["rounds"] <= 8 and r["bytes"] <= 64 * 1024
            print(
                f"\nissue 6 target, {r['kind']} d=10 (≤ 8 rounds, ≤ 64 KB): rounds {r['rounds']}, "
                f"{r['bytes'] / 1024:.1f} KB ({r['requests']} requests) → "
                f"{'met' if ok else 'NOT met'}"
            )
    if not args.no_record:
        append_result(
            "repair_cost",
            {
                "n": args.n,
                "d": args.d,
                "kinds": args.kinds,
                "planner": options,
                "event_line_bytes": line,
            },
            {"runs": results},
        )


if __name__ == "__main__":
    asyncio.run(main())
