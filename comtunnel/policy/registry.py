"""Who holds each hub port, and the answer a client gets when it asks for one.

One holder per port at a time: a tunnel client's session or a hub gateway's TCP client. A
holder on its way out (``closing``: its device is being closed) makes a newcomer wait for the
release instead of getting "busy"; a client that restarted while its old session is still kept
for it (disconnected, within grace) takes the port back; anyone else is told who has the port,
since when, and until when a disconnected holder keeps it.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable
from typing import Protocol

from comtunnel.access import Access, AccessPolicy
from comtunnel.protocol.errors import ErrorCode


class Owner(Protocol):
    """What the registry needs to know of a holding session."""

    @property
    def client(self) -> str: ...

    @property
    def detached_at(self) -> float | None: ...


@dataclasses.dataclass(eq=False)
class Holder:
    client: str
    since: float  # wall-clock time, for messages
    owner: Owner | None = None  # None: a hub gateway's TCP client
    closing: bool = False
    on_release: list[Callable[[], None]] = dataclasses.field(default_factory=list)


class PortState(enum.Enum):
    FREE = "free"
    IN_USE = "in use"
    HELD_FOR_DISCONNECTED = "held for a disconnected client"


class Verdict(enum.Enum):
    OPEN = "open"  # the port is free: claim it and open the device
    MONITOR = "monitor"  # monitor access: watch, do not claim
    WAIT = "wait"  # the holder is closing: wait for its release, then ask again
    TAKE_BACK = "take back"  # the client's own disconnected session holds it: end that session, then open
    REFUSE = "refuse"


@dataclasses.dataclass(frozen=True)
class Decision:
    verdict: Verdict
    code: ErrorCode = ErrorCode.NORMAL
    message: str = ""
    holder: Holder | None = None


class PortRegistry:
    def __init__(self, access: AccessPolicy | None = None, grace: float = 0.0) -> None:
        self.access = access  # None: every client may open every port
        self.grace = grace
        self.holders: dict[str, Holder] = {}

    def access_of(self, client: str, port: str) -> Access | None:
        return self.access.decide(client, port) if self.access is not None else Access.FULL

    def decide(self, client: str, port: str, known: list[str], *, retried: bool = False) -> Decision:
        """What ``client`` asking for ``port`` gets. ``retried``: asked again after a WAIT."""
        if port not in known:
            names = ", ".join(known) or "none"
            return Decision(Verdict.REFUSE, ErrorCode.UNKNOWN_PORT, f"no port named {port!r} (ports: {names})")
        access = self.access_of(client, port)
        if access is None:
            assert self.access is not None
            return Decision(Verdict.REFUSE, ErrorCode.ACCESS_DENIED, self.access.describe(client, port))
        if access is Access.MONITOR:
            return Decision(Verdict.MONITOR)
        holder = self.holders.get(port)
        if holder is None:
            return Decision(Verdict.OPEN)
        if retried:
            return Decision(Verdict.REFUSE, ErrorCode.PORT_BUSY, f"port {port!r} is in use by {holder.client}", holder)
        if holder.closing:
            return Decision(Verdict.WAIT, holder=holder)
        owner = holder.owner
        if owner is not None and owner.detached_at is not None and owner.client == client:
            return Decision(Verdict.TAKE_BACK, holder=holder)  # its own old session: the client restarted
        return Decision(Verdict.REFUSE, ErrorCode.PORT_BUSY, self.busy_message(port, holder), holder)

    def busy_message(self, port: str, holder: Holder) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(holder.since))
        note = ""
        detached = holder.owner.detached_at if holder.owner is not None else None
        if detached is not None:
            until = time.strftime("%H:%M:%S", time.localtime(detached + self.grace))
            note = f" (disconnected; kept for it until {until})"
        return f"port {port!r} is in use by {holder.client} since {since}{note}"

    def claim(self, port: str, client: str, owner: Owner | None, now: float) -> Holder:
        holder = self.holders[port] = Holder(client, now, owner)
        return holder

    def release(self, port: str, holder: Holder | None) -> None:
        """Free ``port`` if ``holder`` still has it, and wake whoever waits for it."""
        if holder is None:
            return
        if self.holders.get(port) is holder:
            del self.holders[port]
        waiting, holder.on_release = holder.on_release, []
        for wake in waiting:
            wake()

    def state(self, port: str) -> PortState:
        holder = self.holders.get(port)
        if holder is None:
            return PortState.FREE
        if holder.owner is not None and holder.owner.detached_at is not None:
            return PortState.HELD_FOR_DISCONNECTED
        return PortState.IN_USE

    def holder_name(self, port: str) -> str | None:
        holder = self.holders.get(port)
        return holder.client if holder is not None else None
