"""Issue 17: total events/s of one server with 1 vs 2 workers over 8 groups.

    uv run python bench/workers_scaling.py [--events-per-group 2500] [--runs 3]

Needs HAProxy and PostgreSQL (``TAPSIM_TEST_POSTGRES``, else ``.ci/postgres start``
makes a throwaway cluster for the run and removes it after).

Per run, all on 127.0.0.1, for W = 1 and W = 2 in turn (interleaved, so both see the
same machine):

- server ``bench-s`` runs as W `tapsim node --worker K/W --store postgresql://…`
  processes sharing one identity seed and a fresh PostgreSQL schema, behind HAProxy
  (the config `tapsim workers haproxy` prints; with W = 1 the same HAProxy with one
  worker, so both cases pay the same proxy hop);
- a sender `tapsim node` (author ``bench-a``) starts with ``--events-per-group``
  pre-signed ~300-byte events in each of 8 groups queued in its outbox for bench-s, and
  replays them over 8 streams through HAProxy; the groups are chosen so that each of
  two workers owns 4;
- rate = events committed in bench-s's store (``SELECT count(*)``, polled every 20 ms)
  between the first and the last, so start-up and handshakes are not in it.

Prints medians, the ratio 2 workers / 1 worker (of the medians, and of each run's pair),
the workers' CPU time per event and the CPU seconds of the sender and HAProxy,
and appends a JSON line to bench/results.ndjson (``--no-record``: print only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    NodeProcess,
    append_result,
    median,
    presign,
    proc_cpu_seconds,
    seed_for,
    table,
)
from support.haproxy import HAProxy, free_port, haproxy_binary, wait_listening
from support.stores import with_schema

from node.runtime.seed_file import SEED_FILE
from node.storage.backends import open_store
from node.storage.ownership import hash_owner
from node.storage.store import StoredEvent

SERVER, AUTHOR = "bench-s", "bench-a"


def groups_split_evenly(n: int = 8) -> list[str]:
    """``n`` group ids, half owned by each of two workers (so W = 2 can use both)."""
    picked: dict[int, list[str]] = {0: [], 1: []}
    i = 0
    while min(len(v) for v in picked.values()) < n // 2:
        group = f"g!bench-{i}"
        owner = hash_owner(group, 2)
        if len(picked[owner]) < n // 2:
            picked[owner].append(group)
        i += 1
    return sorted(picked[0] + picked[1])


def seed_sender(data_dir: Path, groups: list[str], per_group: int) -> int:
    """The author's key, and ``per_group`` events per group queued for bench-s."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir / SEED_FILE
    key.write_bytes(seed_for(AUTHOR))
    key.chmod(0o600)
    store = open_store(str(data_dir / "events.sqlite3"))
    try:
        now = time.time()
        for group in groups:
            events = presign(AUTHOR, per_group, group=group)
            store.insert_events([
                StoredEvent.from_event(group, e, base64.b64decode(e.ciphertext),
                                       received_at=now, hop=AUTHOR)
                for e in events
            ])  # fmt: skip
            store.outbox_add(SERVER, group, [e.event_id for e in events])
    finally:
        store.close()
    return per_group * len(groups)


def count_events(admin, schema: str) -> int:
    try:
        return admin.execute(f'SELECT count(*) FROM "{schema}".events').fetchone()[0]
    except Exception:  # the schema's tables are made by the first worker's start
        return 0


