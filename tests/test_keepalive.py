"""Keepalive (PROTOCOL §4.5): PING schedule, RTT from the write, dead detection."""

from __future__ import annotations

import pytest

from node.protocol.keepalive import Keepalive


def test_pings_every_interval_after_start():
    k = Keepalive(30.0, 100.0)
    assert not k.ping_due(1000.0)  # not before the handshake
    k.start(100.0)
    assert k.ping_due(100.0)
    k.ping_queued("P1", 100.0)
    assert not k.ping_due(129.9) and k.ping_due(130.0)
    k.stop()
    assert not k.ping_due(1e9)


def test_rtt_is_from_write_to_pong():
    k = Keepalive(30.0, 0.0)
    k.start(0.0)
    k.ping_queued("P1", 0.0)
    k.ping_written("P1", 2.0)  # queued behind other output for 2 s
    assert k.pong("P1", 2.25) == pytest.approx(0.25)
    assert k.rtt == pytest.approx(0.25) and list(k.rtt_history) == [pytest.approx(0.25)]
    assert k.pong("P1", 3.0) is None  # answered already
    assert k.pong("UNKNOWN", 3.0) is None
    assert (k.pings_sent, k.pongs_received, k.last_pong_at) == (1, 1, 2.25)


def test_unanswered_ping_is_missed_when_the_next_goes_out():
    k = Keepalive(1.0, 0.0)
    k.start(0.0)
    k.ping_queued("P1", 0.0)
    k.ping_written("P1", 0.0)
    k.ping_queued("P2", 1.0)
    assert k.missed_pongs == 1
    k.ping_written("P2", 1.0)
    assert k.pong("P1", 1.5) is None  # too late: counted as missed
    assert k.pong("P2", 1.5) == pytest.approx(0.5)


def test_dead_after_three_intervals_without_reading():
    k = Keepalive(10.0, 0.0)
    assert k.dead_at == 30.0
    assert not k.is_dead(29.99) and k.is_dead(30.0)
    k.read(25.0)  # any read is life
    assert not k.is_dead(54.99) and k.is_dead(55.0)


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        Keepalive(0, 0.0)
