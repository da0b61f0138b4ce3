"""The relay's decisions: which hub a name leads to, which client waits for which hub, when a
wait or a silent pairing ends. Sans-I/O: connections are numbers, time is ``now``, tokens come
from the ``token_source`` the shell passes in.

* **Registry.** A hub registers under the names of its verified certificate. A newer registration
  of a name *replaces* the older one (a hub that reconnected after its old connection died
  silently must not wait for the relay to notice); the shell closes the replaced connection.
* **Pending.** A client's request becomes an offer with a fresh token, sent on the hub's control
  connection; the hub has ``attach_timeout`` to dial in with it. A hub with ``pending_per_hub``
  clients waiting is busy; the relay holds at most ``pairings`` pairings and waits in all.
* **Pairings.** A pairing with no byte either way for ``idle_timeout`` is closed (the tunnel
  pings every few seconds, so silence that long means a dead end the TCP stack has not noticed).
* **Memory.** Each side of a pairing may hold ``write_high`` bytes unsent before the other side's
  reading pauses, until the queue is down to ``write_low``: asyncio's write-buffer limits on each
  transport do exactly that, with these numbers.
* **Admission.** Connections still in their TLS handshake count against :class:`Admission`'s
  per-source and global startup budgets, as on the hub.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from comtunnel.policy.admission import Admission, AdmissionLimits
from comtunnel.protocol.rendezvous import Code

Conn = int


@dataclasses.dataclass(frozen=True)
class RelayLimits:
    attach_timeout: float = 10.0
    idle_timeout: float = 300.0
    pending_per_hub: int = 16
    pairings: int = 1024
    write_high: int = 256 * 1024
    write_low: int = 64 * 1024
    admission: AdmissionLimits = dataclasses.field(default_factory=AdmissionLimits)

    def __post_init__(self) -> None:
        if self.attach_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("relay timeouts must be positive")
        if self.pending_per_hub < 1 or self.pairings < 1 or not 0 < self.write_low <= self.write_high:
            raise ValueError("relay limits must be positive, with write_low <= write_high")


@dataclasses.dataclass
class Registration:
    conn: Conn
    names: tuple[str, ...]
    address: str
    since: float


@dataclasses.dataclass
class Pending:
    token: bytes
    client: Conn
    client_name: str
    hub_name: str
    deadline: float


@dataclasses.dataclass
class Pairing:
    client: Conn
    hub: Conn
    client_name: str
    hub_name: str
    since: float
    last_active: float
    bytes_to_hub: int = 0
    bytes_to_client: int = 0

    def partner(self, conn: Conn) -> Conn:
        return self.hub if conn == self.client else self.client


@dataclasses.dataclass(frozen=True)
class Refusal:
    code: Code
    message: str


@dataclasses.dataclass(frozen=True)
class Expired:
    """What :meth:`RelayPolicy.expire` ended: clients whose hub never attached, idle pairings."""

    waits: list[Pending]
    idle: list[Pairing]


class RelayPolicy:
    def __init__(self, limits: RelayLimits | None = None, *, token_source: Callable[[], bytes]) -> None:
        self.limits = limits or RelayLimits()
        self.admission = Admission(self.limits.admission)
        self._token = token_source
        self.hubs: dict[str, Registration] = {}  # by each name of the hub's certificate
        self.pending: dict[bytes, Pending] = {}  # by token
        self.pairings: dict[Conn, Pairing] = {}  # by each of its two connections
        self.refused: dict[str, int] = {}  # by code name, for status

    # --- hubs ----------------------------------------------------------------------------------

    def register(self, conn: Conn, names: tuple[str, ...], address: str, now: float) -> list[Conn]:
        """``conn``, whose certificate holds ``names``, is now their hub. Returns the control
        connections it replaced (every one that held one of these names), for the shell to close."""
        replaced = {self.hubs[name].conn for name in names if name in self.hubs and self.hubs[name].conn != conn}
        for old in replaced:
            self._unregister(old)
        registration = Registration(conn, names, address, now)
        for name in names:
            self.hubs[name] = registration
        return sorted(replaced)

    def _unregister(self, conn: Conn) -> None:
        for name in [n for n, r in self.hubs.items() if r.conn == conn]:
            del self.hubs[name]

    def registrations(self) -> list[Registration]:
        return list({id(r): r for r in self.hubs.values()}.values())

    # --- clients and pairings ----------------------------------------------------------------------

    def request(self, client: Conn, client_name: str, hub_name: str, now: float) -> Pending | Refusal:
        """A client asks for ``hub_name``: an offer to send on the hub's control connection
        (:meth:`control_for`), or why not."""
        if hub_name not in self.hubs:
            return self._refuse(Code.NO_SUCH_HUB, f"no hub named {hub_name!r} is registered at this relay")
        waiting = sum(1 for p in self.pending.values() if p.hub_name in self.hubs[hub_name].names)
        if waiting >= self.limits.pending_per_hub:
            return self._refuse(Code.HUB_BUSY, f"hub {hub_name!r} already has {waiting} clients waiting for it")
        if len(self.pairings) // 2 + len(self.pending) >= self.limits.pairings:
            return self._refuse(Code.RELAY_BUSY, f"the relay is at its limit of {self.limits.pairings} pairings")
        token = self._token()
        while token in self.pending:  # pragma: no cover - 128 random bits
            token = self._token()
        pending = Pending(token, client, client_name, hub_name, now + self.limits.attach_timeout)
        self.pending[token] = pending
        return pending

    def control_for(self, pending: Pending) -> Conn:
        return self.hubs[pending.hub_name].conn

    def attach(self, conn: Conn, token: bytes, names: tuple[str, ...], now: float) -> Pairing | Refusal:
        """A hub whose certificate holds ``names`` dialled in with ``token``: the pairing, or why not.
        A token offered to another hub's name stays valid for that hub."""
        pending = self.pending.get(token)
        if pending is None:
            return self._refuse(Code.BAD_TOKEN, "no client is waiting with this token (it expired, or left)")
        if pending.hub_name not in names:
            return self._refuse(Code.BAD_TOKEN, f"this token was offered to hub {pending.hub_name!r}")
        del self.pending[token]
        pairing = Pairing(pending.client, conn, pending.client_name, pending.hub_name, now, now)
        self.pairings[pairing.client] = self.pairings[conn] = pairing
        return pairing

    def forwarded(self, conn: Conn, size: int, now: float) -> None:
        """``conn`` sent ``size`` bytes to its partner."""
        pairing = self.pairings[conn]
        pairing.last_active = now
        if conn == pairing.client:
            pairing.bytes_to_hub += size
        else:
            pairing.bytes_to_client += size

    def left(self, conn: Conn) -> Conn | None:
        """``conn`` closed: forget it everywhere; returns its partner, which must be closed too."""
        self._unregister(conn)
        for token in [t for t, p in self.pending.items() if p.client == conn]:
            del self.pending[token]
        pairing = self.pairings.pop(conn, None)
        if pairing is None:
            return None
        partner = pairing.partner(conn)
        self.pairings.pop(partner, None)
        return partner

    # --- time ------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [p.deadline for p in self.pending.values()]
        deadlines += [p.last_active + self.limits.idle_timeout for p in self.pairings.values()]
        return min(deadlines, default=None)

    def expire(self, now: float) -> Expired:
        """Waits and pairings whose time is up, removed; the shell tells and closes them."""
        waits = [p for p in self.pending.values() if p.deadline <= now]
        for pending in waits:
            del self.pending[pending.token]
            self.refused[Code.TIMEOUT.name] = self.refused.get(Code.TIMEOUT.name, 0) + 1
        idle = list(
            {id(p): p for p in self.pairings.values() if p.last_active + self.limits.idle_timeout <= now}.values()
        )
        for pairing in idle:
            self.pairings.pop(pairing.client, None)
            self.pairings.pop(pairing.hub, None)
        return Expired(waits, idle)

    # --- what status shows ---------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """Names, addresses, ages (seconds before ``now``) and byte counts, JSON-ready."""
        pairings = list({id(p): p for p in self.pairings.values()}.values())
        return {
            "hubs": [
                {"names": list(r.names), "address": r.address, "age": now - r.since} for r in self.registrations()
            ],
            "waiting": [{"client": p.client_name, "hub": p.hub_name} for p in self.pending.values()],
            "pairings": [
                {
                    "client": p.client_name,
                    "hub": p.hub_name,
                    "age": now - p.since,
                    "bytes_to_hub": p.bytes_to_hub,
                    "bytes_to_client": p.bytes_to_client,
                }
                for p in pairings
            ],
            "refused": dict(self.refused) | {f"admission_{k}": v for k, v in self.admission.refused.items()},
            "handshakes": self.admission.startup_count,
        }

    def _refuse(self, code: Code, message: str) -> Refusal:
        self.refused[code.name] = self.refused.get(code.name, 0) + 1
        return Refusal(code, message)
