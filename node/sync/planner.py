"""The repair planner of PROTOCOL §5: one repair of one (peer, group), sans-IO.

The planner never touches a socket or the store's write side. It reads our own set
through :class:`DigestSource`, emits requests (:class:`FetchDigest`,
:class:`SendCheckpoint`, :class:`SendEvents`) and ends with :class:`Done` or
:class:`Failed`; the shell performs each request (concurrently if it likes) and hands
the answer back through the matching ``on_*`` call, passing the very action object
it answers.

Strategy, per pass:

1. Whole-group digest. Equal fingerprints end the repair in one round trip. The
   `authors` maps are compared: they bound how many events each side lacks, and when
   neither side has holes (every author contiguous on both sides) the differences can
   only be tails, i.e. the newest events, so the whole suffix from the first differing
   bucket is checkpointed at once when our side of it is small
   (``tail_checkpoint_ids``) — missing tails in one more round trip, without descending.
2. Descent. For every bucket of the peer's digest we compute our own fingerprint over
   the peer's boundaries and descend (a digest of that bucket) only where they differ.
   A differing range that holds few ids on either side (≤ ``checkpoint_threshold``)
   is not descended further but queued for a checkpoint. Each difference therefore
   costs O(log n) digests of O(buckets) bytes each: O(d · log n) in all.
3. Checkpoint. Once no digest is in flight the queued ranges (adjacent ones merged)
   are packed into as few CHECKPOINT requests as the id and byte limits allow, and
   `more`/`next` pages are followed.
4. Equivocation. A checkpointed range whose ids all match on both sides but whose
   fingerprints still differ holds the same ids with other contents: those ids are
   asked for with `fetch`, the versions compared one by one (a one-id range summary
   of ours against the fetched content hash), and our versions of the differing ones
   sent back so both sides can apply the lower-hash rule of §4.3. A range is fetched
   again only while it holds ids never fetched before; one that still differs after
   that is reported (``unresolved``), not retried.
5. Send. The union of the responder's `want` lists is sent to the peer.

The shell must store the events of a checkpoint response (after verifying them like
any EVENT) only when the ``on_checkpoint_response`` call did not fail, and before it
performs the actions that call returned; that is what makes the next pass see them.

Every pass after the first starts with a fresh whole-group digest: it verifies the
previous pass and repairs what it missed (live traffic, an equivocation hidden behind
other differences). Passes are bounded (``max_passes``), a pass that changed nothing
ends the repair, and so do the request budget and the descent depth: the planner
cannot loop.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.ids import CROCKFORD, is_ulid
from node.sync.actions import (
    MARK_DIFFERS,
    MARK_EQUAL,
    MARK_REPAIRED,
    MAX_RANGE_MARKS,
    Action,
    DigestSource,
    Done,
    EventRef,
    Failed,
    FetchDigest,
    RepairState,
    RepairStats,
    Request,
    SendCheckpoint,
    SendEvents,
)
from node.sync.checkpoint import (
    MAX_FETCH,
    MAX_IDS,
    MAX_LIMIT,
    CheckpointRange,
    CheckpointRequest,
    pack_requests,
    parse_checkpoint_response,
    request_bytes,
)
from node.sync.digest import (
    AuthorSummary,
    Digest,
    in_range,
    parse_authors,
    parse_digest,
)
from node.sync.fingerprint import event_term, fingerprint

DEFAULT_THRESHOLD = 128


__all__ = [
    "Action",
    "DigestSource",
    "Done",
    "EventRef",
    "Failed",
    "FetchDigest",
    "RepairPlanner",
    "RepairState",
    "RepairStats",
    "Request",
    "SendCheckpoint",
    "SendEvents",
    "ulid_successor",
]


# --------------------------------------------------------------------------- helpers


def ulid_successor(event_id: str) -> str:
    """The next canonical ULID (``""``, the open end, after the largest one)."""
    chars = list(event_id)
    for pos in range(len(chars) - 1, -1, -1):
        n = CROCKFORD.index(chars[pos])
        limit = 7 if pos == 0 else 31
        if n < limit:
            chars[pos] = CROCKFORD[n + 1]
            return "".join(chars)
        chars[pos] = "0"
    return ""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def _no_holes(s: AuthorSummary) -> bool:
    return s.contiguous_seq == s.max_seq == s.count


@dataclass(slots=True)
class _RangeState:
    rng: CheckpointRange
    count: int  # ours, when the request was built
    fingerprint: str


@dataclass(slots=True)
class _Chain:
    """One CHECKPOINT request and its pages."""

    first: CheckpointRequest
    ranges: list[_RangeState]
    listed: set[str]  # every id we listed
    fetch: frozenset[str] = frozenset()
    received: set[str] = field(default_factory=set)
    want: set[str] = field(default_factory=set)
    los: list[str] = field(default_factory=list)  # sorted starts of `ranges`, for bisection

    def __post_init__(self) -> None:
        self.ranges.sort(key=lambda r: r.rng.lo)
        self.los = [r.rng.lo for r in self.ranges]


class RepairPlanner:
    """State machine for one repair of ``group_id`` against one peer."""

    def __init__(
        self,
        local: DigestSource,
        group_id: str,
        peer_id: str | None = None,
        *,
        buckets: int = 16,
        checkpoint_threshold: int = DEFAULT_THRESHOLD,
        max_ids_per_request: int = MAX_IDS,
        max_message_size: int = 65536,
        limit: int = 1000,
        max_passes: int = 3,
        max_depth: int = 24,
        max_requests: int = 10000,
        tail_checkpoint_ids: int = 1024,
        descent_levels: int | None = None,
    ) -> None:
        if not 2 <= buckets <= 256:
            raise ValueError("buckets must be 2–256 for a descent to make progress")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1–{MAX_LIMIT}")
        self.local = local
        self.group_id = group_id
        self.peer_id = peer_id
        self.buckets = buckets
        self.threshold = max(1, checkpoint_threshold)
        self.max_ids = min(max_ids_per_request, MAX_IDS)
        self.max_message_size = max_message_size
        self.limit = limit
        self.max_passes = max_passes
        self.max_depth = max_depth
        self.max_requests = max_requests
        self.tail_checkpoint_ids = min(tail_checkpoint_ids, self.max_ids)
        self.descent_levels = descent_levels
        self.stats = RepairStats(started_at=0.0)
        self.state = RepairState.UNKNOWN
        self.finished = False
        self._outstanding: set[Request] = set()
        self._depth: dict[FetchDigest, int] = {}
        self._chains: dict[SendCheckpoint, _Chain] = {}
        self._pending: list[tuple[str, str]] = []  # ranges to checkpoint this pass
        self._suspects: list[CheckpointRange] = []  # ranges to `fetch` this pass
        self._to_send: set[str] = set()
        self._to_send_equivocated: set[str] = set()
        self._fetched_once: set[str] = set()
        self._changed = False  # this pass moved events
        self._issued = 0
        # Round of each request in flight (1 = issued by start) and of the answer being
        # handled: what an answer leads to is one round later.
        self._round_of: dict[Request, int] = {}
        self._round = 0

    # ----------------------------------------------------------------- driving

    def start(self, now: float) -> list[Action]:
        self.stats.started_at = now
        self.state = RepairState.REPAIRING
        return self._next_pass(now)

    def on_digest(self, action: FetchDigest, doc: object, nbytes: int, now: float) -> list[Action]:
        if not self._accept(action, nbytes):
            return []
        self.stats.digests += 1
        depth = self._depth.pop(action)
        try:
            digest = parse_digest(
                doc,
                group_id=self.group_id,
                lo=action.lo,
                hi=action.hi,
                buckets=action.buckets,
                server_id=self.peer_id,
            )
        except ProtocolError as exc:
            return self._fail(f"malformed digest from peer: {exc.message}", now)
        if self.peer_id is None:
            self.peer_id = digest.server_id
        out: list[Action] = []
        if digest.authors is not None:
            equal = self._compare_top(digest)
            if equal:
                return self._finish(True, now)
            if self.stats.passes >= self.max_passes:
                return self._finish(False, now)
            self._descend(digest, depth, out, now, tails=self.stats.tails_only)
        else:
            self._descend(digest, depth, out, now, tails=False)
        return out + self._advance(now)

    def on_checkpoint_response(
        self,
        action: SendCheckpoint,
        events: Sequence[EventRef],
        payload: object,
        nbytes: int,
        now: float,
    ) -> list[Action]:
        if not self._accept(action, nbytes):
            return []
        self.stats.checkpoints += 1
        chain = self._chains.pop(action)
        req = action.request
        try:
            resp = parse_checkpoint_response(payload)
            self._check_events(chain, req, events, resp.more, resp.next)
        except ProtocolError as exc:
            return self._fail(f"malformed checkpoint response from peer: {exc.message}", now)
        unknown = [w for w in resp.want if w not in chain.listed]
        if unknown:
            return self._fail(f"peer wants {unknown[0]}, which we did not list", now)
        self.stats.events_fetched += len(events)
        if events:
            self._changed = True
        chain.want.update(resp.want)
        for ev in events:
            if ev.event_id in chain.fetch:
                self._compare_version(ev)
            else:
                chain.received.add(ev.event_id)
        if resp.more:
            assert resp.next is not None
            page = SendCheckpoint(req.page_after(resp.next))
            self._chains[page] = chain
            self.stats.pages += 1
            return self._issue([page], now) + self._advance(now)
        self._close_chain(chain, resp.ranges)
        return self._advance(now)

    def on_events_sent(self, action: SendEvents, nbytes: int, now: float) -> list[Action]:
        if not self._accept(action, nbytes):
            return []
        self.stats.sends += 1
        self.stats.events_sent += len(action.event_ids)
        if action.event_ids:
            self._changed = True
        return self._advance(now)

    def on_failure(self, action: Request, reason: str, now: float) -> list[Action]:
        """The shell could not perform ``action`` (HTTP error, timeout, connection lost)."""
        if self.finished or action not in self._outstanding:
            return []
        self._outstanding.discard(action)
        return self._fail(reason, now)

    # ----------------------------------------------------------------- internals

    def _accept(self, action: Request, nbytes: int) -> bool:
        if self.finished or action not in self._outstanding:
            return False  # late answer after the end, or not ours: ignore
        self._outstanding.discard(action)
        self._round = self._round_of.pop(action, self._round)
        self.stats.round_trips += 1
        self.stats.bytes += nbytes
        return True

    def _issue(self, actions: list[Request], now: float) -> list[Action]:
        self._issued += len(actions)
        if self._issued > self.max_requests:
            return self._fail(f"request budget of {self.max_requests} exhausted", now)
        self._outstanding.update(actions)
        nxt = self._round + 1
        for a in actions:
            self._round_of[a] = nxt
        if actions and nxt > self.stats.rounds:
            self.stats.rounds = nxt
        return list(actions)

    def _next_pass(self, now: float) -> list[Action]:
        self.stats.passes += 1
        self._changed = False
        top = FetchDigest("", "", self.buckets)
        self._depth[top] = 0
        return self._issue([top], now)

    def _compare_top(self, digest: Digest) -> bool:
        s = self.stats
        count, fp = self.local.summary(self.group_id)
        s.ranges_compared += 1
        s.local_count, s.local_fingerprint = count, fp
        s.remote_count, s.remote_fingerprint = digest.count, digest.fingerprint
        if count == digest.count and fp == digest.fingerprint:
            self._mark("", "", MARK_EQUAL)
            return True
        self._mark("", "", MARK_DIFFERS)
        remote = digest.authors or {}
        try:
            local = parse_authors(self.local.authors(self.group_id))
        except ProtocolError:  # our own store is the authority; never fail on it
            local = {}
        if s.passes == 1:
            s.local_authors, s.remote_authors = local, remote
            none = AuthorSummary(0, 0, 0)
            lack = surplus = 0
            tails = True
            for author in set(local) | set(remote):
                ours, theirs = local.get(author, none), remote.get(author, none)
                lack += max(0, theirs.count - ours.count)
                surplus += max(0, ours.count - theirs.count)
                if not (_no_holes(ours) and _no_holes(theirs)):
                    tails = False
            s.we_lack_at_least, s.peer_lacks_at_least, s.tails_only = lack, surplus, tails
        return False

    def _descend(
        self, digest: Digest, depth: int, out: list[Action], now: float, *, tails: bool
    ) -> None:
        group, s = self.group_id, self.stats
        differing = []
        for b in digest.buckets:
            count, fp = self.local.range_summary(group, b.lo, b.hi)
            s.ranges_compared += 1
            if count != b.count or fp != b.fingerprint:
                differing.append((b, count))
                self._mark(b.lo, b.hi, MARK_DIFFERS)
            else:
                self._mark(b.lo, b.hi, MARK_EQUAL)
        if not differing:
            # The range differs as a whole but no bucket does: the set changed under us
            # (live traffic). The next pass sees the new state.
            self._changed = True
            return
        if tails:
            first = differing[0][0]
            ours, _ = self.local.range_summary(group, first.lo, digest.hi)
            if ours <= self.tail_checkpoint_ids:
                self._pending.append((first.lo, digest.hi))
                return
        digests: list[Request] = []
        for b, ours in differing:
            if ours <= self.threshold or b.count <= self.threshold or depth >= self.max_depth:
                self._pending.append((b.lo, b.hi))
            else:
                sub = FetchDigest(b.lo, b.hi, self._sub_buckets(max(ours, b.count), depth + 1))
                self._depth[sub] = depth + 1
                digests.append(sub)
        if digests:
            out.extend(self._issue(digests, now))

    def _sub_buckets(self, size: int, depth: int) -> int:
        """Buckets for a digest at ``depth`` (1 = just below the top) of a range of ``size``.

        Without ``descent_levels`` every digest has ``buckets``. With it, the ranges
        below the top are cut so they reach the checkpoint threshold in that many levels:
        ``(size / threshold) ** (1 / levels left)`` buckets each. A digest's bytes are
        about linear in its buckets while the narrowing is only logarithmic, so several
        narrow levels locate one difference with fewer bytes than two wide ones, at the
        price of more sequential rounds (one per level).
        """
        if self.descent_levels is None:
            return self.buckets
        left = max(1, self.descent_levels - depth + 1)
        want = math.ceil((size / self.threshold) ** (1 / left))
        return max(2, min(self.buckets, want))

    def _check_events(
        self,
        chain: _Chain,
        req: CheckpointRequest,
        events: Sequence[EventRef],
        more: bool,
        nxt: str | None,
    ) -> None:
        if len(events) > req.limit:
            raise _bad(f"{len(events)} EVENTs for a limit of {req.limit}")
        prev = req.after
        for ev in events:
            eid = ev.event_id
            if not is_ulid(eid) or (prev and eid <= prev):
                raise _bad("EVENTs are not in increasing event_id order after the cursor")
            prev = eid
            if eid in chain.fetch:
                continue
            if eid in chain.listed:
                raise _bad(f"peer sent {eid}, which we hold and did not fetch")
            k = bisect_right(chain.los, eid) - 1
            if k < 0 or not in_range(eid, chain.ranges[k].rng.lo, chain.ranges[k].rng.hi):
                raise _bad(f"peer sent {eid}, outside every requested range")
        if more and (not events or nxt != events[-1].event_id):
            raise _bad("more is true but next is not the last event sent")

    def _compare_version(self, ev: EventRef) -> None:
        """A fetched version against ours: a one-id range summary is our version's print."""
        eid = ev.event_id
        count, fp = self.local.range_summary(self.group_id, eid, ulid_successor(eid))
        if count != 1:
            return  # we lost or never had it: an ordinary fetched event
        try:
            theirs = fingerprint(event_term(eid, ev.content_hash), 1)
        except (ValueError, KeyError):
            return  # the shell's verification rejects a malformed hash
        if theirs != fp:
            self.stats.equivocations.add(eid)
            self._to_send_equivocated.add(eid)

    def _mark(self, lo: str, hi: str, mark: str) -> None:
        marks = self.stats.range_marks
        if len(marks) < MAX_RANGE_MARKS:
            marks.append((lo, hi, mark))

    def _close_chain(self, chain: _Chain, summaries: Sequence) -> None:
        self._to_send.update(chain.want)
        if chain.fetch:
            return
        for rs in chain.ranges:
            self._mark(rs.rng.lo, rs.rng.hi, MARK_REPAIRED)
        by_range = {(r.lo, r.hi): r for r in summaries}
        for rs in chain.ranges:
            r = rs.rng
            theirs = by_range.get((r.lo, r.hi))
            if theirs is None or theirs.fingerprint == rs.fingerprint:
                continue
            if theirs.count != rs.count or chain.want.intersection(r.ids):
                continue  # id differences: handled by this exchange, checked next pass
            if any(in_range(i, r.lo, r.hi) for i in chain.received):
                continue
            # Same ids on both sides (as far as counts tell), other contents.
            fresh = [i for i in r.ids if i not in self._fetched_once]
            if fresh:
                self._fetched_once.update(fresh)
                self._suspects.append(CheckpointRange(r.lo, r.hi, r.ids))
            else:
                self.stats.unresolved.append((r.lo, r.hi))

    def _advance(self, now: float) -> list[Action]:
        """Move to the next phase once nothing is in flight."""
        if self.finished or self._outstanding:
            return []
        self._round = self.stats.rounds  # a barrier: the next phase follows the slowest chain
        if self._pending:
            return self._issue(self._checkpoint_requests(), now)
        if self._suspects:
            return self._issue(self._fetch_requests(), now)
        sends: list[Request] = []
        if self._to_send:
            sends.append(SendEvents(tuple(sorted(self._to_send))))
        if self._to_send_equivocated:
            sends.append(SendEvents(tuple(sorted(self._to_send_equivocated)), True))
        self._to_send, self._to_send_equivocated = set(), set()
        if sends:
            return self._issue(sends, now)
        if not self._changed:
            return self._finish(False, now)
        return self._next_pass(now)

    def _checkpoint_requests(self) -> list[SendCheckpoint]:
        merged: list[list[str]] = []
        for lo, hi in sorted(self._pending, key=lambda r: r[0]):
            if merged and merged[-1][1] == lo and lo != "":
                merged[-1][1] = hi
            else:
                merged.append([lo, hi])
        self._pending = []
        group = self.group_id
        ranges = []
        for lo, hi in merged:
            self.stats.mismatching_ranges.append((lo, hi))
            ranges.append(CheckpointRange(lo, hi, tuple(self.local.ids_in_range(group, lo, hi))))
        requests = pack_requests(
            ranges,
            max_ids=self.max_ids,
            max_message_size=self.max_message_size,
            limit=self.limit,
        )
        out = []
        for req in requests:
            states = []
            for r in req.ranges:
                count, fp = self.local.range_summary(group, r.lo, r.hi)
                states.append(_RangeState(r, count, fp))
            listed = {i for r in req.ranges for i in r.ids}
            action = SendCheckpoint(req)
            self._chains[action] = _Chain(req, states, listed)
            out.append(action)
        return out

    def _fetch_requests(self) -> list[SendCheckpoint]:
        # One range plus a fetch list: every id is listed twice.
        empty = CheckpointRequest((CheckpointRange("", ""),))
        room = self.max_message_size - request_bytes(empty)
        per = max(1, min(MAX_FETCH, self.max_ids, room // 58))
        out = []
        for r in self._suspects:
            lo, ids = r.lo, list(r.ids)
            while ids:
                chunk, rest = ids[:per], ids[per:]
                hi = rest[0] if rest else r.hi
                rng = CheckpointRange(lo, hi, tuple(chunk))
                req = CheckpointRequest((rng,), tuple(chunk), "", self.limit)
                count, fp = self.local.range_summary(self.group_id, lo, hi)
                action = SendCheckpoint(req)
                self._chains[action] = _Chain(
                    req, [_RangeState(rng, count, fp)], set(chunk), frozenset(chunk)
                )
                out.append(action)
                lo, ids = hi, rest
        self._suspects = []
        return out

    def _finish(self, converged: bool, now: float) -> list[Action]:
        s = self.stats
        s.converged = converged
        s.finished_at = now
        self.finished = True
        self._outstanding.clear()
        if s.equivocations or s.unresolved:
            self.state = RepairState.EQUIVOCATION
        else:
            self.state = RepairState.EQUAL if converged else RepairState.DIFFERS
        return [Done(s)]

    def _fail(self, reason: str, now: float) -> list[Action]:
        s = self.stats
        s.error = reason
        s.finished_at = now
        self.finished = True
        self.state = RepairState.FAILED
        self._outstanding.clear()
        return [Failed(reason, s)]
