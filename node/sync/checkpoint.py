"""CHECKPOINT request and response of PROTOCOL §5.3, as pure logic on both sides.

Responder: :func:`parse_checkpoint_request` enforces every rule of §5.3 (BAD_FRAME
otherwise), :func:`plan_response` decides which events go back, in `event_id` order
and at most `limit`, with `want` and the responder's range summaries, and
:meth:`ResponsePlan.payload` writes the final CHECKPOINT payload once the shell knows
how many EVENT lines fitted in the 1 MiB cap (the shell encodes each event exactly
once; :func:`respond` does the whole thing given a line-size function).

Requester: :func:`pack_requests` splits and batches ranges so every request holds at
most 2048 ids and its line fits the peer's `max_message_size`, and
:func:`parse_checkpoint_response` validates what comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from heapq import merge
from itertools import islice, pairwise
from typing import Any, Protocol

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.ids import is_ulid
from node.sync.digest import in_range, is_bound, is_empty_range

MAX_IDS = 2048
MAX_FETCH = 256
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
EVENT_BYTES_CAP = 1 << 20

# Bytes a CHECKPOINT frame's envelope can add around its payload: type, a ULID id, an
# origin of up to 64 characters, a sequence, a group id of up to 130 characters.
FRAME_OVERHEAD = 320
_ID_BYTES = 29  # "<26 chars>", with its comma
_RANGE_BYTES = 80  # {"lo":"<26>","hi":"<26>","ids":[]}, with its comma
_BASE_BYTES = 96  # {"ranges":[],"fetch":[],"after":"<26>","limit":10000}


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


@dataclass(frozen=True, slots=True)
class CheckpointRange:
    lo: str
    hi: str
    ids: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "ids": list(self.ids)}


@dataclass(frozen=True, slots=True)
class CheckpointRequest:
    ranges: tuple[CheckpointRange, ...]
    fetch: tuple[str, ...] = ()
    after: str = ""
    limit: int = DEFAULT_LIMIT

    def to_payload(self) -> dict:
        payload: dict[str, Any] = {"ranges": [r.to_dict() for r in self.ranges]}
        if self.fetch:
            payload["fetch"] = list(self.fetch)
        if self.after:
            payload["after"] = self.after
        payload["limit"] = self.limit
        return payload

    def page_after(self, cursor: str) -> CheckpointRequest:
        """The same request continued after ``cursor`` (the previous page's `next`)."""
        return CheckpointRequest(self.ranges, self.fetch, cursor, self.limit)


def _ulid_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(is_ulid(v) for v in value):
        raise _bad(f"checkpoint: {what} must be a list of canonical ULIDs")
    return value


def parse_checkpoint_request(payload: object) -> CheckpointRequest:
    """Every rule of §5.3 for a request; ids outside their range are dropped, not rejected."""
    if not isinstance(payload, dict):
        raise _bad("checkpoint: payload must be an object")
    raw_ranges = payload.get("ranges")
    if not isinstance(raw_ranges, list) or not raw_ranges:
        raise _bad("checkpoint: ranges must be a non-empty list")
    ranges: list[CheckpointRange] = []
    total_ids = 0
    for n, r in enumerate(raw_ranges):
        if not isinstance(r, dict):
            raise _bad(f"checkpoint: ranges[{n}] must be an object")
        lo = r.get("lo", "")
        hi = r.get("hi", "")
        if not is_bound(lo) or not is_bound(hi):
            raise _bad(f"checkpoint: ranges[{n}] lo/hi must be empty or canonical ULIDs")
        if "ids" not in r:
            raise _bad(f"checkpoint: ranges[{n}].ids is required")
        ids = _ulid_list(r["ids"], f"ranges[{n}].ids")
        total_ids += len(ids)
        if total_ids > MAX_IDS:
            raise _bad(f"checkpoint: more than {MAX_IDS} ids")
        kept = tuple(sorted({i for i in ids if in_range(i, lo, hi)}))
        ranges.append(CheckpointRange(lo, hi, kept))
    _check_disjoint(ranges)
    fetch = payload.get("fetch")
    fetch = [] if fetch is None else _ulid_list(fetch, "fetch")
    if len(fetch) > MAX_FETCH:
        raise _bad(f"checkpoint: more than {MAX_FETCH} fetch ids")
    after = payload.get("after")
    if after is None:
        after = ""
    if not is_bound(after):
        raise _bad("checkpoint: after must be empty or a canonical ULID")
    limit = payload.get("limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"checkpoint: limit must be an integer 1–{MAX_LIMIT}")
    return CheckpointRequest(tuple(ranges), tuple(sorted(set(fetch))), after, limit)


def _check_disjoint(ranges: Sequence[CheckpointRange]) -> None:
    # Empty ranges (lo ≥ hi) hold nothing and overlap nothing.
    live = sorted((r for r in ranges if not is_empty_range(r.lo, r.hi)), key=lambda r: r.lo)
    for a, b in pairwise(live):
        if a.hi == "" or a.hi > b.lo:
            raise _bad("checkpoint: ranges overlap")


# --------------------------------------------------------------------------- responder


class CheckpointSource(Protocol):
    """What the responder reads; the store implements it (group first, as everywhere)."""

    def ids_in_range(self, group: str, lo: str, hi: str) -> list[str]: ...

    def range_summary(self, group: str, lo: str, hi: str) -> tuple[int, str]: ...

    def get_event(self, group: str, event_id: str) -> object | None: ...


@dataclass(slots=True)
class ResponsePlan:
    """The events that may go back (in order, at most `limit`) and the rest of the answer.

    ``candidates`` is what the responder would send without the byte cap; the shell
    encodes them in order, stops before the EVENT lines would pass 1 MiB (always
    sending at least one), and asks :meth:`payload` with the number it sent.
    """

    candidates: list[str]
    truncated: bool  # more candidates existed beyond `limit`
    want: list[str]
    ranges: list[dict] = field(default_factory=list)

    def payload(self, sent: int | None = None) -> dict:
        sent = len(self.candidates) if sent is None else sent
        if not 0 <= sent <= len(self.candidates) or (sent == 0 and self.candidates):
            raise ValueError("sent must be 1..len(candidates) when there are candidates")
        more = self.truncated or sent < len(self.candidates)
        payload: dict[str, Any] = {"want": self.want, "more": more}
        if more:
            payload["next"] = self.candidates[sent - 1]
        payload["ranges"] = self.ranges
        return payload


def plan_response(request: CheckpointRequest, source: CheckpointSource, group: str) -> ResponsePlan:
    """Decide the answer to a validated request from the responder's set.

    Work per page is proportional to the ranges' sizes, never the group's: each
    range is read once, capped at `limit` + 1 candidates before merging.
    """
    after, limit = request.after, request.limit
    per_range: list[list[str]] = []
    want: list[str] = []
    summaries: list[dict] = []
    for r in request.ranges:
        count, fp = source.range_summary(group, r.lo, r.hi)
        summaries.append({"lo": r.lo, "hi": r.hi, "count": count, "fingerprint": fp})
        if is_empty_range(r.lo, r.hi):
            continue
        held = source.ids_in_range(group, r.lo, r.hi) if count else []
        theirs = set(r.ids)
        if theirs:
            mine = set(held)
            want.extend(i for i in r.ids if i not in mine)
        lacking = (i for i in held if i > after and i not in theirs)
        per_range.append(list(islice(lacking, limit + 1)))
    fetched = [i for i in request.fetch if i > after and source.get_event(group, i) is not None]
    if fetched:
        per_range.append(fetched)
    ordered: list[str] = []
    last = None
    for i in merge(*per_range):
        if i != last:
            ordered.append(i)
            last = i
            if len(ordered) > limit:
                break
    truncated = len(ordered) > limit
    return ResponsePlan(ordered[:limit], truncated, sorted(want), summaries)


def respond(
    request: CheckpointRequest,
    source: CheckpointSource,
    group: str,
    line_size: Callable[[str], int],
    byte_cap: int = EVENT_BYTES_CAP,
) -> tuple[list[str], dict]:
    """Ids of the EVENT frames to send, in order, and the final CHECKPOINT payload.

    ``line_size(event_id)`` is the byte length of that event's EVENT line as the
    shell will write it, its ``\\n`` included (§5.3 counts whole lines); EVENT lines
    stop before they would pass ``byte_cap`` (the final CHECKPOINT frame is not
    counted), but at least one is always sent so paging makes progress. The range
    summaries are in the order of the request's ranges.
    """
    plan = plan_response(request, source, group)
    used = 0
    sent = 0
    for event_id in plan.candidates:
        size = line_size(event_id)
        if sent and used + size > byte_cap:
            break
        used += size
        sent += 1
    return plan.candidates[:sent], plan.payload(sent)


# --------------------------------------------------------------------------- requester


def request_bytes(req: CheckpointRequest) -> int:
    """An upper bound of the request line's size (payload plus frame envelope)."""
    return (
        FRAME_OVERHEAD
        + _BASE_BYTES
        + _RANGE_BYTES * len(req.ranges)
        + _ID_BYTES * (sum(len(r.ids) for r in req.ranges) + len(req.fetch))
    )


def pack_requests(
    ranges: Sequence[CheckpointRange],
    *,
    max_ids: int = MAX_IDS,
    max_message_size: int = 65536,
    limit: int = DEFAULT_LIMIT,
) -> list[CheckpointRequest]:
    """Batch sorted, disjoint ranges into as few requests as the two limits allow.

    A range holding more ids than fit is split at its own ids: ``[lo, ids[k])`` and
    ``[ids[k], hi)`` cover exactly the original range, so splitting never loses or
    duplicates an event on either side.
    """
    room = max_message_size - FRAME_OVERHEAD - _BASE_BYTES
    id_room = min(max_ids, (room - _RANGE_BYTES) // _ID_BYTES)
    if id_room < 1:
        raise ValueError(f"max_message_size {max_message_size} cannot hold a checkpoint")
    out: list[CheckpointRequest] = []
    current: list[CheckpointRange] = []
    room_ids, room_bytes = id_room, room

    def flush() -> None:
        nonlocal current, room_ids, room_bytes
        if current:
            out.append(CheckpointRequest(tuple(current), limit=limit))
        current, room_ids, room_bytes = [], id_room, room

    for r in ranges:
        lo, ids = r.lo, r.ids
        while True:
            # A fresh request always has room for a range with at least one id.
            fit = min(room_ids, (room_bytes - _RANGE_BYTES) // _ID_BYTES)
            if fit < 0 or (fit == 0 and ids):
                flush()
                continue
            if len(ids) <= fit:
                current.append(CheckpointRange(lo, r.hi, tuple(ids)))
                room_ids -= len(ids)
                room_bytes -= _RANGE_BYTES + _ID_BYTES * len(ids)
                break
            cut = ids[fit]
            current.append(CheckpointRange(lo, cut, tuple(ids[:fit])))
            flush()
            lo, ids = cut, ids[fit:]
    flush()
    return out


@dataclass(frozen=True, slots=True)
class RangeSummary:
    lo: str
    hi: str
    count: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class CheckpointResponse:
    want: tuple[str, ...]
    more: bool
    next: str | None
    ranges: tuple[RangeSummary, ...]


def parse_checkpoint_response(payload: object) -> CheckpointResponse:
    """Shape of the responder's final CHECKPOINT payload; BAD_FRAME when malformed."""
    if not isinstance(payload, dict):
        raise _bad("checkpoint response: payload must be an object")
    want = payload.get("want")
    want = [] if want is None else _ulid_list(want, "want")
    more = payload.get("more")
    if not isinstance(more, bool):
        raise _bad("checkpoint response: more must be a boolean")
    nxt = payload.get("next")
    if more and not is_ulid(nxt):
        raise _bad("checkpoint response: next must be a canonical ULID when more is true")
    raw = payload.get("ranges")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise _bad("checkpoint response: ranges must be a list")
    ranges: list[RangeSummary] = []
    for n, r in enumerate(raw):
        if not isinstance(r, dict):
            raise _bad(f"checkpoint response: ranges[{n}] must be an object")
        lo, hi = r.get("lo", ""), r.get("hi", "")
        count, fp = r.get("count"), r.get("fingerprint")
        if not is_bound(lo) or not is_bound(hi):
            raise _bad(f"checkpoint response: ranges[{n}] lo/hi are malformed")
        if type(count) is not int or count < 0:
            raise _bad(f"checkpoint response: ranges[{n}].count must be an integer ≥ 0")
        if not isinstance(fp, str) or len(fp) != 32 or any(c not in "0123456789abcdef" for c in fp):
            raise _bad(f"checkpoint response: ranges[{n}].fingerprint is malformed")
        ranges.append(RangeSummary(lo, hi, count, fp))
    return CheckpointResponse(tuple(want), more, nxt if more else None, tuple(ranges))
