"""A client channel: a local port (a PTY for an application, an attached device, a TCP server)
plus what we know of its twin on the hub. What the application does to its port (open, close,
termios, tcflush) leaves in its place among the bytes it wrote."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import cast

from comtunnel.aio.bridge import ChannelBridge
from comtunnel.aio.tunnel import Tunnel
from comtunnel.errors import PortError
from comtunnel.ports.base import SerialPort
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)


class LinkState(enum.Enum):
    CONNECTING = "connecting"  # no connection to the hub yet
    OPENING = "opening"  # OPEN sent, no answer yet
    OPEN = "open"
    FAILED = "failed"  # the hub refused; ``failure`` says why; retried
    DEVICE_GONE = "device gone"  # open, but the hub's device is unplugged
    DISCONNECTED = "disconnected"  # the connection dropped; resumed or reopened with the next one
    CLOSED = "closed"  # the hub closed the channel; reopened after a pause
    REOPENING = "reopening"  # the session was lost: opened afresh with the next connection


class ClientChannel(ChannelBridge):
    """A local port plus what we know of its remote twin.

    Its window is sized to what the application reads, as the hub's is to what the device drains:
    an application that stops reading holds up a few KiB in the tunnel, not 256 KiB of stale output.

    Across a dropped connection the channel is suspended and resumed with the session (same id,
    nothing lost); if the hub cannot resume it, it is reopened as a new channel and the loss counted.
    """

    def __init__(
        self,
        name: str,
        port: SerialPort,
        settings: PortSettings,
        virtual: bool,
        *,
        replay_bound: int,
        on_port_lost: Callable[[ClientChannel], None],
    ):
        # Unbound until the hub opens the channel; ``closed`` keeps every path off the tunnel till then.
        super().__init__(cast(Tunnel, None), 0, name, port, replay_bound=replay_bound)
        self._on_port_lost = on_port_lost
        self.settings = settings
        self.virtual = virtual
        self.app_is_open = not virtual  # an attached device is "open" all the time
        self.remote_settings: PortSettings | None = None
        self.modem = ModemLines.NONE
        self.state = LinkState.CONNECTING
        self.failure = ""  # why the hub refused the last open (with LinkState.FAILED)
        self.closed = True  # until a channel is bound
        self.unconfirmed_lost = 0  # bytes the app wrote that a lost session never confirmed

    @property
    def live(self) -> bool:
        return not self.closed and not self.suspended

    def bind(self, tunnel: Tunnel, channel: int, settings: PortSettings) -> None:
        self.tunnel, self.channel, self.closed = tunnel, channel, False
        self.remote_settings = settings
        self.state = LinkState.OPEN
        self.failure = ""
        self.start_window()
        if self.settings != settings:
            log.info("%s: the hub applied %s (asked %s)", self.name, settings.short(), self.settings.short())
        self.port.resume_reading()

    def unbind(self, state: LinkState) -> None:
        self.detach()
        self.state = state
        self.port.pause_reading()  # the app's writes wait in the PTY until a channel is back

    def lose(self, unconfirmed: int, why: str) -> None:
        """The session is gone for this channel: count what may not have arrived, reopen afresh."""
        lost = unconfirmed + self.pending_bytes
        self.unconfirmed_lost += lost
        if lost:
            log.warning("%s: %s: %d bytes the application wrote may not have reached the device", self.name, why, lost)
        self.unbind(LinkState.REOPENING)

    def open_request(self) -> ControlRequest:
        return ControlRequest(dtr=self.app_is_open, rts=self.app_is_open)

    # --- what the application did: in its place among the bytes it wrote ---------------------------

    def app_settings(self, settings: PortSettings) -> None:
        self.settings = settings
        if not self.closed:
            log.info("%s: application set %s", self.name, settings.short())
            self.send_operation(lambda: self.tunnel.conn.request_settings(self.channel, settings))

    def app_open(self, is_open: bool) -> None:
        """HUPCL semantics: the app's open raises DTR/RTS, its last close drops them (Arduino reset)."""
        self.app_is_open = is_open
        log.info("%s: application %s the port", self.name, "opened" if is_open else "closed")
        request = self.open_request()
        if not self.closed:
            self.send_operation(lambda: self.tunnel.conn.request_control(self.channel, request))

    def app_control(self, request: ControlRequest) -> None:
        if not self.closed:
            self.send_operation(lambda: self.tunnel.conn.request_control(self.channel, request))

    def app_purge(self, which: Purge) -> None:
        if self.closed:
            return
        if which & Purge.TRANSMIT:
            self.drop_unsent()  # the application flushed its output: what we hold of it goes too
        self.send_operation(lambda: self.tunnel.conn.request_purge(self.channel, which))

    def port_lost(self, exc: PortError | None) -> None:
        log.error("%s: local port failed: %s", self.name, exc)
        self._on_port_lost(self)

    # --- what the hub said ---------------------------------------------------------------------

    def flow_changed(self, stopped: bool) -> None:
        """The device sent XOFF/XON: stop the application's output as its own tty would."""
        setter = getattr(self.port, "set_output_stopped", None)
        if setter is not None:
            setter(stopped)
        log.info("%s: the device %s", self.name, "stopped our output (XOFF)" if stopped else "let output go on (XON)")

    def modem_changed(self, lines: ModemLines) -> None:
        """The hub reports the device's modem lines; it repeats them after a resumption or a
        reopen, which is logged only when they differ from what we had."""
        changed = lines != self.modem
        self.modem = lines
        setter = getattr(self.port, "set_modem_lines", None)
        if setter is not None:
            setter(lines)
        if changed:
            log.info("%s: modem lines %s", self.name, lines.describe())
