"""Small text renderings shared by the widgets: bars, sparklines, ages and sizes.

Pure functions of their arguments (no clock, no widgets), so every widget shows
numbers the same way and they are easy to test.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.view import snapshot as snap

_SPARKS = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉█"

# State → (label, style). Styles use theme variables so light and dark themes work.
STATE_STYLES: dict[str, str] = {
    snap.CONNECTING: "$warning",
    snap.HANDSHAKING: "$warning",
    snap.UP: "$success",
    snap.STALLED: "bold $warning",
    snap.DEAD: "bold $error",
    snap.BACKOFF: "$text-muted",
    snap.CLOSED: "$text-muted",
    snap.GONE: "bold $warning",
}

DIGEST_MARKS: dict[str, tuple[str, str, str]] = {
    # state: (symbol, short word, style)
    snap.DIGEST_EQUAL: ("✓", "equal", "$success"),
    snap.DIGEST_DIFFERS: ("✗", "differs", "bold $warning"),
    snap.DIGEST_REPAIRING: ("⟳", "repair", "$accent"),
    snap.DIGEST_EQUIVOCATION: ("!", "equivoc", "bold $error"),
    snap.DIGEST_UNKNOWN: ("?", "unknown", "$text-muted"),
    snap.DIGEST_FAILED: ("✗", "failed", "bold $error"),
}

FAULT_LABELS: dict[str, str] = {
    snap.FAULT_CUT: "LINK CUT",
    snap.FAULT_ACK_PAUSED: "ACKS PAUSED",
    snap.FAULT_CREDIT_ONE: "CREDIT=1",
}


def bar(value: float, total: float, width: int) -> str:
    """A left-aligned bar of `width` cells filled to value/total, in eighths of a cell."""
    if width <= 0:
        return ""
    fraction = 0.0 if total <= 0 else min(max(value / total, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    if value > 0 and eighths == 0:
        eighths = 1  # something left must never look like nothing left
    full, rest = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[rest] if rest else "")
    return text.ljust(width, " ")


def sparkline(values: Sequence[float | None], width: int, top: float | None = None) -> str:
    """The last `width` values as ▁…█ (a gap for None), scaled to `top` or their max."""
    if width <= 0:
        return ""
    tail = list(values)[-width:]
    present = [v for v in tail if v is not None]
    high = top if top is not None else (max(present) if present else 0.0)
    chars = []
    for v in tail:
        if v is None:
            chars.append(" ")
        elif high <= 0:
            chars.append(_SPARKS[0])
        else:
            chars.append(_SPARKS[min(int(v / high * (len(_SPARKS) - 1) + 0.5), len(_SPARKS) - 1)])
    return "".join(chars).rjust(width)


def column_chart(values: Sequence[float | None], height: int, top: float) -> list[str]:
    """Rows (top first) of a bar chart one cell per value, each cell in eighths."""
    rows = [[] for _ in range(height)]
    for v in values:
        level = 0 if v is None or top <= 0 else round(min(v / top, 1.0) * height * 8)
        if v is not None and v > 0 and level == 0:
            level = 1
        for row in range(height):
            floor = (height - 1 - row) * 8
            cell = min(max(level - floor, 0), 8)
            rows[row].append("█" if cell == 8 else (_SPARKS[cell - 1] if cell else " "))
    return ["".join(r) for r in rows]


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value / 1000:.0f} s"


def fmt_ms_short(value: float | None) -> str:
    """Milliseconds in at most five cells: `0`, `4.1ms`, `85ms`, `1.2s`, `12s`; `—`."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}ms"
    if value < 1000:
        return f"{value:.0f}ms"
    if value < 10_000:
        return f"{value / 1000:.1f}s"
    return f"{value / 1000:.0f}s"


def fmt_age(seconds: float | None) -> str:
    """A duration in the largest unit that keeps it short: 0.4 s, 12 s, 3 min, 2 h."""
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def fmt_uptime(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def fmt_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            if unit == "B" or count >= 100:
                return f"{count:.0f} {unit}"
            return f"{count:.1f} {unit}".replace(".0 ", " ")
        count /= 1024
    return f"{count:.0f} GiB"


def fmt_rate(per_s: float) -> str:
    if per_s >= 10_000:
        return f"{per_s / 1000:.0f}k"
    if per_s >= 1000:
        return f"{per_s / 1000:.1f}k"
    if per_s >= 10 or per_s == 0:
        return f"{per_s:.0f}"
    return f"{per_s:.1f}"


def short_peer(peer_id: str) -> str:
    """`server-alice` → `alice`: the words people say aloud."""
    return peer_id.removeprefix("server-")


def short_id(value: str | None, keep: int = 8) -> str:
    if not value:
        return "—"
    return value if len(value) <= keep + 1 else value[:keep] + "…"
