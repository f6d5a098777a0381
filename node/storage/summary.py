"""What the event loop may know of the store without asking its thread: :class:`StoreSummary`.

The store and its in-memory index belong to the store thread. After every job that
changed something a summary shows, that thread builds a new, immutable
:class:`StoreSummary` (reading again only the groups the job touched) and publishes it
by replacing one reference, :attr:`SummaryBoard.current`. The loop reads that attribute
whenever it likes, without a lock, and always gets one consistent picture of the store
as of a finished job: a reference swap is atomic, and nothing it points to ever changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from node.storage.store import Store
from node.sync.digest import EMPTY_FINGERPRINT, AuthorSummary

_NOTHING: Mapping = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """One group: (count, fingerprint) of §5.1, the §5.2 authors map, the equivocators."""

    count: int
    fingerprint: str
    authors: Mapping[str, AuthorSummary]  # read-only, sorted by author
    equivocators: tuple[str, ...]  # sorted


EMPTY_GROUP = GroupSummary(0, EMPTY_FINGERPRINT, _NOTHING, ())


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """The store as of the last job that changed it. Every field is read-only."""

    groups: tuple[str, ...]  # the groups holding at least one event, sorted
    by_group: Mapping[str, GroupSummary]
    outboxes: Mapping[tuple[str, str], int]  # (peer_id, group_id) → queued events
    write_error: str | None = None  # why the store cannot write now; None while it can

    def group(self, group_id: str) -> GroupSummary:
        return self.by_group.get(group_id, EMPTY_GROUP)

    def outbox(self, peer_id: str, group_id: str) -> int:
        return self.outboxes.get((peer_id, group_id), 0)


EMPTY_SUMMARY = StoreSummary((), _NOTHING, _NOTHING)


def summarise(
    store: Store, previous: StoreSummary, groups: Iterable[str], outbox: bool
) -> StoreSummary:
    """On the store thread: ``previous`` with ``groups`` (and, if ``outbox``, every outbox
    count) read again from ``store``. The rest is shared with ``previous``."""
    by_group = dict(previous.by_group)
    names = previous.groups
    for group_id in groups:
        count, fp = store.summary(group_id)
        equivocators = tuple(store.equivocators(group_id))
        if count == 0 and not equivocators:
            by_group.pop(group_id, None)
        else:
            authors = {
                a: AuthorSummary(v["max_seq"], v["contiguous_seq"], v["count"])
                for a, v in store.authors(group_id).items()
            }
            by_group[group_id] = GroupSummary(count, fp, MappingProxyType(authors), equivocators)
        if (count > 0) != (group_id in names):
            names = tuple(sorted(g for g, s in by_group.items() if s.count))
    outboxes = MappingProxyType(store.outbox_counts()) if outbox else previous.outboxes
    return StoreSummary(names, MappingProxyType(by_group), outboxes, store.write_error)


class SummaryBoard:
    """Where the store thread publishes: :attr:`current` is replaced whole, never changed."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: StoreSummary = EMPTY_SUMMARY

    def publish(self, store: Store) -> None:
        """On the store thread, after a job: republish what it changed, if anything."""
        groups, outbox = store.take_changes()
        if groups or outbox or store.write_error != self.current.write_error:
            self.current = summarise(store, self.current, groups, outbox)
