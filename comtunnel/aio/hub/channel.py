"""A hub channel: a device on this machine driven by one client's channel, in wire order.

A device that disappears leaves the channel up in a "gone" state and is reopened when its path
is back; a monitor channel watches a device another client holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import Any

from comtunnel.aio.bridge import ChannelBridge
from comtunnel.aio.hub.ports import HubPorts
from comtunnel.aio.port_queue import Operation
from comtunnel.aio.tasks import Tasks
from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import PortError, PortNotSupported
from comtunnel.ports.base import SerialPort
from comtunnel.ports.open import PortSpec
from comtunnel.protocol.errors import ErrorCode
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)

#: How often a gone device's path is checked for its return.
REOPEN_INTERVAL = 1.0


class HubChannel(ChannelBridge):
    """A channel whose port is a device on this machine: apply what the client asks, in wire order.

    Writes and the client's line operations share the channel's :class:`PortQueue`, so a purge,
    a baud change or a DTR pulse takes effect exactly between the bytes it came between.
    A device that disappears (unplugged: read error, EIO) leaves the channel up in a "gone" state:
    the client is told, the queue holds what it sends (unacknowledged: its window stops it), and the
    device is reopened with the last line settings when its path is back; the queue then goes on.
    """

    monitor = False

    def __init__(
        self,
        tunnel: Tunnel,
        channel: int,
        spec: PortSpec,
        port: SerialPort,
        control: ControlRequest,
        *,
        ports: HubPorts,
        replay_bound: int,
    ) -> None:
        super().__init__(tunnel, channel, spec.name, port, replay_bound=replay_bound)
        self.ports = ports
        self.spec = spec
        self.settings = PortSettings()
        self.control = control  # the lines as last asked, for a reopen
        self.gone = False
        self._reported: set[str] = set()
        self._modem: ModemLines | None = None
        self._flow_stopped = False
        self._tasks = Tasks(f"channel {spec.name}")

    def port_data(self, data: bytes) -> None:
        watchers = None if self.monitor else self.ports.watchers.get(self.name)
        if watchers:
            for watcher in list(watchers):
                watcher.feed(data)
        super().port_data(data)

    # --- the client's operations, in wire order ---------------------------------------------------

    def request_settings(self, settings: PortSettings) -> None:
        self.to_port.submit(Operation(lambda: self._guarded(self._apply_settings(settings)), True, "settings"))

    def request_control(self, request: ControlRequest) -> None:
        self.to_port.submit(Operation(lambda: self._guarded(self._set_control(request)), True, "control lines"))

    def request_purge(self, which: Purge) -> None:
        self.to_port.submit(Operation(lambda: self._guarded(self._purge(which)), False, "purge"))

    async def _guarded(self, operation: Coroutine[Any, Any, None]) -> None:
        try:
            await operation
        except PortNotSupported as exc:
            self._report_once(str(exc), exc.code, str(exc))
        except PortError as exc:
            self.tunnel.conn.report_channel_error(self.channel, exc.code, str(exc))
            log.warning("%s: %s", self.name, exc)
        self.tunnel.flush_soon()

    def _report_once(self, key: str, code: ErrorCode, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.warning("%s: %s", self.name, message)
            self.tunnel.conn.report_channel_error(self.channel, code, message)

    async def read_back(self, requested: PortSettings) -> PortSettings:
        try:
            return await self.port.apply_settings(requested)
        except PortError as exc:
            self._report_once("settings", exc.code, str(exc))
            return requested

    async def _apply_settings(self, settings: PortSettings) -> None:
        self.settings = await self.port.apply_settings(settings)
        self.meter.reset()  # a new rate: measure what it drains afresh
        log.info("%s: line settings %s", self.name, self.settings.short())
        self.tunnel.conn.report_settings(self.channel, self.settings)

    async def _set_control(self, request: ControlRequest) -> None:
        self.control = ControlRequest(
            dtr=self.control.dtr if request.dtr is None else request.dtr,
            rts=self.control.rts if request.rts is None else request.rts,
            break_=None,  # a BREAK is not restored on a reopen
        )
        state = await self.port.set_control(request)
        log.info("%s: DTR=%s RTS=%s BREAK=%s", self.name, *_onoff(state.dtr, state.rts, state.break_))
        self.tunnel.conn.report_control(self.channel, state)

    async def _purge(self, which: Purge) -> None:
        if which & Purge.RECEIVE:
            self.drop_unsent()  # device input read before the purge and not yet sent goes with it
        await self.port.purge(which)

    def port_modem(self, lines: ModemLines) -> None:
        if lines != self._modem and not self.closed:
            self._modem = lines
            self.tunnel.conn.report_modem(self.channel, lines)
            self.tunnel.flush_soon()

    def port_flow(self, stopped: bool) -> None:
        if stopped != self._flow_stopped and not self.closed:
            self._flow_stopped = stopped
            self.meter.stopped = stopped  # a stopped line gets the smallest window
            self.retune_window()
            log.info("%s: the device %s", self.name, "sent XOFF: output stopped" if stopped else "sent XON")
            self.tunnel.conn.report_flow(self.channel, stopped)
            self.tunnel.flush_soon()

    def report_state(self) -> None:
        """After a resumption: what the client may have missed while it was away."""
        conn = self.tunnel.conn
        conn.report_settings(self.channel, self.settings)
        if self._flow_stopped:
            conn.report_flow(self.channel, True)
        if self._modem is not None:
            conn.report_modem(self.channel, self._modem)
        if self.gone:
            conn.report_device_status(self.channel, "gone", f"device {self.spec.device} is gone")

    # --- the device going and coming back ---------------------------------------------------------

    def port_lost(self, exc: PortError | None) -> None:
        if self.closed or self.gone:
            return
        message = str(exc) if exc else "device closed"
        log.warning("%s: %s; waiting for %s to come back", self.name, message, self.spec.device)
        self.gone = True
        self.to_port.hold()
        self._modem = ModemLines.NONE
        conn = self.tunnel.conn
        conn.report_device_status(self.channel, "gone", message)
        conn.report_modem(self.channel, ModemLines.NONE)  # carrier loss, for RFC 2217 clients
        self.tunnel.flush_soon()
        self._tasks.spawn(self._reopen())

    async def _reopen(self) -> None:
        with contextlib.suppress(PortError):
            await self.port.close()
        device = self.spec.device
        while not self.closed:
            await asyncio.sleep(REOPEN_INTERVAL)
            if device.startswith("/") and not os.path.exists(device):
                continue
            port = self.ports.factory(self.spec, self.settings, self.control)
            try:
                await port.open(self)
            except PortError as exc:
                log.debug("%s: not back yet: %s", self.name, exc)
                continue
            if self.closed:
                await port.close()
                return
            self.port = port
            self.gone = False
            self._reported.clear()
            with contextlib.suppress(PortError):
                self.settings = await port.apply_settings(self.settings)
            log.info("%s: %s is back (%s)", self.name, device, self.settings.short())
            conn = self.tunnel.conn
            conn.report_device_status(self.channel, "open", f"device {device} is back")
            conn.report_settings(self.channel, self.settings)
            self.port_modem(port.modem_lines())
            self.to_port.release(port)
            if self.suspended and self.reads_while_suspended:
                self.port.resume_reading()
            else:
                self._paused = True
                self.window_opened()
            self.tunnel.flush_soon()
            return

    async def close(self) -> None:
        self._tasks.cancel()
        await self.to_port.close()
        if not self.gone:
            await self.port.close()


class MonitorChannel(HubChannel):
    """A channel with monitor access: the watched device's output, nothing from the client reaches it."""

    monitor = True

    def deliver(self, data: bytes) -> None:
        # Taken and thrown away, with credit, so the client is not stuck; said once.
        self._report_once("write", ErrorCode.ACCESS_DENIED, "monitor access: the data written was discarded")
        self.tunnel.conn.consume(self.channel, len(data))
        self.tunnel.flush_soon()

    def port_lost(self, exc: PortError | None) -> None:
        pass


def _onoff(*values: bool) -> list[str]:
    return ["on" if v else "off" for v in values]
