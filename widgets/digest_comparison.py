"""Our digest of a group beside the peer's: counts, fingerprints, authors' seq ranges.

The remote side is what the last anti-entropy run with that peer saw (§5.2), so
the comparison is as fresh as that run; the local side is live.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from node.view.snapshot import AuthorRange, GroupSnapshot, RepairSnapshot
from widgets.render import DIGEST_MARKS, short_id, short_peer

NAME_W = 13
SIDE_W = 20


@dataclass(frozen=True, slots=True)
class DigestView:
    group_id: str
    local_name: str
    peer_id: str
    group: GroupSnapshot | None
    repair: RepairSnapshot | None
    state: str = "unknown"  # the stream's digest state (§5), fresher than the last repair


def seq_range(author: AuthorRange | None) -> str:
    """`1–402 (402)`, or `1–402 +max 404 (403)` when there is a hole after 402."""
    if author is None:
        return "—"
    if author.contiguous_seq == 0 and author.max_seq == 0:
        return "none"
    text = f"1–{author.contiguous_seq}" if author.contiguous_seq else "gap at 1"
    if author.max_seq > author.contiguous_seq:
        text += f" …{author.max_seq}"
    return f"{text} ({author.count})"


class DigestComparison(Widget):
    DEFAULT_CSS = """
    DigestComparison { height: auto; }
    """

    view: reactive[DigestView | None] = reactive(None, layout=True)

    def render(self) -> Content:
        v = self.view
        if v is None:
            return Content("")
        repair = v.repair
        compared = repair is not None and repair.remote_count is not None
        local_count = v.group.count if v.group else None
        if compared:
            local_count = repair.local_count
        local_fp = v.group.fingerprint if v.group else None
        if compared:
            local_fp = repair.local_fingerprint
        remote_count = repair.remote_count if repair else None
        remote_fp = repair.remote_fingerprint if repair else None
        state = v.state
        symbol, _word, style = DIGEST_MARKS.get(state, ("?", state, "$text-muted"))
        lines = [
            Content.assemble(
                ("digest ", "bold"),
                (v.group_id, "bold $accent"),
                "  ",
                (f"{symbol} {state}", style),
            ),
            _row("", short_peer(v.local_name) + " (us)", short_peer(v.peer_id), header=True),
            _row(
                "events",
                _num(local_count),
                _num(remote_count),
                _same(repair, local_count, remote_count),
            ),
            _row(
                "fingerprint",
                short_id(local_fp, 12),
                short_id(remote_fp, 12),
                _same(repair, local_fp, remote_fp),
            ),
        ]
        # Compare like with like: both sides as the last run saw them, when it saw them.
        if repair is not None and repair.remote_authors:
            local_authors = {a.author: a for a in repair.local_authors}
        else:
            local_authors = {a.author: a for a in (v.group.authors if v.group else ())}
        remote_authors = {a.author: a for a in repair.remote_authors} if repair else {}
        for name in sorted(local_authors.keys() | remote_authors.keys()):
            mine, theirs = local_authors.get(name), remote_authors.get(name)
            lines.append(
                _row(
                    "  " + short_peer(name),
                    seq_range(mine),
                    seq_range(theirs) if repair else "—",
                    (mine == theirs) if repair else None,
                )
            )
        if v.group and v.group.equivocating:
            lines.append(
                Content.styled(
                    "  ! equivocating: " + ", ".join(v.group.equivocating), "bold $error"
                )
            )
        if repair is None:
            lines.append(
                Content.styled("  no comparison with this peer yet (r: repair)", "$text-muted")
            )
        elif repair.mismatching_ranges:
            lines.append(
                Content.styled(
                    f"  {len(repair.mismatching_ranges)} mismatching ranges:", "$warning"
                )
            )
            for lo, hi in repair.mismatching_ranges[:4]:
                lines.append(Content(f"  {lo or 'start':<26} → {hi or 'end'}"))
            if len(repair.mismatching_ranges) > 4:
                more = len(repair.mismatching_ranges) - 4
                lines.append(Content.styled(f"    … and {more} more", "$text-muted"))
        return Content("\n").join(lines)


def _same(repair: RepairSnapshot | None, a: object, b: object) -> bool | None:
    return None if repair is None else a == b


def _num(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _row(name: str, local: str, remote: str, same: bool | None = None, header: bool = False):
    style = "bold $text-muted" if header else ""
    mark: tuple[str, str] = ("", "")
    if same is True:
        mark = ("✓", "$success")
    elif same is False:
        mark = ("✗", "bold $warning")
    return Content.assemble(
        (f"{name:<{NAME_W}}", "$text-muted"),
        (f"{local:<{SIDE_W}}", style),
        (f"{remote:<{SIDE_W}}", style),
        mark,
    )
