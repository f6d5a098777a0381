"""Reconnect backoff of PROTOCOL §4.5: 0.5 s doubling to 30 s, ±20 % jitter.

Pure: the caller passes the time and a random source, so tests are exact.
"""

from __future__ import annotations

import random
from collections.abc import Callable

INITIAL = 0.5
MAXIMUM = 30.0
JITTER = 0.2
HEALTHY_AFTER = 60.0


class Backoff:
    __slots__ = ("_attempt", "_random")

    def __init__(self, rand: Callable[[], float] = random.random) -> None:
        self._attempt = 0
        self._random = rand

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        """The wait before the next attempt; each call doubles the base up to the cap."""
        base = min(MAXIMUM, INITIAL * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 16)
        return base * (1.0 + JITTER * (2.0 * self._random() - 1.0))

    def stream_ended(self, healthy_for: float) -> None:
        """A stream that stayed up for 60 s resets the schedule."""
        if healthy_for >= HEALTHY_AFTER:
            self._attempt = 0

    def reset(self) -> None:
        """The peer connected to us: it is reachable again, start over."""
        self._attempt = 0
