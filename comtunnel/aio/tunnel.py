"""Drives a :class:`~comtunnel.protocol.mux.Connection` over an asyncio transport (TLS in practice).

The one place bytes meet the socket. Output is coalesced per turn of the event loop: every send
method of the connection only queues frames, and :meth:`Tunnel.flush_soon` writes them once the
loop has run the I/O callbacks of this turn, so 32 device reads that woke together leave as one TLS
record and one send, not 32 (input handling flushes at its end, for the same reason). Nothing waits
for a timer or a later read. Input events are handed to a :class:`TunnelHandler` (the hub session
or the client), which owns the channels.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol, cast

from comtunnel import lograte
from comtunnel.policy.admission import BufferBudget
from comtunnel.protocol import events as ev
from comtunnel.protocol.errors import ErrorCode, RemoteProtocolError
from comtunnel.protocol.keepalive import Action, KeepAlive
from comtunnel.protocol.limits import DEFAULT_DEAD_TIMEOUT, DEFAULT_PING_INTERVAL
from comtunnel.protocol.mux import Connection

log = logging.getLogger(__name__)

#: Credit for less than half a window goes back after this long at the latest (a quiet line).
CREDIT_DELAY = 0.1


class TunnelHandler(Protocol):
    def tunnel_event(self, event: ev.Event) -> None: ...

    def tunnel_lost(self, exc: BaseException | None) -> None: ...


def tune_socket(transport: asyncio.BaseTransport, dead_timeout: float = DEFAULT_DEAD_TIMEOUT) -> None:
    """TCP_NODELAY for small-message latency. Keepalive and TCP_USER_TIMEOUT as a second line behind
    our own PINGs: they also catch a peer that vanished while our send queue was full."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 10),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 5),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), int(dead_timeout * 1000)),
    ]
    for level, option, value in options:
        if option is None:  # not on this platform
            continue
        try:
            sock.setsockopt(level, option, value)
        except OSError:  # not TCP (tests over socketpairs)
            return


class Tunnel(asyncio.Protocol):
    def __init__(
        self,
        conn: Connection,
        peer: str = "peer",
        *,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        dead_timeout: float = DEFAULT_DEAD_TIMEOUT,
        budget: BufferBudget | None = None,
    ) -> None:
        """``budget``: shared by every connection of a hub, for the incomplete frames they hold."""
        self.conn = conn
        self._budget = budget
        self._charged = 0
        self._debug = log.isEnabledFor(logging.DEBUG)  # -vv: every event's kind (checked once: the hot path)
        self.peer = peer
        self.handler: TunnelHandler | None = None
        self.on_connected: Callable[[], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.handshake = asyncio.get_running_loop().create_future()
        self.bytes_in = 0
        self.bytes_out = 0
        self._receiving = False
        self._loop = asyncio.get_running_loop()
        self._keepalive = KeepAlive(self._loop.time(), interval=ping_interval, timeout=dead_timeout)
        self._timer: asyncio.TimerHandle | None = None
        self._pings = 0
        self._credit_timer: asyncio.TimerHandle | None = None
        self._flush_handle: asyncio.Handle | None = None
        self.dead = False  # we gave up on a silent peer

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        tune_socket(transport, self._keepalive.timeout)
        self._keepalive.received(self._loop.time())
        self._arm_timer()
        self.flush()
        if self.on_connected is not None:
            self.on_connected()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._keepalive.last_heard = self._loop.time()  # the hot path: no call, no timer re-arm
        try:
            events = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning("%s broke the protocol: %s; closing the connection", self.peer, exc)
            self.abort(exc)
            return
        if self._budget is not None and self.conn.buffered != self._charged and not self._charge():
            return
        self._receiving = True
        if self._debug and events:
            log.debug("%s: %s", self.peer, ", ".join(_kind(event) for event in events))
        try:
            for event in events:
                if type(event) is ev.DataReceived:  # the hot path: nothing else to look at
                    handler = self.handler  # per event: a RESUME earlier in this read may hand the tunnel over
                    if handler is not None:
                        handler.tunnel_event(event)
                    continue
                if isinstance(event, ev.HandshakeComplete) and not self.handshake.done():
                    self.handshake.set_result(event.info)
                if self.handler is not None:
                    self.handler.tunnel_event(event)
                if isinstance(event, ev.ConnectionTerminated):
                    if event.code == ErrorCode.NORMAL and not event.message:
                        log.debug("%s said goodbye", self.peer)  # e.g. after every `comtunnel list`
                    else:
                        log.info("%s is closing the connection: %s", self.peer, event.message or event.code)
        finally:
            self._receiving = False
        self.flush()

    def _charge(self) -> bool:
        assert self._budget is not None
        held = self.conn.buffered
        if self._budget.change(self._charged, held):
            self._charged = held
            return True
        message = f"the hub's connections would hold more than {self._budget.limit >> 20} MiB of incomplete frames"
        lograte.warn(
            log, "connections over the memory budget", "", "%s: %s; closing the connection", self.peer, message
        )
        self.conn.goaway(ErrorCode.HUB_BUSY, message)
        self.abort(RemoteProtocolError(message, ErrorCode.HUB_BUSY))
        return False

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._budget is not None and self._charged:
            self._budget.change(self._charged, 0)
            self._charged = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._credit_timer is not None:
            self._credit_timer.cancel()
            self._credit_timer = None
        if self.dead and exc is None:
            exc = TimeoutError(f"no data from the {self.peer} for {self._keepalive.timeout:g} s")
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("connection closed"))
            self.handshake.exception()  # mark retrieved; the caller may be gone
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.handler is not None:
            self.handler.tunnel_lost(exc)

    def pause_writing(self) -> None:
        """The peer is not reading: stop reading from it too, so its requests cannot grow our queue."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # --- dead-peer detection -------------------------------------------------------------------

    def _arm_timer(self) -> None:
        self._timer = self._loop.call_at(self._keepalive.deadline(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        match self._keepalive.on_timer(self._loop.time()):
            case Action.PING:
                self._pings += 1
                self.conn.ping(self._pings)
                self.flush()
            case Action.DEAD:
                log.warning(
                    "no data from the %s for %.0f s: the link is dead; dropping the connection",
                    self.peer,
                    self._keepalive.timeout,
                )
                self.dead = True
                self.transport.abort()
                return
        self._arm_timer()

    # --- output --------------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Write what is queued at the end of this loop turn (or of the read being handled), once."""
        if not self._receiving and self._flush_handle is None:  # else data_received flushes at its end
            self._flush_handle = self._loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.bytes_out += len(data)
            self.transport.write(data)
        if self.conn.credit_owed and self._credit_timer is None and self.transport is not None:
            self._credit_timer = self._loop.call_later(CREDIT_DELAY, self._return_credit)

    def _return_credit(self) -> None:
        self._credit_timer = None
        self.conn.return_credit()
        self.flush()

    def close(self, code: ErrorCode = ErrorCode.NORMAL, message: str = "") -> None:
        """Say GOAWAY and close after the queued bytes are written."""
        self.conn.goaway(code, message)
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self, exc: RemoteProtocolError) -> None:
        self.flush()  # the GOAWAY the connection queued
        if self.transport is not None:
            self.transport.close()


def _kind(event: ev.Event) -> str:
    channel = getattr(event, "channel", None)
    data = getattr(event, "data", None)
    size = f" {len(data)} B" if isinstance(data, bytes | bytearray) else ""
    return f"{type(event).__name__}" + (f"[{channel}]" if channel is not None else "") + size
