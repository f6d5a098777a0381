"""The command palette's way to a trace: paste an event id, or pick a recent EVENT."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from node.protocol.ids import is_ulid

RECENT = 8  # recent EVENTs offered by name


class TraceCommands(Provider):
    """``Trace event <id>`` for a pasted id; ``trace`` lists the frame log's newest EVENTs."""

    def _recent(self) -> list[str]:
        try:
            snapshot = self.app.main_screen.snapshot  # type: ignore[attr-defined]
        except StopIteration:
            return []
        if snapshot is None:
            return []
        ids: list[str] = []
        for entry in reversed(snapshot.frame_log):
            if entry.event_id and entry.event_id not in ids:
                ids.append(entry.event_id)
                if len(ids) >= RECENT:
                    break
        return ids

    def _open(self, event_id: str) -> None:
        self.app.open_trace(event_id)  # type: ignore[attr-defined]

    async def discover(self) -> Hits:
        yield DiscoveryHit(
            "Trace an event…",
            partial(self.app.notify, "Paste an event id into the palette to trace it."),
            help="paste an event_id (26 characters) to see its hops across the nodes",
        )

    async def search(self, query: str) -> Hits:
        pasted = query.strip().upper()
        if is_ulid(pasted):
            yield Hit(
                1.0,
                f"Trace event {pasted}",
                partial(self._open, pasted),
                help="its author and every hop it crossed, with times",
            )
            return
        matcher = self.matcher(query)
        for event_id in self._recent():
            title = f"Trace event {event_id}"
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self._open, event_id))
