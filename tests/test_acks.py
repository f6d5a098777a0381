"""Cumulative ACK tracking (PROTOCOL §4.4), both directions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.protocol.acks import InboundAcks, OutboundAcks


def test_through_counts_non_event_frames_at_once():
    a = InboundAcks()
    a.frame_read(1)
    a.frame_read(2)
    assert a.through == 2
    assert a.take() is None  # no EVENT processed: nothing owed


def test_through_stops_before_the_oldest_event_in_flight():
    a = InboundAcks()
    a.frame_read(1)
    a.event_read(2)
    a.frame_read(3)
    a.event_read(4)
    assert a.through == 1 and a.in_flight == 2
    a.event_done(4, "E4", 10.0, 0.005)
    assert a.through == 1 and a.ackable == 0  # 4 finished early; 2 is still unknown
    a.event_done(2, None, 10.1, 0.005)
    assert a.through == 4 and a.ackable == 2
    assert a.due_at == 10.105  # the first ackable EVENT starts the 5 ms clock
    ack = a.take()
    assert ack.through == 4 and ack.event_ids == ["E4"]
    assert a.take() is None and a.due_at is None


def test_event_ids_are_only_new_since_the_previous_ack():
    a = InboundAcks()
    a.event_read(1)
    a.event_done(1, "E1", 0.0, 0.005)
    assert a.take().event_ids == ["E1"]
    a.event_read(2)
    a.event_done(2, "E2", 0.0, 0.005)
    ack = a.take()
    assert ack.event_ids == ["E2"] and ack.through == 2


@given(st.permutations(list(range(1, 21))), st.sets(st.integers(1, 20)))
def test_through_is_the_highest_fully_processed_prefix(order, non_events):
    a = InboundAcks()
    events = []
    for seq in range(1, 21):
        if seq in non_events:
            a.frame_read(seq)
        else:
            a.event_read(seq)
            events.append(seq)
    done: set[int] = set()
    seen_ids: list[str] = []
    for seq in order:
        if seq in non_events:
            continue
        a.event_done(seq, f"E{seq}", 0.0, 0.005)
        done.add(seq)
        expected = 0
        while expected + 1 <= 20 and (expected + 1 in non_events or expected + 1 in done):
            expected += 1
        assert a.through == expected
        ack = a.take()
        if ack is not None:
            seen_ids += ack.event_ids
            assert all(int(i[1:]) <= ack.through for i in ack.event_ids)
    assert a.through == 20
    assert sorted(seen_ids, key=lambda i: int(i[1:])) == [f"E{s}" for s in events]


def test_outbound_ack_covers_and_measures_lag():
    o = OutboundAcks()
    assert o.oldest_sent_at is None
    o.sent(5, "A", 1.0)
    o.sent(6, "B", 2.0)
    o.sent(9, "C", 3.0)
    assert o.unacked == 3 and o.oldest_sent_at == 1.0
    assert o.ack(7, 4.0) == ["A", "B"]
    assert o.oldest_sent_at == 3.0 and o.last_ack_at == 4.0
    assert o.ack(6, 5.0) == []  # an older cumulative ACK covers nothing new
    assert o.acked_through == 7
    assert o.ack(100, 6.0) == ["C"] and o.unacked == 0
