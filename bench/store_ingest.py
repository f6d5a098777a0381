"""Issue 17: ingest on one stream with the PostgreSQL store vs SQLite, in the same run.

    uv run python bench/store_ingest.py [--events 20000] [--runs 3] [--postgres URL]

The PostgreSQL server: ``--postgres URL``, else ``TAPSIM_TEST_POSTGRES``, else a
throwaway cluster this script starts with ``.ci/postgres`` (and stops at the end). Every
store is fresh: a new schema per run (PostgreSQL), a new file (SQLite).

Per run, each backend in turn (the order alternates between runs):

1. **node → node**: as ``stream_throughput.py``'s headline number. `tapsim node` A
   replays ``--events`` pre-signed events from its outbox over one stream to `tapsim node`
   B, whose store is the backend measured (``--store postgresql://…`` or its SQLite
   file); B verifies, commits each batch in one transaction (group commit) and ACKs.
   Rate = events stored by B / time between B's first and last stored event.
2. **ingest alone**: ``node.storage.ingest.Ingest.process`` on the same events in this
   process, batches of 256 (verify + hash + durable store; ``stream_throughput.py``'s
   baseline (b)), on a store of the backend.

Prints medians and the ratios PostgreSQL / SQLite (issue 17's target: ≥ 0.7 × for the
node → node rate), and the median of each run's own ratio (its two backends ran back to
back), and appends a JSON line to bench/results.ndjson.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    NodeProcess,
    append_result,
    median,
    presign,
    seed_sender,
    table,
    wait_count,
)
from stream_throughput import baseline_ingest

from node.protocol.frames import Event
from node.transport import FederationClient

BACKENDS = ("sqlite", "postgresql")


def with_schema(url: str, schema: str) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


class Postgres:
    """The server the PostgreSQL stores live on, and a fresh schema per store."""

    def __init__(self, url: str | None) -> None:
        self.started = url is None
        if url is None:
            url = subprocess.run(
                [str(ROOT / ".ci" / "postgres"), "start"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        self.url = url
        self._schemas: list[str] = []

    def fresh(self) -> str:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
        self._schemas.append(schema)
        return with_schema(self.url, schema)

    def close(self) -> None:
        if self.started:
            subprocess.run([str(ROOT / ".ci" / "postgres"), "stop", self.url], check=False)
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            for schema in self._schemas:
                db.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]


async def node_to_node(events: list[Event], tmp: Path, store: str | None) -> float:
    """Events/s stored by a `tapsim node` on ``store`` (None: its SQLite file)."""
    b = NodeProcess("bench-b", tmp / "b", extra=["--store", store] if store else [])
    a = None
    client = FederationClient(b.url)
    try:
        seed_sender(tmp / "a", "bench-a", "bench-b", events)
        a = NodeProcess("bench-a", tmp / "a", peers=[b.url])
        first_at, last_at, first_count = await wait_count(client, len(events), timeout=300)
        if last_at is None or first_at is None or last_at <= first_at:
            raise RuntimeError(f"B got {first_count} of {len(events)} events: {b.lines[-5:]}")
        return (len(events) - first_count) / (last_at - first_at)
    finally:
        await client.close()
        if a is not None:
            a.stop()
        b.stop()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--postgres", metavar="URL", default=os.environ.get("TAPSIM_TEST_POSTGRES"))
    args = p.parse_args()

    events = presign("bench-a", args.events)
    pg = Postgres(args.postgres)
    runs: list[dict] = []
    try:
        for run in range(args.runs):
            order = BACKENDS if run % 2 == 0 else BACKENDS[::-1]
            result: dict = {}
            for backend in order:
                tmp = Path(tempfile.mkdtemp(prefix=f"tapsim-bench-{backend}-"))
                try:
                    store = pg.fresh() if backend == "postgresql" else None
                    result[f"{backend}_node"] = await node_to_node(events, tmp, store)
                    location = pg.fresh() if backend == "postgresql" else None
                    result[f"{backend}_ingest"] = baseline_ingest(
                        events, "bench-a", tmp, location=location
                    )
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            runs.append(result)
            print(
                f"run {run + 1}: "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in sorted(result.items())),
                flush=True,
            )
    finally:
        pg.close()

    med = {k: median([r[k] for r in runs]) for k in runs[0]}
    ratio_node = med["postgresql_node"] / med["sqlite_node"]
    ratio_ingest = med["postgresql_ingest"] / med["sqlite_ingest"]
    print()
    table(
        [
            ["node → node, one stream", med["sqlite_node"], med["postgresql_node"], ratio_node],
            [
                "ingest alone (batches of 256)",
                med["sqlite_ingest"],
                med["postgresql_ingest"],
                ratio_ingest,
            ],
        ],
        ["events/s (median)", "SQLite", "PostgreSQL", "PG / SQLite"],
    )
    # Each run's two backends ran back to back: their ratio is the least noisy number.
    paired = median([r["postgresql_node"] / r["sqlite_node"] for r in runs])
    print(f"\ntarget: PostgreSQL ≥ 0.7 × SQLite on one stream: {ratio_node:.2f} × "
          f"(median of each run's ratio: {paired:.2f} ×)")  # fmt: skip
    append_result(
        "store_ingest",
        {"events": args.events, "runs": args.runs},
        {
            "median": {
                **med,
                "ratio_node": ratio_node,
                "ratio_ingest": ratio_ingest,
                "ratio_node_paired": paired,
            },
            "runs": runs,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
