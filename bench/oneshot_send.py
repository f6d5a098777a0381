"""Issue 6, item 2: one-shot ``POST …/send`` under h2load, against a trivial hypercorn app.

    uv run python bench/oneshot_send.py [--requests 20000] [--clients 4] [--streams 16] [--runs 3]

Needs ``h2load`` (Debian/Ubuntu: ``sudo apt-get install nghttp2-client``; macOS:
``brew install nghttp2``). This script never installs anything: without h2load it says
so and exits with status 2.

Both servers run as child processes on 127.0.0.1 port 0, over h2c (prior knowledge):

- ``tapsim node`` B, hit with one pre-signed EVENT (author ``bench-a``, whose key B pins
  from a HELLO first) POSTed to ``/_taps/federation/encrypted-groups/g!bench/send``. The
  first request stores it; every later one is the duplicate path of §4.3 (hash check,
  duplicate recognised from memory, ACK) — h2load repeats one body, so this measures the
  request path, not verification (stream_throughput.py measures that).
- baseline: a hypercorn ASGI app answering 200 with an empty body, same h2load options.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    FRAME_MEDIA,
    GROUP,
    BenchPeer,
    NodeProcess,
    append_result,
    median,
    presign,
    table,
)

from node.protocol.frames import Frame, encode_frame

TRIVIAL = """
import asyncio, sys
from hypercorn.asyncio import serve
from hypercorn.config import Config

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})

async def main():
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.loglevel = "WARNING"
    # The node's own settings (node/transport/serving.py): hypercorn's default GOAWAY
    # after 1,000 requests per connection would fail h2load, which does not reconnect.
    config.keep_alive_max_requests = 2**31
    config.keep_alive_timeout = 3600
    shutdown = asyncio.Event()
    task = asyncio.ensure_future(serve(app, config, shutdown_trigger=shutdown.wait))
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    shutdown.set()
    await task

asyncio.run(main())
"""


def h2load(url: str, args, body: Path | None) -> float:
    cmd = ["h2load", "-n", str(args.requests), "-c", str(args.clients), "-m", str(args.streams)]
    if body is not None:
        cmd += ["-d", str(body), "-H", f"content-type: {FRAME_MEDIA}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    if m is None or ok is None or int(ok.group(1)) < args.requests:
        raise RuntimeError(f"h2load did not succeed:\n{out}")
    return float(m.group(1))


def trivial_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    """The baseline app on a free port (hypercorn reports it through a bound socket)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = TRIVIAL.replace("127.0.0.1:0", f"127.0.0.1:{port}")
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, f"http://127.0.0.1:{port}/"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        print(
            "h2load is not installed; this benchmark needs it and installs nothing itself.\n"
            "  Debian/Ubuntu: sudo apt-get install nghttp2-client\n"
            "  macOS:         brew install nghttp2\n"
            "then run: uv run python bench/oneshot_send.py",
            file=sys.stderr,
        )
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="tapsim-bench-"))
    node = NodeProcess("bench-b", tmp / "b")
    baseline, base_url = trivial_server(tmp)
    try:
        # Pin bench-a's key at B (a HELLO does that), so its event verifies.
        peer = BenchPeer("bench-a", node.url)
        await peer.open()
        await peer.close()
        event = presign("bench-a", 1)[0]
        body = tmp / "event.ndjson"
        body.write_bytes(encode_frame(Frame("EVENT", event.event_id, "bench-a", 1, event, GROUP)))
        send_url = f"{node.url}/_taps/federation/encrypted-groups/{GROUP}/send"
        node_rates, base_rates = [], []
        for _ in range(args.runs):
            node_rates.append(h2load(send_url, args, body))
            base_rates.append(h2load(base_url, args, None))
            print(f"send {node_rates[-1]:,.0f} req/s, trivial {base_rates[-1]:,.0f} req/s")
    finally:
        node.stop()
        assert baseline.stdin is not None
        baseline.stdin.close()
        baseline.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"send_req_per_s": median(node_rates), "trivial_req_per_s": median(base_rates)}
    res["ratio"] = res["send_req_per_s"] / res["trivial_req_per_s"]
    table(
        [
            ("POST …/send (duplicate path)", res["send_req_per_s"], "req/s"),
            ("trivial hypercorn 200", res["trivial_req_per_s"], "req/s"),
            ("ratio (target ≥ 0.8)", res["ratio"], ""),
        ],
        (f"measure (median of {args.runs} runs)", "value", "unit"),
    )
    append_result(
        "oneshot_send", vars(args), {"median": res, "node": node_rates, "base": base_rates}
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
