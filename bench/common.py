"""What every benchmark shares: machine facts, results file, pre-signed events, node
processes, and a protocol-speaking bench peer.

Why these pieces exist:

- Signing is kept out of every measured path: events are authored and signed before the
  clock starts by :func:`presign`, with a key derived from a fixed seed, so runs are
  comparable and the 2 cores go to the node under test.
- :func:`seed_sender` writes those events into a sender's data dir (its ``identity.key``
  is the same seed, so the sender *is* the author) together with outbox rows for the
  receiving peer. Started with ``--peer``, that ``tapsim node`` replays the outbox over a
  real stream, exactly as it would after a restart: the real node path on both sides.
- :class:`BenchPeer` is a minimal initiator built from the node's own sans-IO session,
  HTTP/2 client and identity. It is what measures ACK round trips: it knows when each
  EVENT left and when the ACK covering it came back, which a node does not report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the product, and the tests' support package
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from node.protocol import session as s  # noqa: E402
from node.protocol.frames import Event  # noqa: E402
from node.protocol.identity import Identity  # noqa: E402
from node.protocol.ids import CROCKFORD, format_rfc3339  # noqa: E402
from node.protocol.keystore import HelloAuthenticator, KeyStore, MemoryReplayCache  # noqa: E402
from node.protocol.session import Role, SessionConfig, StreamSession  # noqa: E402
from node.runtime.seed_file import SEED_FILE  # noqa: E402
from node.storage.backends import open_store  # noqa: E402
from node.storage.store import StoredEvent  # noqa: E402
from node.transport import FederationClient  # noqa: E402

# TAPSIM_BENCH_RESULTS=FILE records elsewhere (trial runs on a busy machine).
RESULTS = Path(
    os.environ.get("TAPSIM_BENCH_RESULTS") or Path(__file__).resolve().parent / "results.ndjson"
).resolve()
GROUP = "g!bench"
BASE = "/_taps/federation"
FRAME_MEDIA = 'application/x-ndjson; profile="_taps.v1.frames"'
CIPHERTEXT_BYTES = 225  # 300 characters of base64: the ~300-byte event body of issue 6


# --------------------------------------------------------------------------- reporting


def machine() -> dict:
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit + ("+dirty" if dirty else ""),
    }


def append_result(bench: str, args: dict, results: dict) -> None:
    line = {"bench": bench, "at": format_rfc3339(time.time()), **machine()}
    line["args"] = args
    line["results"] = results
    with RESULTS.open("a") as f:
        f.write(json.dumps(line, sort_keys=False) + "\n")
    print(f"\nappended to {RESULTS}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def table(rows: list[Sequence[object]], header: Sequence[str]) -> None:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, r in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) < 0.1:
            return f"{value:.4f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --------------------------------------------------------------------------- events


def seed_for(server_id: str) -> bytes:
    return hashlib.sha256(b"tapsim-bench:" + server_id.encode()).digest()


def identity_for(server_id: str) -> Identity:
    return Identity.from_seed(seed_for(server_id), server_id)


def ulid_at(ms: int, counter: int) -> str:
    """A canonical ULID from a millisecond timestamp and an 80-bit counter (sortable)."""
    n = (ms << 80) | counter
    return "".join(CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))


def presign(author: str, n: int, *, group: str = GROUP, first_seq: int = 1) -> list[Event]:
    """``n`` events by ``author`` (seq first_seq…), ids in seq order, signed now, off the clock."""
    ident = identity_for(author)
    rnd = hashlib.sha256(author.encode()).digest()
    ms = int(time.time() * 1000)
    out = []
    for i in range(n):
        seq = first_seq + i
        body = (rnd * 8)[: CIPHERTEXT_BYTES - 4] + seq.to_bytes(4, "big")
        out.append(ident.sign_event(group, ulid_at(ms, seq), seq, body))
    return out


def seed_sender(data_dir: Path, author: str, peer_id: str, events: list[Event]) -> None:
    """Give ``data_dir`` the author's key and ``events`` queued in the outbox for ``peer_id``."""
    import base64

    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir / SEED_FILE
    key.write_bytes(seed_for(author))
    key.chmod(0o600)
    store = open_store(str(data_dir / "events.sqlite3"))
    try:
        now = time.time()
        rows = [
            StoredEvent.from_event(
                GROUP, e, base64.b64decode(e.ciphertext), received_at=now, hop=author
            )
            for e in events
        ]
        store.insert_events(rows)
        with store.transaction():
            store.outbox_add(peer_id, GROUP, [e.event_id for e in events])
            store._db.execute(
                "INSERT OR REPLACE INTO own_seq (group_id, next_seq) VALUES (?, ?)",
                (GROUP, max((e.seq for e in events), default=0) + 1),
            )
    finally:
        store.close()


