"""`tapsim trace EVENT_ID FILE…`: one event's way across the nodes of a set of recordings.

Reads wire recordings (``node.view.recording``; a directory stands for the files in it),
folds the frames that carry or acknowledge the event (``node.view.trace``) and prints
the trace as plain text, or as JSON with ``--json``, for scripts.

Exit status: 0 the event was found, 1 no recording holds it, 2 bad input (an id that
is not a ULID, a file that cannot be read).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from node.protocol.ids import is_ulid
from node.view.codec import to_json
from node.view.recording import BadLine, Record, read_records
from node.view.trace import trace_lines, trace_recordings
from tapsim_tui.settings import EXIT_FAILURE, EXIT_OK, ConfigError


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("event_id", metavar="EVENT_ID", help="the event's id (a ULID)")
    parser.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        type=Path,
        help="recording files (tapsim --record DIR); a directory means every file in it",
    )
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")


def recording_files(paths: list[Path]) -> list[Path]:
    """The files named, a directory standing for the files in it (by name)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"no recording at {path}")
    if not files:
        raise ConfigError("no recording files in " + ", ".join(str(p) for p in paths))
    return files


def _records(path: Path) -> Iterator[Record | BadLine]:
    with path.open("rb") as f:
        yield from read_records(f)


def run_trace(args: argparse.Namespace) -> int:
    event_id = args.event_id.strip().upper()
    if not is_ulid(event_id):
        raise ConfigError(f"{args.event_id!r} is not an event id (26 characters, a ULID)")
    files = recording_files(args.files)
    try:
        trace, unread = trace_recordings(event_id, (_records(p) for p in files))
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if args.json:
        sys.stdout.buffer.write(to_json(trace) + b"\n")
    else:
        print("\n".join(trace_lines(trace)))
    if unread:
        print(f"tapsim trace: {unread} lines could not be read and were skipped", file=sys.stderr)
    if not trace.found:
        return EXIT_FAILURE
    return EXIT_OK
