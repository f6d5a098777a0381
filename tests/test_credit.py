"""CREDIT ledgers (PROTOCOL §4.2): enforcement, the top-up bound, overflow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol.credit import InboundCredit, OutboundCredit
from node.protocol.errors import ErrorCode, ProtocolError
from node.protocol.frames import MAX_CREDIT, Credit


def test_credit_starts_at_zero_and_first_grant_is_the_window():
    c = InboundCredit(256, 1 << 20)
    assert c.remaining_events == 0 and c.remaining_bytes == 0
    with pytest.raises(ProtocolError) as exc:
        c.consume(10)
    assert exc.value.code == ErrorCode.FLOW_CONTROL_VIOLATION
    assert c.grant() == Credit(256, 1 << 20)
    assert c.grant() is None  # nothing processed: the bound is reached


def test_consume_rejects_either_unit_short():
    c = InboundCredit(2, 100)
    c.grant()
    c.consume(60)
    with pytest.raises(ProtocolError):
        c.consume(41)  # one event left, but 40 bytes
    c.consume(40)
    with pytest.raises(ProtocolError) as exc:
        c.consume(0)  # bytes left: 0, events: 0
    assert "event" in exc.value.message
    assert c.consumed_events == 2 and c.consumed_bytes == 100


def test_grant_keeps_granted_within_processed_plus_window():
    c = InboundCredit(4, 400)
    c.grant()
    for _ in range(3):
        c.consume(100)
    assert c.below_half()
    assert c.grant() is None  # nothing processed yet: may not grant beyond the window
    c.processed(100)
    c.processed(100)
    assert c.grant() == Credit(2, 200)
    assert c.granted_events == c.processed_events + c.window_events
    assert c.granted_bytes == c.processed_bytes + c.window_bytes


def test_below_half_in_either_unit():
    c = InboundCredit(10, 1000)
    c.grant()
    c.consume(10)
    assert not c.below_half()
    c.consume(600)  # bytes: 390 left < 500
    assert c.below_half()
    d = InboundCredit(10, 1000)
    d.grant()
    for _ in range(6):
        d.consume(1)
    assert d.below_half()  # events: 4 left < 5


def test_window_change_never_revokes():
    c = InboundCredit(10, 1000)
    c.grant()
    c.set_window(1, 100)
    assert c.remaining_events == 10
    c.consume(1)
    c.processed(1)
    assert c.grant() is None  # 10 granted > 1 processed + 1 window
    with pytest.raises(ValueError):
        c.set_window(MAX_CREDIT + 1, 1)


def test_outbound_add_fits_consume_and_overflow():
    o = OutboundCredit()
    assert not o.fits(1)
    o.add(Credit(2, 100))
    assert o.fits(100) and not o.fits(101)
    assert not o.fits(10, reserved_events=2)
    assert not o.fits(10, reserved_bytes=95)
    o.consume(60)
    assert (o.events, o.bytes) == (1, 40)
    o.add(Credit(MAX_CREDIT - 1, 0))
    with pytest.raises(ProtocolError) as exc:
        o.add(Credit(1, 0))
    assert exc.value.code == ErrorCode.FLOW_CONTROL_VIOLATION
    with pytest.raises(ProtocolError):
        o.add(Credit(0, MAX_CREDIT))
    assert (o.events, o.bytes) == (MAX_CREDIT, 40)  # a refused grant changes nothing


@given(st.lists(st.tuples(st.sampled_from(["send", "process", "grant"]), st.integers(1, 300))))
def test_receiver_and_sender_agree(ops):
    """A sender that only sends within its credit is never refused, and the receiver
    never grants beyond processed + window."""
    inbound = InboundCredit(5, 1000)
    outbound = OutboundCredit()
    outbound.add(inbound.grant())
    in_flight: list[int] = []
    for op, size in ops:
        if op == "send" and outbound.fits(size):
            outbound.consume(size)
            inbound.consume(size)  # never raises
            in_flight.append(size)
        elif op == "process" and in_flight:
            inbound.processed(in_flight.pop(0))
        elif op == "grant":
            grant = inbound.grant()
            if grant is not None:
                outbound.add(grant)
        assert inbound.granted_events <= inbound.processed_events + inbound.window_events
        assert inbound.granted_bytes <= inbound.processed_bytes + inbound.window_bytes
        assert outbound.events == inbound.remaining_events
        assert outbound.bytes == inbound.remaining_bytes