# --------------------------------------------------------------------------- processes


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NodeProcess:
    """A `tapsim node` child on 127.0.0.1 port 0; ``url`` once it printed `listening on`."""

    def __init__(
        self,
        server_id: str,
        data_dir: Path,
        *,
        peers: Sequence[str] = (),
        groups: Sequence[str] = (GROUP,),
        extra: Sequence[str] = (),
    ) -> None:
        profile = os.environ.get("TAPSIM_BENCH_PROFILE")  # a directory: cProfile each node
        prof = ["-m", "cProfile", "-o", f"{profile}/{server_id}.prof"] if profile else []
        cmd = [
            sys.executable,
            *prof,
            "-m",
            "tapsim_tui.cli",
            "node",
            "--listen",
            "127.0.0.1:0",
            "--server-id",
            server_id,
            "--data-dir",
            str(data_dir),
        ]
        for p in peers:
            cmd += ["--peer", p]
        for g in groups:
            cmd += ["--group", g]
        cmd += list(extra)
        self.server_id = server_id
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.url = ""
        self.ready_after = float("nan")
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            m = re.match(r"listening on (\S+)", line)
            if m:
                self.url = m.group(1)
                self.ready_after = time.perf_counter() - self.started
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"{server_id} did not start: {self.lines[-5:]}")
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if len(self.lines) > 2000:
                del self.lines[:1000]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def group_count(client: FederationClient, group: str = GROUP) -> int:
    """Events a node holds in ``group``, from its digest (the node's own count, O(1))."""
    response = await client.request("GET", f"{BASE}/encrypted-groups/{group}/digest?buckets=1")
    if response.status != 200:
        raise RuntimeError(f"digest answered {response.status}")
    return int(orjson.loads(response.body)["count"])


async def wait_count(
    client: FederationClient, target: int, timeout: float, poll: float = 0.02
) -> tuple[float | None, float | None, int]:
    """Poll the count until ``target``: (time of first event seen, time of target, count)."""
    first_at = None
    first_count = 0
    deadline = time.perf_counter() + timeout
    count = 0
    while time.perf_counter() < deadline:
        count = await group_count(client)
        now = time.perf_counter()
        if first_at is None and count > 0:
            first_at, first_count = now, count
        if count >= target:
            return first_at, now, first_count
        await asyncio.sleep(poll)
    return first_at, None, count


# --------------------------------------------------------------------------- bench peer


