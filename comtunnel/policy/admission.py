"""Which incoming connections the hub takes, so a flood of handshakes cannot lock out a client that
has a valid certificate.

Two budgets, as OpenSSH keeps them (MaxStartups, PerSourceMaxStartups):

* **startups**: connections still in their TLS handshake, which anyone on the network can open.
  Up to ``begin`` are always taken. Past that, each new one is dropped with a probability that
  grows from ``rate`` to 1 at ``full``. A single source may hold ``per_source`` of them at once,
  so one flooding address cannot take them all.
* **sessions**: connections whose client proved its certificate. They have their own budget, so
  handshakes can never use it up.

A startup must finish within ``handshake_timeout``; the shell arms that timer. The randomness is
passed in, so tests can fix it.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter


@dataclasses.dataclass(frozen=True)
class AdmissionLimits:
    begin: int = 32
    rate: float = 0.3
    full: int = 128
    per_source: int = 8
    sessions: int = 256
    handshake_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.begin <= self.full or not 0.0 <= self.rate <= 1.0:
            raise ValueError("startup limits must be 0 < begin <= full and 0 <= rate <= 1")
        if self.per_source < 1 or self.sessions < 1 or self.handshake_timeout <= 0:
            raise ValueError("per-source, session and handshake limits must be positive")


DEFAULT_MAX_BUFFERED = 16 << 20


class BufferBudget:
    """What all connections together may hold in incomplete frames: each may send a frame just
    short of the maximum and stop, and 256 connections x 1 MiB is more than a small board has."""

    def __init__(self, limit: int = DEFAULT_MAX_BUFFERED) -> None:
        self.limit = limit
        self.held = 0

    def change(self, before: int, after: int) -> bool:
        """A connection now holds ``after`` bytes instead of ``before``: False if that is too much
        (the connection must go; its ``before`` stays charged until it releases it)."""
        grow = after - before
        if grow > 0 and self.held + grow > self.limit:
            return False
        self.held += grow
        return True


class Admission:
    def __init__(self, limits: AdmissionLimits | None = None, rng: random.Random | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._random = rng or random.Random()
        self.startups: Counter[str] = Counter()  # by source address
        self.sessions = 0
        self.refused: Counter[str] = Counter()  # by reason, for status and the summary log lines

    @property
    def startup_count(self) -> int:
        return self.startups.total()

    def arrive(self, source: str) -> str | None:
        """A TCP connection from ``source``: None if it may start a handshake, else why not."""
        limits, count = self.limits, self.startup_count
        reason = None
        if self.startups[source] >= limits.per_source:
            reason = f"{source} already has {self.startups[source]} connections in their handshake"
        elif count >= limits.full:
            reason = f"{count} connections in their handshake, the limit"
        elif count >= limits.begin:
            drop = limits.rate + (1.0 - limits.rate) * (count - limits.begin) / max(1, limits.full - limits.begin)
            if self._random.random() < drop:
                reason = f"{count} connections in their handshake: dropping new ones early"
        if reason is not None:
            self.refused["startup"] += 1
            return reason
        self.startups[source] += 1
        return None

    def authenticated(self, source: str) -> str | None:
        """The handshake from ``source`` succeeded: None if it becomes a session, else why not."""
        self._end_startup(source)
        if self.sessions >= self.limits.sessions:
            self.refused["session"] += 1
            return f"{self.sessions} sessions connected, the limit"
        self.sessions += 1
        return None

    def left(self, source: str, *, authenticated: bool) -> None:
        """A connection admitted by :meth:`arrive` closed (``authenticated``: as a session)."""
        if authenticated:
            self.sessions = max(0, self.sessions - 1)
        else:
            self._end_startup(source)

    def _end_startup(self, source: str) -> None:
        if self.startups[source] <= 1:
            del self.startups[source]
        else:
            self.startups[source] -= 1
