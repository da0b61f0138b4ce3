"""Per-channel credit windows and the replay buffer, on absolute byte offsets.

Credit works as in SSH (RFC 4254 section 5.2) and HTTP/2 (RFC 9113 section 5.2): the receiver grants
a number of bytes, and the sender may have at most that many unacknowledged. The receiver returns
credit only when its consumer has really taken the bytes (written them to the port), and in batches
of at least half the window, so a stalled port stops its sender after one window without holding up
other channels or growing memory.

Every byte of a channel also has an offset (bytes sent before it, counted since the channel opened).
A sender keeps what it sent until the peer has taken it (the :class:`ReplayBuffer`), and a receiver
knows how much it received and consumed. That is all a resumed session needs: each side tells the
other "I received up to R and consumed up to C", and the sender resends from R, with credit up to
C + window. No offset travels in DATA frames; a connection is ordered, and resumption fixes the start.
"""

from __future__ import annotations

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .limits import MAX_WINDOW


class SendWindow:
    """Credit the peer has granted us, as offsets: we may send up to ``acked + size``."""

    def __init__(self, initial: int) -> None:
        self.size = initial
        self.sent = 0  # offset of the next byte we send
        self.acked = 0  # offset up to which the peer has consumed (returned credit for)

    @property
    def available(self) -> int:
        return max(0, self.acked + self.size - self.sent)

    def resize(self, size: int) -> None:
        """The peer changed the window it grants (sized to what its port drains). Shrinking can
        leave more in flight than the new size: then nothing more goes until that is acknowledged."""
        self.size = size

    def consume(self, size: int) -> None:
        if size > self.available:
            raise LocalProtocolError(
                f"sending {size} bytes with only {self.available} of window",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.sent += size

    def grow(self, increment: int) -> None:
        if increment <= 0 or self.acked + self.size - self.sent + increment > MAX_WINDOW:
            raise RemoteProtocolError(f"window update of {increment} is invalid", ErrorCode.FLOW_CONTROL_ERROR)
        if self.acked + increment <= self.sent:
            self.acked += increment  # credit for bytes we sent: also an acknowledgement
        else:  # more credit than we have in flight (a peer growing its window)
            self.size += self.acked + increment - self.sent
            self.acked = self.sent

    def resync(self, consumed: int) -> None:
        """After a resumption: the peer says it consumed up to ``consumed``."""
        if not self.acked <= consumed <= self.sent:
            raise RemoteProtocolError(
                f"peer claims to have consumed up to {consumed}, but we sent {self.sent} and it had "
                f"acknowledged {self.acked}",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.acked = consumed


class ReceiveWindow:
    """Credit we have granted the peer, and what our consumer has taken but we have not returned."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.received_total = 0  # offset of the next byte we expect
        self.consumed_total = 0  # offset up to which our consumer has taken bytes
        self.reported = 0  # offset up to which we have returned credit
        self.granted = size  # the highest offset the peer may send up to, whatever it knows of resizes
        self.peak = size  # the largest size we ever granted
        self.resized = False  # resize() was used: after a resumption the peer is told the size again

    @property
    def remaining(self) -> int:
        return self.granted - self.received_total

    def resize(self, size: int) -> None:
        """Grant ``size`` from now on. What the peer was granted before stays granted: a shrink
        takes effect when the peer hears of it, a growth at once."""
        self.size = size
        self.resized = True
        self.peak = max(self.peak, size)
        self.granted = max(self.granted, self.reported + size)

    def received(self, size: int) -> None:
        if size > self.remaining:
            raise RemoteProtocolError(
                f"peer sent {size} bytes with {self.remaining} of window left",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.received_total += size

    def consumed(self, size: int) -> int:
        """Note that ``size`` bytes were delivered; return the increment to send now (0: not yet)."""
        if size < 0 or self.consumed_total + size > self.received_total:
            raise LocalProtocolError(f"consumed {size} bytes that were never received")
        self.consumed_total += size
        if (self.consumed_total - self.reported) * 2 < self.size:
            return 0
        increment = self.consumed_total - self.reported
        self.reported = self.consumed_total
        self.granted = max(self.granted, self.reported + self.size)
        return increment

    def report_all(self) -> int:
        """Return every owed byte of credit now (a quiet line); the increment, 0 if none is owed."""
        increment = self.consumed_total - self.reported
        self.reported = self.consumed_total
        self.granted = max(self.granted, self.reported + self.size)
        return increment

    def resync(self) -> tuple[int, int]:
        """What we tell the peer when a session resumes: (received, consumed); credit is then exact."""
        self.reported = self.consumed_total
        # The peer may still hold any size we ever granted (a resize can be lost with the connection).
        self.granted = max(self.granted, self.reported + self.peak)
        return self.received_total, self.consumed_total


class ReplayBuffer:
    """Bytes we sent on a channel and the peer has not yet taken: what a resumed session resends.

    Holds offsets ``[start, end)``. Bounded by the send window while connected (the peer's consumed
    offset trims it); the bridge bounds what piles up while disconnected.
    """

    def __init__(self) -> None:
        self.start = 0
        self._data = bytearray()

    @property
    def end(self) -> int:
        return self.start + len(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def append(self, data: bytes | memoryview) -> None:
        self._data += data

    def trim(self, offset: int) -> None:
        """The peer holds everything before ``offset``."""
        if offset > self.start:
            new_start = min(offset, self.end)
            del self._data[: new_start - self.start]
            self.start = new_start

    def unacknowledged(self, offset: int) -> memoryview:
        """The bytes from ``offset`` on (after :meth:`trim` to the peer's received offset)."""
        if not self.start <= offset <= self.end:
            raise RemoteProtocolError(
                f"peer asks to resume from offset {offset}, but we hold {self.start}..{self.end}",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        return memoryview(self._data)[offset - self.start :]