class BenchPeer:
    """One initiator stream to a node, driven by hand: send pre-signed events, time ACKs."""

    def __init__(self, server_id: str, url: str, group: str = GROUP) -> None:
        self.identity = identity_for(server_id)
        self.server_id = server_id
        self.url = url
        self.group = group
        self.client = FederationClient(url)
        self.session: StreamSession | None = None
        self.sent_at: dict[str, float] = {}
        self.rtts: list[float] = []
        self.acked = 0
        self.errors: list[str] = []
        self._stream = None
        self._reader: asyncio.Task | None = None
        self._up = asyncio.Event()
        self._progress = asyncio.Event()
        self.ended = False

    async def open(self, peer_id: str | None = None) -> None:
        if peer_id is None:
            caps = await self.client.request("GET", f"{BASE}/caps")
            peer_id = orjson.loads(caps.body)["server_id"]
        ident = self.identity
        group = self.group
        keystore = KeyStore()
        auth = HelloAuthenticator(self.server_id, keystore, MemoryReplayCache())

        def make_hello(to: str, now: float):
            from ulid import ULID

            return ident.make_hello(
                to=to,
                group_id=group,
                frame_id=str(ULID.from_timestamp(now)),
                timestamp=format_rfc3339(now),
                max_message_size=65536,
                ping_interval_ms=30000,
                capabilities=["stream", "ack", "credit", "ping"],
                supported_groups=[group],
            )

        self.session = StreamSession(
            SessionConfig(
                server_id=self.server_id,
                group_id=group,
                role=Role.INITIATOR,
                peer_id=peer_id,
                max_message_size=65536,
                ping_interval=30.0,
            ),
            make_hello=make_hello,
            authenticate=lambda frame, now: auth(frame, now, peer_id),
            now=time.time(),
        )
        self._stream = await self.client.open_stream(
            f"{BASE}/encrypted-groups/{group}/stream",
            [("content-type", FRAME_MEDIA), ("accept", FRAME_MEDIA)],
        )
        self.session.initiate(time.time())
        await self.flush()
        status, _ = await self._stream.response()
        if status != 200:
            raise RuntimeError(f"stream refused: {status}")
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self._up.wait(), 30)

    async def flush(self) -> None:
        assert self.session is not None and self._stream is not None
        data = self.session.data_to_send(time.time())
        if data:
            await self._stream.write(data)

    def _handle(self, events: list) -> None:
        now = time.perf_counter()
        for ev in events:
            kind = type(ev)
            if kind is s.EventsAcknowledged:
                sent_at = self.sent_at
                rtts = self.rtts
                for e in ev.event_ids:
                    t = sent_at.pop(e, None)
                    if t is not None:
                        rtts.append(now - t)
                self.acked += len(ev.event_ids)
                self._progress.set()
            elif kind is s.HandshakeComplete:
                self._up.set()
            elif kind is s.CreditAvailable:
                self._progress.set()
            elif kind is s.ErrorReceived or kind is s.ErrorSent:
                self.errors.append(f"{ev.code}: {ev.message}")
            elif kind is s.StreamEnded:
                self.ended = True
                self._progress.set()

    async def _read(self) -> None:
        assert self.session is not None and self._stream is not None
        while (chunk := await self._stream.read()) is not None:
            self._handle(self.session.receive_data(chunk, time.time()))
            await self.flush()
        self._handle(self.session.receive_eof(time.time()))
        self.ended = True
        self._progress.set()

    async def send_paced(self, events: list[Event], rate: float) -> float:
        """Offer ``events`` at ``rate``/s (0: as fast as credit allows); returns the wall time
        until the last one is acknowledged."""
        session = self.session
        assert session is not None
        n = len(events)
        i = 0
        start = time.perf_counter()
        sent_at = self.sent_at
        acked_before = self.acked
        while self.acked - acked_before < n and not self.ended:
            now = time.perf_counter()
            due = n if rate <= 0 else min(n, int((now - start) * rate) + 1)
            queued = []
            while i < due and session.send_event(events[i], time.time()):
                queued.append(events[i].event_id)
                i += 1
            if queued:
                t = time.perf_counter()
                for e in queued:
                    sent_at[e] = t
                await self.flush()
            if i < due or i >= n:
                # Out of credit, or everything sent: wait for ACKs / credit.
                self._progress.clear()
                try:
                    await asyncio.wait_for(self._progress.wait(), 30)
                except TimeoutError:
                    raise RuntimeError(f"no progress: {self.errors[-3:]}") from None
            else:
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
        return time.perf_counter() - start

    async def close(self) -> None:
        if self.session is not None and self._stream is not None and not self.ended:
            self.session.close(time.time())
            with _suppress():
                await self.flush()
                self._stream.end()
        if self._reader is not None:
            self._reader.cancel()
            with _suppress():
                await self._reader
        await self.client.close()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception | asyncio.CancelledError)  # type: ignore[arg-type]


def run_child(fn: Callable[[], None]) -> None:
    """Entry for `--child` modes: run and flush."""
    fn()
    sys.stdout.flush()