async def one_case(workers: int, tmp: Path, groups: list[str], args, admin, pg: str) -> dict:
    schema = f"bench_w{workers}_{os.getpid()}_{int(time.time() * 1000)}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    url = with_schema(pg, schema)
    ports = [free_port() for _ in range(workers)]
    proxy = HAProxy(tmp, [("127.0.0.1", p) for p in ports])
    nodes: list[NodeProcess] = []
    try:
        await proxy.start()
        for k, port in enumerate(ports):
            data_dir = tmp / f"s{k}"
            data_dir.mkdir()
            (data_dir / SEED_FILE).write_bytes(seed_for(SERVER))
            (data_dir / SEED_FILE).chmod(0o600)
            extra = ["--listen", f"127.0.0.1:{port}", "--store", url, "--advertise-url",
                     proxy.url, "--worker", f"{k}/{workers}"]  # fmt: skip
            nodes.append(NodeProcess(SERVER, data_dir, groups=groups, extra=extra))
        for port in ports:
            await wait_listening(port, 60, "a worker")
        total = seed_sender(tmp / "a", groups, args.events_per_group)
        cpu0 = [n.cpu_seconds() for n in nodes]
        proxy_cpu0 = proc_cpu_seconds(proxy.proc.pid)
        sender = NodeProcess(AUTHOR, tmp / "a", peers=[proxy.url], groups=groups)
        nodes.append(sender)
        first_at = first_count = None
        deadline = time.perf_counter() + args.timeout
        count = 0
        while time.perf_counter() < deadline:
            count = count_events(admin, schema)
            now = time.perf_counter()
            if first_at is None and count > 0:
                first_at, first_count = now, count
            if count >= total:
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"{count} of {total} events arrived: {nodes[0].lines[-5:]}")
        assert first_at is not None and first_count is not None
        cpu_workers = sum(n.cpu_seconds() - c for n, c in zip(nodes, cpu0, strict=False))
        out = {
            "events_per_s": (total - first_count) / (now - first_at),
            "cpu_workers": cpu_workers,
            "worker_cpu_us_per_event": cpu_workers / total * 1e6,
            "cpu_sender": sender.cpu_seconds(),
            "cpu_haproxy": proc_cpu_seconds(proxy.proc.pid) - proxy_cpu0,
            "seconds": now - first_at,
        }
        return out
    finally:
        for n in nodes:
            n.stop()
        proxy.stop()
        with contextlib.suppress(Exception):
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def main(args) -> None:
    import psycopg

    if haproxy_binary() is None:
        sys.exit("workers_scaling: needs haproxy (apt-get install haproxy)")
    pg = os.environ.get("TAPSIM_TEST_POSTGRES")
    started = None
    if not pg:
        started = subprocess.run(
            [str(ROOT / ".ci" / "postgres"), "start"], capture_output=True, text=True, check=True
        ).stdout.strip()
        pg = started
    admin = psycopg.connect(pg, autocommit=True)
    groups = groups_split_evenly()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    try:
        for run in range(args.runs):
            for workers in (1, 2) if run % 2 == 0 else (2, 1):
                tmp = Path(tempfile.mkdtemp(prefix=f"tapsim-workers{workers}-"))
                try:
                    result = await one_case(workers, tmp, groups, args, admin, pg)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                runs[workers].append(result)
                print(f"run {run + 1}, {workers} worker(s): {result['events_per_s']:,.0f} events/s",
                      flush=True)  # fmt: skip
    finally:
        admin.close()
        if started:
            subprocess.run([str(ROOT / ".ci" / "postgres"), "stop", started], check=False)
    med = {w: {k: median([r[k] for r in runs[w]]) for k in runs[w][0]} for w in runs}
    ratio = med[2]["events_per_s"] / med[1]["events_per_s"]
    # Each run measures both back to back: its own ratio compares like with like on a
    # machine whose load changes from minute to minute.
    pair_ratios = [
        b["events_per_s"] / a["events_per_s"] for a, b in zip(runs[1], runs[2], strict=True)
    ]
    rows = [
        [f"{w} worker{'s' if w > 1 else ''}", f"{med[w]['events_per_s']:,.0f}",
         " ".join(f"{r['events_per_s']:,.0f}" for r in runs[w]),
         f"{med[w]['worker_cpu_us_per_event']:.0f}", f"{med[w]['cpu_sender']:.1f}",
         f"{med[w]['cpu_haproxy']:.1f}"]
        for w in (1, 2)
    ]  # fmt: skip
    table(rows, ["server", "events/s (median)", "every run", "worker CPU µs/event",
                 "CPU s sender", "CPU s haproxy"])  # fmt: skip
    print(f"\nratio 2 workers / 1 worker: {ratio:.2f} of the medians; per run "
          f"{' '.join(f'{r:.2f}' for r in pair_ratios)}, median "
          f"{median(pair_ratios):.2f} ({args.runs} runs, {os.cpu_count()} CPUs)")  # fmt: skip
    if not args.no_record:
        append_result(
            "workers_scaling",
            {"events_per_group": args.events_per_group, "groups": len(groups), "runs": args.runs},
            {"median": med, "ratio": ratio, "pair_ratios": pair_ratios, "runs": runs},
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-per-group", type=int, default=2500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--no-record", action="store_true", help="print only")
    asyncio.run(main(parser.parse_args()))
