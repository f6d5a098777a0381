"""Identifier and time syntax of PROTOCOL §2: ULIDs, server and group ids, RFC 3339.

Kept apart from frame parsing because the HTTP layer (paths, digest queries) and the
store need the same rules.
"""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, datetime

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_SERVER_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_GROUP_ID_RE = re.compile(r"g![A-Za-z0-9._-]{1,128}")
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def is_ulid(value: object) -> bool:
    """Canonical ULID: 26 uppercase Crockford characters, first one 0-7."""
    return isinstance(value, str) and _ULID_RE.fullmatch(value) is not None


# ULIDs are made and read on the per-EVENT path (every frame id, every event term
# hashed), so both directions avoid a Python loop per character: reading translates
# Crockford's alphabet into the digits int(…, 32) takes; making looks up two
# characters (10 bits) at a time.
_TO_INT32 = str.maketrans(CROCKFORD, "0123456789abcdefghijklmnopqrstuv")
_PAIRS = [CROCKFORD[i >> 5] + CROCKFORD[i & 31] for i in range(1024)]
_PAIR_SHIFTS = tuple(range(120, -1, -10))  # 13 pairs: the 130 bits of 26 digits


def ulid_bytes(value: str) -> bytes:
    """The 16 bytes of a canonical ULID (big-endian, so byte order = string order)."""
    return int(value.translate(_TO_INT32), 32).to_bytes(16, "big")


# Frame ids must be unique, not secret: 80 bits from a generator seeded from the OS
# (its own instance, so a test's random.seed() cannot make two nodes collide; reseeded
# in a forked child), since a getrandom() system call per EVENT frame was a tenth of a
# sender's loop.
_RANDOM = random.Random()
if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_RANDOM.seed)


def new_ulid(now: float) -> str:
    """A fresh ULID: ``now`` in milliseconds, then 80 random bits."""
    n = (int(now * 1000) << 80) | _RANDOM.getrandbits(80)
    pairs = _PAIRS
    return "".join([pairs[(n >> shift) & 1023] for shift in _PAIR_SHIFTS])


# Reserved (§2): a server of that id would be served at `GET /keys/current`, the path of
# the answering node's own key document.
RESERVED_SERVER_ID = "current"


def is_server_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and _SERVER_ID_RE.fullmatch(value) is not None
        and value != RESERVED_SERVER_ID
    )


def is_group_id(value: object) -> bool:
    return isinstance(value, str) and _GROUP_ID_RE.fullmatch(value) is not None


def is_group_pattern(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value == "*":
        return True
    if value.endswith("*"):
        return value.startswith("g!") and re.fullmatch(r"[A-Za-z0-9._-]*", value[2:-1]) is not None
    return is_group_id(value)


def group_matches(pattern: str, group_id: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return group_id.startswith(pattern[:-1])
    return pattern == group_id


def parse_rfc3339(value: object) -> float | None:
    """Seconds since the epoch for any RFC 3339 time, or None if it is not one."""
    if not isinstance(value, str):
        return None
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        return None
    text = value.replace("t", "T").replace(" ", "T").replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    frac = m.group(7)
    if frac and len(frac) > 7:  # fromisoformat takes at most microseconds
        text = text.replace(frac, frac[:7], 1)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def format_rfc3339(ts: float) -> str:
    """What senders write: UTC, millisecond precision, `Z`."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
