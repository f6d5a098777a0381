"""`tapsim status`: one look at a running node, for scripts (``--json``) and for people.

The JSON is one object whose shape is documented in the README ("tapsim status --json")
and versioned by its ``schema`` key; new keys may be added, none renamed or removed
within a schema. Exit status: 0 when the node answered, 3 when no node runs on the data
dir, 1 when something answered but not as a node does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from node.view.control import ControlError, Welcomed
from node.view.snapshot import NodeSnapshot, RepairSnapshot
from tapsim_tui.attach import NoNode, fetch_snapshot

SCHEMA = 1
EXIT_NO_NODE = 3


def status_report(welcome: Welcomed, snap: NodeSnapshot, now: float) -> dict:
    """The node's status as plain JSON values."""
    streams = [
        {
            "peer": st.peer_id,
            "peer_url": st.peer_url,
            "group": st.group_id,
            "role": st.role,
            "state": str(st.state),
            "rtt_ms": st.rtt_ms,
            "credit_out": {"events": st.credit_out_events, "bytes": st.credit_out_bytes},
            "credit_in": {"events": st.credit_in_events, "bytes": st.credit_in_bytes},
            "unacked": st.unacked,
            "ack_lag_ms": st.ack_lag_ms,
            "outbox": st.outbox,
            "digest_state": str(st.digest_state),
            "faults": sorted(st.faults),
            "last_error": st.last_error,
        }
        for st in snap.streams
    ]
    outbox: dict[tuple[str, str], int] = {}
    for st in snap.streams:
        key = (st.peer_id, st.group_id)
        outbox[key] = max(outbox.get(key, 0), st.outbox)
    last: dict[tuple[str, str], RepairSnapshot] = {}
    for r in snap.repairs:
        key = (r.peer_id, r.group_id)
        if key not in last or (r.started_at or 0) >= (last[key].started_at or 0):
            last[key] = r
    errors = [
        {"where": f"stream {st.peer_id} {st.group_id} {st.role}", "message": st.last_error}
        for st in snap.streams
        if st.last_error
    ] + [
        {"where": f"repair {r.peer_id} {r.group_id}", "message": r.error}
        for r in last.values()
        if r.error
    ]
    return {
        "schema": SCHEMA,
        "server_id": snap.server_id,
        "pid": welcome.node.pid,
        "listen": list(snap.listen_urls),
        "key_id": snap.key_id,
        "pairing_code": snap.pairing_code,
        "started_at": snap.started_at,
        "uptime_s": round(max(0.0, now - snap.started_at), 3),
        "streams": streams,
        "outbox": [
            {"peer": peer, "group": group, "events": n}
            for (peer, group), n in sorted(outbox.items())
        ],
        "groups": [
            {
                "group": g.group_id,
                "events": g.count,
                "fingerprint": g.fingerprint,
                "equivocating": list(g.equivocating),
            }
            for g in snap.groups
        ],
        "repairs": [
            {
                "peer": r.peer_id,
                "group": r.group_id,
                "state": str(r.state),
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "round_trips": r.round_trips,
                "events_fetched": r.events_fetched,
                "events_sent": r.events_sent,
                "bytes": r.bytes_moved,
                "error": r.error,
            }
            for _, r in sorted(last.items())
        ],
        "counters": dict(snap.counters),
        "errors": errors,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {s}s"
    return f"{minutes}m {s}s" if minutes else f"{s}s"


def format_status(report: dict) -> str:
    """The report in words and columns, for a terminal."""
    lines = [
        f"{report['server_id']}  pid {report['pid']}  up {_duration(report['uptime_s'])}  "
        f"key {report['key_id']}",
        "listening on " + ", ".join(report["listen"]),
    ]
    rows = [
        ("PEER", "GROUP", "ROLE", "STATE", "RTT", "CREDIT OUT/IN", "UNACKED", "ACK LAG", "OUTBOX",
         "DIGEST"),
    ]  # fmt: skip
    for st in report["streams"]:
        rows.append(
            (
                st["peer"],
                st["group"],
                st["role"],
                st["state"],
                _ms(st["rtt_ms"]),
                f"{st['credit_out']['events']}/{st['credit_in']['events']}",
                str(st["unacked"]),
                _ms(st["ack_lag_ms"]),
                str(st["outbox"]),
                st["digest_state"],
            )
        )
    if len(rows) == 1:
        lines.append("no streams")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]  # fmt: skip
    for g in report["groups"]:
        lines.append(f"group {g['group']}: {g['events']} events, fingerprint {g['fingerprint']}")
    for r in report["repairs"]:
        when = "running" if r["finished_at"] is None else "done"
        lines.append(
            f"repair {r['peer']} {r['group']}: {r['state']} ({when}, {r['round_trips']} "
            f"round trips, {r['bytes']} B)"
        )
    for e in report["errors"]:
        lines.append(f"error: {e['where']}: {e['message']}")
    return "\n".join(lines)


def run_status(data_dir: Path, *, as_json: bool) -> int:
    try:
        welcome, snap = fetch_snapshot(data_dir)
    except NoNode as exc:
        if as_json:
            print(orjson.dumps({"schema": SCHEMA, "running": False, "error": str(exc)}).decode())
        print(f"tapsim: {exc}", file=sys.stderr)
        return EXIT_NO_NODE
    except (OSError, ControlError) as exc:
        print(f"tapsim: error: {data_dir}: the control socket did not answer: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    report = status_report(welcome, snap, time.time())
    if as_json:
        print(orjson.dumps(dict(report, running=True)).decode())
    else:
        print(format_status(report))
    return 0
