"""Set fingerprints of PROTOCOL §5.1, as an O(1)-updatable accumulator.

Each event contributes h = SHA-256(ulid16 ‖ hash32) read as a 256-bit little-endian
integer; the set is summarised by (S mod 2^256, n). Addition commutes, so inserting,
removing or merging ranges is constant work, and a range's accumulator is the
difference of two prefix sums.
"""

from __future__ import annotations

import hashlib

from node.protocol.ids import ulid_bytes

MOD = 1 << 256


def event_term(event_id: str, content_hash: str) -> int:
    """h of one event: ``content_hash`` is ``sha256:<hex>`` as carried in frames."""
    raw = ulid_bytes(event_id) + bytes.fromhex(content_hash[7:])
    return int.from_bytes(hashlib.sha256(raw).digest(), "little")


def fingerprint(total: int, count: int) -> str:
    data = (total % MOD).to_bytes(32, "little") + count.to_bytes(8, "little")
    return hashlib.sha256(data).digest()[:16].hex()


class Accumulator:
    __slots__ = ("count", "total")

    def __init__(self, total: int = 0, count: int = 0) -> None:
        self.total = total % MOD
        self.count = count

    def add(self, term: int) -> None:
        self.total = (self.total + term) % MOD
        self.count += 1

    def remove(self, term: int) -> None:
        self.total = (self.total - term) % MOD
        self.count -= 1

    def fingerprint(self) -> str:
        return fingerprint(self.total, self.count)
