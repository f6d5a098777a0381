"""What the trace book costs per frame on the hot path (issue 15): the session's frame
observer with the frame log alone, and with the frame log and the trace book, fed the
frames of a relay (EVENT in, ACK out, EVENT out, ACK in, CREDIT) for many events.

Pure Python, no sockets: it measures only the observer calls a stream makes per frame.
Prints a table (median of --runs, same-run ratio); appends nothing to results.ndjson.

    uv run python bench/trace_book.py      # --events 200000 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from node.protocol.frames import Ack, Credit, Event
from node.protocol.ids import new_ulid
from node.view.framelog import FrameLog
from node.view.trace import TraceLog


def frames(n: int) -> list[tuple]:
    base = time.time()
    out = []
    for i in range(n):
        event = Event(
            new_ulid(base + i / 1000),
            "alice",
            i + 1,
            "AAAA",
            "sha256:" + "0" * 64,
            "ed25519:AAAAAAAA",
            "A" * 88,
        )
        out.append(("in", "EVENT", 2 * i + 1, 700, event))
        out.append(("out", "ACK", i + 1, 120, Ack(2 * i + 1, [event.event_id])))
        out.append(("out", "EVENT", i + 1, 700, event))
        out.append(("in", "ACK", 2 * i + 2, 100, Ack(i + 1, [])))
        out.append(("in", "CREDIT", 2 * i + 2, 100, Credit(1, 700)))
    return out


def run(observe, feed: list[tuple]) -> float:
    start = time.perf_counter()
    for direction, ftype, seq, size, payload in feed:
        observe(direction, ftype, seq, size, payload)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    feed = frames(args.events)
    alone, both = [], []
    for _ in range(args.runs):
        log = FrameLog()
        alone.append(run(log.observer(lambda: "bob", "g!bench"), feed))
        log, book = FrameLog(), TraceLog("bob")
        observer = book.observer(
            lambda: "bob", "g!bench", "initiator", then=log.observer(lambda: "bob", "g!bench")
        )
        both.append(run(observer, feed))
    n = len(feed)
    a, b = statistics.median(alone), statistics.median(both)
    print(f"{n} frames ({args.events} events), median of {args.runs} runs")
    print(f"{'observer':<28}{'ns/frame':>10}")
    print(f"{'frame log':<28}{a / n * 1e9:>10.0f}")
    print(f"{'frame log + trace book':<28}{b / n * 1e9:>10.0f}")
    print(f"ratio {b / a:.2f} · trace book adds {(b - a) / n * 1e9:.0f} ns/frame")


if __name__ == "__main__":
    main()
