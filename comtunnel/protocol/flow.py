"""Per-channel credit windows, as in SSH (RFC 4254 section 5.2) and HTTP/2 (RFC 9113 section 5.2).

The receiver grants a number of bytes; the sender may have at most that many unacknowledged.
The receiver returns credit only when its consumer has really taken the bytes (written them to
the port), and in batches of at least half the window, so a stalled port stops its sender after
one window without holding up other channels or growing memory.
"""

from __future__ import annotations

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .limits import MAX_WINDOW


class SendWindow:
    """Credit the peer has granted us."""

    def __init__(self, initial: int) -> None:
        self.available = initial

    def consume(self, size: int) -> None:
        if size > self.available:
            raise LocalProtocolError(
                f"sending {size} bytes with only {self.available} of window",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.available -= size

    def grow(self, increment: int) -> None:
        if increment <= 0 or self.available + increment > MAX_WINDOW:
            raise RemoteProtocolError(f"window update of {increment} is invalid", ErrorCode.FLOW_CONTROL_ERROR)
        self.available += increment


class ReceiveWindow:
    """Credit we have granted the peer, and what our consumer has taken but we have not returned."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.remaining = size
        self._unacknowledged = 0

    def received(self, size: int) -> None:
        if size > self.remaining:
            raise RemoteProtocolError(
                f"peer sent {size} bytes with {self.remaining} of window left",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.remaining -= size

    def consumed(self, size: int) -> int:
        """Note that ``size`` bytes were delivered; return the increment to send now (0: not yet)."""
        if size < 0 or self._unacknowledged + size + self.remaining > self.size:
            raise LocalProtocolError(f"consumed {size} bytes that were never received")
        self._unacknowledged += size
        if self._unacknowledged * 2 < self.size:
            return 0
        increment, self._unacknowledged = self._unacknowledged, 0
        self.remaining += increment
        return increment
