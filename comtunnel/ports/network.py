"""A port whose 'application' is a TCP client: the raw (socat, netcat) side of the gateways.

It listens on a TCP address and treats one accepted connection like an application that has
the port open: connect = open (DTR/RTS up), disconnect = close. A second connection while one is
active gets a one-line refusal and is closed, or with ``takeover`` (ser2net's ``kickolduser``) the
first gets a one-line notice and is closed, and the second has the port; either way each session
starts from a clean state (nothing the previous client sent, no bytes held for it, the RFC 2217
codec and line settings reset). Subclasses (the RFC 2217 server port) put a protocol between the
socket and the port.

Every accepted connection has TCP keepalive on (a vanished peer frees the port within about a
minute), and with ``idle_timeout`` a client that sent nothing for that long is disconnected with a
notice. What counts as activity, and why, is in :mod:`comtunnel.ports.gateway_policy`.

Drain tracking uses write-buffer limits of zero, so the transport reports every transition from
"has unsent bytes" to "empty": that is the moment the tunnel may get its credit back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from typing import cast

from comtunnel.errors import PortGone, PortUnavailable, UsageError
from comtunnel.ports import unixsock
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.ports.gateway_policy import KEEPALIVE, Arrival, IdleTimer, arrival
from comtunnel.ports.unixsock import UnixEndpoint
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)

#: What a paused port holds of what its TCP client sent (uvloop delivers a read even after
#: pause_reading() in connection_made); past it, the overflow is dropped, counted and logged.
HOLD_LIMIT = 1 << 20
#: A client we disconnect (idle, taken over) gets its notice and our FIN, and this long to close its
#: side; what it sends meanwhile is read and dropped, so unread input does not turn the close into a
#: reset that could destroy the notice. Then the connection is aborted.
HANG_UP_LINGER = 2.0


def cannot_listen(host: str, port: int, what: str, exc: OSError) -> PortUnavailable:
    """The one-line error for an address we cannot listen on (taken, not ours, not allowed): exit 5."""
    # asyncio and uvloop put their own sentence into strerror ("error while attempting to bind...")
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc) or type(exc).__name__
    return PortUnavailable(f"cannot listen on {host}:{port} for {what}: {reason}")


def shown_listen_address(host: str, port: int) -> str:
    """An address we listen on, for the log: a wildcard one says that it means every interface."""
    return f"all interfaces ({host}:{port})" if host in ("0.0.0.0", "::", "") else f"{host}:{port}"


def check_listen_address(host: str, allow_remote: bool, what: str) -> None:
    """Plaintext listeners stay on loopback unless the user says otherwise."""
    if allow_remote:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise UsageError(
            f"{what} on {host} would be plaintext and reachable from the network; "
            "use 127.0.0.1, or add --allow-remote if that is what you want"
        )


def set_keepalive(transport: asyncio.BaseTransport) -> bool:
    """SO_KEEPALIVE, and the probe timing of :data:`KEEPALIVE` where the platform has the options
    (TCP_KEEPIDLE, or TCP_KEEPALIVE on macOS; TCP_KEEPINTVL; TCP_KEEPCNT). False if it could not."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    idle, interval, count = KEEPALIVE
    idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            (idle_option, idle),
            (getattr(socket, "TCP_KEEPINTVL", None), interval),
            (getattr(socket, "TCP_KEEPCNT", None), count),
        ):
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError as exc:
        log.debug("cannot set TCP keepalive: %s", exc)
        return False
    return True


def _peer_of(conn: _Connection) -> str:
    if conn.transport is None:
        return "?"
    if conn.port.unix is not None:
        return unixsock.peer_of(conn.transport)
    peer = conn.transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


class _Connection(asyncio.Protocol):
    def __init__(self, port: NetworkServerPort) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.linger: asyncio.TimerHandle | None = None  # hung up by us: aborted when it runs out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.port._connected(self)

    def data_received(self, data: bytes) -> None:
        if self.port._active is self:
            self.port._client_spoke()
            self.port._incoming(data)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        if self.port._active is self and self.port._listener is not None:
            self.port._listener.port_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.port._hung_up.discard(self)
        self.port._disconnected(self)


