"""The asyncio shell around one :class:`~node.session.StreamSession`.

The session decides everything; the runner only carries it out: it feeds the
session bytes and the wall-clock time, hands EVENTs to the ingest queue and
reports their outcomes once they are durable, arms one timer for the session's next
deadline, pumps outgoing EVENTs while credit lasts, and gives the transport the bytes
to write. It works the same under the server (it *is* the transport's
``StreamEndpoint``) and under the client (a reader task calls :meth:`feed`, a writer
task drains :meth:`outgoing`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from node.protocol import session as s
from node.protocol.errors import ErrorCode
from node.protocol.frames import Event
from node.protocol.session import EventTooLarge, Role, StreamSession
from node.runtime.outbox import Outbox
from node.runtime.stream_key import StreamKey

LIVE_QUEUE_MAX = 10_000  # events kept for a peer served without an outbox (§4)
# ... and at most this much ciphertext: a peer that stops reading must not pin every
# event stored meanwhile (it gets what it missed through anti-entropy).
LIVE_QUEUE_BYTES = 4 * 1024 * 1024
# EVENT bytes sent or queued and not yet acknowledged. The pump stops here, whatever the
# peer's CREDIT says (up to 2 GiB): hypercorn's send() does not wait while the peer's
# HTTP/2 window is closed (an empty pop() releases the writer), so a peer that grants
# much and reads nothing would otherwise cost all that memory. 4 MiB is the HTTP/2
# stream window of §1, 4 × the default byte credit: never the limit for a normal peer.
MAX_UNACKED_BYTES = 4 * 1024 * 1024
# Events read from the outbox in one turn of the store thread; the next page is read
# when fewer than half of one wait to be sent (4 × the default credit window).
OUTBOX_PAGE = 1024


SubmitEvent = Callable[[str, Event, str, Callable[[s.Outcome], None]], None]
"""(group, event, hop, callback): queue an EVENT for ingest; the callback gets its
durable outcome (node.storage.ingest_queue.IngestQueue.submit)."""


class StreamHooks(Protocol):
    """What the node learns of a stream's life (node.runtime.streams.StreamRegistry)."""

    def stream_up(self, runner: StreamRunner) -> bool:
        """The handshake completed; returns whether this stream drains the outbox."""
        ...

    def stream_event(self, runner: StreamRunner, event: object) -> None: ...

    def stream_ended(self, runner: StreamRunner) -> None: ...


