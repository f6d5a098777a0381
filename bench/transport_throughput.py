"""NDJSON lines through one HTTP/2 stream: our h2 client ⇄ hypercorn + FederationApp.

    uv run python bench/transport_throughput.py [--seconds 3] [--line 300] [--batch 16384]
        [--same-process] [--no-repr-patch]

By default the server runs in a child process (two nodes on two cores); the server
side decodes every line (node.decoder.LineDecoder) before it ends its response, and
the client decodes every line it reads, so the numbers include line splitting.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from node.protocol.decoder import LineDecoder
from node.transport import (
    FRAME_MEDIA_TYPE,
    FederationApp,
    FederationClient,
    library_patches,
    start_server,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.echo import EchoHandler, filler_line

P = "/_taps/federation/encrypted-groups"
CT = [("content-type", FRAME_MEDIA_TYPE)]


async def serve_forever() -> None:
    server = await start_server(FederationApp(EchoHandler()), "127.0.0.1", 0)
    print(server.url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()


def report(name: str, lines: int, nbytes: int, seconds: float) -> None:
    print(
        f"{name:<28} {lines / seconds:>12,.0f} lines/s {nbytes / seconds / 1e6:>8.1f} MB/s"
        f"   ({lines:,} lines in {seconds:.2f} s)"
    )


async def upload(client: FederationClient, args, per_write: int) -> None:
    line = filler_line(0, args.line)
    batch = line * per_write
    stream = await client.open_stream(f"{P}/g!sink/stream", CT)
    await stream.response()
    sent = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            await stream.write(batch)
        sent += 50 * per_write
    stream.end()
    while await stream.read() is not None:  # the sink ends only after decoding everything
        pass
    name = "upload, 1 line per write()" if per_write == 1 else f"upload, {len(batch)} B writes"
    report(name, sent, sent * len(line), time.perf_counter() - start)


async def download(client: FederationClient, args) -> None:
    total = int(args.seconds * 150e6)
    stream = await client.open_stream(f"{P}/g!source-{total}/stream", CT)
    await stream.response()
    decoder = LineDecoder(65536)
    lines = 0
    nbytes = 0
    start = time.perf_counter()
    while (chunk := await stream.read()) is not None:
        nbytes += len(chunk)
        lines += len(decoder.feed(chunk))
    stream.end()
    report("download (server writes)", lines, nbytes, time.perf_counter() - start)


async def echo(client: FederationClient, args) -> None:
    line = filler_line(0, args.line)
    batch = line * max(1, args.batch // len(line))
    stream = await client.open_stream(f"{P}/g!echo/stream", CT)
    await stream.response()
    rounds = int(args.seconds * 150e6 / 2 / len(batch))

    async def writer():
        for _ in range(rounds):
            await stream.write(batch)
        stream.end()

    start = time.perf_counter()
    task = asyncio.create_task(writer())
    decoder = LineDecoder(65536)
    lines = 0
    while (chunk := await stream.read()) is not None:
        lines += len(decoder.feed(chunk))
    await task
    report("echo (each way)", lines, lines * len(line), time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--line", type=int, default=300, help="bytes per NDJSON line")
    parser.add_argument("--batch", type=int, default=16384, help="bytes per client write")
    parser.add_argument("--same-process", action="store_true")
    parser.add_argument("--no-repr-patch", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_repr_patch:
        library_patches.install_hypercorn_patch()
        library_patches._installed = True
    if args.serve:
        await serve_forever()
        return
    child = None
    if args.same_process:
        server = await start_server(FederationApp(EchoHandler()), "127.0.0.1", 0)
        url = server.url
    else:
        cmd = [sys.executable, __file__, "--serve"] + (
            ["--no-repr-patch"] if args.no_repr_patch else []
        )
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        url = child.stdout.readline().strip()
    print(
        f"server {url} ({'same process' if args.same_process else 'child process'}), "
        f"{args.line}-byte lines, repr patch {'off' if args.no_repr_patch else 'on'}"
    )
    client = FederationClient(url)
    try:
        await upload(client, args, max(1, args.batch // args.line))
        await download(client, args)
        await echo(client, args)
        args.seconds = min(args.seconds, 1.0)
        await upload(client, args, 1)
    finally:
        await client.close()
        if child is not None:
            child.stdin.close()
            child.wait(timeout=30)
        else:
            await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
