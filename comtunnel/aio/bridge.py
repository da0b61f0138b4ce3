"""Joins one tunnel channel to one serial port: the one place back-pressure is decided.

Port -> tunnel: bytes go out within the channel's send window. When a read brings more than the
window allows, the rest waits here (at most one read) and the port is paused until a WINDOW
frame arrives, so a stalled far side stops this port without touching the others.

Tunnel -> port: bytes are handed to the port's write buffer at once (the peer's window bounds
them); credit goes back to the peer only when the port has really taken them (``port_drained``),
so a slow device slows its sender instead of filling our memory.
"""

from __future__ import annotations

import logging

from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import PortError
from comtunnel.ports.base import SerialPort
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)


class ChannelBridge:
    """Base bridge; the hub and client subclasses add what their side does with control events."""

    def __init__(self, tunnel: Tunnel, channel: int, name: str, port: SerialPort) -> None:
        self.tunnel = tunnel
        self.channel = channel
        self.name = name
        self.port = port
        self.bytes_to_port = 0
        self.bytes_from_port = 0
        self._pending = bytearray()  # read from the port, waiting for window
        self._paused = False
        self._unacknowledged = 0  # received from the tunnel, not yet taken by the port
        self.closed = False

    # --- port -> tunnel ----------------------------------------------------------------------

    def port_data(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytes_from_port += len(data)
        if self._pending:
            self._pending += data
        else:
            sent = self._send_within_window(data)
            if sent < len(data):
                self._pending += memoryview(data)[sent:]
        if self._pending and not self._paused:
            self._paused = True
            self.port.pause_reading()

    def _send_within_window(self, data: bytes | memoryview) -> int:
        conn = self.tunnel.conn
        size = min(len(data), conn.send_window(self.channel))
        if size:
            conn.send_data(self.channel, data[:size] if size < len(data) else data)
            self.tunnel.flush_soon()
        return size

    def window_opened(self) -> None:
        if self._pending:
            sent = self._send_within_window(memoryview(self._pending))
            del self._pending[:sent]
        if not self._pending and self._paused and not self.closed:
            self._paused = False
            self.port.resume_reading()

    # --- tunnel -> port ----------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.port.write(data)
        except PortError as exc:
            self.port_lost(exc)
            return
        self.bytes_to_port += len(data)
        self._unacknowledged += len(data)
        if self.port.write_buffer_size == 0:
            self.port_drained()

    def port_drained(self) -> None:
        if self._unacknowledged:
            self.tunnel.conn.consume(self.channel, self._unacknowledged)
            self._unacknowledged = 0
            self.tunnel.flush_soon()

    # --- the rest of PortListener: overridden where a side cares ---------------------------------

    def port_modem(self, lines: ModemLines) -> None:
        pass

    def port_lost(self, exc: PortError | None) -> None:
        pass

    def app_settings(self, settings: PortSettings) -> None:
        pass

    def app_open(self, is_open: bool) -> None:
        pass

    def app_purge(self, which: Purge) -> None:
        pass

    def app_control(self, request: ControlRequest) -> None:
        pass

    def detach(self) -> None:
        """Stop passing data; the channel is gone (the port's owner decides whether to close it)."""
        self.closed = True
        self._pending.clear()
        self._unacknowledged = 0