class StreamRunner:
    """One live stream of the node, in either role."""

    def __init__(
        self,
        session: StreamSession,
        *,
        ingest: SubmitEvent,
        outbox: Outbox,
        hooks: StreamHooks,
        log: Callable[[str], None],
        peer_url: str = "",
    ) -> None:
        self.session = session
        self._ingest = ingest
        self._outbox = outbox
        self._hooks = hooks
        self._log = log
        self.group_id = session.config.group_id
        self.role = session.role
        self.peer_url = peer_url
        self.started_at = time.time()
        self.uses_outbox = False
        self.finished = False  # outgoing() returned None, or the stream was aborted
        self.aborted = False
        self.end_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        self.done = asyncio.Event()  # set once the runner has finished
        self._writable = asyncio.Event()
        self._more = asyncio.Event()  # new events to send, or new credit
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pump_task: asyncio.Task | None = None
        self._sent: set[str] = set()  # event ids written and not yet acknowledged
        # Outbox read-ahead: pages read before the credit to send them arrives, so a
        # CREDIT is answered from memory, not after a turn of the store thread (which
        # may be in an fsync). _read_to is the highest event_id read; _read_gen
        # discards a page read before a rescan; _notified counts notify_stored calls,
        # so a short page read before a commit is not taken to mean "nothing more".
        self._ahead: deque[Event] = deque()
        self._read_to = ""
        self._read_gen = 0
        self._reading: asyncio.Task | None = None
        self._dry = False  # the last page was short: nothing more after _read_to
        self._notified = 0
        self._rescan = False
        self._live: deque[Event] = deque(maxlen=LIVE_QUEUE_MAX)
        self._live_bytes = 0
        self._held: list[tuple[int, s.Outcome]] = []  # outcomes held while ACKs are paused
        # time.monotonic() when the peer last had under half its credit left: it sends as
        # fast as we let it, so it has a backlog for us (node.runtime.repair waits for it).
        self.credit_bound_at: float | None = None
        self.acks_paused = False
        # The wire recorder's tap (node.runtime.recorder): (direction, bytes) as read or
        # written; None while not recording.
        self.recording: Callable[[str, bytes], None] | None = None
        self._schedule()

    # ------------------------------------------------------------------ identity

    @property
    def peer_id(self) -> str | None:
        return self.session.peer_id

    @property
    def key(self) -> StreamKey:
        return StreamKey.of(self)

    # ------------------------------------------------------------------ transport side

    def start(self) -> None:
        """Initiator: say HELLO."""
        if self.role is Role.INITIATOR:
            self.session.initiate(time.time())
            self._changed()

    def feed(self, data: bytes) -> None:
        # After an orderly close of our side the peer's last ACKs still count, so only
        # an abort stops the reading.
        if self.aborted:
            return
        if self.recording is not None:
            self.recording("in", data)
        session = self.session
        self._dispatch(session.receive_data(data, time.time()))
        if 2 * session.credit_in_events < session.window_events:
            self.credit_bound_at = time.monotonic()

    def feed_eof(self) -> None:
        if self.aborted:
            return
        self._dispatch(self.session.receive_eof(time.time()))

    async def outgoing(self) -> bytes | None:
        session = self.session
        while True:
            if self.aborted:  # whatever is still queued stays in the outbox
                return None
            data = session.data_to_send(time.time())
            if data:
                if self.recording is not None:
                    self.recording("out", data)
                return data
            if session.ended:
                self._finish(session.end_reason or "ended")
                return None
            self._writable.clear()
            await self._writable.wait()

    def abort(self, reason: str) -> None:
        self.aborted = True
        if not self.finished:
            self._finish(reason)

    def close(self, code: ErrorCode | None = None, message: str = "") -> None:
        """End our side: in order, or with a fatal ERROR such as SHUTDOWN."""
        self._dispatch(self.session.close(time.time(), code, message))

    # ------------------------------------------------------------------ node side

    def processed(self, sequence: int, outcome: s.Outcome) -> None:
        """The durable outcome of an EVENT this stream handed to the ingest queue."""
        if self.finished:
            return
        if self.acks_paused:
            self._held.append((sequence, outcome))
            return
        self._dispatch(self.session.event_processed(sequence, outcome, time.time()))

    def pause_acks(self, paused: bool) -> None:
        """Demo fault: hold outcomes back, so neither ACKs nor new CREDIT go out."""
        self.acks_paused = paused
        if not paused and self._held:
            held, self._held = self._held, []
            for sequence, result in held:
                if self.finished:
                    return
                self._dispatch(self.session.event_processed(sequence, result, time.time()))

    def notify_stored(self, events: list[Event], hop: str) -> None:
        """Events newly stored by the node: queue them for this peer unless they came from it."""
        if self.finished or hop == self.peer_id or self.session.state != s.UP:
            return
        if self.uses_outbox:
            # The ingest transaction already put them in the outbox; rescan if any sorts
            # before what was read (relayed events keep their authors' older ids).
            self._notified += 1
            self._dry = False
            if any(e.event_id <= self._read_to for e in events):
                self._rescan = True
        else:
            live = self._live
            for event in events:
                if len(live) == LIVE_QUEUE_MAX:
                    self._live_bytes -= len(live[0].ciphertext)
                live.append(event)
                self._live_bytes += len(event.ciphertext)
            while self._live_bytes > LIVE_QUEUE_BYTES and len(live) > 1:
                self._live_bytes -= len(live.popleft().ciphertext)
        self._more.set()

    # ------------------------------------------------------------------ internals

    def _dispatch(self, events: list) -> None:
        for ev in events:
            kind = type(ev)
            if kind is s.EventReceived:
                self._ingest(
                    self.group_id,
                    ev.event,
                    self.peer_id or "",
                    partial(self.processed, ev.sequence),
                )
            elif kind is s.EventsAcknowledged:
                self._acknowledged(ev.event_ids)
                self._more.set()  # the pump may be waiting under MAX_UNACKED_BYTES
            elif kind is s.CreditAvailable:
                self._more.set()
            elif kind is s.HandshakeComplete:
                self._handshake_complete()
            elif kind is s.StreamEnded:
                self.end_reason = ev.reason
                self._hooks.stream_event(self, ev)
            else:
                self._hooks.stream_event(self, ev)
        self._changed()

    def _changed(self) -> None:
        self._writable.set()
        self._schedule()

    def _schedule(self) -> None:
        deadline = self.session.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and not self.finished:
            delay = max(0.0, deadline - time.time())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.finished:
            return
        self._dispatch(self.session.tick(time.time()))

    def _handshake_complete(self) -> None:
        self.uses_outbox = self._hooks.stream_up(self)
        self._pump_task = self._loop.create_task(self._pump(), name=f"pump {self.key}")

    def _acknowledged(self, event_ids: list[str]) -> None:
        sent = self._sent
        for e in event_ids:
            sent.discard(e)
        if self.uses_outbox and event_ids:
            self._outbox.acknowledged(self.peer_id or "", self.group_id, event_ids)

    async def _pump(self) -> None:
        """Send the outbox (replay in event_id order, then new events) while credit lasts."""
        session = self.session
        try:
            while not self.finished and session.state == s.UP and not session.ended:
                if self.uses_outbox:
                    self._read_ahead()
                if session.credit_out_events <= 0 or session.unacked_bytes >= MAX_UNACKED_BYTES:
                    self._more.clear()
                    await self._more.wait()
                    continue
                batch = self._next_batch(session.credit_out_events)
                if not batch:
                    if self.uses_outbox and self._rescan and self._reading is None:
                        self._restart_reading()
                        continue
                    self._more.clear()
                    await self._more.wait()
                    continue
                now = time.time()
                progressed = 0
                for i, event in enumerate(batch):
                    try:
                        ok = session.unacked_bytes < MAX_UNACKED_BYTES and session.send_event(
                            event, now
                        )
                    except EventTooLarge as exc:
                        self._log(f"{self.key}: dropped {event.event_id}: {exc}")
                        self._acknowledged([event.event_id])
                        progressed += 1
                        continue
                    if not ok:
                        self._unpop(batch[i:])
                        break
                    progressed += 1
                    self._sent.add(event.event_id)
                self._changed()
                if not progressed:  # no byte credit, or too much unacknowledged: wait
                    self._more.clear()
                    await self._more.wait()
        except asyncio.CancelledError:
            pass
        finally:
            if self._reading is not None:
                self._reading.cancel()

    def _unpop(self, events: list[Event]) -> None:
        """Put events that did not fit back in front, in order."""
        if self.uses_outbox:
            self._ahead.extendleft(reversed(events))
            return
        live = self._live
        # A full live queue drops its newest, as it would have on arrival.
        for event in reversed(events):
            if len(live) == LIVE_QUEUE_MAX:
                self._live_bytes -= len(live.pop().ciphertext)
            live.appendleft(event)
            self._live_bytes += len(event.ciphertext)

    def _next_batch(self, room: int) -> list[Event]:
        queue = self._ahead if self.uses_outbox else self._live
        n = min(room, len(queue))
        out = [queue.popleft() for _ in range(n)]
        if not self.uses_outbox:
            self._live_bytes -= sum(len(e.ciphertext) for e in out)
        return out

    # ------------------------------------------------------------------ outbox read-ahead

    def _read_ahead(self) -> None:
        """Start reading the next outbox page if fewer than half a page are waiting."""
        if self._reading is not None or self._dry or len(self._ahead) >= OUTBOX_PAGE // 2:
            return
        self._reading = self._loop.create_task(self._read_page(), name=f"outbox {self.key}")

    def _restart_reading(self) -> None:
        """Read the outbox again from its start (events older than what was read arrived)."""
        self._rescan = False
        self._dry = False
        self._read_to = ""
        self._read_gen += 1
        self._ahead.clear()

    async def _read_page(self) -> None:
        gen, notified = self._read_gen, self._notified
        try:
            while True:
                sent = self._sent
                limit = OUTBOX_PAGE + len(sent)
                rows = await self._outbox.pending(
                    self.peer_id or "", self.group_id, self._read_to, limit
                )
                if gen != self._read_gen or self.finished:
                    return
                if rows:
                    self._read_to = rows[-1].event_id
                self._ahead.extend(ev for ev in rows if ev.event_id not in sent)
                if len(rows) < limit:
                    self._dry = notified == self._notified
                    break
                if self._ahead:
                    break
        except Exception as exc:  # e.g. a busy database: the pump retries on its next turn
            self._log(f"{self.key}: outbox read failed ({exc})")
        finally:
            if self._reading is asyncio.current_task():
                self._reading = None
            self._more.set()

    def _finish(self, reason: str) -> None:
        first = not self.done.is_set()
        self.finished = True
        self.end_reason = self.end_reason or reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pump_task is not None:
            self._pump_task.cancel()
        self._writable.set()
        self._more.set()
        self.done.set()
        if first:
            self._hooks.stream_ended(self)
