"""Digest documents of PROTOCOL §5.2: the query, the document, and how to build one.

The responder parses the query here (strictly: a bad `buckets`, `lo` or `hi` is
BAD_FRAME, even a present-but-empty `buckets=`) and builds the document from the sorted
index (:func:`node.sync.index.build_digest`); the requester validates the peer's
document here before trusting a single bucket of it, because the planner descends on
those boundaries and a lying or buggy peer must end the repair, not steer it into
nonsense ranges.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.ids import is_group_id, is_server_id, is_ulid
from node.sync.fingerprint import fingerprint

DEFAULT_BUCKETS = 16
MAX_BUCKETS = 256
EMPTY_FINGERPRINT = fingerprint(0, 0)

_FP_RE = re.compile(r"[0-9a-f]{32}")
_DIGITS_RE = re.compile(r"[0-9]{1,4}")


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def is_bound(value: object) -> bool:
    """A range bound: the empty string (open end) or a canonical ULID."""
    return value == "" or is_ulid(value)


def is_empty_range(lo: str, hi: str) -> bool:
    """`lo ≥ hi` with both non-empty holds nothing (§5.2)."""
    return lo != "" and hi != "" and lo >= hi


def in_range(event_id: str, lo: str, hi: str) -> bool:
    return (lo == "" or event_id >= lo) and (hi == "" or event_id < hi)


# --------------------------------------------------------------------------- query


@dataclass(frozen=True, slots=True)
class DigestQuery:
    lo: str = ""
    hi: str = ""
    buckets: int = DEFAULT_BUCKETS

    def to_query_string(self) -> str:
        """What a requester puts after `?` (ULIDs need no escaping)."""
        return f"lo={self.lo}&hi={self.hi}&buckets={self.buckets}"


def parse_digest_query(query: str | Mapping[str, str | list[str]]) -> DigestQuery:
    """Validate `lo`, `hi`, `buckets` of a digest request; unknown parameters are ignored.

    Takes the raw query string (preferred: it is the only form that can show a
    repeated parameter) or an already split mapping. A repeated parameter is
    BAD_FRAME rather than first-or-last-wins, so two implementations cannot read one
    request differently.
    """
    if isinstance(query, str):
        params: Mapping[str, str | list[str]] = parse_qs(
            query.lstrip("?"), keep_blank_values=True, strict_parsing=False
        )
    else:
        params = query

    def single(name: str) -> str | None:
        value = params.get(name)
        if value is None:
            return None
        if isinstance(value, list):
            if len(value) != 1:
                raise _bad(f"digest query: {name} given {len(value)} times")
            value = value[0]
        if not isinstance(value, str):
            raise _bad(f"digest query: {name} must be a string")
        return value

    lo = single("lo") or ""
    hi = single("hi") or ""
    if not is_bound(lo):
        raise _bad("digest query: lo must be empty or a canonical ULID")
    if not is_bound(hi):
        raise _bad("digest query: hi must be empty or a canonical ULID")
    raw = single("buckets")
    if raw is None:
        buckets = DEFAULT_BUCKETS
    else:
        if _DIGITS_RE.fullmatch(raw) is None:
            raise _bad(f"digest query: buckets must be an integer 1–{MAX_BUCKETS}")
        buckets = int(raw)
        if not 1 <= buckets <= MAX_BUCKETS:
            raise _bad(f"digest query: buckets must be 1–{MAX_BUCKETS}")
    return DigestQuery(lo, hi, buckets)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class AuthorSummary:
    max_seq: int
    contiguous_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class Bucket:
    lo: str
    hi: str
    count: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Digest:
    group_id: str
    server_id: str
    lo: str
    hi: str
    count: int
    fingerprint: str
    authors: dict[str, AuthorSummary] | None
    buckets: tuple[Bucket, ...]


def _int(value: object, what: str, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise _bad(f"digest: {what} must be an integer ≥ {minimum}")
    return value


def _fp(value: object, what: str) -> str:
    if not isinstance(value, str) or _FP_RE.fullmatch(value) is None:
        raise _bad(f"digest: {what} must be 32 lowercase hex characters")
    return value


def parse_authors(value: object) -> dict[str, AuthorSummary]:
    if not isinstance(value, dict):
        raise _bad("digest: authors must be an object")
    out: dict[str, AuthorSummary] = {}
    for author, entry in value.items():
        if not is_server_id(author):
            raise _bad(f"digest: author {author!r} is not a server id")
        if not isinstance(entry, dict):
            raise _bad(f"digest: authors[{author}] must be an object")
        max_seq = _int(entry.get("max_seq"), f"authors[{author}].max_seq", 1)
        contiguous = _int(entry.get("contiguous_seq"), f"authors[{author}].contiguous_seq")
        count = _int(entry.get("count"), f"authors[{author}].count", 1)
        # count may exceed max_seq: two events with one seq are both kept (§4.3).
        if contiguous > max_seq or count < contiguous:
            raise _bad(f"digest: authors[{author}] is inconsistent")
        out[author] = AuthorSummary(max_seq, contiguous, count)
    return out


def parse_digest(
    doc: object,
    *,
    group_id: str,
    lo: str,
    hi: str,
    buckets: int,
    server_id: str | None = None,
) -> Digest:
    """Validate a peer's digest document against the request that produced it.

    Checks everything a requester relies on: echoes of the request, the authors
    map present exactly for the whole group and summing to `count`, and buckets
    that tile ``[lo, hi)`` with strictly increasing canonical boundaries, sum to
    `count`, number ``min(buckets, count)`` (one when empty) and hold at least one
    event each. Bucket balance ("about equal") is not checked: it is the peer's
    business and does not affect correctness.
    """
    if not isinstance(doc, dict):
        raise _bad("digest: document must be a JSON object")
    if doc.get("group_id") != group_id or not is_group_id(group_id):
        raise _bad("digest: group_id does not match the request")
    peer = doc.get("server_id")
    if not is_server_id(peer) or (server_id is not None and peer != server_id):
        raise _bad("digest: server_id is not the peer's")
    if doc.get("lo") != lo or doc.get("hi") != hi:
        raise _bad("digest: lo/hi do not match the request")
    count = _int(doc.get("count"), "count")
    fp = _fp(doc.get("fingerprint"), "fingerprint")
    if count == 0 and fp != EMPTY_FINGERPRINT:
        raise _bad("digest: fingerprint of an empty range is wrong")
    authors = None
    whole = lo == "" and hi == ""
    if whole:
        if "authors" not in doc:
            raise _bad("digest: authors is required for the whole group")
        authors = parse_authors(doc["authors"])
        if sum(a.count for a in authors.values()) != count:
            raise _bad("digest: authors counts do not add up to count")
    elif "authors" in doc:
        raise _bad("digest: authors is only sent for the whole group")
    raw = doc.get("buckets")
    if not isinstance(raw, list) or not raw:
        raise _bad("digest: buckets must be a non-empty list")
    expected = 1 if count == 0 else min(buckets, count)
    if len(raw) != expected:
        raise _bad(f"digest: {len(raw)} buckets, expected {expected}")
    parsed: list[Bucket] = []
    prev_hi = lo
    total = 0
    for n, b in enumerate(raw):
        if not isinstance(b, dict):
            raise _bad("digest: each bucket must be an object")
        b_lo, b_hi = b.get("lo"), b.get("hi")
        if b_lo != prev_hi:
            raise _bad(f"digest: bucket {n} does not start where the previous one ended")
        last = n + 1 == len(raw)
        if last:
            if b_hi != hi:
                raise _bad("digest: the last bucket must end at hi")
        else:
            if not is_ulid(b_hi):
                raise _bad(f"digest: bucket {n} boundary is not a canonical ULID")
            if (b_lo != "" and b_hi <= b_lo) or (hi != "" and b_hi >= hi):
                raise _bad(f"digest: bucket {n} boundary is out of order")
        b_count = _int(b.get("count"), f"buckets[{n}].count", 0 if count == 0 else 1)
        b_fp = _fp(b.get("fingerprint"), f"buckets[{n}].fingerprint")
        total += b_count
        parsed.append(Bucket(b_lo, b_hi, b_count, b_fp))
        prev_hi = b_hi
    if total != count:
        raise _bad("digest: bucket counts do not add up to count")
    if len(parsed) == 1 and parsed[0].fingerprint != fp:
        raise _bad("digest: a single bucket must carry the range's fingerprint")
    return Digest(group_id, peer, lo, hi, count, fp, authors, tuple(parsed))
