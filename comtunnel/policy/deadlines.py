"""Named deadlines of one session, the way aioquic keeps its timers: ``next()`` says when the shell
must call back, ``expired(now)`` says which ran out. The shell arms one loop timer, at ``next()``.
"""

from __future__ import annotations

import enum


class Timeout(enum.Enum):
    HELLO = "hello"  # the peer has not said HELLO since the TLS handshake
    GRACE = "grace"  # a disconnected session was not resumed in time


class Deadlines:
    def __init__(self) -> None:
        self._at: dict[Timeout, float] = {}

    def set(self, which: Timeout, at: float) -> None:
        self._at[which] = at

    def clear(self, which: Timeout) -> None:
        self._at.pop(which, None)

    def clear_all(self) -> None:
        self._at.clear()

    def pending(self, which: Timeout) -> bool:
        return which in self._at

    def next(self) -> float | None:
        return min(self._at.values(), default=None)

    def expired(self, now: float) -> list[Timeout]:
        """The deadlines at or before ``now``, earliest first; each is reported once."""
        due = sorted((at, which.value, which) for which, at in self._at.items() if at <= now)
        for _, _, which in due:
            del self._at[which]
        return [which for _, _, which in due]
