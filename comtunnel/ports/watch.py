"""A monitor's view of a port another client holds: the device's output, nothing else.

Several monitors may watch one port. They never hold the device back: a monitor whose channel
cannot take more (its window is full, its client slow) loses output, counted in ``dropped``,
while the client holding the port carries on at full speed. Writing, line settings and control
lines are refused with a clear reason.
"""

from __future__ import annotations

from comtunnel.errors import PortNotSupported
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge

REFUSED = "monitor access: this client may watch the port, not write to it or change its settings"


class WatchPort(SerialPort):
    def __init__(self, name: str, watchers: dict[str, set[WatchPort]], settings: PortSettings) -> None:
        self.name = name
        self.description = f"monitor of {name}"
        self._watchers = watchers
        self.settings = settings
        self.dropped = 0
        self._listener: PortListener | None = None
        self._paused = False

    async def open(self, listener: PortListener) -> None:
        self._listener = listener
        self._watchers.setdefault(self.name, set()).add(self)

    def feed(self, data: bytes) -> None:
        """Output of the watched device (called by the holder's channel)."""
        if self._paused or self._listener is None:
            self.dropped += len(data)
        else:
            self._listener.port_data(data)

    def write(self, data: bytes) -> None:
        raise PortNotSupported(REFUSED)

    @property
    def write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        raise PortNotSupported(REFUSED)

    async def set_control(self, request: ControlRequest) -> ControlState:
        raise PortNotSupported(REFUSED)

    async def purge(self, which: Purge) -> None:
        raise PortNotSupported(REFUSED)

    def modem_lines(self) -> ModemLines:
        return ModemLines.NONE

    async def close(self) -> None:
        watchers = self._watchers.get(self.name)
        if watchers is not None:
            watchers.discard(self)
            if not watchers:
                del self._watchers[self.name]
        self._listener = None
