"""Two sides of one group that differ by d events each way, for anti-entropy tests.

The same shapes are used in-memory (test_antientropy) and between real nodes
(test_repair_nodes), so the numbers of both speak of the same situations.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

E = TypeVar("E")


def split_sides(
    events: Sequence[E], d: int, kind: str, rng: random.Random, authors: Sequence[str]
) -> tuple[list[E], list[E]]:
    """(a, b): all of ``events`` but the d the other side alone holds.

    ``tails``: each side missed the newest d events of one author; ``holes``: a
    contiguous block missing in the middle of each side; anything else: random picks.
    """
    events = list(events)
    if kind == "tails":
        tail = events[-6 * d :] if d else []
        a_only = [e for e in tail if e.author == authors[0]][-d:] if d else []
        b_only = [e for e in tail if e.author == authors[1]][-d:] if d else []
    elif kind == "holes":
        p, q = len(events) // 3, 2 * len(events) // 3
        a_only, b_only = events[p : p + d], events[q : q + d]
    else:
        picks = rng.sample(range(len(events)), 2 * d)
        a_only = [events[i] for i in picks[:d]]
        b_only = [events[i] for i in picks[d:]]
    a_skip = {e.event_id for e in b_only}
    b_skip = {e.event_id for e in a_only}
    return (
        [e for e in events if e.event_id not in a_skip],
        [e for e in events if e.event_id not in b_skip],
    )