class NetworkServerPort(SerialPort):
    """Raw TCP: the bytes of the connection are the bytes of the port."""

    kind = "raw TCP"

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        idle_timeout: float = 0.0,
        takeover: bool = False,
        unix: UnixEndpoint | None = None,
    ) -> None:
        """``unix``: listen on that Unix socket instead of ``host:port``."""
        if idle_timeout < 0:
            raise ValueError(f"idle_timeout must not be negative, got {idle_timeout!r}")
        self.name = name
        self.idle_timeout = idle_timeout
        self.takeover = takeover
        self.host, self.port = host, port
        self.unix = unix
        self.description = f"{self.kind} {unix.describe() if unix else f'{host}:{port}'}"
        self.settings = PortSettings()
        self.control = ControlState()
        self.modem = ModemLines.NONE
        self.dropped_bytes = 0
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._listener: PortListener | None = None
        self._active: _Connection | None = None
        self._paused = False
        self._held = bytearray()  # received while paused: delivered on resume_reading, in order
        self._release_scheduled = False
        self._idle: IdleTimer | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._hung_up: set[_Connection] = set()  # disconnected by us, waiting for the peer to close
        self._unix_inode = 0

    @property
    def peer(self) -> str:
        if self._active is None or self._active.transport is None:
            return "nobody"
        return _peer_of(self._active)

    async def open(self, listener: PortListener) -> None:
        self._listener = listener
        if self.unix is not None:
            self._server, self._unix_inode = await unixsock.listen(self.unix, lambda: _Connection(self), self.name)
            log.info("%s: %s server on %s (mode %o)", self.name, self.kind, self.unix.describe(), self.unix.mode)
            return
        try:
            self._server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError as exc:
            raise cannot_listen(self.host, self.port, self.name, exc) from None
        self.address = self._server.sockets[0].getsockname()[:2]
        log.info("%s: %s server on %s:%s", self.name, self.kind, *self.address)

    # --- connections ------------------------------------------------------------------------

    def _connected(self, conn: _Connection) -> None:
        assert conn.transport is not None
        decision = arrival(self._active is not None, self.takeover)
        if decision is Arrival.REFUSE:
            log.warning("%s: refused a second %s connection; %s has the port", self.name, self.kind, self.peer)
            conn.transport.write(f"comtunnel: port {self.name} is in use by {self.peer}\r\n".encode())
            conn.transport.close()
            return
        if decision is Arrival.TAKE_OVER and self._active is not None:
            old, new_peer = self._active, _peer_of(conn)
            log.warning("%s: %s connection from %s takes the port from %s", self.name, self.kind, new_peer, self.peer)
            self._hang_up(old, f"port {self.name} was taken over by {new_peer}")
            self._end_session(old, "taken over")
        self._active = conn
        self._held.clear()
        set_keepalive(conn.transport)
        conn.transport.set_write_buffer_limits(high=0, low=0)
        if self._paused:
            conn.transport.pause_reading()
        log.info("%s: %s connection from %s", self.name, self.kind, self.peer)
        loop = asyncio.get_running_loop()
        self._idle = IdleTimer(self.idle_timeout, loop.time())
        self._arm_idle()
        self._session_started(conn.transport)
        if self._listener is not None:
            self._listener.app_open(True)

    def _disconnected(self, conn: _Connection) -> None:
        if self._active is conn:
            self._end_session(conn, "closed")

    def _end_session(self, conn: _Connection, how: str) -> None:
        """``conn`` no longer has the port (it left, or was disconnected): the port is free."""
        log.info("%s: %s connection from %s %s", self.name, self.kind, _peer_of(conn), how)
        self._active = None
        self._held.clear()
        self._idle = None
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._session_ended()
        if self._listener is not None:
            self._listener.app_open(False)

    def _hang_up(self, conn: _Connection, message: str) -> None:
        """A notice, then a graceful close (see :data:`HANG_UP_LINGER`): for a client we disconnect."""
        transport = conn.transport
        if transport is None or transport.is_closing():
            return
        self._send_notice(transport, message)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()  # its input is read and dropped: it no longer has the port
        conn.linger = asyncio.get_running_loop().call_later(HANG_UP_LINGER, transport.abort)
        self._hung_up.add(conn)

    # --- idle timeout ---------------------------------------------------------------------------

    def _client_spoke(self) -> None:
        if self._idle is not None and self._idle.enabled:
            self._idle.touch(asyncio.get_running_loop().time())

    def _arm_idle(self) -> None:
        deadline = self._idle.deadline() if self._idle is not None else None
        if deadline is not None:
            self._idle_handle = asyncio.get_running_loop().call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_handle = None
        conn, idle = self._active, self._idle
        if conn is None or idle is None:
            return
        if not idle.expired(asyncio.get_running_loop().time(), held_back=self._paused or bool(self._held)):
            self._arm_idle()
            return
        log.warning(
            "%s: %s client %s sent nothing for %g s: disconnected (--gateway-idle)",
            self.name,
            self.kind,
            self.peer,
            idle.timeout,
        )
        self._hang_up(conn, f"disconnected: nothing received for {idle.timeout:g} s")
        self._end_session(conn, "timed out")

    def refuse_current(self, message: str) -> None:
        """Send the active client a reason and hang up (e.g. the device is busy)."""
        conn = self._active
        if conn is not None and conn.transport is not None:
            self._send_notice(conn.transport, message)
            conn.transport.close()

    def _send_notice(self, transport: asyncio.Transport, message: str) -> None:
        transport.write(f"comtunnel: {message}\r\n".encode())

    # --- hooks for protocol subclasses ------------------------------------------------------------

    def _session_started(self, transport: asyncio.Transport) -> None:
        pass

    def _session_ended(self) -> None:
        pass

    def _incoming(self, data: bytes) -> None:
        if self._paused or self._held:
            self._hold(data)
        else:
            self._received(data)

    def _hold(self, data: bytes) -> None:
        room = HOLD_LIMIT - len(self._held)
        if len(data) > room:
            log.warning(
                "%s: %s client %s sent %d bytes while the port was paused: dropped",
                self.name,
                self.kind,
                self.peer,
                len(data) - max(room, 0),
            )
            self.dropped_bytes += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        self._held += data
        if self._paused and self._active is not None and self._active.transport is not None:
            self._active.transport.pause_reading()  # again: some transports ignore the first one

    def _release_held(self) -> None:
        self._release_scheduled = False
        if self._held and not self._paused and self._active is not None:
            data = bytes(self._held)
            self._held.clear()
            self._received(data)

    def _received(self, data: bytes) -> None:
        if self._listener is not None:
            self._listener.port_data(data)

    def _transmit(self, transport: asyncio.Transport, data: bytes) -> None:
        transport.write(data)

    # --- SerialPort -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._server is None:
            raise PortGone(f"{self.name}: {self.kind} server is closed")
        conn = self._active
        if conn is None or conn.transport is None or conn.transport.is_closing():
            self.dropped_bytes += len(data)  # nobody has the port open, as with a closed tty
            return
        self._transmit(conn.transport, data)

    @property
    def write_buffer_size(self) -> int:
        conn = self._active
        if conn is None or conn.transport is None:
            return 0
        return conn.transport.get_write_buffer_size()

    def pause_reading(self) -> None:
        self._paused = True
        if self._active is not None and self._active.transport is not None:
            self._active.transport.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        if self._active is not None and self._active.transport is not None:
            self._active.transport.resume_reading()
        if self._held and not self._release_scheduled:
            self._release_scheduled = True
            asyncio.get_running_loop().call_soon(self._release_held)

    @property
    def holds_back(self) -> bool:
        return True  # TCP: a paused reader holds the client back

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        self.settings = settings
        return settings

    async def set_control(self, request: ControlRequest) -> ControlState:
        self.control = request.apply_to(self.control)
        return self.control

    async def purge(self, which: Purge) -> None:
        pass

    def modem_lines(self) -> ModemLines:
        return self.modem

    def set_modem_lines(self, lines: ModemLines) -> None:
        self.modem = lines

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self._active is not None and self._active.transport is not None:
            self._active.transport.abort()
        for conn in list(self._hung_up):
            if conn.linger is not None:
                conn.linger.cancel()
            if conn.transport is not None:
                conn.transport.abort()
        self._hung_up.clear()
        self._active = None
        self._listener = None
        if self.unix is not None:
            unixsock.remove(self.unix, self._unix_inode)
        await server.wait_closed()
