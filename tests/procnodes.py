"""Nodes as separate processes, for tests that kill them, measure them or read their files.

A :class:`ProcNode` runs ``python -m tapsim_tui.cli node …`` (exactly the headless CLI
an operator runs) or, for a node that must author a burst of events of its own,
``python -m tests.burst_node …`` (the same :class:`node.service.Node` plus a publisher).
It reads the ``listening on URL`` line, keeps every stdout line for assertions, can be
SIGKILLed and restarted on the same port with the same data, and reports its RSS.

Waiting is always on a condition with a deadline, polled from the asyncio loop, so
in-process nodes in the same test keep running while we wait.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from node.sync.fingerprint import Accumulator, event_term, fingerprint
from tests import nodes
from tests.nodes import wait_until

ROOT = Path(__file__).resolve().parent.parent


class ProcNode:
    """One node process; ``await start()`` returns its URL."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        *,
        peers: tuple[str, ...] | list[str] = (),
        groups: tuple[str, ...] = ("g!test",),
        ping_interval: float | None = None,
        closed: bool = False,
        module: str = "tapsim_tui.cli",
        pre: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        server_id: str | None = None,
        store: str | None = None,
    ) -> None:
        self.name = name
        self.server_id = server_id or name  # workers of one server share it
        self.data_dir = tmp / name
        # The test's backend (tests.nodes.STORES), unless a store is given.
        if store is None and nodes.STORES is not None:
            store = nodes.STORES.for_data_dir(self.data_dir)
        self.store = store
        self.peers = list(peers)
        self.groups = groups
        self.ping_interval = ping_interval
        self.closed = closed
        self.module = module
        self.pre = pre  # arguments before the node options (burst_node's own)
        self.extra = extra
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []  # every stdout line of every run, in order
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", self.module]
        if self.module == "tapsim_tui.cli":
            cmd.append("node")
        cmd += list(self.pre)
        cmd += [
            "--listen",
            f"127.0.0.1:{self.port}",
            "--server-id",
            self.server_id,
            "--data-dir",
            str(self.data_dir),
        ]
        for url in self.peers:
            cmd += ["--peer", url]
        for group in self.groups:
            cmd += ["--group", group]
        if self.ping_interval is not None:
            cmd += ["--ping-interval", str(self.ping_interval)]
        if self.closed:
            cmd.append("--closed")
        if self.store is not None:
            cmd += ["--store", self.store]
        return cmd + list(self.extra)

    async def start(self, timeout: float = 60.0) -> str:
        """Start (or restart, on the same port once one is known) and wait until it listens."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        mark = len(self.lines)
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        await wait_until(
            lambda: (
                self.line_after(mark, "listening on ") is not None or self.proc.poll() is not None
            ),
            timeout,
            f"{self.name} to listen",
        )
        line = self.line_after(mark, "listening on ")
        if line is None:
            raise AssertionError(f"{self.name} exited: {self.output()}")
        self.url = line.split("listening on ", 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def _reader(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def line_after(self, mark: int, text: str) -> str | None:
        with self._lock:
            for line in self.lines[mark:]:
                if text in line:
                    return line
        return None

    def has_line(self, text: str) -> bool:
        return self.line_after(0, text) is not None

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines[-60:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the node."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            await wait_until(lambda: self.proc.poll() is not None, timeout, f"{self.name} to stop")
        except AssertionError:
            self.proc.kill()
            self.proc.wait(10)
            raise
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss(self) -> int:
        """Resident set size in bytes (Linux /proc)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    @property
    def db_path(self) -> str:
        """Where its events are: the SQLite file in its data dir, or its PostgreSQL URL."""
        return self.store or str(self.data_dir / "events.sqlite3")


# --------------------------------------------------------------------------- files


def _query(location: str | Path, sql: str, args: tuple) -> list[tuple]:
    """Rows straight from a node's store, its SQLite file or its PostgreSQL schema (``?``
    placeholders), without the node's code: what is really on disk."""
    location = str(location)
    if location.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(location) as db:
            return [tuple(r) for r in db.execute(sql.replace("?", "%s"), args).fetchall()]  # type: ignore[arg-type]
    db = sqlite3.connect(location, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def db_rows(path: str | Path, group: str) -> list[tuple[str, str, int, bytes, str]]:
    """(event_id, author, seq, ciphertext, content_hash) of every row of a group, read
    straight from a node's store (the node must not be running, or be dead)."""
    return _query(
        path,
        "SELECT event_id, author, seq, ciphertext, content_hash FROM events "
        "WHERE group_id = ? ORDER BY event_id",
        (group,),
    )


def db_outbox(path: str | Path, peer: str, group: str) -> set[str]:
    rows = _query(
        path, "SELECT event_id FROM outbox WHERE peer_id = ? AND group_id = ?", (peer, group)
    )
    return {r[0] for r in rows}


def rows_fingerprint(rows) -> tuple[int, str]:
    """(count, §5.1 fingerprint) of rows as returned by :func:`db_rows`."""
    acc = Accumulator()
    for event_id, _author, _seq, _ct, chash in rows:
        acc.add(event_term(event_id, chash))
    return len(rows), fingerprint(acc.total, acc.count)


def assert_exactly_once(rows, *, authors: dict[str, int] | None = None) -> None:
    """No event stored twice, no author seq used twice, no content authored twice;
    with ``authors``, each author's seqs are exactly 1..n."""
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "an event id is stored twice"
    pairs = [(r[1], r[2]) for r in rows]
    assert len(pairs) == len(set(pairs)), "an (author, seq) is stored twice"
    contents = [r[3] for r in rows]
    assert len(contents) == len(set(contents)), "one content was authored twice"
    if authors is not None:
        for author, n in authors.items():
            seqs = sorted(r[2] for r in rows if r[1] == author)
            assert seqs == list(range(1, n + 1)), f"{author}'s seqs are not 1..{n}"


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds
