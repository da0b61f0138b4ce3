"""Drives a :class:`~comtunnel.protocol.mux.Connection` over an asyncio transport (TLS in practice).

The one place bytes meet the socket. Output is coalesced: every send method of the connection
only queues frames, and :meth:`Tunnel.flush_soon` writes them in one ``transport.write`` per
loop iteration, however many channels produced data in it. Input events are handed to a
:class:`TunnelHandler` (the hub session or the client), which owns the channels.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol, cast

from comtunnel.protocol import events as ev
from comtunnel.protocol.errors import ErrorCode, RemoteProtocolError
from comtunnel.protocol.mux import Connection

log = logging.getLogger(__name__)


class TunnelHandler(Protocol):
    def tunnel_event(self, event: ev.Event) -> None: ...

    def tunnel_lost(self, exc: BaseException | None) -> None: ...


def tune_socket(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY for small-message latency; keepalive so the OS notices dead peers eventually."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:  # not TCP (tests over socketpairs)
        pass


class Tunnel(asyncio.Protocol):
    def __init__(self, conn: Connection, peer: str = "peer") -> None:
        self.conn = conn
        self.peer = peer
        self.handler: TunnelHandler | None = None
        self.on_connected: Callable[[], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.handshake = asyncio.get_running_loop().create_future()
        self.bytes_in = 0
        self.bytes_out = 0
        self._flush_scheduled = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        tune_socket(transport)
        self.flush()
        if self.on_connected is not None:
            self.on_connected()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            events = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning("%s broke the protocol: %s; closing the connection", self.peer, exc)
            self.abort(exc)
            return
        for event in events:
            if isinstance(event, ev.HandshakeComplete) and not self.handshake.done():
                self.handshake.set_result(event.info)
            if self.handler is not None:
                self.handler.tunnel_event(event)
            if isinstance(event, ev.ConnectionTerminated):
                log.info("%s is closing the connection: %s", self.peer, event.message or event.code)
        self.flush_soon()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("connection closed"))
            self.handshake.exception()  # mark retrieved; the caller may be gone
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.handler is not None:
            self.handler.tunnel_lost(exc)

    # --- output --------------------------------------------------------------------------------

    def flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.bytes_out += len(data)
            self.transport.write(data)

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
