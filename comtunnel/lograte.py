"""Repeated warnings, limited per kind and source, so a peer cannot fill the disk through our log.

A hostile peer can make us log once per thing it does wrong: a malformed subnegotiation, a
failed handshake, a refused connection or OPEN. The first ``burst`` lines of one (kind, source)
in each ``window`` are logged. The rest are counted, and a summary line says how many were left
out, either with the next line that is logged or from :func:`flush` (which the hub calls every
few seconds).
"""

from __future__ import annotations

import logging
import time

Key = tuple[str, str]  # (kind, source)


class LogLimiter:
    """The decisions, with ``now`` passed in."""

    def __init__(self, burst: int = 5, window: float = 10.0, max_keys: int = 4096) -> None:
        self.burst = burst
        self.window = window
        self.max_keys = max_keys  # a flood from many sources cannot grow the table without bound
        self._state: dict[Key, list[float | int]] = {}  # key -> [window start, logged, suppressed]

    def allow(self, key: Key, now: float) -> tuple[bool, int]:
        """Whether to log this one, and how many like it were left out before it (to report now)."""
        state = self._state.get(key)
        if state is None or now - state[0] >= self.window:
            suppressed = int(state[2]) if state is not None else 0
            if state is None and len(self._state) >= self.max_keys:
                self._evict(now)
            self._state[key] = [now, 1, 0]
            return True, suppressed
        if state[1] < self.burst:
            state[1] += 1
            return True, 0
        state[2] += 1
        return False, 0

    def due(self, now: float) -> list[tuple[Key, int]]:
        """Keys whose window ended with lines left out: their counts, reported once."""
        out = []
        for key, state in list(self._state.items()):
            if now - state[0] >= self.window:
                if state[2]:
                    out.append((key, int(state[2])))
                del self._state[key]
        return out

    def _evict(self, now: float) -> None:
        self.due(now)  # ended windows first
        while len(self._state) >= self.max_keys:
            self._state.pop(next(iter(self._state)))


_limiter = LogLimiter()


def warn(
    log: logging.Logger, kind: str, source: str, message: str, *args: object, level: int = logging.WARNING
) -> None:
    """``log.log(level, message, *args)``, unless (kind, source) has been logged too often lately."""
    allowed, suppressed = _limiter.allow((kind, source), time.monotonic())
    if not allowed:
        return
    if suppressed:
        where = f" from {source}" if source else ""
        log.log(level, "%s%s: %d more were not logged", kind, where, suppressed)
    log.log(level, message, *args)


def flush(log: logging.Logger) -> None:
    """Summary lines for windows that ended with lines left out."""
    for (kind, source), count in _limiter.due(time.monotonic()):
        where = f" from {source}" if source else ""
        log.warning("%s%s: %d more in the last %g s were not logged", kind, where, count, _limiter.window)
