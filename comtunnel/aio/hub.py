"""The hub: serves named serial ports to authenticated clients over mutual TLS.

A device is opened when a client opens its channel and closed when the channel closes, so a
port left alone is free for local use. One client holds a port at a time; the registry says who,
so a second one gets a 'busy' answer naming the holder. Each connection is a :class:`HubSession`;
a session's failure (bad frames, a dead device) never reaches another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import secrets
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from comtunnel.access import Access, AccessPolicy, RevocationList
from comtunnel.aio.bridge import ChannelBridge
from comtunnel.aio.gateway import LocalGateway
from comtunnel.aio.port_queue import Operation
from comtunnel.aio.tls_layer import TlsLayer
from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import PortError, PortNotSupported, UsageError
from comtunnel.ports.base import SerialPort
from comtunnel.ports.network import make_server_port
from comtunnel.ports.watch import WatchPort
from comtunnel.protocol import events as ev
from comtunnel.protocol.errors import ErrorCode, RemoteProtocolError
from comtunnel.protocol.limits import DEFAULT_DEAD_TIMEOUT, DEFAULT_GRACE, DEFAULT_PING_INTERVAL, DEFAULT_REPLAY_BOUND
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge
from comtunnel.tls import describe_tls_error, peer_name

log = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT = 10.0
#: A client must say HELLO this long after the TLS handshake, or it is dropped.
HELLO_TIMEOUT = 10.0
#: Open connections at once (most of them are dropped within the handshake timeouts if they misbehave).
MAX_CONNECTIONS = 256
#: How often the revocation list's file is checked for changes.
REVOCATION_POLL = 1.0
#: How often a gone device's path is checked for its return.
REOPEN_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class PortSpec:
    name: str
    device: str


PortFactory = Callable[[PortSpec, PortSettings, ControlRequest], SerialPort]


def open_device(spec: PortSpec, settings: PortSettings, control: ControlRequest) -> SerialPort:
    if spec.device.startswith("rfc2217://"):
        from comtunnel.ports.rfc2217_remote import Rfc2217RemotePort

        return Rfc2217RemotePort(spec.device, settings, control)
    from comtunnel.ports.device import DevicePort

    return DevicePort(spec.device, settings, control)


@dataclasses.dataclass
class Holder:
    """Who has a port. ``closing``: on its way out, so a newcomer waits for ``released``."""

    client: str
    since: float
    session: HubSession | None = None
    closing: bool = False
    released: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


RELEASE_WAIT = 3.0
FIRST_BACKOFF = 0.1


class Hub:
    def __init__(
        self,
        ports: list[PortSpec],
        ssl_context: ssl.SSLContext,
        *,
        port_factory: PortFactory = open_device,
        serve: list[tuple[str, str, str, int]] | None = None,
        access: AccessPolicy | None = None,
        revocations: RevocationList | None = None,
        grace: float = DEFAULT_GRACE,
        replay_bound: int = DEFAULT_REPLAY_BOUND,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        dead_timeout: float = DEFAULT_DEAD_TIMEOUT,
    ) -> None:
        self.ports = {p.name: p for p in ports}
        self.access = access  # None: every client may open every port
        self.revocations = revocations
        self.started = time.time()
        self.grace = grace  # how long a disconnected session's devices stay open for it to resume
        self.replay_bound = replay_bound
        self.ping_interval = ping_interval
        self.dead_timeout = dead_timeout
        self.by_token: dict[str, HubSession] = {}  # sessions a client may resume, connected or not
        self.live: set[HubSession] = set()  # every open connection, authenticated or not
        self.watchers: dict[str, set[WatchPort]] = {}  # port name -> monitors watching it
        self.max_connections = MAX_CONNECTIONS
        self._revocation_task: asyncio.Task[None] | None = None
        self._background_tasks: set[asyncio.Task[None]] = set()  # pollers, cancelled at close
        self._refusals = 0
        self.closing = False
        self.ssl_context = ssl_context
        self.port_factory = port_factory
        self.holders: dict[str, Holder] = {}
        self.sessions: set[HubSession] = set()
        self.server: asyncio.Server | None = None
        self.gateways: list[LocalGateway] = []
        self._background: set[asyncio.Task[None]] = set()
        self._serve = list(serve or [])  # (port name, "raw" | "rfc2217", host, tcp port)

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._new_connection, host, port)
        await self.start_gateways()
        self.watch_revocations()
        addresses = [s.getsockname()[:2] for s in self.server.sockets]
        for host_, port_ in addresses:
            log.info("hub listening on %s:%s with ports %s", host_, port_, ", ".join(self.ports) or "none")
        return addresses

    async def start_gateways(self) -> None:
        """The --rfc2217/--raw listeners (also for a hub that only dials out)."""
        for name, protocol, gw_host, gw_port in self._serve:
            if name not in self.ports:
                raise UsageError(f"--{protocol} names port {name!r}, which is not given with --port")
            gateway = LocalGateway(self, self.ports[name], make_server_port(protocol, name, gw_host, gw_port))
            await gateway.start()
            self.gateways.append(gateway)

    def _new_connection(self) -> asyncio.Protocol:
        if len(self.live) >= self.max_connections:
            return _Refused(self)
        session = HubSession(self)
        self.live.add(session)
        return self._tls_layer(session)

    def _tls_layer(self, session: HubSession) -> TlsLayer:

        def failed(exc: BaseException) -> None:
            log.warning("TLS handshake with %s failed: %s", layer.peer_address, describe_tls_error(exc, "client"))

        layer = TlsLayer(
            self.ssl_context,
            session.tunnel,
            server_side=True,
            handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            on_handshake_failed=failed,
        )
        return layer

    async def dial(self, host: str, port: int) -> None:
        """Reverse direction: we open the TCP connection to a listening client (we are behind NAT).

        TLS roles do not change: we remain the TLS server and still require the client's
        certificate. Reconnects with capped, jittered backoff until cancelled.
        """
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF
        while True:
            session = HubSession(self)
            self.live.add(session)
            layer = self._tls_layer(session)
            try:
                connect = loop.create_connection(_returning(layer), host, port)
                await asyncio.wait_for(connect, TLS_HANDSHAKE_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                log.warning("cannot reach the client at %s:%s: %s", host, port, describe_tls_error(exc, "client"))
            else:
                await session.tunnel.closed
                if session.identified:
                    backoff = FIRST_BACKOFF
            delay = backoff * (0.5 + random.random())
            log.info("dialling %s:%s again in %.1f s", host, port, delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, 30.0)

    def watch_revocations(self) -> None:
        """Reload the revocation list when it changes (checked every second) and cut revoked clients off."""
        if self.revocations is None or self._revocation_task is not None:
            return
        self.revocations.reload_if_changed()

        async def poll() -> None:
            while True:
                await asyncio.sleep(REVOCATION_POLL)
                if self.revocations is not None and self.revocations.reload_if_changed():
                    log.info("revocation list %s reloaded", self.revocations.path)
                    self.enforce_revocations()

        self._revocation_task = asyncio.get_running_loop().create_task(poll())

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

    def holding_channel(self, name: str) -> HubChannel | None:
        """The channel (of a full-access client) that has the device ``name`` open."""
        holder = self.holders.get(name)
        if holder is None or holder.session is None:
            return None
        return next((c for c in holder.session.channels.values() if c.name == name and not c.monitor), None)

    def watch_ports(self, watcher: Any, interval: float = 2.0) -> None:
        """`--port auto`: follow devices appearing and disappearing (a ``discovery.PortWatcher``)."""

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

        self._background_tasks.add(asyncio.get_running_loop().create_task(poll()))

    def announce_ports(self) -> None:
        for session in self.sessions:
            session.conn.announce_ports(self.port_list_for(session.client))
            session.tunnel.flush_soon()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a cleanup (closing a device...) that close() must wait for, not lose."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def claim(self, name: str, client: str, session: HubSession | None = None) -> Holder:
        holder = self.holders[name] = Holder(client, time.time(), session)
        return holder

    def release(self, name: str, holder: Holder | None) -> None:
        """Free ``name`` if ``holder`` still has it, and wake whoever waits for it."""
        if holder is not None and self.holders.get(name) is holder:
            del self.holders[name]
        if holder is not None:
            holder.released.set()

    def port_list_for(self, client: str) -> list[dict[str, Any]]:
        """The port list as ``client`` sees it: each entry says what access it has."""
        ports = self.port_list()
        for entry in ports:
            access = self.access.decide(client, entry["name"]) if self.access is not None else Access.FULL
            entry["access"] = access.value if access is not None else "none"
        return ports

    def port_list(self) -> list[dict[str, Any]]:
        """What PORTS and `comtunnel list` show: each port, who has it, its line settings if open."""
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
                "state": self._port_state(spec.name),
                "holder": self.holders[spec.name].client if spec.name in self.holders else None,
                "settings": settings.get(spec.name),
                "monitors": len(self.watchers.get(spec.name, ())),
            }
            for spec in self.ports.values()
        ]

    def _port_state(self, name: str) -> str:
        holder = self.holders.get(name)
        if holder is None:
            return "free"
        if holder.session is not None and holder.session.detached_at is not None:
            return "held for a disconnected client"
        return "in use"

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
        if self._revocation_task is not None:
            self._revocation_task.cancel()
        for task in self._background_tasks:
            task.cancel()
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
        while self._background:  # devices being closed by sessions that ended meanwhile
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


class HubSession:
    """One client's session: its channels and devices. Usually one connection long; with resumption it
    outlives a dropped connection by the hub's grace period, and a new connection takes it over."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.client = "?"
        self.address = "?"
        self.identified = False
        self.since = time.time()
        self.token = secrets.token_urlsafe(18)
        self.conn = Connection(Role.HUB, {"software": "comtunnel"}, session_token=self.token)
        self.tunnel = Tunnel(self.conn, "client", ping_interval=hub.ping_interval, dead_timeout=hub.dead_timeout)
        self.tunnel.handler = self
        self.tunnel.on_connected = self.identify
        self.channels: dict[int, HubChannel] = {}
        self.detached_at: float | None = None  # when the connection dropped, while we wait for a resume
        self.client_leaving = False  # the client said GOAWAY: nothing to keep
        self.cert_der: bytes | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self._opening: dict[int, asyncio.Task[None]] = {}

    def identify(self) -> None:
        transport = self.tunnel.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername")
        self.address = f"{peer[0]}:{peer[1]}" if peer else "?"
        ssl_object = transport.get_extra_info("ssl_object")
        self.client = peer_name(ssl_object) or "?"
        self.cert_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.tunnel.peer = f"client {self.client} ({self.address})"
        if self.cert_der is not None and self.hub.is_revoked(self.cert_der):
            log.warning("refused client %s from %s: its certificate is revoked", self.client, self.address)
            self.tunnel.close(ErrorCode.ACCESS_DENIED, f"the certificate of client {self.client!r} is revoked")
            return
        self.identified = True
        self.hub.sessions.add(self)
        self.hub.by_token[self.token] = self
        log.info("client %s connected from %s", self.client, self.address)
        self.conn.announce_ports(self.hub.port_list_for(self.client))
        self.tunnel.flush_soon()
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(HELLO_TIMEOUT, self._hello_timed_out)

    def _hello_timed_out(self) -> None:
        if not self.conn.handshake_complete and self.tunnel.transport is not None:
            log.warning("%s sent no HELLO within %g s; dropping it", self.tunnel.peer, HELLO_TIMEOUT)
            self.tunnel.close(ErrorCode.PROTOCOL_ERROR, "no HELLO in time")

    # --- TunnelHandler -------------------------------------------------------------------------

    def tunnel_event(self, event: ev.Event) -> None:
        match event:
            case ev.DataReceived(channel, data):
                self.channels[channel].deliver(data)
            case ev.WindowOpened(channel):
                self.channels[channel].window_opened()
            case ev.ChannelOpenRequested():
                self._open(event)
            case ev.SettingsRequested(channel, settings):
                self.channels[channel].request_settings(settings)
            case ev.ControlRequested(channel, request):
                self.channels[channel].request_control(request)
            case ev.PurgeRequested(channel, which):
                self.channels[channel].request_purge(which)
            case ev.ChannelClosed(channel, _, message, by_peer):
                self._forget(channel, f"closed by the client: {message}" if by_peer else message)
            case ev.ChannelErrorReceived(channel, _, message):
                log.warning("%s reports on channel %d: %s", self.tunnel.peer, channel, message)
            case ev.ResumeRequested(token, channels):
                self._resume(token, channels)
            case ev.ConnectionTerminated():
                self.client_leaving = True
            case ev.HandshakeComplete(info):
                if self._hello_timer is not None:
                    self._hello_timer.cancel()
                log.debug("%s: handshake %s", self.tunnel.peer, info)

    def tunnel_lost(self, exc: BaseException | None) -> None:
        self.hub.live.discard(self)
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if not self.identified:
            return  # the TLS layer already said why
        if exc is not None and not isinstance(exc, ConnectionResetError | BrokenPipeError):
            log.warning("%s: connection lost: %s", self.tunnel.peer, describe_tls_error(exc, "client"))
        else:
            log.info("%s disconnected", self.tunnel.peer)
        self.hub.sessions.discard(self)
        if (self.channels or self._opening) and not self.client_leaving and not self.hub.closing and self.hub.grace > 0:
            self._suspend()
        else:
            self._end()

    # --- resumption ----------------------------------------------------------------------------

    def _suspend(self) -> None:
        self.detached_at = time.time()
        for bridge in self.channels.values():
            bridge.suspend()
        self._grace = asyncio.get_running_loop().call_later(self.hub.grace, self.expire, "did not come back")
        log.info(
            "client %s: keeping %s open for %g s for it to resume",
            self.client,
            ", ".join(b.name for b in self.channels.values()) or "its session",
            self.hub.grace,
        )

    def cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def expire(self, why: str) -> None:
        """Give up on a disconnected session: close its devices, free its ports."""
        if self.detached_at is None:
            return
        lost = sum(b.lost + b.pending_bytes for b in self.channels.values())
        log.warning(
            "client %s %s after %.0f s: closing %s (%d bytes of device output dropped)",
            self.client,
            why,
            time.time() - self.detached_at,
            ", ".join(b.name for b in self.channels.values()) or "nothing",
            lost,
        )
        self.detached_at = None
        self._end()

    def _end(self) -> None:
        self.cancel_grace()
        self.hub.sessions.discard(self)
        if self.hub.by_token.get(self.token) is self:
            del self.hub.by_token[self.token]
        for bridge in self.channels.values():
            holder = self.hub.holders.get(bridge.name)
            if holder is not None:
                holder.closing = True
        self.hub.spawn(self.close_channels())

    def _resume(self, token: str, channels: list[tuple[int, int, int]]) -> None:
        old = self.hub.by_token.get(token)
        if old is None or old is self or old.client != self.client:
            why = "no such session on this hub (it restarted, or the session expired)"
            if old is not None and old is not self:
                why = "that session belongs to another client"
                log.warning("%s asked to resume a session of client %s: refused", self.tunnel.peer, old.client)
            else:
                log.info("%s: cannot resume its session: %s", self.tunnel.peer, why)
            self.conn.refuse_resume(ErrorCode.NORMAL, why)
            self.tunnel.flush_soon()
            return
        old.take_over(self, channels)

    def take_over(self, new: HubSession, channels: list[tuple[int, int, int]]) -> None:
        """Continue this session on ``new``'s connection (which then stops being a session of its own)."""
        try:
            dropped = new.conn.accept_resume(self.conn, channels)
        except RemoteProtocolError as exc:  # offsets that cannot be ours: that connection goes, the session stays
            log.warning("%s: bad resumption of %s's session: %s", new.tunnel.peer, self.client, exc)
            new.conn.goaway(exc.code, str(exc))
            new.tunnel.abort(exc)
            return
        previous = self.tunnel
        if not previous.closed.done():  # the client found a new path before we noticed the old one died
            previous.handler = None
            if previous.transport is not None:
                previous.transport.abort()
            self.hub.sessions.discard(self)
        away = time.time() - self.detached_at if self.detached_at is not None else 0.0
        self.cancel_grace()
        self.conn, self.tunnel = new.conn, new.tunnel
        self.tunnel.handler = self
        self.address = new.address
        self.detached_at = None
        self.client_leaving = False
        self.hub.sessions.discard(new)
        self.hub.by_token.pop(new.token, None)
        self.hub.sessions.add(self)
        # The connection's slot moves with it: ``new`` is no session any more, and when this
        # connection ends, tunnel_lost() is called on us and frees the slot.
        self.hub.live.discard(new)
        self.hub.live.add(self)
        if new._hello_timer is not None:
            new._hello_timer.cancel()
        for cid in dropped:
            self._forget(cid, "not resumed by the client")
        for bridge in self.channels.values():
            bridge.resume(self.tunnel)
            bridge.report_state()
        log.info(
            "client %s resumed its session from %s after %.1f s (%s)",
            self.client,
            self.address,
            away,
            ", ".join(b.name for b in self.channels.values()) or "no channels",
        )
        self.tunnel.flush_soon()

    # --- channels ------------------------------------------------------------------------------

    def _open(self, event: ev.ChannelOpenRequested) -> None:
        spec = self.hub.ports.get(event.port)
        if spec is None:
            names = ", ".join(self.hub.ports) or "none"
            self._reject(event, ErrorCode.UNKNOWN_PORT, f"no port named {event.port!r} (ports: {names})")
            return
        access = self.hub.access.decide(self.client, spec.name) if self.hub.access is not None else None
        if self.hub.access is not None and access is None:
            message = self.hub.access.describe(self.client, spec.name)
            log.warning("refused client %s (%s) port %r: %s", self.client, self.address, spec.name, message)
            self.conn.reject_channel(event.channel, ErrorCode.ACCESS_DENIED, message)
            self.tunnel.flush_soon()
            return
        if access is Access.MONITOR:
            self._opening[event.channel] = asyncio.get_running_loop().create_task(self._open_monitor(event, spec))
            return
        holder = self.hub.holders.get(spec.name)
        if holder is not None and not holder.closing:
            kept = holder.session
            if kept is not None and kept.detached_at is not None and kept.client == self.client:
                kept.expire("started a new session")  # its own old session: the client restarted
            else:
                since = time.strftime("%H:%M:%S", time.localtime(holder.since))
                note = ""
                if kept is not None and kept.detached_at is not None:
                    until = time.strftime("%H:%M:%S", time.localtime(kept.detached_at + self.hub.grace))
                    note = f" (disconnected; kept for it until {until})"
                self._reject(
                    event, ErrorCode.PORT_BUSY, f"port {spec.name!r} is in use by {holder.client} since {since}{note}"
                )
                return
        task = asyncio.get_running_loop().create_task(self._open_device(event, spec, holder))
        self._opening[event.channel] = task

    def _reject(self, event: ev.ChannelOpenRequested, code: ErrorCode, message: str) -> None:
        log.warning("%s: refused port %r: %s", self.tunnel.peer, event.port, message)
        self.conn.reject_channel(event.channel, code, message)
        self.tunnel.flush_soon()

    async def _open_device(self, event: ev.ChannelOpenRequested, spec: PortSpec, previous: Holder | None) -> None:
        if previous is not None:  # its owner is leaving: wait for the device to be closed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(previous.released.wait(), RELEASE_WAIT)
            if spec.name in self.hub.holders:
                holder = self.hub.holders[spec.name]
                self._opening.pop(event.channel, None)
                self._reject(event, ErrorCode.PORT_BUSY, f"port {spec.name!r} is in use by {holder.client}")
                return
        claim = self.hub.claim(spec.name, self.client, self)
        conn = self.conn
        port: SerialPort | None = None
        try:
            port = self.hub.port_factory(spec, event.settings, event.control)
            channel = HubChannel(self, event.channel, spec, port, event.control)
            await port.open(channel)
            opened = True
        except PortError as exc:
            self.hub.release(spec.name, claim)
            self._opening.pop(event.channel, None)
            self._reject(event, exc.code, str(exc))
            return
        except asyncio.CancelledError:  # the connection went away while the device was opening
            opened = False
        self._opening.pop(event.channel, None)
        if not opened or conn is not self.conn or conn.channel_state(event.channel) is None or conn.closed:
            if port is not None:
                with contextlib.suppress(PortError):
                    await port.close()
            self.hub.release(spec.name, claim)
            return
        assert port is not None
        settings = channel.settings = await channel.read_back(event.settings)
        self.channels[event.channel] = channel
        if self.detached_at is not None:  # the connection died while we were opening
            channel.suspend()
        self.conn.accept_channel(event.channel, settings, {"device": spec.device})
        channel.start_window()
        log.info("%s opened %s (%s, %s)", self.tunnel.peer, spec.name, spec.device, settings.short())
        channel.port_modem(port.modem_lines())
        channel.window_opened()  # anything the device said while we were opening
        self.tunnel.flush_soon()

    async def _open_monitor(self, event: ev.ChannelOpenRequested, spec: PortSpec) -> None:
        held = self.hub.holding_channel(spec.name)
        settings = held.settings if held is not None else event.settings
        port = WatchPort(spec.name, self.hub.watchers, settings)
        channel = MonitorChannel(self, event.channel, spec, port, ControlRequest())
        channel.settings = settings
        await port.open(channel)
        self._opening.pop(event.channel, None)
        if self.conn.channel_state(event.channel) is None or self.conn.closed:
            await port.close()
            return
        self.channels[event.channel] = channel
        self.conn.accept_channel(event.channel, settings, {"device": spec.device, "access": "monitor"})
        log.info("%s watches %s (monitor access)", self.tunnel.peer, spec.name)
        self.tunnel.flush_soon()

    def _forget(self, channel: int, why: str) -> None:
        bridge = self.channels.pop(channel, None)
        if bridge is not None:
            log.info("%s: %s closed (%s)", self.tunnel.peer, bridge.name, why or "normal")
            self.hub.spawn(self._close_port(bridge))

    async def _close_port(self, bridge: HubChannel) -> None:
        bridge.detach()
        if bridge.monitor:
            await bridge.close()
            return
        holder = self.hub.holders.get(bridge.name)
        if holder is not None:
            holder.closing = True
        try:
            await bridge.close()
        finally:
            self.hub.release(bridge.name, holder)

    async def close_channels(self) -> None:
        for task in self._opening.values():
            task.cancel()
        for channel in list(self.channels):
            bridge = self.channels.pop(channel, None)
            if bridge is not None:  # a concurrent close (the session's end during hub shutdown) has it
                await self._close_port(bridge)


