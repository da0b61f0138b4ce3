"""Dead-peer detection on an explicit clock, in the aioquic manner: no timers, no sockets.

A link can die without a FIN (Wi-Fi roams, a NAT entry expires, a cable is cut): TCP then waits for
minutes. Each side sends PING after ``interval`` of silence from the peer, and declares the peer dead
after ``timeout`` of silence; any byte from the peer counts as life. The driver calls
:meth:`received` on input, arms one timer at :meth:`deadline`, and calls :meth:`on_timer` when it fires.
"""

from __future__ import annotations

import enum

from .limits import DEFAULT_DEAD_TIMEOUT, DEFAULT_PING_INTERVAL


class Action(enum.Enum):
    NONE = "none"
    PING = "ping"
    DEAD = "dead"


class KeepAlive:
    def __init__(
        self, now: float, *, interval: float = DEFAULT_PING_INTERVAL, timeout: float = DEFAULT_DEAD_TIMEOUT
    ) -> None:
        if not 0 < interval < timeout:
            raise ValueError("the ping interval must be positive and shorter than the dead-peer timeout")
        self.interval = interval
        self.timeout = timeout
        self.last_heard = now
        self._last_ping = float("-inf")

    def received(self, now: float) -> None:
        self.last_heard = now

    def _next_ping(self) -> float:
        if self._last_ping >= self.last_heard:  # pinged already: again after another interval
            return self._last_ping + self.interval
        return self.last_heard + self.interval

    def deadline(self) -> float:
        """When to call :meth:`on_timer` next."""
        return min(self._next_ping(), self.last_heard + self.timeout)

    def on_timer(self, now: float) -> Action:
        # Compare with the very expressions deadline() returns, so a timer fired on time always acts.
        if now >= self.last_heard + self.timeout:
            return Action.DEAD
        if now >= self._next_ping():
            self._last_ping = now
            return Action.PING
        return Action.NONE

    def silence(self, now: float) -> float:
        return now - self.last_heard
