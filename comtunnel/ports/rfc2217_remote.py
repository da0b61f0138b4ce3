"""A serial port on a remote RFC 2217 server (ser2net ``telnet(rfc2217)``, hub4com, pyserial's server).

Lets a hub aggregate ports that other machines already serve into its one TLS connection.
Requests wait for their acknowledgement under a timeout, matched per signal group; a server that
never answers one (ser2net does not acknowledge DTR on a device without modem lines) costs a
logged warning once per group and the requested value is assumed, never a hang.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from comtunnel import lograte
from comtunnel.errors import PortGone, PortUnavailable
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.protocol import rfc2217 as r
from comtunnel.protocol.errors import RemoteProtocolError
from comtunnel.protocol.settings import (
    MAX_BAUDRATE,
    MIN_BAUDRATE,
    ControlRequest,
    ControlState,
    ModemLines,
    PortSettings,
    Purge,
)

log = logging.getLogger(__name__)

ACK_TIMEOUT = 1.0
CONNECT_TIMEOUT = 10.0
#: How long close() lets unsent output go out before it drops it.
CLOSE_TIMEOUT = 1.0


class _Connection(asyncio.Protocol):
    def __init__(self, port: Rfc2217RemotePort) -> None:
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.port._connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.port._received(data)

    def resume_writing(self) -> None:
        if self.port._listener is not None:
            self.port._listener.port_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.port._connection_lost(exc)


class Rfc2217RemotePort(SerialPort):
    def __init__(self, url: str, settings: PortSettings, control: ControlRequest) -> None:
        parts = urlsplit(url)
        if parts.scheme != "rfc2217" or not parts.hostname or not parts.port:
            raise PortUnavailable(f"{url!r} is not an rfc2217://HOST:PORT address")
        self.host, self.port = parts.hostname, parts.port
        self.description = url
        self.settings = settings
        self.control = ControlState(dtr=bool(control.dtr), rts=bool(control.rts))
        self.codec = r.Rfc2217Client()
        self.signature = ""
        self._initial_control = control
        self._transport: asyncio.Transport | None = None
        self._listener: PortListener | None = None
        self._waiters: dict[str, asyncio.Future[object]] = {}
        self._warned: set[str] = set()
        self._modem = ModemLines.NONE
        self._lost: asyncio.Future[None]  # set in connection_made, done at connection_lost
        self._closing = False

    # --- connection -----------------------------------------------------------------------------

    async def open(self, listener: PortListener) -> None:
        loop = asyncio.get_running_loop()
        self._listener = listener  # the server may send data before create_connection() returns
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            self._listener = None
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
            raise PortUnavailable(f"RFC 2217 server {self.host}:{self.port}: {reason}") from None
        await self.apply_settings(self.settings)
        await self.set_control(ControlRequest(dtr=self.control.dtr, rts=self.control.rts))

    def _connected(self, transport: asyncio.Transport) -> None:
        """Start negotiating in connection_made: the server's own offers can arrive before
        create_connection() returns, and the answers to them need a transport to go out on."""
        self._transport = transport
        self._lost = asyncio.get_running_loop().create_future()
        transport.set_write_buffer_limits(high=0, low=0)
        self.codec.start()
        self.codec.send_signature()
        self._flush()

    def _connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._lost.done():
            self._lost.set_result(None)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()
        listener, self._listener = self._listener, None
        if listener is not None and not self._closing:
            listener.port_lost(PortGone(f"RFC 2217 server {self.host}:{self.port} closed the connection"))

    async def close(self) -> None:
        """Send what is written, for a while: a server that stopped reading (its device stalled)
        must not keep the connection, and so the port, open after we have let go of it."""
        self._closing = True
        self._listener = None
        transport = self._transport
        if transport is None:
            return
        transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), CLOSE_TIMEOUT)
        except TimeoutError:
            log.info(
                "RFC 2217 server %s:%s did not take %d bytes before close; dropped them",
                self.host,
                self.port,
                transport.get_write_buffer_size(),
            )
            transport.abort()

    def _flush(self) -> None:
        data = self.codec.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # --- input -----------------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning("RFC 2217 server %s:%s broke the protocol: %s", self.host, self.port, exc)
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            self._handle(event)
        self._flush()  # negotiation answers

    def _handle(self, event: object) -> None:
        match event:
            case r.SerialDataReceived(data):
                if self._listener is not None:
                    self._listener.port_data(data)
            case r.BaudRateAcked() | r.DataSizeAcked() | r.ParityAcked() | r.StopSizeAcked() | r.PurgeAcked():
                self._resolve(_GROUP[type(event)], event)
            case r.ControlAcked(group, _):
                self._resolve(group, event)
            case r.ModemStateNotified(lines, _):
                if lines != self._modem:
                    self._modem = lines
                    if self._listener is not None:
                        self._listener.port_modem(lines)
            case r.SignatureReceived(text):
                self.signature = text
            case r.ProtocolWarning(message):
                lograte.warn(
                    log,
                    "ignored RFC 2217 input",
                    f"{self.host}:{self.port}",
                    "RFC 2217 server %s:%s: ignored: %s",
                    self.host,
                    self.port,
                    message,
                    level=logging.INFO,
                )

    def _resolve(self, group: str, event: object) -> None:
        waiter = self._waiters.pop(group, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    async def _request(self, group: str, send: Callable[[], None]) -> object | None:
        """Send a request and wait for its group's acknowledgement; None after a timeout.

        A group the server once left unanswered is not waited for again: it will not answer.
        """
        if self._transport is None:
            raise PortGone(f"RFC 2217 server {self.host}:{self.port} is not connected")
        send()
        self._flush()
        if group in self._warned:
            return None
        waiter = self._waiters[group] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(waiter, ACK_TIMEOUT)
        except TimeoutError:
            if group not in self._warned:
                self._warned.add(group)
                log.warning(
                    "RFC 2217 server %s:%s did not acknowledge %s within %g s; assuming it took effect",
                    self.host,
                    self.port,
                    group,
                    ACK_TIMEOUT,
                )
            return None
        except asyncio.CancelledError:
            raise PortGone(f"RFC 2217 server {self.host}:{self.port} closed the connection") from None

    # --- SerialPort ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise PortGone(f"RFC 2217 server {self.host}:{self.port} is not connected")
        self.codec.send_data(data)
        self._flush()

    @property
    def write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        c = self.codec
        requests = [
            self._request("baudrate", lambda: c.set_baudrate(settings.baudrate)),
            self._request("datasize", lambda: c.set_datasize(settings.bytesize)),
            self._request("parity", lambda: c.set_parity(settings.parity)),
            self._request("stopsize", lambda: c.set_stopsize(settings.stopbits)),
        ]
        flow = r.FLOW_HARDWARE if settings.rtscts else r.FLOW_XONXOFF if settings.xonxoff else r.FLOW_NONE
        baud, bits, parity, stop = await asyncio.gather(*requests)
        await self._request("outflow", lambda: c.set_control(flow))
        self.settings = settings.replace(
            baudrate=baud.baudrate if isinstance(baud, r.BaudRateAcked) and _valid_baud(baud) else settings.baudrate,
            bytesize=bits.bits if isinstance(bits, r.DataSizeAcked) and 5 <= bits.bits <= 8 else settings.bytesize,
            parity=parity.parity if isinstance(parity, r.ParityAcked) else settings.parity,
            stopbits=stop.stopbits if isinstance(stop, r.StopSizeAcked) else settings.stopbits,
        )
        return self.settings

    async def set_control(self, request: ControlRequest) -> ControlState:
        requests = []
        for group, value, on, off in (
            ("dtr", request.dtr, r.DTR_ON, r.DTR_OFF),
            ("rts", request.rts, r.RTS_ON, r.RTS_OFF),
            ("break", request.break_, r.BREAK_ON, r.BREAK_OFF),
        ):
            if value is not None:
                code = on if value else off
                requests.append(self._request(group, functools.partial(self.codec.set_control, code)))
        await asyncio.gather(*requests)  # groups are acknowledged independently
        self.control = request.apply_to(self.control)
        return self.control

    async def purge(self, which: Purge) -> None:
        await self._request("purge", lambda: self.codec.purge(which))

    def modem_lines(self) -> ModemLines:
        return self._modem


def _valid_baud(ack: r.BaudRateAcked) -> bool:
    """A server that answers with a rate no port has (0, 2^32-1) keeps what we asked for."""
    return MIN_BAUDRATE <= ack.baudrate <= MAX_BAUDRATE


_GROUP = {
    r.BaudRateAcked: "baudrate",
    r.DataSizeAcked: "datasize",
    r.ParityAcked: "parity",
    r.StopSizeAcked: "stopsize",
    r.PurgeAcked: "purge",
}
