"""Idle CPU of the dashboard process, in a real terminal of a given size.

    uv run python bench/idle_cpu.py [--mode demo|single] [--size 160x48]
                                    [--warmup 10] [--seconds 30] [--runs 1] [--py-spy FILE]

Starts ``tapsim demo --rate 0`` (mode ``demo``: three nodes in their own processes,
no test traffic, the dashboard over them) or ``tapsim`` (mode ``single``: one node in
a child process, throwaway data and config dirs) on a pseudo-terminal of the given size,
waits ``--warmup`` seconds, then reads the dashboard process's own CPU time
(``utime + stime`` in ``/proc/PID/stat``: the node processes are not in it) over
``--seconds`` and prints it as a percentage of one core, per run and the median.
``--py-spy FILE`` also records where that time goes. Needs Linux (``/proc``).
Appends nothing to ``results.ndjson``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

TAPSIM = Path(sys.executable).parent / "tapsim"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its own threads, not its children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(fd: int) -> None:
    """Read the terminal's output and throw it away (a full pty would block the app)."""
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def one_run(
    mode: str, columns: int, rows: int, warmup: float, seconds: float, profile: str = ""
) -> float:
    """The dashboard process's CPU over `seconds`, in % of one core."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    with tempfile.TemporaryDirectory(prefix="tapsim-idle-") as home:
        env = {
            **os.environ,
            "TERM": "xterm-256color",
            "COLORTERM": "truecolor",
            "COLUMNS": str(columns),
            "LINES": str(rows),
            # No user config, data or state of this machine: everything in `home`.
            "HOME": home,
            "XDG_CONFIG_HOME": f"{home}/config",
            "XDG_DATA_HOME": f"{home}/data",
            "XDG_STATE_HOME": f"{home}/state",
            "XDG_CACHE_HOME": f"{home}/cache",
        }
        env.pop("TEXTUAL", None)
        if mode == "demo":
            argv = [str(TAPSIM), "demo", "--rate", "0"]
        else:
            argv = [str(TAPSIM), "--listen", "127.0.0.1:0", "--server-id", "idle"]
        proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=home,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        reader = threading.Thread(target=drain, args=(master,), daemon=True)
        reader.start()
        try:
            time.sleep(warmup)
            if proc.poll() is not None:
                raise SystemExit(f"tapsim {mode} exited early with status {proc.returncode}")
            spy = None
            if profile:  # the profile covers the measured window (py-spy adds a little)
                spy = subprocess.Popen(
                    [
                        *("py-spy", "record", "-r", "50", "-d", str(int(seconds)), "-f", "raw"),
                        *("-p", str(proc.pid), "-o", profile),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            before, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            after, t1 = cpu_seconds(proc.pid), time.monotonic()
            if spy is not None:
                spy.wait(timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(master)
    return (after - before) / (t1 - t0) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("demo", "single"), default="demo")
    parser.add_argument("--size", default="160x48", help="COLUMNSxROWS (default 160x48)")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        default="",
        help="also record a py-spy profile (raw, 50 Hz) of the measured window to FILE "
        "(needs py-spy: uv pip install py-spy)",
    )
    args = parser.parse_args()
    try:
        columns, rows = (int(n) for n in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected COLUMNSxROWS, e.g. 160x48")
    runs = [
        one_run(args.mode, columns, rows, args.warmup, args.seconds, args.py_spy)
        for _ in range(args.runs)
    ]
    for i, pct in enumerate(runs, 1):
        print(f"run {i}: {pct:5.1f} % of a core")
    print(
        f"tapsim {args.mode} idle at {columns}x{rows}, {args.seconds:g} s after {args.warmup:g} s:"
        f" median {statistics.median(runs):.1f} % of a core (dashboard process only)"
    )


if __name__ == "__main__":
    main()
