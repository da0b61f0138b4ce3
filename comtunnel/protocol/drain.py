"""How much window a channel grants: a few hundred milliseconds of what its port really drains.

A local tty holds about 4 KiB; a 256 KiB tunnel window in front of a 9600-baud line is four
minutes of data in flight, and the application's writes, write timeouts and flushes stop meaning
what they mean on a local port. So the receiving side measures how fast its port takes bytes while
the port is the bottleneck (its write buffer non-empty: "busy"), and grants ``horizon`` seconds of
that, never less than ``minimum``, never more than ``maximum``. Before anything is known the window
starts at ``start`` and doubles with every window's worth that goes through without the port
getting busy, so a port that never makes us buffer (a PTY or a socket taking tens of MB/s) is at
the full window after a few hundred KiB and bulk throughput stays, while a slow line never had
more than ``start`` in flight; a measured line that got faster grows back the same way. A line
stopped by flow control (XOFF) gets the minimum. Pure: sizes and times in, a window out.
"""

from __future__ import annotations

from .limits import DEFAULT_WINDOW

HORIZON = 0.4
MIN_WINDOW = 4096
START_WINDOW = 16384
#: A busy period shorter than this says nothing reliable about the rate (a fast port, a hiccup).
MIN_SAMPLE = 0.2


class DrainMeter:
    def __init__(
        self,
        maximum: int = DEFAULT_WINDOW,
        *,
        horizon: float = HORIZON,
        minimum: int = MIN_WINDOW,
        start: int = START_WINDOW,
    ) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.start = min(max(start, self.minimum), maximum)
        self.horizon = horizon
        self.rate = self.start / horizon  # bytes/s the port is believed to take
        self.stopped = False  # the device stopped us (XOFF)
        self._busy_since: float | None = None
        self._queued = 0  # bytes that went through the buffer since the busy period began
        self._unhindered = 0  # bytes that went through without the port being the bottleneck

    def reset(self) -> None:
        """The line changed (a new baud rate): measure afresh."""
        self.rate = self.start / self.horizon
        self._busy_since = None
        self._unhindered = 0

    def wrote(self, size: int, buffered: int, now: float) -> None:
        """``size`` bytes were handed to the port; ``buffered`` is its write buffer afterwards."""
        if self._busy_since is not None:
            self._queued += size
        elif buffered:
            self._busy_since = now
            self._queued = buffered
            self._went_through(size - buffered)
        else:
            self._went_through(size)

    def _went_through(self, size: int) -> None:
        self._unhindered += size
        if self._unhindered >= self.window() and self.rate * self.horizon < self.maximum:
            self.rate *= 2  # a whole window went straight through: the port is faster than we think
            self._unhindered = 0

    def sample(self, buffered: int, now: float) -> None:
        """While busy (a timer): what left the buffer since the busy period began."""
        if self._busy_since is not None and now - self._busy_since >= MIN_SAMPLE:
            self._update((self._queued - buffered) / (now - self._busy_since))

    def drained(self, now: float) -> None:
        """The port's write buffer is empty again."""
        if self._busy_since is None:
            return
        if now - self._busy_since >= MIN_SAMPLE:
            self._update(self._queued / (now - self._busy_since))
            self._unhindered = 0
        else:
            self._went_through(self._queued)  # a moment's buffering: the port keeps up
        self._busy_since = None

    def _update(self, rate: float) -> None:
        self.rate = max(rate, 1.0)  # measured over MIN_SAMPLE at least while the port was the bottleneck

    def window(self) -> int:
        if self.stopped:
            return self.minimum
        return int(min(self.maximum, max(self.minimum, self.rate * self.horizon)))
