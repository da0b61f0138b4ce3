"""Who keeps a gateway's port, and for how long: the decisions of the TCP listeners, as plain code.

No clock, no socket, no event loop: the listener (:mod:`comtunnel.ports.network`) passes the time
in, arms one loop timer at :meth:`IdleTimer.deadline`, and asks :meth:`IdleTimer.expired` when it
fires (the way :mod:`comtunnel.policy.deadlines` keeps a session's timers). It lives under
``ports`` because the listeners use it, and ports may import nothing but ``protocol``.

* A second TCP client is refused while one has the port, or, with takeover (ser2net's
  ``kickolduser``), it takes the port and the first is disconnected: :func:`arrival`.
* The idle timeout counts only what the *client* sends. Output from the device is not activity: a
  forgotten terminal on a chatty device (a GPS, a console printing its log) would otherwise hold the
  port forever, which is the case the timeout exists for. A client that only listens should not use
  an idle timeout (or one longer than its own silences). ser2net's ``timeout`` counts both
  directions; ours does not, on purpose. While the port holds the client back (paused: its bytes
  wait in TCP because of us, not because it is silent) the clock does not run.
* A vanished peer (cable pulled, laptop suspended) is noticed by TCP keepalive, always on:
  :data:`KEEPALIVE` gives the first probe after 30 s of silence, then one every 10 s, and gives up
  after 3 unanswered, so a dead client frees the port within about a minute.
"""

from __future__ import annotations

import enum

#: (seconds idle before the first probe, seconds between probes, unanswered probes before giving up)
KEEPALIVE = (30, 10, 3)


class Arrival(enum.Enum):
    ACCEPT = "accept"  # nobody has the port: the new client gets it
    REFUSE = "refuse"  # someone has it: a notice, and the new connection is closed
    TAKE_OVER = "take over"  # someone has it: that one is disconnected, the new client gets it


def arrival(busy: bool, takeover: bool) -> Arrival:
    """What a new TCP connection gets."""
    if not busy:
        return Arrival.ACCEPT
    return Arrival.TAKE_OVER if takeover else Arrival.REFUSE


class IdleTimer:
    """The idle timeout of one TCP session; ``timeout`` 0 means none."""

    def __init__(self, timeout: float, now: float) -> None:
        if timeout < 0:
            raise ValueError(f"an idle timeout cannot be negative: {timeout!r}")
        self.timeout = timeout
        self.last = now

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def touch(self, now: float) -> None:
        """The client sent something."""
        self.last = max(self.last, now)

    def deadline(self) -> float | None:
        """When the shell should ask again, or None (no timeout)."""
        return self.last + self.timeout if self.enabled else None

    def expired(self, now: float, held_back: bool = False) -> bool:
        """Whether the client has been silent for the whole timeout. ``held_back``: the port is
        holding the client's input back right now, which counts as activity."""
        if not self.enabled:
            return False
        if held_back:
            self.touch(now)
            return False
        return now >= self.last + self.timeout