class HubChannel(ChannelBridge):
    """A channel whose port is a device on this machine: apply what the client asks, in wire order.

    Writes and the client's line operations share the channel's :class:`PortQueue`, so a purge,
    a baud change or a DTR pulse takes effect exactly between the bytes it came between.
    A device that disappears (unplugged: read error, EIO) leaves the channel up in a "gone" state:
    the client is told, the queue holds what it sends (unacknowledged: its window stops it), and the
    device is reopened with the last line settings when its path is back; the queue then goes on.
    """

    monitor = False

    def __init__(
        self, session: HubSession, channel: int, spec: PortSpec, port: SerialPort, control: ControlRequest
    ) -> None:
        super().__init__(session.tunnel, channel, spec.name, port, replay_bound=session.hub.replay_bound)
        self.session = session
        self.spec = spec
        self.settings = PortSettings()
        self.control = control  # the lines as last asked, for a reopen
        self.gone = False
        self._reported: set[str] = set()
        self._modem: ModemLines | None = None
        self._flow_stopped = False
        self._tasks: set[asyncio.Task[None]] = set()

    def port_data(self, data: bytes) -> None:
        watchers = None if self.monitor else self.session.hub.watchers.get(self.name)
        if watchers:
            for watcher in list(watchers):
                watcher.feed(data)
        super().port_data(data)

    # --- the client's operations, in wire order ---------------------------------------------------

    def request_settings(self, settings: PortSettings) -> None:
        self.to_port.submit(Operation(lambda: self._guarded(self._apply_settings(settings)), True, "settings"))

    def request_control(self, request: ControlRequest) -> None:
        self.to_port.submit(Operation(lambda: self._guarded(self._set_control(request)), True, "control lines"))

    def request_purge(self, which: Purge) -> None:
        self.to_port.submit(Operation(lambda: self._guarded(self._purge(which)), False, "purge"))

    async def _guarded(self, operation: Coroutine[Any, Any, None]) -> None:
        try:
            await operation
        except PortNotSupported as exc:
            self._report_once(str(exc), exc.code, str(exc))
        except PortError as exc:
            self.tunnel.conn.report_channel_error(self.channel, exc.code, str(exc))
            log.warning("%s: %s", self.name, exc)
        self.tunnel.flush_soon()

    def _report_once(self, key: str, code: ErrorCode, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.warning("%s: %s", self.name, message)
            self.tunnel.conn.report_channel_error(self.channel, code, message)

    async def read_back(self, requested: PortSettings) -> PortSettings:
        try:
            return await self.port.apply_settings(requested)
        except PortError as exc:
            self._report_once("settings", exc.code, str(exc))
            return requested

    async def _apply_settings(self, settings: PortSettings) -> None:
        self.settings = await self.port.apply_settings(settings)
        self.meter.reset()  # a new rate: measure what it drains afresh
        log.info("%s: line settings %s", self.name, self.settings.short())
        self.tunnel.conn.report_settings(self.channel, self.settings)

    async def _set_control(self, request: ControlRequest) -> None:
        self.control = ControlRequest(
            dtr=self.control.dtr if request.dtr is None else request.dtr,
            rts=self.control.rts if request.rts is None else request.rts,
            break_=None,  # a BREAK is not restored on a reopen
        )
        state = await self.port.set_control(request)
        log.info("%s: DTR=%s RTS=%s BREAK=%s", self.name, *_onoff(state.dtr, state.rts, state.break_))
        self.tunnel.conn.report_control(self.channel, state)

    async def _purge(self, which: Purge) -> None:
        if which & Purge.RECEIVE:
            self.drop_unsent()  # device input read before the purge and not yet sent goes with it
        await self.port.purge(which)

    def port_modem(self, lines: ModemLines) -> None:
        if lines != self._modem and not self.closed:
            self._modem = lines
            self.tunnel.conn.report_modem(self.channel, lines)
            self.tunnel.flush_soon()

    def port_flow(self, stopped: bool) -> None:
        if stopped != self._flow_stopped and not self.closed:
            self._flow_stopped = stopped
            self.meter.stopped = stopped  # a stopped line gets the smallest window
            self.retune_window()
            log.info("%s: the device %s", self.name, "sent XOFF: output stopped" if stopped else "sent XON")
            self.tunnel.conn.report_flow(self.channel, stopped)
            self.tunnel.flush_soon()

    def report_state(self) -> None:
        """After a resumption: what the client may have missed while it was away."""
        conn = self.tunnel.conn
        conn.report_settings(self.channel, self.settings)
        if self._flow_stopped:
            conn.report_flow(self.channel, True)
        if self._modem is not None:
            conn.report_modem(self.channel, self._modem)
        if self.gone:
            conn.report_device_status(self.channel, "gone", f"device {self.spec.device} is gone")

    # --- the device going and coming back ---------------------------------------------------------

    def port_lost(self, exc: PortError | None) -> None:
        if self.closed or self.gone:
            return
        message = str(exc) if exc else "device closed"
        log.warning("%s: %s; waiting for %s to come back", self.name, message, self.spec.device)
        self.gone = True
        self.to_port.hold()
        self._modem = ModemLines.NONE
        conn = self.tunnel.conn
        conn.report_device_status(self.channel, "gone", message)
        conn.report_modem(self.channel, ModemLines.NONE)  # carrier loss, for RFC 2217 clients
        self.tunnel.flush_soon()
        task = asyncio.get_running_loop().create_task(self._reopen())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reopen(self) -> None:
        with contextlib.suppress(PortError):
            await self.port.close()
        device = self.spec.device
        while not self.closed:
            await asyncio.sleep(REOPEN_INTERVAL)
            if device.startswith("/") and not os.path.exists(device):
                continue
            port = self.session.hub.port_factory(self.spec, self.settings, self.control)
            try:
                await port.open(self)
            except PortError as exc:
                log.debug("%s: not back yet: %s", self.name, exc)
                continue
            if self.closed:
                await port.close()
                return
            self.port = port
            self.gone = False
            self._reported.clear()
            with contextlib.suppress(PortError):
                self.settings = await port.apply_settings(self.settings)
            log.info("%s: %s is back (%s)", self.name, device, self.settings.short())
            conn = self.tunnel.conn
            conn.report_device_status(self.channel, "open", f"device {device} is back")
            conn.report_settings(self.channel, self.settings)
            self.port_modem(port.modem_lines())
            self.to_port.release(port)
            if self.suspended and self.reads_while_suspended:
                self.port.resume_reading()
            else:
                self._paused = True
                self.window_opened()
            self.tunnel.flush_soon()
            return

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.to_port.close()
        if not self.gone:
            await self.port.close()


class _Refused(asyncio.Protocol):
    """A connection over the hub's limit: closed at once; logged once per burst, not per connection."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.hub._refusals % 100 == 0:
            peer = transport.get_extra_info("peername")
            log.warning(
                "refusing a connection from %s: %d connections open, the limit (%d refused so far)",
                peer and f"{peer[0]}:{peer[1]}",
                len(self.hub.live),
                self.hub._refusals + 1,
            )
        self.hub._refusals += 1
        cast(asyncio.Transport, transport).abort()


class MonitorChannel(HubChannel):
    """A channel with monitor access: the watched device's output, nothing from the client reaches it."""

    monitor = True

    def deliver(self, data: bytes) -> None:
        # Taken and thrown away, with credit, so the client is not stuck; said once.
        self._report_once("write", ErrorCode.ACCESS_DENIED, "monitor access: the data written was discarded")
        self.tunnel.conn.consume(self.channel, len(data))
        self.tunnel.flush_soon()

    def port_lost(self, exc: PortError | None) -> None:
        pass


def _returning(protocol: asyncio.Protocol) -> Callable[[], asyncio.Protocol]:
    return lambda: protocol


def _onoff(*values: bool) -> list[str]:
    return ["on" if v else "off" for v in values]
