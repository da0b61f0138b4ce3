"""Joins one tunnel channel to one serial port: the one place back-pressure is decided.

Port -> tunnel: bytes go out within the channel's send window. When a read brings more than the
window allows, the rest waits here and the port is paused until a WINDOW frame arrives, so a
stalled far side stops this port without touching the others.

Tunnel -> port: bytes are handed to the port's write buffer at once (the peer's window bounds
them); credit goes back to the peer only when the port has really taken them (``port_drained``),
so a slow device slows its sender instead of filling our memory.

While the connection is down (``suspend``) the channel keeps its identity for a resumed session.
A port we can hold back (an application's PTY) is paused: the application sees a pause. A port
that cannot be held back (a device talking on its own) keeps being read into a buffer of at most
``replay_bound`` bytes, less what the tunnel itself still holds unconfirmed; past it the oldest
bytes go and are counted in ``lost``, never silently.
"""

from __future__ import annotations

import logging

from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import PortError
from comtunnel.ports.base import SerialPort
from comtunnel.protocol.limits import DEFAULT_REPLAY_BOUND
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)


class ChannelBridge:
    """Base bridge; the hub and client subclasses add what their side does with control events."""

    #: Keep reading the port while suspended (True: a device, which cannot wait; False: an application).
    reads_while_suspended = True

    def __init__(
        self, tunnel: Tunnel, channel: int, name: str, port: SerialPort, *, replay_bound: int = DEFAULT_REPLAY_BOUND
    ) -> None:
        self.tunnel = tunnel
        self.channel = channel
        self.name = name
        self.port = port
        self.replay_bound = replay_bound
        self.bytes_to_port = 0
        self.bytes_from_port = 0
        self.lost = 0  # bytes from the port dropped because a suspension outlasted the replay bound
        self._pending = bytearray()  # read from the port, waiting for window (or for a connection)
        self._paused = False
        self._unacknowledged = 0  # received from the tunnel, not yet taken by the port
        self.closed = False
        self.suspended = False

    # --- port -> tunnel ----------------------------------------------------------------------

    def port_data(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytes_from_port += len(data)
        if self.suspended:
            self._buffer_while_suspended(data)
            return
        if self._pending:
            self._pending += data
        else:
            sent = self._send_within_window(data)
            if sent < len(data):
                self._pending += memoryview(data)[sent:]
        if self._pending and not self._paused:
            self._paused = True
            self.port.pause_reading()

    def _buffer_while_suspended(self, data: bytes) -> None:
        self._pending += data
        room = max(0, self.replay_bound - self.tunnel.conn.unacknowledged(self.channel))
        excess = len(self._pending) - room
        if excess > 0:
            if not self.lost:
                log.warning("%s: disconnected for too long: dropping the oldest device output", self.name)
            del self._pending[:excess]
            self.lost += excess

    def _send_within_window(self, data: bytes | memoryview) -> int:
        conn = self.tunnel.conn
        size = min(len(data), conn.send_window(self.channel))
        if size:
            conn.send_data(self.channel, data[:size] if size < len(data) else data)
            self.tunnel.flush_soon()
        return size

    def window_opened(self) -> None:
        if self.suspended or self.closed:
            return
        if self._pending:
            sent = self._send_within_window(memoryview(self._pending))
            del self._pending[:sent]
        if not self._pending and self._paused:
            self._paused = False
            self.port.resume_reading()
        elif self._pending and not self._paused:
            self._paused = True
            self.port.pause_reading()

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
        if self._unacknowledged and not self.closed:
            # On a suspended channel this only counts: the next RESUME carries the consumed offset.
            self.tunnel.conn.consume(self.channel, self._unacknowledged)
            self._unacknowledged = 0
            self.tunnel.flush_soon()

    # --- connection changes ----------------------------------------------------------------------

    def suspend(self) -> None:
        """The connection is gone; the session may come back on another one."""
        if self.closed or self.suspended:
            return
        self.suspended = True
        if self.reads_while_suspended:
            if self._paused:
                self._paused = False
                self.port.resume_reading()
        elif not self._paused:
            self._paused = True
            self.port.pause_reading()

    def resume(self, tunnel: Tunnel) -> None:
        """The session continues on ``tunnel``, same channel id; send what piled up."""
        self.tunnel = tunnel
        self.suspended = False
        self._paused = not self.reads_while_suspended  # as suspend() left the port
        self.window_opened()
        self.port_drained()

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
        self.suspended = False
        self._pending.clear()
        self._unacknowledged = 0
