"""A connection we will not serve (over the connection limit, a second hub dialling a client):
closed at once, and logged within limits per source, so a flood cannot fill the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from comtunnel import lograte

log = logging.getLogger(__name__)


class Refusals:
    """Counts refused connections; logs them per source within :mod:`comtunnel.lograte`'s limits."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0

    def protocol(self, reason: Callable[[], str]) -> asyncio.Protocol:
        return _Refused(self, reason)

    def refused(self, transport: asyncio.BaseTransport, reason: str) -> None:
        peer = transport.get_extra_info("peername")
        self.count += 1
        lograte.warn(
            log,
            f"refused: {self.what}",
            str(peer[0]) if peer else "?",
            "refused %s from %s: %s (%d refused so far)",
            self.what,
            peer and f"{peer[0]}:{peer[1]}",
            reason,
            self.count,
        )
        cast(asyncio.Transport, transport).abort()


class _Refused(asyncio.Protocol):
    def __init__(self, refusals: Refusals, reason: Callable[[], str]) -> None:
        self.refusals = refusals
        self.reason = reason

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.refusals.refused(transport, self.reason())
