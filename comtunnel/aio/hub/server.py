"""The hub: listens (or dials out), authenticates clients, and gives each connection a session.

A device is opened when a client opens its channel and closed when the channel closes, so a
port left alone is free for local use. One client holds a port at a time; the registry says who,
so a second one gets a 'busy' answer naming the holder. A session's failure (bad frames, a dead
device) never reaches another session.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from comtunnel import lograte
from comtunnel.access import Access, AccessPolicy, RevocationList
from comtunnel.aio.hub.gateway import LocalGateway
from comtunnel.aio.hub.ports import HubPorts
from comtunnel.aio.hub.session import HubSession
from comtunnel.aio.refuse import Refusals
from comtunnel.aio.tasks import Tasks
from comtunnel.aio.tls_layer import TlsLayer
from comtunnel.errors import UsageError
from comtunnel.policy.admission import DEFAULT_MAX_BUFFERED, Admission, AdmissionLimits, BufferBudget
from comtunnel.policy.backoff import Backoff
from comtunnel.policy.registry import Holder
from comtunnel.ports.discovery import PortWatcher
from comtunnel.ports.network import cannot_listen, shown_listen_address
from comtunnel.ports.open import PortFactory, PortSpec, make_server_port, open_device
from comtunnel.protocol.errors import ErrorCode
from comtunnel.protocol.limits import DEFAULT_DEAD_TIMEOUT, DEFAULT_GRACE, DEFAULT_PING_INTERVAL, DEFAULT_REPLAY_BOUND
from comtunnel.specs import ServeSpec
from comtunnel.tls import describe_tls_error

log = logging.getLogger(__name__)

#: Dialling a listening client: the TCP connect and the TLS handshake together.
TLS_HANDSHAKE_TIMEOUT = 10.0
#: How often the counts of warnings left out (see comtunnel.lograte) are logged.
LOG_SUMMARY_INTERVAL = 5.0
#: How often the revocation list's file is checked for changes.
REVOCATION_POLL = 1.0


class Hub:
    def __init__(
        self,
        ports: list[PortSpec],
        ssl_context: ssl.SSLContext,
        *,
        port_factory: PortFactory = open_device,
        serve: list[ServeSpec] | None = None,
        access: AccessPolicy | None = None,
        revocations: RevocationList | None = None,
        grace: float = DEFAULT_GRACE,
        replay_bound: int = DEFAULT_REPLAY_BOUND,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        dead_timeout: float = DEFAULT_DEAD_TIMEOUT,
        admission: AdmissionLimits | None = None,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self.hub_ports = HubPorts(ports, port_factory, access, grace)
        self.revocations = revocations
        self.started = time.time()
        self.replay_bound = replay_bound
        self.ping_interval = ping_interval
        self.dead_timeout = dead_timeout
        self.by_token: dict[str, HubSession] = {}  # sessions a client may resume, connected or not
        self.live: set[HubSession] = set()  # every open connection, authenticated or not
        self.sessions: set[HubSession] = set()  # the connected, authenticated ones
        self.admission = Admission(admission)  # who may start a handshake, and become a session
        self.buffer_budget = BufferBudget(max_buffered)  # incomplete frames, all connections together
        self.closing = False
        self.ssl_context = ssl_context
        self.server: asyncio.Server | None = None
        self.gateways: list[LocalGateway] = []
        self.tasks = Tasks("hub")  # cleanups (devices being closed) that close() waits for
        self._pollers = Tasks("hub pollers")  # cancelled at close
        self._refusals = Refusals("a connection")
        self._serve = list(serve or [])

    # The port table, as tests and the CLI know it.
    @property
    def ports(self) -> dict[str, PortSpec]:
        return self.hub_ports.specs

    @ports.setter
    def ports(self, specs: dict[str, PortSpec]) -> None:
        self.hub_ports.specs = specs

    @property
    def port_factory(self) -> PortFactory:
        return self.hub_ports.factory

    @port_factory.setter
    def port_factory(self, factory: PortFactory) -> None:
        self.hub_ports.factory = factory

    @property
    def holders(self) -> dict[str, Holder]:
        return self.hub_ports.holders

    @property
    def access(self) -> AccessPolicy | None:
        return self.hub_ports.registry.access

    @property
    def grace(self) -> float:
        """How long a disconnected session's devices stay open for it to resume."""
        return self.hub_ports.registry.grace

    # --- connections ---------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(self._new_connection, host, port)
        except OSError as exc:
            raise cannot_listen(host, port, "clients (--listen)", exc) from None
        await self.start_gateways()
        self.watch_revocations()
        self._pollers.spawn(_log_summaries())
        addresses = [s.getsockname()[:2] for s in self.server.sockets]
        for host_, port_ in addresses:
            where = shown_listen_address(host_, port_)
            log.info("hub listening on %s with ports %s", where, ", ".join(self.ports) or "none")
        return addresses

    async def start_gateways(self) -> None:
        """The --rfc2217/--raw listeners (also for a hub that only dials out)."""
        for spec in self._serve:
            if spec.port not in self.ports:
                raise UsageError(f"--{spec.protocol} names port {spec.port!r}, which is not given with --port")
            gateway = LocalGateway(self.hub_ports, self.ports[spec.port], make_server_port(spec))
            await gateway.start()
            self.gateways.append(gateway)

    def _new_connection(self) -> asyncio.Protocol:
        return _Gate(self)

    def admit(self, transport: asyncio.BaseTransport) -> asyncio.Protocol | None:
        """A TCP connection arrived: its TLS layer, or None when it was refused (and closed)."""
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        reason = self.admission.arrive(source)
        if reason is not None:
            self._refusals.refused(transport, reason)
            return None
        session = HubSession(self, source=source)
        self.live.add(session)
        return self._tls_layer(session, self.admission.limits.handshake_timeout)

    def _tls_layer(self, session: HubSession, handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT) -> TlsLayer:
        def failed(exc: BaseException) -> None:
            source = layer.peer_address.rpartition(":")[0] or layer.peer_address
            reason = describe_tls_error(exc, "client")
            lograte.warn(
                log, "failed TLS handshakes", source, "TLS handshake with %s failed: %s", layer.peer_address, reason
            )

        layer = TlsLayer(
            self.ssl_context,
            session.tunnel,
            server_side=True,
            handshake_timeout=handshake_timeout,
            on_handshake_failed=failed,
        )
        return layer

    def outgoing_session(self) -> tuple[HubSession, TlsLayer]:
        """A session for a connection the hub dials (--connect, --relay), and its TLS layer: we
        remain the TLS server and still require the client's certificate."""
        session = HubSession(self)
        self.live.add(session)
        return session, self._tls_layer(session)

    async def dial(self, host: str, port: int) -> None:
        """Reverse direction: we open the TCP connection to a listening client (we are behind NAT).

        TLS roles do not change: we remain the TLS server and still require the client's
        certificate. Reconnects with capped, jittered backoff until cancelled.
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while True:
            session, layer = self.outgoing_session()
            try:
                connect = loop.create_connection(_returning(layer), host, port)
                await asyncio.wait_for(connect, TLS_HANDSHAKE_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self.live.discard(session)
                log.warning("cannot reach the client at %s:%s: %s", host, port, describe_tls_error(exc, "client"))
            else:
                await session.tunnel.closed
                if session.identified:
                    backoff.reset()
            delay = backoff.next_delay()
            log.info("dialling %s:%s again in %.1f s", host, port, delay)
            await asyncio.sleep(delay)

    # --- revocation, hotplug -------------------------------------------------------------------

    def watch_revocations(self) -> None:
        """Reload the revocation list when it changes (checked every second) and cut revoked clients off."""
        if self.revocations is None or self._watching_revocations:
            return
        self._watching_revocations = True
        self.revocations.reload_if_changed()

        async def poll() -> None:
            while True:
                await asyncio.sleep(REVOCATION_POLL)
                if self.revocations is not None and self.revocations.reload_if_changed():
                    log.info("revocation list %s reloaded", self.revocations.path)
                    self.enforce_revocations()

        self._pollers.spawn(poll())

    _watching_revocations = False

    def enforce_revocations(self) -> None:
        for session in set(self.sessions) | set(self.by_token.values()):
            if session.cert_der is not None and self.is_revoked(session.cert_der):
                log.warning(
                    "client %s (%s): its certificate was revoked; disconnecting it", session.client, session.address
                )
                session.client_leaving = True
                if session.detached_at is not None:
                    session.expire("was revoked")
                else:
                    session.tunnel.close(
                        ErrorCode.ACCESS_DENIED, f"the certificate of client {session.client!r} was revoked"
                    )

    def is_revoked(self, cert_der: bytes) -> bool:
        return self.revocations is not None and bool(self.revocations.is_revoked(cert_der))

    def watch_ports(self, watcher: PortWatcher, interval: float = 2.0) -> None:
        """`--port auto`: follow devices appearing and disappearing."""

        async def poll() -> None:
            while True:
                await asyncio.sleep(interval)
                added, removed = watcher.poll()
                for name, device in added.items():
                    log.info("port %s appeared: %s", name, device)
                    self.ports[name] = PortSpec(name, device)
                for name in removed:
                    log.info("port %s disappeared", name)  # an open channel notices by itself (device gone)
                    self.ports.pop(name, None)
                if added or removed:
                    self.announce_ports()

        self._pollers.spawn(poll())

    def announce_ports(self) -> None:
        for session in self.sessions:
            session.conn.announce_ports(self.port_list_for(session.client))
            session.tunnel.flush_soon()

    # --- what the hub shows --------------------------------------------------------------------

    def port_list_for(self, client: str) -> list[dict[str, Any]]:
        """The port list as ``client`` sees it: each entry says what access it has."""
        ports = self.port_list()
        for entry in ports:
            access = self.access.decide(client, entry["name"]) if self.access is not None else Access.FULL
            entry["access"] = access.value if access is not None else "none"
        return ports

    def port_list(self) -> list[dict[str, Any]]:
        """What PORTS and `comtunnel list` show: each port, who has it, its line settings if open."""
        registry = self.hub_ports.registry
        settings = {
            channel.name: channel.settings.short()
            for session in self.sessions
            for channel in session.channels.values()
            if not channel.monitor
        }
        return [
            {
                "name": spec.name,
                "device": spec.device,
                "state": "missing"
                if spec.missing and spec.name not in registry.holders
                else registry.state(spec.name).value,
                "holder": registry.holder_name(spec.name),
                "settings": settings.get(spec.name),
                "monitors": len(self.hub_ports.watchers.get(spec.name, ())),
            }
            for spec in self.ports.values()
        ]

    def status_snapshot(self) -> dict[str, Any]:
        """What `comtunnel status` and the metrics endpoint show: plain counters, JSON-ready."""
        return {
            "started": self.started,
            "now": time.time(),
            "ports": self.port_list(),
            "sessions": [
                {
                    "client": session.client,
                    "address": session.address,
                    "since": session.since,
                    "connected": session.detached_at is None,
                    "bytes_in": session.tunnel.bytes_in,
                    "bytes_out": session.tunnel.bytes_out,
                    "channels": [
                        {
                            "channel": bridge.channel,
                            "port": bridge.name,
                            "access": "monitor" if bridge.monitor else "full",
                            "bytes_to_device": bridge.bytes_to_port,
                            "bytes_from_device": bridge.bytes_from_port,
                            "settings": bridge.settings.short(),
                            "device_gone": bridge.gone,
                            "lost": bridge.lost,
                        }
                        for bridge in session.channels.values()
                    ],
                }
                for session in self.sessions
            ],
        }

    async def close(self) -> None:
        self.closing = True
        await self._pollers.close()
        if self.server is not None:
            self.server.close()
        for gateway in self.gateways:
            await gateway.close()
        sessions = set(self.sessions) | set(self.by_token.values())
        for session in sessions:
            session.tunnel.close(ErrorCode.NORMAL, "hub shutting down")
        for session in sessions:
            session.cancel_grace()
            await session.close_channels()
        await self.tasks.join()  # devices being closed by sessions that ended meanwhile
        if self.server is not None:
            await self.server.wait_closed()


def _returning(protocol: asyncio.Protocol) -> Callable[[], asyncio.Protocol]:
    return lambda: protocol


async def _log_summaries() -> None:
    """Say how many repeated warnings were left out, once their window ended."""
    while True:
        await asyncio.sleep(LOG_SUMMARY_INTERVAL)
        lograte.flush(log)


class _Gate(asyncio.Protocol):
    """The first protocol of an accepted connection: asks the hub whether to take it (the peer's
    address is known only now), then hands the transport to the TLS layer and steps aside."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        layer = self.hub.admit(transport)
        if layer is not None:
            transport.set_protocol(layer)
            layer.connection_made(transport)
