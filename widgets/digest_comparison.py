"""Our digest of a group beside the peer's: counts, fingerprints, authors' seq ranges.

Our side is live. The peer's side is its whole-group digest as last fetched (one small
request, refreshed every few seconds while this pane is shown, and after every
repair), labelled with its age. Marks compare like with like:

- ``✓`` the peer's value equals ours now;
- ``…`` it differs from ours now but equalled ours when it was fetched (we moved since:
  events in flight, not a difference);
- ``✗`` it differed from ours when it was fetched: a real difference;
- no mark: unknown (never fetched, or the fetch failed).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive

from node.view.snapshot import AuthorRange, GroupSnapshot, PeerDigestSnapshot
from widgets.drawn import DrawnWidget
from widgets.render import DIGEST_MARKS, fmt_age, short_id, short_peer

NAME_W = 13
SIDE_W = 20


@dataclass(frozen=True, slots=True)
class DigestView:
    group_id: str
    local_name: str
    peer_id: str
    group: GroupSnapshot | None  # ours, live
    peer: PeerDigestSnapshot | None  # theirs as last fetched, and ours at that moment
    state: str = "unknown"  # the row's digest state (§5), from the same data
    now: float = 0.0


def seq_range(author: AuthorRange | None) -> str:
    """`1–402 (402)`, or `1–402 …404 (403)` when there is a hole after 402."""
    if author is None:
        return "none"
    if author.contiguous_seq == 0 and author.max_seq == 0:
        return "none"
    text = f"1–{author.contiguous_seq}" if author.contiguous_seq else "gap at 1"
    if author.max_seq > author.contiguous_seq:
        text += f" …{author.max_seq}"
    return f"{text} ({author.count})"


def mark(now_equal: bool, then_equal: bool | None) -> bool | str | None:
    """True ✓, False ✗, "…" moved since, None unknown (see the module's docstring)."""
    if then_equal is None:
        return None
    if now_equal:
        return True
    return "…" if then_equal else False


class DigestComparison(DrawnWidget):
    DEFAULT_CSS = """
    DigestComparison { height: auto; }
    """

    view: reactive[DigestView | None] = reactive(None, repaint=False)

    def watch_view(self) -> None:
        self.redraw()

    def draw(self) -> Content:
        v = self.view
        if v is None:
            return Content("")
        peer = v.peer
        known = peer is not None and peer.count is not None
        fresh = known and peer.error is None
        state = v.state
        symbol, word, style = DIGEST_MARKS.get(state, ("?", state, "$text-muted"))
        lines = [
            Content.assemble(
                ("digest ", "bold"), (v.group_id, "bold $accent"), "  ", (f"{symbol} {word}", style)
            )
        ]
        theirs = short_peer(v.peer_id)
        if known:
            theirs += f" ({fmt_age(v.now - peer.at)} ago)"
        lines.append(_row("", short_peer(v.local_name) + " (now)", theirs, header=True))
        local_count = v.group.count if v.group else None
        local_fp = v.group.fingerprint if v.group else None
        then = (
            None
            if not fresh
            else (peer.count == peer.local_count, peer.fingerprint == peer.local_fingerprint)
        )
        lines.append(
            _row(
                "events",
                _num(local_count),
                _num(peer.count) if known else "—",
                mark(local_count == peer.count, then[0]) if then else None,
            )
        )
        lines.append(
            _row(
                "fingerprint",
                short_id(local_fp, 12),
                short_id(peer.fingerprint, 12) if known else "—",
                mark(local_fp == peer.fingerprint, then[1]) if then else None,
            )
        )
        local_authors = {a.author: a for a in (v.group.authors if v.group else ())}
        remote_authors = {a.author: a for a in peer.authors} if known else {}
        then_authors = {a.author: a for a in peer.local_authors} if fresh else {}
        for name in sorted(local_authors.keys() | remote_authors.keys()):
            mine, theirs_a = local_authors.get(name), remote_authors.get(name)
            lines.append(
                _row(
                    "  " + short_peer(name),
                    seq_range(mine),
                    seq_range(theirs_a) if known else "—",
                    mark(mine == theirs_a, then_authors.get(name) == theirs_a) if fresh else None,
                )
            )
        if v.group and v.group.equivocating:
            lines.append(
                Content.styled(
                    "  ! equivocating: " + ", ".join(v.group.equivocating), "bold $error"
                )
            )
        if peer is None:
            lines.append(Content.styled(f"  {theirs}'s digest not fetched yet", "$text-muted"))
        elif peer.error is not None:
            what = "last fetch failed" if known else "fetch failed"
            lines.append(Content.styled(f"  {what}: {peer.error}", "$warning"))
        elif then is not None and not all(then):
            lines.append(
                Content.styled(
                    "  ✗ differed when fetched: r repairs, anti-entropy will too", "$warning"
                )
            )
        return Content("\n").join(lines)


def _num(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _row(name: str, local: str, remote: str, same: bool | str | None = None, header: bool = False):
    style = "bold $text-muted" if header else ""
    sign: tuple[str, str] = ("", "")
    if same is True:
        sign = ("✓", "$success")
    elif same is False:
        sign = ("✗", "bold $warning")
    elif same == "…":
        sign = ("…", "$text-muted")
    return Content.assemble(
        (f"{name:<{NAME_W}}", "$text-muted"),
        (f"{local:<{SIDE_W}}", style),
        (f"{remote:<{SIDE_W}}", style),
        sign,
    )
