"""The interface every port backend implements, and the listener the bridge implements.

The shape follows asyncio's transport/protocol pair rather than async read(): the backend pushes
received bytes to its listener as they arrive (large reads, no per-read futures) and the bridge
applies back-pressure with pause_reading/resume_reading when the tunnel window is used up.
Writes are buffered by the backend and never block; ``port_drained`` says when the buffer
has emptied, which is when the bridge returns credit to the tunnel.
"""

from __future__ import annotations

import abc
from typing import Protocol

from comtunnel.errors import PortError
from comtunnel.protocol.settings import (
    ControlRequest,
    ControlState,
    ModemLines,
    PortSettings,
    Purge,
)


class PortListener(Protocol):
    """Callbacks from a port backend; all are called on the event loop thread."""

    def port_data(self, data: bytes) -> None:
        """Bytes read from the port."""

    def port_drained(self) -> None:
        """The write buffer, which was not empty, is now empty."""

    def port_modem(self, lines: ModemLines) -> None:
        """The modem input lines changed (or are reported for the first time)."""

    def port_flow(self, stopped: bool) -> None:
        """The device stopped our output with XOFF (True) or let it go on with XON (False)."""

    def port_lost(self, exc: PortError | None) -> None:
        """The port failed (device gone, read error) and is closed; no more callbacks follow."""

    def app_settings(self, settings: PortSettings) -> None:
        """Virtual ports only: the local application changed the line settings."""

    def app_open(self, is_open: bool) -> None:
        """Virtual ports only: the local application opened (True) or closed (False) the port."""

    def app_purge(self, which: Purge) -> None:
        """Virtual ports only: the local application flushed buffers (tcflush)."""

    def app_control(self, request: ControlRequest) -> None:
        """Virtual ports with real control lines (RFC 2217): the application set DTR/RTS/BREAK."""


class SerialPort(abc.ABC):
    """One serial port, real or virtual. Not reusable after close()."""

    #: A short human description for logs and status, e.g. '/dev/ttyUSB0' or 'loop://'.
    description: str = ""

    @property
    def holds_back(self) -> bool:
        """Pausing reads holds the far end back instead of losing its bytes (a PTY, a socket, a line
        with flow control): such a port is paused, not read into a buffer, while its peer is away."""
        return False

    @abc.abstractmethod
    async def open(self, listener: PortListener) -> None:
        """Open the port and start delivering callbacks. Raises PortBusy / PortUnavailable."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue bytes for the port; never blocks. Raises PortGone if the port has failed."""

    @property
    @abc.abstractmethod
    def write_buffer_size(self) -> int:
        """Bytes accepted by write() that have not reached the OS yet."""

    @abc.abstractmethod
    def pause_reading(self) -> None: ...

    @abc.abstractmethod
    def resume_reading(self) -> None: ...

    @abc.abstractmethod
    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        """Apply line settings after the output written before has been sent (TCSADRAIN); return
        the settings actually in effect afterwards.

        A setting the port cannot hold (parity on a PTY) is simply not in the returned value;
        an outright failure raises PortError and leaves the previous settings in effect.
        """

    @abc.abstractmethod
    async def set_control(self, request: ControlRequest) -> ControlState:
        """Change DTR/RTS/BREAK after the output written before has been sent; return the state in effect.

        Raises PortNotSupported (after applying what it could) when the device has no such line.
        """

    @abc.abstractmethod
    async def purge(self, which: Purge) -> None:
        """Discard the port's receive and/or transmit buffers: what came before, never what follows."""

    @abc.abstractmethod
    def modem_lines(self) -> ModemLines:
        """The modem input lines as last seen (ModemLines.NONE where the port has none)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the port; idempotent. No callbacks after it returns."""
