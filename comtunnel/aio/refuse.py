"""A connection we will not serve (over the connection limit, a second hub dialling a client):
closed at once, logged once per burst rather than once per connection, so a flood cannot fill the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

log = logging.getLogger(__name__)


class Refusals:
    """Counts refused connections; logs the first and then every ``every``-th."""

    def __init__(self, what: str, every: int = 100) -> None:
        self.what = what
        self.every = every
        self.count = 0

    def protocol(self, reason: Callable[[], str]) -> asyncio.Protocol:
        return _Refused(self, reason)

    def refused(self, transport: asyncio.BaseTransport, reason: str) -> None:
        if self.count % self.every == 0:
            peer = transport.get_extra_info("peername")
            log.warning(
                "refused %s from %s: %s (%d refused so far)",
                self.what,
                peer and f"{peer[0]}:{peer[1]}",
                reason,
                self.count + 1,
            )
        self.count += 1
        cast(asyncio.Transport, transport).abort()


class _Refused(asyncio.Protocol):
    def __init__(self, refusals: Refusals, reason: Callable[[], str]) -> None:
        self.refusals = refusals
        self.reason = reason

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.refusals.refused(transport, self.reason())
