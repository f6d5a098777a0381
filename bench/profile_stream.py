"""Where the CPU of one node → node stream goes: py-spy on both `tapsim node`s.

    uv pip install py-spy            # local tool, not a project dependency
    uv run python bench/profile_stream.py [--events 60000] [--rate 200] [--keep DIR]

The node → node case of stream_throughput.py (sender A replays its outbox to receiver B
over one stream), with `py-spy record --threads` attached to both processes while B
stores the events. Each busy sample (py-spy leaves out threads it sees idle) is put in
one category by its stack, and each process's shares are scaled to the CPU it used per
event (utime + stime from /proc), so the table adds up to the measured CPU per event of
A + B. Sampling shares are an estimate (a thread waiting for the GIL can look busy);
compare before/after tables taken in the same session. Nothing is appended to
results.ndjson: this explains the numbers, stream_throughput.py measures them.

A second table is exact rather than sampled: each thread's CPU time (utime + stime from
/proc/PID/task) over the same interval, per event, grouped by the thread's role (py-spy
names the threads: the event loop, the store thread, the verification pool).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import NodeProcess, presign, seed_sender, wait_count

from node.transport import FederationClient

# (category, regex): the first rule that matches anywhere in the stack wins...
STACK_RULES = [
    ("Ed25519 verify", r"crypto_sign_open|check_signatures"),
    ("anti-entropy (repair, checkpoints)", r"repair\.py|_checkpoint_lines|planner\.py|outbox_hold"),
    ("SQLite: ingest commit + index", r"Ingest\.commit|IngestQueue\._commit"),
    ("SQLite: outbox removal (ACKed)", r"outbox_remove|Outbox\._remove"),
    ("outbox read (rows → events)", r"outbox_pending|Outbox\._pending"),
    ("SQLite: replay cache", r"check_and_record"),
    ("summary publish", r"summary\.py"),
    ("snapshot / frame log", r"node/view/"),
]
# ... else the leafmost frame that matches one of these.
LEAF_RULES = [
    ("idle", r"select \(selectors|_worker \(concurrent/futures/thread\.py:81\)|wait \(thread"),
    ("§4.3 checks: base64, SHA-256", r"storage/ingest\.py|ingest_queue\.py.*_check"),
    ("encode EVENT lines", r"send_event|orjson\.dumps|to_dict"),
    ("frame ids (ULID)", r"ulid/|new_ulid|default_new_id"),
    ("parse frames", r"frames\.py|decoder\.py"),
    ("session (credit, ACKs, keepalive)", r"session\.py|credit\.py|acks\.py|keepalive\.py"),
    ("stream runner + ingest queue", r"stream_runner\.py|ingest_queue\.py"),
    ("HTTP/2: h2, hypercorn, our client", r"/h2/|hyperframe|hpack|hypercorn|node/transport"),
    ("asyncio loop + socket I/O", r"asyncio/|send \(|recv"),
    ("thread hand-offs", r"concurrent/futures|threading\.py|queue"),
]
_STACK = [(name, re.compile(rx)) for name, rx in STACK_RULES]
_LEAF = [(name, re.compile(rx)) for name, rx in LEAF_RULES]


def category(stack: str) -> str:
    frames = stack.split(";")
    if _LEAF[0][1].search(frames[-1]):  # parked in a wait: not CPU
        return "idle"
    for name, rx in _STACK:
        if rx.search(stack):
            return name
    for f in reversed(frames):
        for name, rx in _LEAF[1:]:
            if rx.search(f):
                return name
    return "other"


def shares(path: Path) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        kind = category(stack)
        if kind != "idle":
            counts[kind] += int(n)
    total = sum(counts.values()) or 1
    return {k: n / total for k, n in counts.items()}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


ROLES = [
    ("event loop", "MainThread"),
    ("store thread", "tapsim-store"),
    ("verify pool", "tapsim-verify"),
]


def roles(path: Path, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds per thread role between two thread_cpu snapshots."""
    names = dict(re.findall(r"^thread \((\d+)\): ([^;]+)", path.read_text(), re.M))
    out: dict[str, float] = {}
    for tid, cpu in after.items():
        name = names.get(str(tid), "")
        role = next((r for r, prefix in ROLES if name.startswith(prefix)), "other threads")
        out[role] = out.get(role, 0.0) + cpu - before.get(tid, 0.0)
    return out


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        sys.exit("py-spy not found: uv pip install py-spy")
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--keep", type=Path, help="keep the raw py-spy stacks here")
    args = parser.parse_args()
    spy = py_spy()
    events = presign("bench-a", args.events)
    tmp = Path(tempfile.mkdtemp(prefix="tapsim-profile-"))
    out = args.keep or tmp / "spy"
    out.mkdir(parents=True, exist_ok=True)
    b = NodeProcess("bench-b", tmp / "b")
    seed_sender(tmp / "a", "bench-a", "bench-b", events)
    client = FederationClient(b.url)
    a = NodeProcess("bench-a", tmp / "a", peers=[b.url])
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(p.pid),
                "--threads",
                "-r",
                str(args.rate),
                "-f",
                "raw",
                "-o",
                str(out / f"{p.server_id}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in (a, b)
    ]
    try:
        cpu_a, cpu_b = a.cpu_seconds(), b.cpu_seconds()
        threads_before = thread_cpu(a.pid), thread_cpu(b.pid)
        first_at, last_at, first = await wait_count(client, args.events, timeout=300)
        threads_after = thread_cpu(a.pid), thread_cpu(b.pid)
        us_a = (a.cpu_seconds() - cpu_a) / args.events * 1e6
        us_b = (b.cpu_seconds() - cpu_b) / args.events * 1e6
    finally:
        for p in spies:
            p.send_signal(signal.SIGINT)
        for p in spies:
            p.wait(timeout=60)
        await client.close()
        a.stop()
        b.stop()
    if first_at is None or last_at is None:
        sys.exit("the receiver did not get every event")
    rate = (args.events - first) / (last_at - first_at)
    share_a, share_b = shares(out / "bench-a.txt"), shares(out / "bench-b.txt")
    rows = {k: share_a.get(k, 0) * us_a + share_b.get(k, 0) * us_b for k in {*share_a, *share_b}}
    print(f"node → node {rate:,.0f} events/s; CPU per event: A {us_a:.0f} µs + B {us_b:.0f} µs")
    print("\n| category | A µs/event | B µs/event | A + B |\n|---|---:|---:|---:|")
    for k in sorted(rows, key=lambda k: -rows[k]):
        a_us, b_us = share_a.get(k, 0) * us_a, share_b.get(k, 0) * us_b
        print(f"| {k} | {a_us:.0f} | {b_us:.0f} | {a_us + b_us:.0f} |")
    print(f"| **total** | {us_a:.0f} | {us_b:.0f} | {us_a + us_b:.0f} |")
    role_a = roles(out / "bench-a.txt", threads_before[0], threads_after[0])
    role_b = roles(out / "bench-b.txt", threads_before[1], threads_after[1])
    print("\n| thread (CPU time, exact) | A µs/event | B µs/event | A + B |\n|---|---:|---:|---:|")
    for role in [r for r, _ in ROLES] + ["other threads"]:
        a_us = role_a.get(role, 0.0) / args.events * 1e6
        b_us = role_b.get(role, 0.0) / args.events * 1e6
        print(f"| {role} | {a_us:.1f} | {b_us:.1f} | {a_us + b_us:.1f} |")
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
