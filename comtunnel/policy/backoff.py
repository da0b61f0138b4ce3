"""Capped, jittered exponential backoff for dialling again (the hub's --connect, the client).

Jitter spreads a fleet of clients that lost the same hub, so they do not all come back in the
same millisecond; a connection that got as far as a session resets the delay.
"""

from __future__ import annotations

import random

FIRST = 0.1
CAP = 30.0


class Backoff:
    def __init__(self, first: float = FIRST, cap: float = CAP, rng: random.Random | None = None) -> None:
        self.first = first
        self.cap = cap
        self._base = first
        self._random = rng or random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt: the current base, jittered to 0.5x-1.5x; then it doubles."""
        delay = self._base * (0.5 + self._random.random())
        self._base = min(self._base * 2, self.cap)
        return delay

    def reset(self) -> None:
        """The last attempt got somewhere (a session): start from the first delay again."""
        self._base = self.first
