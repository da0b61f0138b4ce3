"""Hub-side gateways: a hub port served straight to a local TCP client (raw or RFC 2217), no tunnel.

The device is opened when a TCP client connects and closed when it leaves, and while it is open
the hub's registry shows it as held, so tunnel clients get the usual 'busy' answer (and the TCP
client gets one if a tunnel client holds the port). Between the two ports, back-pressure is the
same rule as in the bridge: when one side's write buffer is not empty, the other side is paused.

Each TCP session has a number. A device opened for one session serves that session only: when it
ends (the client left, timed out, or a new client took the port over with ``--gateway-takeover``),
the device stops passing bytes both ways at once, not when its close comes round, so nothing of the
old session reaches the new client, and nothing of the new one goes out through the old open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from comtunnel.aio.hub.ports import HubPorts
from comtunnel.aio.port_queue import Operation, PortQueue
from comtunnel.aio.tasks import Tasks
from comtunnel.errors import PortError, PortNotSupported
from comtunnel.policy.registry import Holder
from comtunnel.ports.base import SerialPort
from comtunnel.ports.network import NetworkServerPort
from comtunnel.ports.open import PortSpec
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)


class _Side:
    """Listener for one of the two ports, forwarding to the other."""

    def __init__(self, gateway: LocalGateway, is_app: bool, session: int = 0) -> None:
        self.gateway = gateway
        self.is_app = is_app
        self.session = session  # the device side: the TCP session it was opened for

    def port_data(self, data: bytes) -> None:
        gateway = self.gateway
        if self.is_app:
            if gateway.to_device is not None and gateway.live():
                gateway.to_device.write(data)
                gateway.check_app_backpressure()
            return
        if self.session != gateway.session:
            return  # output for a TCP client that is gone
        try:
            gateway.app.write(data)
        except PortError:
            return
        if gateway.app.write_buffer_size and gateway.device is not None:
            gateway.device.pause_reading()

    def port_drained(self) -> None:
        gateway = self.gateway
        if self.is_app:
            if gateway.device is not None and gateway.live():
                gateway.device.resume_reading()
        elif gateway.to_device is not None and self.session == gateway.session:
            gateway.to_device.port_drained()
            gateway.check_app_backpressure()

    def port_modem(self, lines: ModemLines) -> None:
        if not self.is_app and self.session == self.gateway.session:
            self.gateway.app.set_modem_lines(lines)

    def port_flow(self, stopped: bool) -> None:
        pass  # the device's queue stops by itself; a TCP client is held back by TCP

    def port_lost(self, exc: PortError | None) -> None:
        if not self.is_app:
            self.gateway.device_failed(exc, self.session)

    def app_settings(self, settings: PortSettings) -> None:
        self.gateway.submit(Operation(lambda: self.gateway.apply_settings(settings), True, "settings"))

    def app_open(self, is_open: bool) -> None:
        gateway = self.gateway
        gateway.session += 1  # a session starts or ends: the device opened for the last one goes quiet
        if is_open:
            gateway.app.pause_reading()  # hold the client's first bytes until the device is open
            gateway.run(gateway.open_device(gateway.session))
        else:
            gateway.run(gateway.close_device())

    def app_purge(self, which: Purge) -> None:
        self.gateway.submit(Operation(lambda: self.gateway.purge(which), False, "purge"))

    def app_control(self, request: ControlRequest) -> None:
        self.gateway.submit(Operation(lambda: self.gateway.set_control(request), True, "control lines"))


class LocalGateway:
    """One hub port served to one TCP client at a time. What the client sends (bytes, line changes)
    reaches the device in its order through a :class:`PortQueue`; opening and closing the device
    are serialized so a quick reconnect never overlaps the previous client's close."""

    def __init__(self, ports: HubPorts, spec: PortSpec, app: NetworkServerPort) -> None:
        self.ports = ports
        self.spec = spec
        self.app = app
        self.device: SerialPort | None = None
        self.to_device: PortQueue | None = None
        self._lock = asyncio.Lock()
        self._tasks = Tasks(f"gateway {spec.name}")
        self._holder: Holder | None = None
        self._app_paused = False
        self.session = 0  # counts TCP sessions' starts and ends (see the module's docstring)
        self._device_session = -1  # the session the open device serves

    def live(self) -> bool:
        """The open device serves the TCP client connected now."""
        return self.device is not None and self._device_session == self.session

    async def start(self) -> None:
        await self.app.open(_Side(self, is_app=True))

    def run(self, coro: Coroutine[Any, Any, None]) -> None:
        async def serialized() -> None:
            async with self._lock:
                try:
                    await coro
                except PortNotSupported as exc:
                    log.info("%s: %s", self.spec.name, exc)
                except PortError as exc:
                    log.warning("%s: %s", self.spec.name, exc)

        self._tasks.spawn(serialized())

    def submit(self, operation: Operation) -> None:
        if self.to_device is not None and self.live():
            self.to_device.submit(operation)
            self.check_app_backpressure()

    def check_app_backpressure(self) -> None:
        """Pause the TCP client while its bytes wait (behind an operation, or in the device's buffer)."""
        if not self.live():
            return  # between sessions: the next open_device resumes the client
        queue, device = self.to_device, self.device
        waiting = queue is not None and device is not None and bool(queue.queued_bytes or device.write_buffer_size)
        if waiting != self._app_paused:
            self._app_paused = waiting
            if waiting:
                self.app.pause_reading()
            else:
                self.app.resume_reading()

    def _written(self, size: int) -> None:
        self.check_app_backpressure()

    async def open_device(self, session: int) -> None:
        if session != self.session:
            return  # that client is gone already (or another took over): do not open for it
        holder = self.ports.holders.get(self.spec.name)
        if holder is not None:
            self.app.refuse_current(f"port {self.spec.name} is in use by {holder.client}")
            return
        self._holder = self.ports.claim(self.spec.name, f"{self.app.kind} client {self.app.peer}")
        request = ControlRequest(dtr=True, rts=True)
        try:
            device = self.ports.factory(self.spec, self.app.settings, request)
            await device.open(_Side(self, is_app=False, session=session))
        except PortError as exc:
            self._release()
            if session == self.session:
                self.app.refuse_current(str(exc))
            return
        self.device = device
        self._device_session = session
        self.to_device = PortQueue(device, self._written, lambda exc: self.device_failed(exc, session))
        if session != self.session:
            return  # the client left while the device opened: its close_device is next in line
        settings = await self._safe_apply(self.app.settings)
        if session != self.session:
            return  # taken over while the settings went out: the next client starts clean
        self.app.settings = settings
        self.app.set_modem_lines(device.modem_lines())
        self._app_paused = False
        self.app.resume_reading()
        log.info("%s: %s has %s", self.spec.name, self.app.peer, self.spec.device)

    async def _safe_apply(self, settings: PortSettings) -> PortSettings:
        assert self.device is not None
        try:
            return await self.device.apply_settings(settings)
        except PortError as exc:
            log.warning("%s: %s", self.spec.name, exc)
            return settings

    async def apply_settings(self, settings: PortSettings) -> None:
        if self.live():
            applied = await self._safe_apply(settings)
            if self.live():  # not for a client that took the port over meanwhile
                await self.app.apply_settings(applied)

    async def set_control(self, request: ControlRequest) -> None:
        if self.device is None or not self.live():
            return
        try:
            state = await self.device.set_control(request)
        except PortNotSupported as exc:
            log.info("%s: %s", self.spec.name, exc)
            return
        except PortError as exc:
            log.warning("%s: %s", self.spec.name, exc)
            return
        if self.live():
            await self.app.set_control(ControlRequest(state.dtr, state.rts, state.break_))

    async def purge(self, which: Purge) -> None:
        if self.device is None:
            return
        try:
            await self.device.purge(which)
        except PortError as exc:
            log.warning("%s: %s", self.spec.name, exc)

    async def close_device(self) -> None:
        device, queue = self.device, self.to_device
        self.device = self.to_device = None
        if queue is not None:
            await queue.close()
        if device is not None:
            await device.close()
        self._release()

    def _release(self) -> None:
        self.ports.release(self.spec.name, self._holder)
        self._holder = None

    def device_failed(self, exc: PortError | None, session: int | None = None) -> None:
        log.warning("%s: device failed: %s", self.spec.name, exc)
        if session is None or session == self.session:
            self.app.refuse_current(f"device failed: {exc}")
        self.run(self.close_device())

    async def close(self) -> None:
        await self.close_device()
        await self.app.close()
