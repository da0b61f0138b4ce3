"""Joins one tunnel channel to one serial port: the one place back-pressure and ordering are decided.

Port -> tunnel: bytes go out within the channel's send window. When a read brings more than the
window allows, the rest waits here and the port is paused until a WINDOW frame arrives, so a
stalled far side stops this port without touching the others. Line operations the local side
makes (the client's application: termios, tcflush, DTR/RTS) wait behind the bytes it wrote
before them (:meth:`send_operation`), so they leave in the order the application made them.

Tunnel -> port: bytes and operations go through one :class:`~comtunnel.aio.port_queue.PortQueue`
in wire order. Credit goes back to the peer only when bytes have really reached the port
(written and drained), so a slow device slows its sender instead of filling our memory, and the
window bounds the queue.

While the connection is down (``suspend``) the channel keeps its identity for a resumed session.
A port we can hold back (an application's PTY, a PTY or socket device, a line with flow control)
is paused. A port that cannot be held back (a UART talking on its own) keeps being read into a
buffer of ``replay_bound`` bytes on top of what the tunnel itself still holds unconfirmed; past it
the oldest bytes go, counted in ``lost`` and logged with how long the peer had been away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from comtunnel.aio.port_queue import PortQueue
from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import PortError
from comtunnel.ports.base import SerialPort
from comtunnel.protocol.drain import DrainMeter
from comtunnel.protocol.limits import DEFAULT_REPLAY_BOUND
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)

#: How often a busy port's drain rate is sampled (its window follows).
METER_INTERVAL = 0.25
#: A queued operation for the tunnel: sends its frame when every byte before it has been sent.
Outgoing = Callable[[], None]


class ChannelBridge:
    """Base bridge; the hub and client subclasses add what their side does with control events."""

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
        self.to_port = PortQueue(port, self._port_took, self.port_lost)
        self._outbox: deque[bytearray | Outgoing] = deque()  # waiting for window, or for a connection
        self._outbox_bytes = 0
        self._paused = False
        self._unacknowledged = 0  # reached the port, credit not yet returned
        self.meter = DrainMeter()  # sizes the window we grant to what the port really drains
        self._meter_timer: asyncio.TimerHandle | None = None
        self._suspended_at = 0.0
        self._lost_before = 0  # ``lost`` when the last suspension began
        self.closed = False
        self.suspended = False

    @property
    def reads_while_suspended(self) -> bool:
        """Keep reading while the peer is away: a UART talking on its own (into the replay bound);
        a port that can wait (a PTY, a socket, a line with flow control) is paused instead."""
        return not self.port.holds_back

    @property
    def pending_bytes(self) -> int:
        """Read from the port, not yet sent."""
        return self._outbox_bytes

    # --- port -> tunnel ----------------------------------------------------------------------

    def port_data(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytes_from_port += len(data)
        if not self._outbox and not self.suspended:
            sent = self._send_within_window(data)
            if sent == len(data):
                return
            data = memoryview(data)[sent:]  # type: ignore[assignment]
        self._queue_bytes(data)
        if self.suspended:
            self._bound_while_suspended()
            if self.reads_while_suspended:
                return
        if not self._paused:
            self._paused = True
            self.port.pause_reading()

    def _queue_bytes(self, data: bytes | memoryview) -> None:
        tail = self._outbox[-1] if self._outbox else None
        if isinstance(tail, bytearray):
            tail += data
        else:
            self._outbox.append(bytearray(data))
        self._outbox_bytes += len(data)

    def send_operation(self, send: Outgoing) -> None:
        """Send a frame now, or once the bytes the port produced before it have been sent."""
        if self.closed:
            return
        if self._outbox_bytes or self.suspended:
            self._outbox.append(send)
            return
        self._outbox.append(send)
        self.window_opened()  # only operations wait: they go now, in order

    def drop_unsent(self) -> int:
        """Discard the port's bytes that were not sent yet (a flush); operations stay in place."""
        dropped = self._outbox_bytes
        if dropped:
            self._outbox = deque(item for item in self._outbox if not isinstance(item, bytearray))
            self._outbox_bytes = 0
            self.window_opened()  # the operations that waited behind those bytes go now
        return dropped

    def _bound_while_suspended(self) -> None:
        # The bound comes on top of the window: what the tunnel holds unconfirmed is not counted.
        excess = self._outbox_bytes - self.replay_bound
        if excess <= 0:
            return
        if self.lost == self._lost_before:
            log.warning(
                "%s: the peer has been away for %.1f s and %d bytes of output are waiting: "
                "dropping the oldest (the replay bound)",
                self.name,
                time.monotonic() - self._suspended_at,
                self._outbox_bytes,
            )
        self.lost += excess
        self._outbox_bytes -= excess
        for item in self._outbox:
            if isinstance(item, bytearray):
                cut = min(excess, len(item))
                del item[:cut]
                excess -= cut
                if not excess:
                    break

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
        outbox = self._outbox
        while outbox:
            head = outbox[0]
            if isinstance(head, bytearray):
                sent = self._send_within_window(memoryview(head)) if head else 0
                del head[:sent]
                self._outbox_bytes -= sent
                if head:
                    break
            else:
                head()
                self.tunnel.flush_soon()
            outbox.popleft()
        self._resume_if_empty()

    def _resume_if_empty(self) -> None:
        if not self._outbox_bytes and self._paused and not (self.suspended and not self.reads_while_suspended):
            self._paused = False
            self.port.resume_reading()

    # --- tunnel -> port ----------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if not self.closed:
            self.to_port.write(data)

    def _port_took(self, size: int) -> None:
        self.bytes_to_port += size
        self._unacknowledged += size
        buffered = self.port.write_buffer_size
        self.meter.wrote(size, buffered, time.monotonic())
        if buffered == 0:
            self._return_credit()
        elif self._meter_timer is None:
            self._meter_timer = asyncio.get_running_loop().call_later(METER_INTERVAL, self._meter_tick)
        self.retune_window()

    def port_drained(self) -> None:
        self.to_port.port_drained()
        self.meter.drained(time.monotonic())
        self._return_credit()
        self.retune_window()

    def _meter_tick(self) -> None:
        self._meter_timer = None
        buffered = self.port.write_buffer_size
        if self.closed or not buffered:
            return
        self.meter.sample(buffered, time.monotonic())
        self.retune_window()
        self._meter_timer = asyncio.get_running_loop().call_later(METER_INTERVAL, self._meter_tick)

    def start_window(self) -> None:
        """Right after the channel opened: grant the meter's starting window (sent in the same write
        as the OPEN answer, so the peer never had more in flight)."""
        if not self.closed and not self.suspended:
            self.tunnel.conn.resize_window(self.channel, self.meter.window())

    def retune_window(self) -> None:
        """Grant the window the meter proposes, once it differs enough to be worth a frame."""
        if self.closed or self.suspended:
            return
        conn = self.tunnel.conn
        current, target = conn.window_size(self.channel), self.meter.window()
        if current and (
            target * 2 <= current
            or target >= current * 2
            or (
                target != current
                and target
                in (
                    self.meter.minimum,
                    self.meter.maximum,
                )
            )
        ):
            conn.resize_window(self.channel, target)
            self.tunnel.flush_soon()

    def _return_credit(self) -> None:
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
        self._suspended_at = time.monotonic()
        self._lost_before = self.lost
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
        if self.lost > self._lost_before:
            away = time.monotonic() - self._suspended_at
            dropped = self.lost - self._lost_before
            log.warning("%s: back after %.1f s; %d bytes of output were dropped meanwhile", self.name, away, dropped)
        self._paused = True  # whatever suspend() left, window_opened resumes the port when it is empty
        self.window_opened()
        self._return_credit()

    # --- the rest of PortListener: overridden where a side cares ---------------------------------

    def port_modem(self, lines: ModemLines) -> None:
        pass

    def port_flow(self, stopped: bool) -> None:
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
        if self._meter_timer is not None:
            self._meter_timer.cancel()
            self._meter_timer = None
        self._outbox.clear()
        self._outbox_bytes = 0
        self._unacknowledged = 0
