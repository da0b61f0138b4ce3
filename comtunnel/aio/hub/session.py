"""One client's session on the hub: its identity, its channels and what it may open.

Usually one connection long; with resumption it outlives a dropped connection by the hub's grace
period and a new connection takes it over. The decisions (who may open what, grace, takeover)
are the registry's (:mod:`comtunnel.policy.registry`) and the session's deadlines
(:mod:`comtunnel.policy.deadlines`); this module carries them out on sockets and devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any, Protocol, cast

from comtunnel import lograte
from comtunnel.aio.hub.channel import HubChannel, MonitorChannel
from comtunnel.aio.hub.ports import HubPorts
from comtunnel.aio.tasks import Tasks
from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import DETAIL, PortError
from comtunnel.policy.admission import Admission, BufferBudget
from comtunnel.policy.deadlines import Deadlines, Timeout
from comtunnel.policy.registry import Holder, Verdict
from comtunnel.ports.base import SerialPort
from comtunnel.ports.open import PortSpec
from comtunnel.ports.watch import WatchPort
from comtunnel.protocol import events as ev
from comtunnel.protocol.errors import ErrorCode, RemoteProtocolError
from comtunnel.protocol.limits import HUB_MAX_FRAME
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import ControlRequest
from comtunnel.tls import describe_session, describe_tls_error, peer_name

log = logging.getLogger(__name__)

#: A client must say HELLO this long after the TLS handshake, or it is dropped.
HELLO_TIMEOUT = 10.0


class SessionHost(Protocol):
    """What a session needs of its hub (the hub's server module implements it)."""

    hub_ports: HubPorts
    replay_bound: int
    ping_interval: float
    dead_timeout: float
    closing: bool
    live: set[HubSession]
    sessions: set[HubSession]
    by_token: dict[str, HubSession]
    tasks: Tasks
    admission: Admission
    buffer_budget: BufferBudget

    @property
    def grace(self) -> float: ...

    def is_revoked(self, cert_der: bytes) -> bool: ...

    def port_list_for(self, client: str) -> list[dict[str, Any]]: ...


class HubSession:
    def __init__(self, hub: SessionHost, *, source: str | None = None) -> None:
        """``source``: the address whose handshake :class:`Admission` counts (None: we dialled)."""
        self.hub = hub
        self.source = source
        self.counted = False  # this connection holds one of the admission's session slots
        self.client = "?"
        self.address = "?"
        self.identified = False
        self.since = time.time()
        self.token = secrets.token_urlsafe(18)
        self.conn = Connection(Role.HUB, {"software": "comtunnel"}, max_frame=HUB_MAX_FRAME, session_token=self.token)
        self.tunnel = Tunnel(
            self.conn,
            "client",
            ping_interval=hub.ping_interval,
            dead_timeout=hub.dead_timeout,
            budget=hub.buffer_budget,
        )
        self.tunnel.handler = self
        self.tunnel.on_connected = self.identify
        self.channels: dict[int, HubChannel] = {}
        self.detached_at: float | None = None  # when the connection dropped, while we wait for a resume
        self.client_leaving = False  # the client said GOAWAY: nothing to keep
        self.cert_der: bytes | None = None
        self.deadlines = Deadlines()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._opening: dict[int, asyncio.Task[None]] = {}
        self._tasks = Tasks("hub session")

    # --- deadlines: the session's one loop timer -----------------------------------------------

    def _arm(self) -> None:
        at = self.deadlines.next()
        if self._timer is not None and (at is None or at != self._timer_at):
            self._timer.cancel()
            self._timer = None
        if at is not None and self._timer is None:
            self._timer_at = at
            self._timer = asyncio.get_running_loop().call_at(at, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._timer = None
        now = max(asyncio.get_running_loop().time(), self._timer_at)
        for which in self.deadlines.expired(now):
            if which is Timeout.HELLO:
                self._hello_timed_out()
            else:
                self.expire("did not come back")
        self._arm()

    def _stop_timer(self, which: Timeout) -> None:
        self.deadlines.clear(which)
        self._arm()

    # --- identity ------------------------------------------------------------------------------

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
        if self.source is not None:
            refused = self.hub.admission.authenticated(self.source)
            self.source = None  # no longer a startup
            if refused is not None:
                lograte.warn(
                    log, "refused sessions", "", "refused client %s from %s: %s", self.client, self.address, refused
                )
                self.tunnel.close(ErrorCode.HUB_BUSY, f"the hub is full: {refused}")
                return
            self.counted = True
        if self.cert_der is not None and self.hub.is_revoked(self.cert_der):
            log.warning("refused client %s from %s: its certificate is revoked", self.client, self.address)
            self.tunnel.close(ErrorCode.ACCESS_DENIED, f"the certificate of client {self.client!r} is revoked")
            return
        self.identified = True
        self.hub.sessions.add(self)
        self.hub.by_token[self.token] = self
        log.info("client %s connected from %s", self.client, self.address)
        if log.isEnabledFor(DETAIL):
            log.log(DETAIL, "client %s (%s): %s", self.client, self.address, describe_session(ssl_object))
        self.conn.announce_ports(self.hub.port_list_for(self.client))
        self.tunnel.flush_soon()
        self.deadlines.set(Timeout.HELLO, asyncio.get_running_loop().time() + HELLO_TIMEOUT)
        self._arm()

    def _release_slot(self) -> None:
        if self.source is not None:
            self.hub.admission.left(self.source, authenticated=False)
        elif self.counted:
            self.hub.admission.left("", authenticated=True)
        self.source, self.counted = None, False

    def _hello_timed_out(self) -> None:
        if not self.conn.handshake_complete and self.tunnel.transport is not None:
            log.warning("%s sent no HELLO within %g s; dropping it", self.tunnel.peer, HELLO_TIMEOUT)
            self.tunnel.close(ErrorCode.PROTOCOL_ERROR, "no HELLO in time")

    # --- TunnelHandler -------------------------------------------------------------------------

    def tunnel_event(self, event: ev.Event) -> None:
        if type(event) is ev.DataReceived:  # the hot path, before the match's class patterns
            self.channels[event.channel].deliver(event.data)
            return
        match event:
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
                self._stop_timer(Timeout.HELLO)
                log.debug("%s: handshake %s", self.tunnel.peer, info)

    def tunnel_lost(self, exc: BaseException | None) -> None:
        self.hub.live.discard(self)
        self._release_slot()
        self._stop_timer(Timeout.HELLO)
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
        self.deadlines.set(Timeout.GRACE, asyncio.get_running_loop().time() + self.hub.grace)
        self._arm()
        log.info(
            "client %s: keeping %s open for %g s for it to resume",
            self.client,
            ", ".join(b.name for b in self.channels.values()) or "its session",
            self.hub.grace,
        )

    def cancel_grace(self) -> None:
        self._stop_timer(Timeout.GRACE)

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
            holder = self.hub.hub_ports.holders.get(bridge.name)
            if holder is not None:
                holder.closing = True
        self.hub.tasks.spawn(self.close_channels())

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
            self._release_slot()  # the old connection's: tunnel_lost will not come for it
        self.source, self.counted = new.source, new.counted  # the connection's slot moves with it
        new.source, new.counted = None, False
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
        new.deadlines.clear_all()
        new._arm()
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
        ports = self.hub.hub_ports
        decision = ports.registry.decide(self.client, event.port, list(ports.specs))
        if decision.verdict is Verdict.REFUSE:
            if decision.code is ErrorCode.ACCESS_DENIED:
                lograte.warn(
                    log,
                    "refused OPENs",
                    self.client,
                    "refused client %s (%s) port %r: %s",
                    self.client,
                    self.address,
                    event.port,
                    decision.message,
                )
                self.conn.reject_channel(event.channel, decision.code, decision.message)
                self.tunnel.flush_soon()
            else:
                self._reject(event, decision.code, decision.message)
            return
        spec = ports.specs[event.port]
        if decision.verdict is Verdict.MONITOR:
            self._opening[event.channel] = self._tasks.spawn(self._open_monitor(event, spec))
            return
        if decision.verdict is Verdict.TAKE_BACK:
            assert decision.holder is not None
            cast(HubSession, decision.holder.owner).expire("started a new session")
        self._opening[event.channel] = self._tasks.spawn(self._open_device(event, spec, decision.holder))

    def _reject(self, event: ev.ChannelOpenRequested, code: ErrorCode, message: str) -> None:
        lograte.warn(
            log, "refused OPENs", self.client, "%s: refused port %r: %s", self.tunnel.peer, event.port, message
        )
        self.conn.reject_channel(event.channel, code, message)
        self.tunnel.flush_soon()

    async def _open_device(self, event: ev.ChannelOpenRequested, spec: PortSpec, previous: Holder | None) -> None:
        ports = self.hub.hub_ports
        if previous is not None:  # its owner is leaving: wait for the device to be closed
            await ports.wait_released(previous)
            decision = ports.registry.decide(self.client, spec.name, list(ports.specs), retried=True)
            if decision.verdict is Verdict.REFUSE:
                self._opening.pop(event.channel, None)
                self._reject(event, decision.code, decision.message)
                return
        claim = ports.claim(spec.name, self.client, self)
        conn = self.conn
        port: SerialPort | None = None
        try:
            port = ports.factory(spec, event.settings, event.control)
            channel = HubChannel(
                self.tunnel, event.channel, spec, port, event.control, ports=ports, replay_bound=self.hub.replay_bound
            )
            await port.open(channel)
            opened = True
        except PortError as exc:
            ports.release(spec.name, claim)
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
            ports.release(spec.name, claim)
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
        ports = self.hub.hub_ports
        held = holding_channel(self.hub, spec.name)
        settings = held.settings if held is not None else event.settings
        port = WatchPort(spec.name, ports.watchers, settings)
        channel = MonitorChannel(
            self.tunnel, event.channel, spec, port, ControlRequest(), ports=ports, replay_bound=self.hub.replay_bound
        )
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
            self.hub.tasks.spawn(self._close_port(bridge))

    async def _close_port(self, bridge: HubChannel) -> None:
        bridge.detach()
        if bridge.monitor:
            await bridge.close()
            return
        ports = self.hub.hub_ports
        holder = ports.holders.get(bridge.name)
        if holder is not None:
            holder.closing = True
        try:
            await bridge.close()
        finally:
            ports.release(bridge.name, holder)

    async def close_channels(self) -> None:
        for task in self._opening.values():
            task.cancel()
        for channel in list(self.channels):
            bridge = self.channels.pop(channel, None)
            if bridge is not None:  # a concurrent close (the session's end during hub shutdown) has it
                await self._close_port(bridge)


def holding_channel(hub: SessionHost, name: str) -> HubChannel | None:
    """The channel (of a full-access client) that has the device ``name`` open."""
    for session in set(hub.sessions) | set(hub.by_token.values()):
        for channel in session.channels.values():
            if channel.name == name and not channel.monitor:
                return channel
    return None
