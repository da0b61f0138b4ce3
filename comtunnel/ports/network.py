"""A port whose 'application' is a TCP client: the raw (socat, netcat) side of the gateways.

It listens on a TCP address and treats one accepted connection like an application that has
the port open: connect = open (DTR/RTS up), disconnect = close. A second connection while one is
active gets a one-line refusal and is closed; after the first leaves, the next one starts from a
clean state. Subclasses (the RFC 2217 server port) put a protocol between the socket and the port.

Drain tracking uses write-buffer limits of zero, so the transport reports every transition from
"has unsent bytes" to "empty": that is the moment the tunnel may get its credit back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from typing import cast

from comtunnel.errors import PortGone, PortUnavailable, UsageError
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)

#: What a paused port holds of what its TCP client sent (uvloop delivers a read even after
#: pause_reading() in connection_made); past it, the overflow is dropped, counted and logged.
HOLD_LIMIT = 1 << 20


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


class _Connection(asyncio.Protocol):
    def __init__(self, port: NetworkServerPort) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.port._connected(self)

    def data_received(self, data: bytes) -> None:
        if self.port._active is self:
            self.port._incoming(data)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        if self.port._active is self and self.port._listener is not None:
            self.port._listener.port_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.port._disconnected(self)


class NetworkServerPort(SerialPort):
    """Raw TCP: the bytes of the connection are the bytes of the port."""

    kind = "raw TCP"

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.host, self.port = host, port
        self.description = f"{self.kind} {host}:{port}"
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

    @property
    def peer(self) -> str:
        if self._active is None or self._active.transport is None:
            return "nobody"
        peer = self._active.transport.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    async def open(self, listener: PortListener) -> None:
        self._listener = listener
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
        if self._active is not None:
            log.warning("%s: refused a second %s connection; %s has the port", self.name, self.kind, self.peer)
            conn.transport.write(f"comtunnel: port {self.name} is in use by {self.peer}\r\n".encode())
            conn.transport.close()
            return
        self._active = conn
        self._held.clear()
        conn.transport.set_write_buffer_limits(high=0, low=0)
        if self._paused:
            conn.transport.pause_reading()
        log.info("%s: %s connection from %s", self.name, self.kind, self.peer)
        self._session_started(conn.transport)
        if self._listener is not None:
            self._listener.app_open(True)

    def _disconnected(self, conn: _Connection) -> None:
        if self._active is not conn:
            return
        log.info("%s: %s connection from %s closed", self.name, self.kind, self.peer)
        self._active = None
        self._session_ended()
        if self._listener is not None:
            self._listener.app_open(False)

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
        if self._active is not None and self._active.transport is not None:
            self._active.transport.abort()
        self._active = None
        self._listener = None
        await server.wait_closed()
