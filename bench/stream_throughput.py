"""Issue 6, item 1: one group stream between two `tapsim node` processes, with baselines.

    uv run python bench/stream_throughput.py [--events 60000] [--runs 3]
        [--rates 1000,5000] [--latency-seconds 3]

Per run, all on 127.0.0.1 and in a fresh temporary directory:

1. **node → node, max**: `tapsim node` A (author ``bench-a``) starts with ``--events``
   pre-signed ~300-byte events queued in its outbox for B; A replays them over one stream
   to `tapsim node` B, which verifies, stores durably (WAL, synchronous=FULL) and ACKs.
   Rate = events stored by B / time between B's first and last stored event (B's digest
   count, polled every 20 ms, so start-up is not in the number).
2. **ACK round trip**: a bench peer (node/protocol/session.py + our HTTP/2 client + identity) opens
   a stream to B and offers pre-signed events at each rate in ``--rates``; p50/p99 of the
   time from writing an EVENT to reading the ACK that covers it. Then as fast as credit
   allows (``client → node, max``).
3. **baseline (a)**: the same EVENT lines over raw asyncio TCP to a child process that
   splits and JSON-parses every line; no HTTP/2, no crypto, no store (transport bound).
4. **baseline (b)**: verify + hash + durable store of the same events in this process,
   one thread, batches of 256 (node.storage.ingest.Ingest.process; crypto/storage bound).

Prints a table of medians over the runs and the ratios node/(a) and node/(b), and appends a
JSON line to bench/results.ndjson.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    GROUP,
    BenchPeer,
    NodeProcess,
    append_result,
    identity_for,
    median,
    percentile,
    presign,
    seed_sender,
    table,
    wait_count,
)

from node.protocol.frames import Event
from node.protocol.session import Stored
from node.storage.backends import open_store
from node.storage.ingest import Ingest
from node.transport import FederationClient

BATCH = 256  # the default credit window: what one stream can have in flight


def event_lines(events: list[Event], origin: str) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "type": "EVENT",
                "id": e.event_id,
                "origin": origin,
                "sequence": i + 1,
                "group_id": GROUP,
                "payload": e.to_dict(),
            }
        )
        + b"\n"
        for i, e in enumerate(events)
    ]


# --------------------------------------------------------------------------- baseline (a)


async def tcp_sink() -> None:
    """Child: accept one connection, parse every line, answer the count at EOF."""
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count = 0
        rest = b""
        loads = orjson.loads
        while chunk := await reader.read(1 << 16):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line:
                    loads(line)
                    count += 1
        writer.write(b"%d\n" % count)
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await done.wait()
    server.close()


async def baseline_tcp(lines: list[bytes]) -> float:
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--tcp-sink", stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    port = int((await child.stdout.readline()).decode())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunks = []
    buf: list[bytes] = []
    size = 0
    for line in lines:
        buf.append(line)
        size += len(line)
        if size >= 1 << 16:
            chunks.append(b"".join(buf))
            buf, size = [], 0
    if buf:
        chunks.append(b"".join(buf))
    start = time.perf_counter()
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    count = int((await reader.readline()).decode())
    elapsed = time.perf_counter() - start
    writer.close()
    await child.wait()
    assert count == len(lines), (count, len(lines))
    return len(lines) / elapsed


# --------------------------------------------------------------------------- baseline (b)


def baseline_ingest(
    events: list[Event], author: str, tmp: Path, *, location: str | None = None
) -> float:
    """Events/s of Ingest.process in batches of 256 on a fresh store (SQLite in ``tmp``,
    or ``location``)."""
    store = open_store(location or str(tmp / "baseline.sqlite3"))
    key = identity_for(author).public_key
    ingest = Ingest(store, lambda a, k: key if a == author else None)
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        chunk = [(e, author) for e in events[i : i + BATCH]]
        outcomes = ingest.process(GROUP, chunk, (), now=time.time())
        assert all(type(o) is Stored for o in outcomes), outcomes[0]
    elapsed = time.perf_counter() - start
    store.close()
    return len(events) / elapsed


# --------------------------------------------------------------------------- one run


async def one_run(args, tmp: Path, events_a: list[Event], events_c: list[Event]) -> dict:
    out: dict = {}
    b = NodeProcess("bench-b", tmp / "b")
    a = None
    client = FederationClient(b.url)
    try:
        seed_sender(tmp / "a", "bench-a", "bench-b", events_a)
        a = NodeProcess("bench-a", tmp / "a", peers=[b.url])
        cpu_a0, cpu_b0 = a.cpu_seconds(), b.cpu_seconds()
        first_at, last_at, first_count = await wait_count(client, len(events_a), timeout=120)
        if last_at is None or first_at is None or last_at <= first_at:
            raise RuntimeError(f"B got {first_count} of {len(events_a)} events: {b.lines[-5:]}")
        n = len(events_a) - first_count
        out["node_max"] = n / (last_at - first_at)
        out["cpu_a"] = a.cpu_seconds() - cpu_a0
        out["cpu_b"] = b.cpu_seconds() - cpu_b0
        a.stop()
        a = None

        peer = BenchPeer("bench-c", b.url)
        await peer.open()
        pos = 0
        for rate in args.rates:
            k = int(rate * args.latency_seconds)
            peer.rtts = []
            await peer.send_paced(events_c[pos : pos + k], rate)
            pos += k
            out[f"ack_p50_ms@{rate}"] = percentile(peer.rtts, 50) * 1e3
            out[f"ack_p99_ms@{rate}"] = percentile(peer.rtts, 99) * 1e3
        rest = events_c[pos:]
        peer.rtts = []
        elapsed = await peer.send_paced(rest, 0)
        out["client_max"] = len(rest) / elapsed
        if peer.errors:
            out["errors"] = peer.errors[:3]
        await peer.close()
    finally:
        await client.close()
        if a is not None:
            a.stop()
        b.stop()

    lines = event_lines(events_a, "bench-a")
    out["baseline_tcp"] = await baseline_tcp(lines)
    n_b = min(len(events_a), args.baseline_events)
    out["baseline_ingest"] = baseline_ingest(events_a[:n_b], "bench-a", tmp)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--latency-seconds", type=float, default=3.0)
    parser.add_argument("--client-max-events", type=int, default=20000)
    parser.add_argument("--baseline-events", type=int, default=20000)
    parser.add_argument("--tcp-sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tcp_sink:
        await tcp_sink()
        return
    args.rates = [int(r) for r in args.rates.split(",") if r]
    if args.events < 1000 or args.runs < 1:
        parser.error("--events ≥ 1000 and --runs ≥ 1")

    t0 = time.perf_counter()
    events_a = presign("bench-a", args.events)
    n_c = int(sum(args.rates) * args.latency_seconds) + args.client_max_events
    events_c = presign("bench-c", n_c)
    line = event_lines(events_a[:1], "bench-a")[0]
    print(
        f"signed {len(events_a) + n_c:,} events off the clock in {time.perf_counter() - t0:.1f} s;"
        f" EVENT line {len(line)} B, ciphertext {len(base64.b64decode(events_a[0].ciphertext))} B"
    )

    runs = []
    for r in range(args.runs):
        tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-"))
        try:
            result = await one_run(args, tmp, events_a, events_c)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        runs.append(result)
        print(
            f"run {r + 1}: node→node {result['node_max']:,.0f} ev/s, "
            f"client→node {result['client_max']:,.0f} ev/s, "
            + ", ".join(
                f"ACK@{rate} p50 {result[f'ack_p50_ms@{rate}']:.1f} / "
                f"p99 {result[f'ack_p99_ms@{rate}']:.1f} ms"
                for rate in args.rates
            )
            + f", tcp {result['baseline_tcp']:,.0f}, ingest {result['baseline_ingest']:,.0f}",
            flush=True,
        )

    keys = [k for k in runs[0] if k != "errors"]
    med = {k: median([r[k] for r in runs]) for k in keys}
    med["ratio_node_vs_tcp"] = med["node_max"] / med["baseline_tcp"]
    med["ratio_node_vs_ingest"] = med["node_max"] / med["baseline_ingest"]
    med["node_cpu_us_per_event"] = (med["cpu_a"] + med["cpu_b"]) / args.events * 1e6
    print()
    rows = [
        ("node → node, one stream (max)", med["node_max"], "events/s"),
        ("bench peer → node (max)", med["client_max"], "events/s"),
    ]
    for rate in args.rates:
        rows.append((f"ACK round trip p50 @ {rate}/s", med[f"ack_p50_ms@{rate}"], "ms"))
        rows.append((f"ACK round trip p99 @ {rate}/s", med[f"ack_p99_ms@{rate}"], "ms"))
    rows += [
        ("(a) raw TCP NDJSON, parse only", med["baseline_tcp"], "events/s"),
        ("(b) verify+hash+store, 1 thread", med["baseline_ingest"], "events/s"),
        ("ratio node / (a)", med["ratio_node_vs_tcp"], ""),
        ("ratio node / (b)", med["ratio_node_vs_ingest"], ""),
        ("CPU of A+B per event", med["node_cpu_us_per_event"], "µs"),
    ]
    table(rows, (f"measure (median of {args.runs} runs)", "value", "unit"))
    append_result(
        "stream_throughput",
        {
            "events": args.events,
            "runs": args.runs,
            "rates": args.rates,
            "latency_seconds": args.latency_seconds,
            "event_line_bytes": len(line),
        },
        {"median": med, "runs": runs},
    )


if __name__ == "__main__":
    asyncio.run(main())
