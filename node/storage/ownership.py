"""Which worker of a server owns a group: one stable rule, written down in the store.

Several ``tapsim node`` processes (workers) may serve one server identity from one
database. Each group has exactly one owner, the worker that initiates its streams and to
which the load balancer routes its ``/encrypted-groups/{group}/…`` requests.

A group's owner is the row the store holds for it; a group without a row is owned by
:func:`hash_owner`, the CRC-32 (IEEE, as ``zlib.crc32`` and HAProxy's ``crc32``
converter compute it) of the group id's UTF-8 bytes modulo the worker count. Workers
write the row of every group they serve when they start (a claim never overwrites an
existing row), so a move is an update of one row, and the load balancer's map is the
table itself (``tapsim workers map``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def hash_owner(group_id: str, workers: int) -> int:
    """The worker (0 ≤ k < ``workers``) a group without a row belongs to."""
    return zlib.crc32(group_id.encode("utf-8")) % workers


@dataclass(frozen=True, slots=True)
class Ownership:
    """This worker's view of the owners: its index, the count, and the store's rows."""

    worker: int = 0
    workers: int = 1
    rows: Mapping[str, int] | None = None

    def owner(self, group_id: str) -> int:
        if self.workers == 1:
            return 0
        rows = self.rows or {}
        found = rows.get(group_id)
        return hash_owner(group_id, self.workers) if found is None else found

    def owns(self, group_id: str) -> bool:
        return self.owner(group_id) == self.worker

    def mine(self, groups: Iterable[str]) -> list[str]:
        return [g for g in groups if self.owns(g)]

    @property
    def label(self) -> str:
        return f"{self.worker}/{self.workers}"
