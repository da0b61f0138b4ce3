"""The client: turns a hub's channels into local serial ports for unmodified applications.

Each local port (a PTY behind a symlink, or an existing device with --attach) lives as long as
the client, not as long as a connection: an application keeps its port open while the client
reconnects, and sees a pause. What the hub reports comes back as state and log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from comtunnel.aio.client.channel import ClientChannel, LinkState
from comtunnel.aio.client.ports import LocalPort, LocalPorts
from comtunnel.aio.refuse import Refusals
from comtunnel.aio.tasks import Tasks
from comtunnel.aio.tls_layer import RELAY_CERTIFICATE, TlsLayer, peer_certificate
from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import DETAIL, CertificateError, PeerError, PortError, UsageError
from comtunnel.policy.backoff import Backoff
from comtunnel.ports.network import cannot_listen, shown_listen_address
from comtunnel.protocol import events as ev
from comtunnel.protocol.errors import ErrorCode
from comtunnel.protocol.limits import DEFAULT_DEAD_TIMEOUT, DEFAULT_PING_INTERVAL, DEFAULT_REPLAY_BOUND
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import ModemLines
from comtunnel.specs import AttachSpec, LinkAccess, LinkSpec, ServeSpec, shown_name
from comtunnel.tls import describe_session, describe_tls_error, is_name_mismatch, names_probe_context

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 15.0
#: After stop(), how long a connected session may take to say goodbye (GOAWAY) and close.
STOP_GRACE = 0.5
RETRY_OPEN_AFTER = 3.0
NAMES_PROBE_TIMEOUT = 3.0  # reading the hub's names after a hostname mismatch, for the message only


class Client:
    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        links: list[LinkSpec] | None = None,
        attach: list[AttachSpec] | None = None,
        serve: list[ServeSpec] | None = None,
        given: list[LocalPort] | None = None,
        link_dir: Path | None = None,
        link_access: LinkAccess | None = None,
        server_hostname: str | None = None,
        listen: tuple[str, int] | None = None,
        label: str | None = None,
        taken_links: set[str] | None = None,
        replay_bound: int = DEFAULT_REPLAY_BOUND,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        dead_timeout: float = DEFAULT_DEAD_TIMEOUT,
        connect_timeout: float | None = None,
        dialer: Callable[[asyncio.Protocol], Awaitable[None]] | None = None,
    ) -> None:
        """``connect_timeout``: give up (PeerError) after that many seconds without a connection
        to the hub; None: keep trying. ``given``: ports made by the caller (the console's). ``dialer``
        connects the TLS layer another way than TCP to host:port (through a relay:
        :func:`comtunnel.aio.relay_link.client_dialer`)."""
        self.host, self.port = host, port
        self.dialer = dialer
        self.connect_timeout = connect_timeout
        self.replay_bound = replay_bound
        self.ping_interval = ping_interval
        self.dead_timeout = dead_timeout
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.listen = listen
        self.label = label or host
        self.taken_links = taken_links if taken_links is not None else set()
        self.listen_address: tuple[str, int] | None = None
        self.link_specs = list(links or [])
        self.attach_specs = list(attach or [])
        self.serve_specs = list(serve or [])
        self.given_ports = list(given or [])
        self.link_dir = link_dir
        self.local = LocalPorts(
            replay_bound=replay_bound, on_port_lost=self.local_port_failed, link_access=link_access or LinkAccess()
        )
        self.channels = self.local.channels
        self.tunnel: Tunnel | None = None
        self.hub_ports: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.ready = asyncio.Event()  # every channel answered at least once
        self._ports_known = asyncio.Event()
        self._resumed = asyncio.Event()  # the hub answered our RESUME (either way)
        self._session_conn: Connection | None = None  # the connection whose channels a new one resumes
        self._by_id: dict[int, ClientChannel] = {}
        self._fatal: BaseException | None = None
        self._sessions = 0  # connections that got as far as serving
        self._stop = asyncio.Event()
        self._tasks = Tasks("client")  # open retries and a reverse-mode connection
        self._refusals = Refusals("a hub connection")

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect; returns on stop(), raises on a fatal error (or when the hub
        stayed out of reach for ``connect_timeout`` seconds)."""
        try:
            await self.local.create_links(self.link_specs)
            await self.local.create_attached(self.attach_specs)
            await self.local.create_servers(self.serve_specs)
            await self.local.add_given(self.given_ports)
            if self.listen is not None:
                await self._listen_for_hub(*self.listen)
                return
            await self._dial()
        finally:
            await self._close_ports()

    async def _dial(self) -> None:
        """Dial until stopped, with backoff between attempts. A failure is logged when its reason
        is new (not at every retry); with ``connect_timeout``, give up after that long without a
        connection (from the start, or from when the last one was lost)."""
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        down_since = loop.time()
        reason: str | None = None  # why the last attempt failed, as logged
        attempts = 0
        while not self._stop.is_set():
            deadline = None if self.connect_timeout is None else down_since + self.connect_timeout
            if deadline is not None and loop.time() >= deadline:
                raise self._gave_up(reason)
            sessions = self._sessions
            attempts += 1
            in_time = True
            failure: str | None = None
            try:
                in_time = await self._attempt(deadline)
            except (TimeoutError, OSError, PeerError) as exc:
                if self._fatal is not None:
                    raise self._fatal from None
                if isinstance(exc, ssl.SSLError):
                    raise await self._tls_failure(exc) from None
                failure = describe_tls_error(exc)
                if failure != reason or self._sessions != sessions:
                    log.warning("hub %s:%s: %s", self.host, self.port, failure)
                else:
                    log.debug("hub %s:%s: attempt %d: %s", self.host, self.port, attempts, failure)
                reason = failure
            if self._fatal is not None:
                raise self._fatal
            if self._stop.is_set():
                break
            if self._sessions != sessions:  # it got connected: a new outage starts now
                reason = failure
                backoff.reset()
                down_since, attempts = loop.time(), 0
                deadline = None if self.connect_timeout is None else down_since + self.connect_timeout
            if not in_time:
                raise self._gave_up(reason)
            delay = backoff.next_delay()
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - loop.time()))
            log.debug("reconnecting in %.1f s", delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _attempt(self, deadline: float | None) -> bool:
        """One :meth:`_session`, until it ends or :meth:`stop` is called; False when, still not
        connected, it reached ``deadline`` (it is then cut short). A connected session gets
        STOP_GRACE to say goodbye; one still connecting is aborted at once."""
        loop = asyncio.get_running_loop()
        session = asyncio.ensure_future(self._session())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            while not session.done():
                left = None if deadline is None or self.connected.is_set() else deadline - loop.time()
                if left is not None and left <= 0:
                    return False
                await asyncio.wait([session, stopper], timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if stopper.done() and not session.done():
                    if self.connected.is_set():  # stop() sent GOAWAY and closes the connection
                        await asyncio.wait([session], timeout=STOP_GRACE)
                    return True
        finally:
            stopper.cancel()
            if not session.done():
                session.cancel()
                await asyncio.wait([session])
        session.result()
        return True

    def _gave_up(self, reason: str | None) -> PeerError:
        return PeerError(
            f"could not reach the hub at {self.host}:{self.port} for {self.connect_timeout:g} s: "
            f"{reason or 'no answer'}"
        )

    def status(self) -> dict[str, Any]:
        """This hub's part of `comtunnel list --local`."""
        return {
            "hub": self.label,
            "address": f"{self.host}:{self.port}",
            "connected": self.connected.is_set(),
            "ports": self.local.snapshot(),
        }

    def stop(self) -> None:
        self._stop.set()
        if self.tunnel is not None:
            self.tunnel.close(ErrorCode.NORMAL, "client shutting down")

    def fail(self, exc: BaseException) -> None:
        self._fatal = exc
        self.stop()

    async def fetch_ports(self, timeout: float = HANDSHAKE_TIMEOUT) -> list[dict[str, Any]]:
        """Connect, read the hub's port list, and leave: what `comtunnel list` shows. ``timeout``
        bounds the whole exchange."""
        tunnel, layer = self._new_tunnel()

        async def exchange() -> None:
            log.log(DETAIL, "connecting to hub %s:%s (as %s)", self.host, self.port, self.server_hostname)
            await self._connect(layer)
            await tunnel.handshake
            self._refuse_relay_as_hub(layer)
            if log.isEnabledFor(DETAIL):
                log.log(
                    DETAIL, "hub %s:%s: %s", self.host, self.port, describe_session(layer.get_extra_info("ssl_object"))
                )
            await self._unless_closed(tunnel, self._ports_known)

        try:
            await asyncio.wait_for(exchange(), timeout)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise await self._tls_failure(exc) from None
        except TimeoutError as exc:
            layer.abort()
            if str(exc):  # the TLS layer's own timeout, which says how long
                raise PeerError(f"hub {self.host}:{self.port}: {exc}") from None
            raise PeerError(
                f"could not reach the hub at {self.host}:{self.port} for {timeout:g} s: no answer"
            ) from None
        except OSError as exc:
            raise PeerError(f"hub {self.host}:{self.port}: {describe_tls_error(exc)}") from None
        finally:
            tunnel.close()
        return self.hub_ports

    async def _session(self) -> None:
        """Dial the hub and serve the connection until it ends."""
        tunnel, layer = self._new_tunnel()
        log.log(DETAIL, "connecting to hub %s:%s (as %s)", self.host, self.port, self.server_hostname)
        try:
            await asyncio.wait_for(self._connect(layer), HANDSHAKE_TIMEOUT)
            await self._serve(tunnel, layer, f"{self.host}:{self.port}", tls_failure_is_fatal=True)
        except asyncio.CancelledError:  # stopped, or out of time: no waiting for the hub
            layer.abort()
            raise
        finally:
            self.connected.clear()

    async def _connect(self, layer: TlsLayer) -> None:
        if self.dialer is not None:
            await self.dialer(layer)
        else:
            await asyncio.get_running_loop().create_connection(lambda: layer, self.host, self.port)

    def _new_tunnel(self) -> tuple[Tunnel, TlsLayer]:
        self._ports_known.clear()  # before any byte can arrive: the hub sends PORTS right away
        self._resumed.clear()
        previous = self._session_conn
        resumable = previous is not None and previous.session_token is not None
        conn = Connection(Role.CLIENT, {"software": "comtunnel"}, resume_from=previous if resumable else None)
        if resumable:
            self._session_conn = conn  # it holds the channels now, for the next attempt if this one dies
        else:
            self._resumed.set()
        tunnel = Tunnel(conn, "hub", ping_interval=self.ping_interval, dead_timeout=self.dead_timeout)
        tunnel.handler = self
        layer = TlsLayer(
            self.ssl_context,
            tunnel,
            server_side=False,
            server_hostname=self.server_hostname,
            handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        return tunnel, layer

    async def _serve(self, tunnel: Tunnel, layer: TlsLayer, where: str, *, tls_failure_is_fatal: bool) -> None:
        self.tunnel = tunnel
        try:
            await asyncio.wait_for(tunnel.handshake, HANDSHAKE_TIMEOUT)
            self._refuse_relay_as_hub(layer)
            await asyncio.wait_for(self._unless_closed(tunnel, self._ports_known), HANDSHAKE_TIMEOUT)
            await asyncio.wait_for(self._unless_closed(tunnel, self._resumed), HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            failure = await self._tls_failure(exc)
            raise self._fail_now(failure) if tls_failure_is_fatal else failure from None
        except TimeoutError:
            layer.abort()
            raise PeerError(f"the hub did not finish the handshake within {HANDSHAKE_TIMEOUT:g} s") from None
        except ConnectionError as exc:
            # A reset is the same reason whether it came before or during the handshake (a matter
            # of timing), so a retry logs it once, not once in each wording.
            layer.abort()
            raise PeerError(describe_tls_error(exc)) from None
        tunnel.peer = f"hub {where}"
        log.info("connected to hub %s; ports: %s", where, _names(self.hub_ports))
        if log.isEnabledFor(DETAIL):
            log.log(DETAIL, "hub %s: %s", where, describe_session(layer.get_extra_info("ssl_object")))
        await self._prepare_channels()
        self._session_conn = tunnel.conn
        self._sessions += 1
        self.connected.set()
        for channel in self.channels.values():
            if channel.closed:  # not carried over by a resumption
                self._open(channel)
        self._check_ready()
        tunnel.flush()
        lost = await tunnel.closed
        self.connected.clear()
        if self._fatal is None and not self._stop.is_set():
            if isinstance(lost, ssl.SSLError):
                raise await self._tls_failure(lost)
            log.warning("connection to the hub lost: %s", describe_tls_error(lost) if lost else "closed by the hub")

    async def _unless_closed(self, tunnel: Tunnel, event: asyncio.Event) -> None:
        """Wait for ``event``; if the hub closes the connection first, say why (fatal if it was)."""
        waiter = asyncio.ensure_future(event.wait())
        await asyncio.wait([waiter, tunnel.closed], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            if self._fatal is not None:
                raise self._fatal
            raise ConnectionResetError("the hub closed the connection during the handshake")

    async def _listen_for_hub(self, host: str, port: int) -> None:
        """Reverse direction: the hub (behind NAT) dials us. TLS roles stay: we verify it as its client.

        One hub connection at a time; a second one is closed at once, with a log line.
        """
        active: asyncio.Task[None] | None = None

        async def serve(tunnel: Tunnel, layer: TlsLayer) -> None:
            try:
                await self._serve(tunnel, layer, layer.peer_address, tls_failure_is_fatal=False)
            except (TimeoutError, OSError, PeerError, CertificateError) as exc:
                log.warning("hub connection from %s: %s", layer.peer_address, exc)
            except asyncio.CancelledError:
                layer.abort()
                raise
            finally:
                self.connected.clear()

        def accept() -> asyncio.Protocol:
            nonlocal active
            tunnel, layer = self._new_tunnel()
            if active is not None and not active.done():
                return self._refusals.protocol(lambda: "a hub is already connected")
            active = self._tasks.spawn(serve(tunnel, layer))
            return layer

        try:
            server = await asyncio.get_running_loop().create_server(accept, host, port)
        except OSError as exc:
            raise cannot_listen(host, port, "the hub (--listen)", exc) from None
        self.listen_address = server.sockets[0].getsockname()[:2]
        log.info("client listening for the hub on %s", shown_listen_address(*self.listen_address))
        try:
            await self._stop.wait()
        finally:
            server.close()
            if active is not None:  # a connected hub gets a moment for the GOAWAY; a handshake none
                if self.connected.is_set():
                    await asyncio.wait([active], timeout=STOP_GRACE)
                active.cancel()
                await asyncio.wait([active])
        if self._fatal is not None:
            raise self._fatal

    async def _prepare_channels(self) -> None:
        names = {p["name"] for p in self.hub_ports}
        if not self.channels:  # every port this client may use, under --link-dir
            await self.local.create_auto_links(self.hub_ports, self.link_dir, self.label, self.taken_links)
        missing = [name for name in self.channels if name not in names]
        if missing:
            raise self._fail_now(
                UsageError(
                    f"the hub has no port named {', '.join(map(repr, missing))} (ports: {_names(self.hub_ports)})"
                )
            )

    async def _tls_failure(self, exc: BaseException) -> CertificateError:
        """The failed handshake as a CertificateError. After a hostname mismatch with a hub we dialled,
        the message lists the names the hub's certificate holds, read by a second, handshake-only
        connection that checks the certificate against our CA (nothing is sent over it)."""
        names: list[str] = []
        if self.listen is None and self.dialer is None and is_name_mismatch(exc):
            probe = names_probe_context(self.ssl_context)
            der = await peer_certificate(self.host, self.port, probe, self.server_hostname, NAMES_PROBE_TIMEOUT)
            if der is not None:
                from comtunnel.certinfo import subject_alt_names  # cryptography, on this failure path only

                names = subject_alt_names(der)
        return CertificateError(f"TLS with the hub failed: {describe_tls_error(exc, peer_names=names)}")

    def _refuse_relay_as_hub(self, layer: TlsLayer) -> None:
        """Through a relay, the hub's certificate must not be the relay's own: a relay certificate
        holding the hub's name would let the relay end the session itself and read it."""
        relay = layer.get_extra_info(RELAY_CERTIFICATE)
        hub = layer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if relay is not None and relay == hub:
            layer.abort()
            raise self._fail_now(
                CertificateError(
                    f"the relay answered as hub {self.server_hostname} with its own certificate: relay.crt "
                    "holds the hub's name, so the relay could read the session. Give the relay a "
                    "certificate without hub names (comtunnel certs relay), or a CA of its own (--relay-ca)"
                )
            )

    def _fail_now(self, exc: BaseException) -> BaseException:
        self._fatal = exc
        return exc

    def _open(self, channel: ClientChannel) -> None:
        tunnel = self.tunnel
        if tunnel is None or tunnel.conn.closed or self._stop.is_set():
            return
        channel.state = LinkState.OPENING
        cid = tunnel.conn.open_channel(channel.name, channel.settings, channel.open_request())
        self._by_id[cid] = channel
        tunnel.flush_soon()

    def _retry_later(self, channel: ClientChannel, tunnel: Tunnel) -> None:
        async def retry() -> None:
            await asyncio.sleep(RETRY_OPEN_AFTER)
            if self.tunnel is tunnel and not tunnel.closed.done() and channel.closed:
                self._open(channel)

        self._tasks.spawn(retry())

    def local_port_failed(self, channel: ClientChannel) -> None:
        self.fail(PortError(f"local port for {channel.name} failed"))

    async def _close_ports(self) -> None:
        self._tasks.cancel()
        await self.local.close()

    # --- TunnelHandler -------------------------------------------------------------------------

    def tunnel_event(self, event: ev.Event) -> None:
        if type(event) is ev.DataReceived:  # the hot path, before the match's class patterns
            self._by_id[event.channel].deliver(event.data)
            return
        match event:
            case ev.WindowOpened(cid):
                self._by_id[cid].window_opened()
            case ev.PortsUpdated(ports):
                self.hub_ports = ports
                self._ports_known.set()
            case ev.ChannelOpened(cid, settings):
                assert self.tunnel is not None
                channel = self._by_id[cid]
                channel.bind(self.tunnel, cid, settings)
                log.info("%s: open on the hub (%s)", channel.name, settings.short())
                self._check_ready()
            case ev.ChannelOpenFailed(cid, code, message):
                self._open_failed(self._by_id.pop(cid), code, message)
            case ev.ChannelClosed(cid, code, message, by_peer):
                channel = self._by_id.pop(cid)
                channel.unbind(LinkState.CLOSED)
                if by_peer and self.tunnel is not None:
                    log.warning("%s: the hub closed the port: %s", channel.name, message or code)
                    self._retry_later(channel, self.tunnel)
            case ev.SettingsChanged(cid, settings):
                self._by_id[cid].remote_settings = settings
            case ev.ControlChanged(cid, state):
                log.debug("%s: control %s", self._by_id[cid].name, state)
            case ev.ModemChanged(cid, lines):
                self._by_id[cid].modem_changed(lines)
            case ev.FlowChanged(cid, stopped):
                self._by_id[cid].flow_changed(stopped)
            case ev.ChannelErrorReceived(cid, code, message):
                log.warning("%s: hub reports: %s", self._by_id[cid].name, message)
            case ev.ConnectionTerminated(code, message):
                if code == ErrorCode.ACCESS_DENIED:  # e.g. our certificate was revoked: retrying cannot help
                    self.fail(CertificateError(f"the hub refused us: {message}"))
                elif code not in (ErrorCode.NORMAL,):
                    log.error("the hub ended the connection: %s", message)
            case ev.DeviceStatusChanged(cid, state, message):
                channel = self._by_id[cid]
                if state == "gone":
                    channel.state = LinkState.DEVICE_GONE
                    log.warning(
                        "%s: the device is gone on the hub: %s; waiting for it to come back", channel.name, message
                    )
                    channel.modem_changed(ModemLines.NONE)
                else:
                    channel.state = LinkState.OPEN
                    log.info("%s: %s", channel.name, message or "the device is back")
            case ev.SessionResumed(kept, lost):
                assert self.tunnel is not None
                for cid in kept:
                    channel = self._by_id[cid]
                    channel.resume(self.tunnel)
                    channel.state = LinkState.OPEN
                for cid, unconfirmed in lost.items():
                    self._by_id.pop(cid).lose(unconfirmed, "the hub did not keep the channel")
                log.info("session resumed: %s", ", ".join(self._by_id[c].name for c in kept) or "no channels")
                self._resumed.set()
            case ev.ResumeRefused(_, message, lost):
                log.warning("the hub could not resume the session (%s): reopening the ports", message)
                for cid, unconfirmed in lost.items():
                    self._by_id.pop(cid).lose(unconfirmed, "session lost")
                for channel in self.channels.values():  # suspended but not listed (opening at the cut)
                    if channel.suspended:
                        channel.lose(0, "session lost")
                self._by_id.clear()
                self._resumed.set()

    def _open_failed(self, channel: ClientChannel, code: ErrorCode | int, message: str) -> None:
        repeated = channel.failure == message
        channel.state, channel.failure = LinkState.FAILED, message
        if repeated:  # the same answer as last time: said once, with the retry, not every few seconds
            log.debug("%s: still cannot open: %s", channel.name, message)
        else:
            log.error("%s: cannot open: %s (trying again every %g s)", channel.name, message, RETRY_OPEN_AFTER)
        if code == ErrorCode.UNKNOWN_PORT or code == ErrorCode.ACCESS_DENIED:
            self.fail(UsageError(f"{channel.name}: {message}"))
            return
        self._check_ready()
        if self.tunnel is not None:
            self._retry_later(channel, self.tunnel)

    def _check_ready(self) -> None:
        if all(c.state is not LinkState.OPENING for c in self.channels.values()):
            self.ready.set()

    def tunnel_lost(self, exc: BaseException | None) -> None:
        """Keep open channels suspended for a resumption; forget channels that were still opening."""
        for cid, channel in list(self._by_id.items()):
            if channel.closed:
                del self._by_id[cid]  # its OPEN was unanswered: it is opened afresh
            else:
                channel.suspend()
                channel.state = LinkState.DISCONNECTED
        for channel in self.channels.values():
            if channel.closed:
                channel.state = LinkState.DISCONNECTED
        self.ready.clear()


async def fetch_ports(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
    dialer: Callable[[asyncio.Protocol], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Connect, read the hub's port list, and leave: what `comtunnel list` shows."""
    return await Client(host, port, ssl_context, server_hostname=server_hostname, dialer=dialer).fetch_ports(timeout)


def _names(ports: list[dict[str, Any]]) -> str:
    return ", ".join(shown_name(p["name"]) for p in ports) or "none"
